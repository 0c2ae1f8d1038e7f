"""The TID 1500 Measurement Report (Comprehensive 3D SR), as IHE AI Results asks.

Content tree::

    Imaging Measurement Report (TID 1500)
    ├─ language, observer context: device observer (UID, name, manufacturer, model, serial)
    ├─ procedure reported: Brain MRI
    ├─ image library: the reference (T1c) series
    └─ imaging measurements
       ├─ one volumetric group (TID 1411) per SEG segment of the reference SEG:
       │  tracking identifier, finding type, finding site Brain, the segment referenced,
       │  its volume in ml with algorithm identification (TID 4019)
       └─ one planar group (TID 1410) per sub-region, same tracking identifier: its
          outline (closed POLYLINE) on the slice where it is largest, its area in mm²
          and its long axis in mm (viewers that draw only SCOORD-based groups, OHIF
          among them, show the finding through this group)
       and, on a follow-up study, one group per lesion at this and the prior time point
       (:mod:`glioma_node.dicom_io.results.sr_follow_up`)
    └─ qualitative evaluations (study level): MGMT status, IDH status and risk group,
       each with its probability (or Cox risk score) and threshold as properties and
       algorithm identification (TID 4019); on a follow-up, the RANO response evaluation

The Current Requested Procedure Evidence Sequence lists the source series and the SEGs
the report references; codes and their sources are in :mod:`glioma_node.dicom_io.results.codes`.
"""
from __future__ import annotations

from collections.abc import Sequence

import contourpy
import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.sr.coding import Code

from glioma_node.core.findings import Radiogenomics
from glioma_node.dicom_io.results import codes
from glioma_node.dicom_io.results.context import DEVICE_SERIAL, MANUFACTURER, MODEL_NAME, ResultContext
from glioma_node.dicom_io.results.seg import SEGMENTS, SegmentSpec
from glioma_node.dicom_io.results.sr_follow_up import lesion_groups, response_evaluation


def _algorithm(ctx: ResultContext, task: str) -> hd.sr.AlgorithmIdentification:
    model = next((m for m in ctx.findings.models if m.get("task") == task), {})
    return hd.sr.AlgorithmIdentification(
        name=f"glioma-node {model.get('name', task)}"[:64], version=str(model.get("version", ctx.software))[:64],
        parameters=[f"sha256={model.get('sha256', '')}"[:64]], family=codes.ARTIFICIAL_INTELLIGENCE,
        manufacturer=MANUFACTURER)


def _observer(ctx: ResultContext) -> hd.sr.ObservationContext:
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=ctx.device_uid, name="glioma-node", manufacturer_name=MANUFACTURER,
        model_name=f"{MODEL_NAME} {ctx.software}", serial_number=DEVICE_SERIAL)
    return hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=dcm_codes.DCM.Device, observer_identifying_attributes=device))


def _tracking(ctx: ResultContext, spec: SegmentSpec) -> hd.sr.TrackingIdentifier:
    """One tracking identifier per sub-region, shared by its volumetric and planar groups:
    they describe one finding (and OHIF merges groups by it, which lets it draw the
    volume with the outline)."""
    return hd.sr.TrackingIdentifier(uid=ctx.uid("sr-finding", spec.key), identifier=spec.label)


def _volume_groups(ctx: ResultContext, seg: Dataset) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    findings = ctx.findings
    mask = findings.masks[findings.reference_role]
    algorithm = _algorithm(ctx, "segmentation")
    groups = []
    for spec in SEGMENTS:
        volume = hd.sr.Measurement(name=codes.VOLUME, value=round(float(findings.volumes_ml.get(spec.key, 0.0)), 3),
                                   unit=codes.MILLILITER, algorithm_id=algorithm)
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(ctx, spec),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=spec.number,
                source_series=hd.sr.SourceSeriesForSegmentation(mask.series_instance_uid)),
            finding_type=spec.type_code, finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            finding_sites=[hd.sr.FindingSite(codes.BRAIN)], algorithm_id=algorithm, measurements=[volume]))
    return groups


