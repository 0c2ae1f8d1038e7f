"""Findings made by hand on real series geometry, to test the DICOM writers without models.

A three-layer ellipsoid tumour (enhancing rim, necrotic core, edema around) is placed
in patient space and drawn onto each role's own grid, so the SEG on T1c and the SEG on
FLAIR describe one object; the heat maps are smooth blobs around it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from glioma_node.core.findings import Findings, HeatMap, LabelMask, Prediction, Radiogenomics, RiskScore, SegmentationQuality
from glioma_node.core.volume import Volume
from glioma_node.dicom_io.study import StudySurvey, load_study

CREATED = "2026-11-21T09:30:00+00:00"


def _distance_mm(volume: Volume, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    k, j, i = np.indices(volume.shape)
    points = volume.affine[:3, :3] @ np.stack([i.ravel(), j.ravel(), k.ravel()]) + volume.affine[:3, 3:]
    return np.sqrt((((points - centre[:, None]) / radii[:, None]) ** 2).sum(axis=0)).reshape(volume.shape)


def tumour_labels(volume: Volume, centre: np.ndarray, size_mm: float = 18.0) -> np.ndarray:
    """BraTS labels of the ellipsoid tumour (semi-axes ``size_mm`` and a little less) on ``volume``'s grid."""
    d = _distance_mm(volume, centre, size_mm * np.array([1.0, 0.85, 0.8]))
    labels = np.zeros(volume.shape, np.uint8)
    labels[d < 1.5] = 2
    labels[d < 1.0] = 4
    labels[d < 0.55] = 1
    return labels


def fabricated_findings(study: StudySurvey, radiogenomics: bool = True, size_mm: float = 18.0,
                        offset_mm: float = 25.0) -> tuple[Findings, dict, Volume]:
    """(findings, sources, reference volume) of ``study`` with the hand-made tumour,
    ``offset_mm`` to the patient's left of the T1c field-of-view centre."""
    study_input = load_study(study)
    t1c = study_input.volumes["T1c"]
    middle = t1c.affine[:3, :3] @ (np.array(t1c.shape[::-1]) / 2 - 0.5) + t1c.affine[:3, 3]
    centre = middle + np.array([offset_mm, 0, 0])
    masks = {role: LabelMask(role, v.metadata.series_instance_uid, tumour_labels(v, centre, size_mm), v.affine,
                             list(v.sop_instance_uids), v.frame_numbers)
             for role, v in study_input.volumes.items()}
    voxel_ml = float(abs(np.linalg.det(t1c.affine[:3, :3]))) / 1000
    labels = masks["T1c"].labels
    volumes = {"necrotic_core": (labels == 1).sum() * voxel_ml, "edema": (labels == 2).sum() * voxel_ml,
               "enhancing": (labels == 4).sum() * voxel_ml, "whole_tumour": (labels > 0).sum() * voxel_ml}
    volumes = {k: round(float(v), 3) for k, v in volumes.items()}
    models = [{"task": "segmentation", "name": "test-seg", "version": "0.0.1", "sha256": "a" * 64},
              {"task": "radiogenomics", "name": "test-rg", "version": "0.0.2", "sha256": "b" * 64}]
    rg = None
    if radiogenomics:
        heat = np.exp(-_distance_mm(t1c, centre, np.array([30.0, 30.0, 30.0])) ** 2).astype(np.float32)
        maps = {t: HeatMap(t, "T1c", t1c.metadata.series_instance_uid, heat ** (1 + n), t1c.affine,
                           list(t1c.sop_instance_uids), t1c.frame_numbers)
                for n, t in enumerate(("mgmt", "idh", "chemo-benefit"))}
        feature = [{"feature": "T1c.enhancing.original_firstorder_Mean", "value": 1.2, "shap": 0.31}]
        rg = Radiogenomics(
            predictions={"mgmt": Prediction("mgmt", 0.63, 0.41, "methylated", "early", feature),
                         "idh": Prediction("idh", 0.12, 0.48, "wildtype", "early", feature),
                         "chemo-benefit": Prediction("chemo-benefit", 0.71, 0.5, "benefit", "attention", feature)},
            risk=RiskScore(0.65, 0.11, "high", feature, {"mgmt": "predicted from the images", "idh": "clinical source",
                                                         "egfr": "clinical source"}, "lims.csv (PatientID P1)"),
            heat_maps=maps, model=models[1])
    quality = SegmentationQuality(0.82, 0.5, False, [], {"symmetric_share": 0.05})
    findings = Findings(study.study_instance_uid, "T1c", masks, volumes, 1400.0, models, {}, [], {}, rg, CREATED,
                        segmentation_quality=quality)
    return findings, study.source_headers(), t1c


def write_enhanced_study(root: Path) -> Path:
    """A small four-sequence study written as Enhanced MR (one multi-frame file per series)."""
    from glioma_node.dicom_io.mr_writer import SeriesInfo, StudyInfo, write_mr_series
    from glioma_node.dicom_io.uids import derived_uid
    from tests.radiogenomic_trees import AFFINE, tiny_case

    images, _, _ = tiny_case(np.random.default_rng(5), 0, 1)
    study = StudyInfo(derived_uid("enhanced-test", "study"), derived_uid("enhanced-test", "for"), "ENHANCED^TEST", "E1")
    # description, acquisition contrast, (TR, TE, TI) in ms
    names = {"FLAIR": ("FLAIR", "FLUID_ATTENUATED", (9000, 90, 2500)), "T1": ("T1w", "T1", (500, 10, None)),
             "T1c": ("T1wCE", "T1", (500, 10, None)), "T2": ("T2w", "T2", (5000, 100, None))}
    for n, (role, image) in enumerate(images.items()):
        description, contrast, (tr, te, ti) = names[role]
        attributes = {"RepetitionTime": tr, "EchoTime": te, "ScanningSequence": "SE", "MRAcquisitionType": "2D"}
        if ti:
            attributes.update(InversionTime=ti, ScanningSequence="SE\\IR")
        if role == "T1c":
            attributes["ContrastBolusAgent"] = "Gadobutrol"
        series = SeriesInfo(derived_uid("enhanced-test", role), n + 1, description, enhanced=True,
                            acquisition_contrast=contrast, attributes=attributes)
        write_mr_series(image, AFFINE, study, series, root / description)
    return root
