"""The Grad-CAM Parametric Map of one prediction: float32, 0–1, on the reference series grid.

Values are relative relevance with no unit (Real World Value Mapping unit
(1, UCUM, "no units"), identity slope and intercept) and a 0–1 window comes with the
object. The colour palette is *not* in the object: DICOM applies a Palette Color Lookup
Table to integer stored values only (Pixel Presentation COLOR_RANGE with Pixel Data),
and these maps are Float Pixel Data, as the issue asks; highdicom refuses the
combination for that reason. The palette the node recommends is "hot" (the summary image
uses it), and :func:`hot_palette` builds it for an integer export.
"""
from __future__ import annotations

import highdicom as hd
import numpy as np
from matplotlib import colormaps
from pydicom.dataset import Dataset

from glioma_node.core.findings import HeatMap
from glioma_node.core.targets import TARGET_INFO
from glioma_node.dicom_io.results import codes
from glioma_node.dicom_io.results.context import DEVICE_SERIAL, MANUFACTURER, MODEL_NAME, ResultContext
from glioma_node.dicom_io.results.frames import source_frames

TARGET_NAMES = {t: info.title for t, info in TARGET_INFO.items()}
TARGET_CODES = {t: info.code for t, info in TARGET_INFO.items()}


def hot_palette(ctx: ResultContext) -> hd.PaletteColorLUTTransformation:
    """A 256-entry 'hot' palette (black, red, yellow, white) for the heat maps."""
    rgb = (colormaps["hot"](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return hd.PaletteColorLUTTransformation.from_combined_lut(rgb, palette_color_lut_uid=ctx.uid("hot-palette"))


def heat_map(ctx: ResultContext, target: str, heat: HeatMap) -> hd.pm.ParametricMap:
    """The Parametric Map of ``heat`` (the Grad-CAM of ``target``, ``mgmt`` or ``idh``)."""
    series = ctx.series("pmap", target)
    name = TARGET_NAMES.get(target, target)
    label = f"GRADCAM_{TARGET_CODES.get(target, target.upper())}"[:16]
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=label, lut_explanation=f"Grad-CAM relevance for {name} (0-1)"[:64],
        unit=codes.NO_UNITS, value_range=(0.0, 1.0), slope=1.0, intercept=0.0, quantity_definition=codes.GRAD_CAM)
    sources = ctx.ordered_sources(heat.series_instance_uid, heat.sop_instance_uids, heat.frame_numbers)
    frames = source_frames(np.clip(heat.values, 0, 1).astype(np.float32), sources, heat.frame_numbers)
    pmap = hd.pm.ParametricMap(
        source_images=sources, pixel_array=frames, series_instance_uid=ctx.uid(series.stem, "series"),
        series_number=series.number, sop_instance_uid=ctx.uid(series.stem, "instance"), instance_number=1,
        manufacturer=MANUFACTURER, manufacturer_model_name=MODEL_NAME, software_versions=ctx.software,
        device_serial_number=DEVICE_SERIAL, contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label=label,
        content_description=f"Grad-CAM for {name}, research use only"[:64],
        content_creator_name="glioma-node^automatic",
        contributing_equipment=ctx.contributing_equipment())
    pmap.CodingSchemeIdentificationSequence = [codes.coding_scheme_identification()]
    # Frame Anatomy: the brain, unpaired. dcmqi's reader needs it, and it stands in for
    # General Series Laterality, which would otherwise have to be present but empty.
    anatomy = Dataset()
    anatomy.FrameLaterality = "U"
    anatomy.AnatomicRegionSequence = [hd.sr.CodedConcept.from_code(codes.BRAIN)]
    pmap.SharedFunctionalGroupsSequence[0].FrameAnatomySequence = [anatomy]
    return ctx.stamp(pmap, series)
