"""The single-study pipeline: :func:`run_study` takes one surveyed study to its results.

The worker (a spooled study), the offline command (`glioma-node process`, every study
under a folder) and, through the worker, the Orthanc plugin all run it. Into ``out``
it writes:

* ``findings.json``: status, volumes in ml per sub-region, models (name, version,
  sha256), timings, warnings; on failure the error instead, so no study is silently
  skipped;
* ``nifti/labels.nii.gz``: BraTS labels 1/2/4 on the grid of the reference series
  (T1c), with that series' true affine;
* ``nifti/gradcam-<target>.nii.gz``: the Grad-CAM map (0–1) of each prediction on the
  same grid, and ``explanations.png``: the SHAP bar charts;
* ``dicom/``: the DICOM results (SEG on T1c and on FLAIR, Grad-CAM Parametric Maps,
  the TID 1500 SR, the summary Secondary Capture; see :mod:`glioma_node.dicom_io.results.writer`)
  and ``summary.png``, the summary image.

A study that cannot be used (a required sequence missing, a model error, a series the
reader refuses, anything unexpected) gets a findings.json with ``status: failed`` and
the error; :func:`run_study` never raises for it.

Files are written to a temporary name and renamed, so a crash never leaves a
half-written result behind.
"""
from __future__ import annotations

import errno
import json
import logging
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from glioma_node.core.files import atomic_path, write_text_atomic
from glioma_node.core.findings import RESEARCH_USE, Findings
from glioma_node.core.volume import Volume
from glioma_node.dicom_io.errors import DicomInputError
from glioma_node.dicom_io.nifti import write_nifti
from glioma_node.dicom_io.results.context import ResultVersion
from glioma_node.dicom_io.results.writer import write_results
from glioma_node.dicom_io.study import StudySurvey, load_study
from glioma_node.inference.analyze import Models, analyze
from glioma_node.inference.brain_extraction import BrainExtractor, ExtractorKind
from glioma_node.inference.model_dir import ModelError
from glioma_node.inference.networks import device
from glioma_node.inference.preprocess import PreprocessingError
from glioma_node.inference.radiogenomics.model import RadiogenomicModel
from glioma_node.inference.radiogenomics.radiomics import default_workers
from glioma_node.inference.radiogenomics.shap_plot import plot_attributions
from glioma_node.inference.segmenters import SegmenterKind, SegmenterSpec, load_segmenter
from glioma_node.service.clinical import ClinicalSource
from glioma_node.service.config import Config

log = logging.getLogger(__name__)
# Failures whose message is written for users; anything else gets its type named too.
_EXPECTED = (PreprocessingError, ModelError, DicomInputError, ValueError)
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk fails no study: run_study raises, the job is retried


class OutcomeStatus(StrEnum):
    """How a study's run ended (also the ``status`` of its findings.json)."""

    DONE = "done"
    FAILED = "failed"


@dataclass
class StudyOutcome:
    """What happened to one study: ``status`` DONE, or FAILED with ``error`` saying why."""

    study_instance_uid: str
    status: OutcomeStatus
    folder: Path
    error: str | None = None
    findings: Findings | None = None
    instances: int = 0  # instance files of the study that were found (the snapshot processed)


