"""The tumour SEG: BINARY, four segments, frames on the grid of one source series.

Segments (codes in :mod:`glioma_node.dicom_io.results.codes`, category Morphologically Abnormal
Structure, anatomic region Brain, algorithm type AUTOMATIC):

1. necrotic / non-enhancing tumour core (BraTS label 1) as Necrosis,
2. peritumoral edema (label 2) as Edema,
3. enhancing tumour (label 4) as Enhancing Lesion,
4. whole tumour (labels 1, 2 and 4) as Neoplasm.

Segments 1–3 do not overlap; segment 4 covers them. Empty frames are kept (viewers
misplace segments otherwise) and ReferencedSeriesSequence names the source series.
"""
from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.sr.coding import Code

from glioma_node.core.findings import LabelMask
from glioma_node.dicom_io.results import codes
from glioma_node.dicom_io.results.context import DEVICE_SERIAL, MANUFACTURER, MODEL_NAME, ResultContext
from glioma_node.dicom_io.results.frames import source_frames


@dataclass(frozen=True)
class SegmentSpec:
    """One segment: its number, label, type code, BraTS labels and display colour (sRGB)."""

    number: int
    key: str
    label: str
    type_code: Code
    brats_labels: tuple[int, ...]
    rgb: tuple[int, int, int]


SEGMENTS = (
    SegmentSpec(1, "necrotic_core", "Necrotic / non-enhancing tumour core", codes.NECROSIS, (1,), (220, 50, 50)),
    SegmentSpec(2, "edema", "Peritumoral edema", codes.EDEMA, (2,), (60, 200, 80)),
    SegmentSpec(3, "enhancing", "Enhancing tumour", codes.ENHANCING_LESION, (4,), (250, 210, 40)),
    SegmentSpec(4, "whole_tumour", "Whole tumour", codes.NEOPLASM, (1, 2, 4), (70, 130, 240)),
)


def algorithm_identification(ctx: ResultContext, model: dict[str, str]) -> hd.AlgorithmIdentificationSequence:
    """Algorithm Identification (name, family AI, version) of one model of the findings."""
    return hd.AlgorithmIdentificationSequence(
        name=f"glioma-node {model.get('name', 'model')}"[:64], family=codes.ARTIFICIAL_INTELLIGENCE,
        version=str(model.get("version", ctx.software))[:64], source=MANUFACTURER,
        parameters={"sha256": str(model.get("sha256", ""))[:64]})


def segment_masks(labels: np.ndarray) -> np.ndarray:
    """``[slice, row, column, segment]`` booleans of :data:`SEGMENTS` from BraTS labels."""
    return np.stack([np.isin(labels, spec.brats_labels) for spec in SEGMENTS], axis=-1)


def tumour_segmentation(ctx: ResultContext, mask: LabelMask) -> hd.seg.Segmentation:
    """The SEG of ``mask`` (one source series) with :data:`SEGMENTS`."""
    series = ctx.series("seg", mask.role)
    model = next((m for m in ctx.findings.models if m.get("task") == "segmentation"), {})
    algorithm = algorithm_identification(ctx, model)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=spec.number, segment_label=spec.label,
            segmented_property_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE,
            segmented_property_type=spec.type_code, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=ctx.uid("segment", spec.key),
            tracking_id=f"glioma-node {spec.key.replace('_', ' ')}", anatomic_regions=[codes.BRAIN],
            display_color=hd.color.CIELabColor.from_rgb(*spec.rgb))
        for spec in SEGMENTS]
    sources = ctx.ordered_sources(mask.series_instance_uid, mask.sop_instance_uids, mask.frame_numbers)
    frames = source_frames(segment_masks(mask.labels).astype(np.uint8), sources, mask.frame_numbers)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=ctx.uid(series.stem, "series"),
        series_number=series.number, sop_instance_uid=ctx.uid(series.stem, "instance"), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME, software_versions=ctx.software,
        device_serial_number=DEVICE_SERIAL, omit_empty_frames=False,
        content_label="TUMOUR", content_description="Brain tumour sub-regions, research use only",
        content_creator_name="glioma-node^automatic", contributing_equipment=ctx.contributing_equipment())
    return ctx.stamp(seg, series)