def _largest_outline(region: np.ndarray) -> np.ndarray | None:
    """The longest closed contour (column, row; pixel-corner origin, as SCOORD wants) of
    a 2D boolean ``region``, at most 200 points, first point repeated last."""
    padded = np.pad(region.astype(float), 1)
    lines = contourpy.contour_generator(z=padded).lines(0.5)
    if not lines:
        return None
    line = max((np.asarray(x) for x in lines), key=len)[:-1] - 1 + 0.5  # undo the padding; pixel centres sit at +0.5
    line = line[:: max(1, int(np.ceil(len(line) / 200)))]
    return np.vstack([line, line[:1]]).astype(np.float32)


def _outline_groups(ctx: ResultContext) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    findings = ctx.findings
    mask = findings.masks[findings.reference_role]
    sources = ctx.ordered_sources(mask.series_instance_uid, mask.sop_instance_uids, mask.frame_numbers)
    column_mm, row_mm = (float(np.linalg.norm(mask.affine[:3, i])) for i in (0, 1))
    algorithm = _algorithm(ctx, "segmentation")
    groups = []
    for spec in SEGMENTS:
        region = np.isin(mask.labels, spec.brats_labels)
        areas = region.reshape(region.shape[0], -1).sum(axis=1)
        k = int(np.argmax(areas))
        outline = _largest_outline(region[k]) if areas[k] else None
        if outline is None:
            continue
        points = outline * np.array([column_mm, row_mm])
        long_axis = float(np.max(np.linalg.norm(points[:, None] - points[None], axis=-1)))
        if mask.frame_numbers:
            source = hd.sr.SourceImageForRegion(sources[0].SOPClassUID, sources[0].SOPInstanceUID,
                                                [mask.frame_numbers[k]])
        else:
            source = hd.sr.SourceImageForRegion(sources[k].SOPClassUID, sources[k].SOPInstanceUID)
        groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(ctx, spec),
            referenced_region=hd.sr.ImageRegion(hd.sr.GraphicTypeValues.POLYLINE, outline, source),
            finding_type=spec.type_code, finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            finding_sites=[hd.sr.FindingSite(codes.BRAIN)], algorithm_id=algorithm,
            measurements=[
                hd.sr.Measurement(name=codes.AREA, value=round(float(areas[k]) * column_mm * row_mm, 2),
                                  unit=codes.SQUARE_MILLIMETER, algorithm_id=algorithm),
                hd.sr.Measurement(name=codes.LONG_AXIS, value=round(long_axis, 2), unit=codes.MILLIMETER,
                                  algorithm_id=algorithm)]))
    return groups