def load_models(config: Config) -> Models:
    """The models the configuration names, loaded and checksum-checked."""
    seg = config.models.segmentation
    members = [SegmenterSpec(SegmenterKind(m.kind), m.path, tuple(m.folds), m.checkpoint) for m in seg.members]
    segmenter = load_segmenter(seg.kind, seg.path, tuple(seg.folds), seg.checkpoint, members)
    extractor = BrainExtractor(ExtractorKind(config.models.brain_extraction.kind), device())
    rg = config.models.radiogenomics
    radiogenomics = (RadiogenomicModel(rg.path, {"mgmt": rg.mgmt, "idh": rg.idh, "chemo-benefit": rg.chemo_benefit})
                     if rg.enabled else None)
    thresholds = {"mgmt": config.thresholds.mgmt_methylated, "idh": config.thresholds.idh_mutant,
                  "chemo-benefit": config.thresholds.chemo_benefit}
    return Models(segmenter=segmenter, min_component_ml=seg.min_component_ml, radiogenomics=radiogenomics,
                  thresholds=thresholds, workers=rg.workers or default_workers(), brain_extractor=extractor,
                  quality_threshold=seg.quality.min_score, report_when_doubtful=seg.quality.report_when_doubtful)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def write_outputs(findings: Findings, folder: Path, sources: dict[str, list[Dataset]], reference: Volume,
                  version: ResultVersion | None = None) -> None:
    """Everything of one study into ``folder``: the DICOM result objects, the NIfTI masks
    and maps, summary.png, explanations.png, and findings.json last (it lists the DICOM
    objects, so its presence means the study's outputs are complete).

    ``sources``: SeriesInstanceUID → instance headers of the analysed series;
    ``reference``: the reference-role volume.
    """
    (folder / "nifti").mkdir(parents=True, exist_ok=True)
    mask = findings.masks[findings.reference_role]
    arrays = {"labels": (mask.labels, mask.affine)}
    if findings.radiogenomics is not None:
        arrays.update({f"gradcam-{t}": (h.values, h.affine) for t, h in findings.radiogenomics.heat_maps.items()})
        plot_attributions(findings.radiogenomics, folder / "explanations.png")
    for name, (voxels, affine) in arrays.items():
        with atomic_path(folder / "nifti" / f"{name}.nii.gz") as tmp:
            write_nifti(tmp, voxels, affine)
    started = time.perf_counter()
    written = write_results(findings, sources, reference, folder, version)
    findings.timings_s["write_dicom"] = round(time.perf_counter() - started, 2)
    dicom = [{"kind": w.kind, "file": str(w.path.relative_to(folder)), "sop_class_uid": w.sop_class_uid,
              "sop_instance_uid": w.sop_instance_uid, "series_instance_uid": w.series_instance_uid} for w in written]
    _write_json(folder / "findings.json", {"status": OutcomeStatus.DONE.value, **findings.to_json(), "dicom": dicom})


def clinical_source(config: Config) -> ClinicalSource | None:
    """The configured clinical source (``clinical.path``), or None."""
    return ClinicalSource(config.clinical.path) if config.clinical.path is not None else None


def run_study(study: StudySurvey, models: Models, out: Path, *, required_roles: tuple[str, ...] | list[str] = (),
              warnings: tuple[str, ...] | list[str] = (), clinical: ClinicalSource | None = None,
              version: ResultVersion | None = None) -> StudyOutcome:
    """Run one surveyed study end to end into the folder ``out`` (see the module doc).

    ``required_roles``: sequences without which the study fails with that reason;
    ``warnings`` are added to the findings (what the caller knows about the data, such
    as series with fewer instances than their headers announce); ``clinical``: where known
    MGMT/IDH/EGFR status comes from (the survival model's inputs when the model takes them);
    ``version``: which version of the study's results (the node's; default the first).
    """
    out.mkdir(parents=True, exist_ok=True)
    instances = sum(len(s.files.instances) for s in study.series)
    t0 = time.perf_counter()
    try:
        missing = [r for r in required_roles if r not in study.roles]
        if missing:
            raise PreprocessingError(f"sequences missing: {', '.join(missing)} "
                                     f"(found {', '.join(sorted(study.roles)) or 'none'}); run "
                                     "`glioma-node inspect` to see how each series was recognised")
        study_input = load_study(study)
        study_input.warnings.extend(warnings)
        if clinical is not None:
            found = clinical.lookup(study_input.patient_id, study_input.accession_number)
            study_input.known_markers, study_input.known_from = found.markers, found.source
            study_input.warnings.extend(found.warnings)
        findings = analyze(study_input, models)
        findings.timings_s["read_series"] = round(time.perf_counter() - t0 - findings.timings_s["analyze_total"], 2)
        write_outputs(findings, out, study.source_headers(), study_input.volumes[findings.reference_role], version)
    except Exception as exc:  # noqa: BLE001 - any failure is this study's, recorded, and the caller goes on
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:  # the node's disk, not the study: retried later
            raise
        error = str(exc) if isinstance(exc, _EXPECTED) else f"{type(exc).__name__}: {exc}"
        log.error("study %s failed: %s", study.study_instance_uid, error, exc_info=not isinstance(exc, _EXPECTED))
        _write_json(out / "findings.json", {"status": OutcomeStatus.FAILED.value,
                                            "study_instance_uid": study.study_instance_uid, "error": error,
                                            "warnings": list(warnings), "notice": RESEARCH_USE})
        return StudyOutcome(study.study_instance_uid, OutcomeStatus.FAILED, out, error=error, instances=instances)
    return StudyOutcome(study.study_instance_uid, OutcomeStatus.DONE, out, findings=findings, instances=instances)