def _evaluation(name, value, numbers, algorithm: hd.sr.AlgorithmIdentification,
                texts: Sequence[tuple[Code, str]] = ()) -> hd.sr.CodeContentItem:
    """One study-level qualitative evaluation: CODE, with its numbers and texts (HAS
    PROPERTIES) and the algorithm that made it (TID 4019, HAS CONCEPT MOD)."""
    item = hd.sr.CodeContentItem(name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    item.ContentSequence = hd.sr.ContentSequence([
        *(hd.sr.NumContentItem(name=n, value=v, unit=codes.NO_UNITS,
                               relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES) for n, v in numbers),
        *(hd.sr.TextContentItem(name=n, value=v[:1024], relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES)
          for n, v in texts),
        *algorithm])
    return item


def _qualitative_evaluations(ctx: ResultContext, rg: Radiogenomics | None) -> hd.sr.ContainerContentItem:
    """TID 1500's study-level Qualitative Evaluations container: MGMT status, IDH status,
    chemotherapy benefit (when the model predicts it) and the risk group, each with its
    probability (or Cox risk score) and threshold; the segmentation's quality (doubtful or
    plausible, its score, threshold and reasons); and each warning about the data the
    results were computed on (an incomplete series, a missing sequence) as a TEXT Comment,
    so a reader of the SR alone learns it too."""
    items: list = [hd.sr.TextContentItem(name=codes.COMMENT, value=f"Warning: {warning}"[:1024],
                                         relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
                   for warning in ctx.findings.warnings]
    quality = ctx.findings.segmentation_quality
    if quality is not None:
        items.append(_evaluation(codes.SEGMENTATION_QUALITY,
                                 codes.SEGMENTATION_DOUBTFUL if quality.doubtful else codes.SEGMENTATION_PLAUSIBLE,
                                 [(codes.QUALITY_SCORE, round(quality.score, 4)),
                                  (codes.DECISION_THRESHOLD, round(quality.threshold, 4))],
                                 _algorithm(ctx, "segmentation"),
                                 [(codes.QUALITY_REASON, reason) for reason in quality.reasons]))
    evaluation = response_evaluation(ctx, _algorithm(ctx, "segmentation"))
    if evaluation is not None:
        items.append(evaluation)
    if rg is None:
        return _container(items)
    algorithm = _algorithm(ctx, "radiogenomics")
    for target, prediction in rg.predictions.items():
        name, values = codes.STATUS[target]
        items.append(_evaluation(name, values[prediction.status],
                                 [(codes.PROBABILITY, round(prediction.probability, 4)),
                                  (codes.DECISION_THRESHOLD, round(prediction.threshold, 4))], algorithm))
    if rg.risk is not None:
        items.append(_evaluation(codes.RISK_GROUP, codes.RISK[rg.risk.group],
                                 [(codes.COX_RISK_SCORE, round(rg.risk.score, 4)),
                                  (codes.RISK_CUTOFF, round(rg.risk.cutoff, 4))], algorithm,
                                 [(codes.RISK_INPUT, f"{marker.upper()}: {source}")
                                  for marker, source in rg.risk.inputs.items()]))
    return _container(items)


def _container(items: list) -> hd.sr.ContainerContentItem:
    container = hd.sr.ContainerContentItem(name=codes.QUALITATIVE_EVALUATIONS,
                                           relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _library_entry(ds: Dataset) -> Dataset:
    """``ds`` as highdicom's Image Library reads it. An enhanced (multi-frame) image keeps
    its geometry in functional groups, so a shallow copy gets the shared pixel measures and
    orientation and the first frame's position at top level (the entry then describes
    the first frame, as TID 1602 allows one position per entry)."""
    if "PerFrameFunctionalGroupsSequence" not in ds or "PixelSpacing" in ds:
        return ds
    view = Dataset()
    view.update(ds)
    shared, first = ds.SharedFunctionalGroupsSequence[0], ds.PerFrameFunctionalGroupsSequence[0]

    def group(name: str) -> Dataset:
        return (first.get(name) or shared.get(name))[0]
    measures = group("PixelMeasuresSequence")
    view.PixelSpacing = measures.PixelSpacing
    if "SliceThickness" in measures:
        view.SliceThickness = measures.SliceThickness
    view.ImageOrientationPatient = group("PlaneOrientationSequence").ImageOrientationPatient
    view.ImagePositionPatient = group("PlanePositionSequence").ImagePositionPatient
    return view


def measurement_report(ctx: ResultContext, seg: Dataset, evidence: Sequence[Dataset]) -> hd.sr.Comprehensive3DSR:
    """The report of ``ctx.findings``; ``seg`` is the SEG on the reference series, whose
    segments the volumes reference, and ``evidence`` the other result objects to list."""
    series = ctx.series("sr")
    findings = ctx.findings
    mask = findings.masks[findings.reference_role]
    library = [_library_entry(ds) for ds in
               ctx.ordered_sources(mask.series_instance_uid, mask.sop_instance_uids, mask.frame_numbers)]
    groups: list = [*_volume_groups(ctx, seg), *_outline_groups(ctx),
                    *lesion_groups(ctx, _algorithm(ctx, "segmentation"))]
    report = hd.sr.MeasurementReport(observation_context=_observer(ctx), procedure_reported=codes.BRAIN_MRI,
                                     imaging_measurements=groups, referenced_images=library)
    if (findings.radiogenomics is not None or findings.warnings or findings.segmentation_quality is not None
            or findings.follow_up is not None):
        report[0].ContentSequence.append(_qualitative_evaluations(ctx, findings.radiogenomics))
    sources = [ds for uid in sorted(ctx.sources) for ds in ctx.sources[uid]]
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg, *evidence], content=report, series_instance_uid=ctx.uid(series.stem, "series"),
        series_number=series.number, sop_instance_uid=ctx.uid(series.stem, "instance"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False,
        performed_procedure_codes=[codes.BRAIN_MRI], contributing_equipment=ctx.contributing_equipment(),
        previous_versions=list(ctx.version.predecessors) or None)
    sr.CodingSchemeIdentificationSequence = DicomSequence([codes.coding_scheme_identification()])  # type: ignore[assignment]  # highdicom types it as a list
    return ctx.stamp(sr, series)
