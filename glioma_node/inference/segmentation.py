"""Segment one study: prepare, predict, clean up, map back onto every source series.

Labels follow BraTS (1 necrotic / non-enhancing core, 2 edema, 4 enhancing); see
:mod:`glioma_node.inference.regions`. Volumes are measured on the 1 mm canonical grid.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from glioma_node.core.findings import SegmentationQuality
from glioma_node.core.grid import Grid
from glioma_node.core.roles import ROLES
from glioma_node.core.volume import Volume
from glioma_node.inference.brain_extraction import BrainExtractor, BrainMask
from glioma_node.inference.preprocess import PreparedStudy, PreprocessingError, prepare
from glioma_node.inference.quality import DEFAULT_THRESHOLD, assess_prepared
from glioma_node.inference.regions import labels_from_regions, volumes_ml
from glioma_node.inference.segmenters.base import RegionMaps, Segmenter


@dataclass
class Segmentation:
    """The result of :func:`segment`.

    ``labels`` is uint8 BraTS labels on ``grid`` (1 mm canonical); ``source_labels[role]``
    the same labels on the grid of that role's source series (what SEG objects and
    ``labels.nii.gz`` carry). ``brain`` is the brain mask on ``grid`` and
    ``brain_extraction`` how it was made (extractor, series). ``timings_s`` in seconds;
    ``volumes_ml`` and ``brain_volume_ml`` in millilitres. ``quality``: how far the mask can
    be trusted (:mod:`glioma_node.inference.quality`).
    """

    grid: Grid
    labels: np.ndarray
    source_labels: dict[str, np.ndarray]
    brain: np.ndarray
    volumes_ml: dict[str, float]
    brain_volume_ml: float
    model: dict[str, str]
    prepared: PreparedStudy
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    brain_extraction: dict[str, str] = field(default_factory=dict)
    quality: SegmentationQuality | None = None


def remove_small_components(mask: np.ndarray, min_voxels: int) -> np.ndarray:
    """``mask`` without its 26-connected components smaller than ``min_voxels``."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n == 0:
        return mask
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
    keep = np.concatenate([[False], sizes >= min_voxels])
    return keep[labels]


def compose(maps: RegionMaps, threshold: float = 0.5, min_voxels: int = 0) -> np.ndarray:
    """BraTS labels from region probabilities; whole-tumour islands under ``min_voxels`` dropped."""
    wt = maps.whole_tumour > threshold
    if min_voxels:
        wt = remove_small_components(wt, min_voxels)
    return labels_from_regions(wt, maps.tumour_core > threshold, maps.enhancing_tumour > threshold)


def _to_source(prepared: PreparedStudy, maps: RegionMaps, role: str, threshold: float, min_voxels: int) -> np.ndarray:
    """Labels on a source grid, from probabilities resampled there (sharper than resampling labels)."""
    wt, tc, et = (prepared.to_source(m.astype(np.float32), role, "linear")
                  for m in (maps.whole_tumour, maps.tumour_core, maps.enhancing_tumour))
    on_source = RegionMaps(wt, tc, et)
    grid = prepared.source_grids[role]
    scale = prepared.grid.voxel_ml / grid.voxel_ml
    return compose(on_source, threshold, int(min_voxels * scale))


# The whole tumour is the T2-weighted hyperintensity: no segmenter runs without one of these.
WHOLE_TUMOUR_ROLES = ("FLAIR", "T2")


def missing_input_warnings(present: tuple[str, ...] | list[str], segmenter: Segmenter) -> list[str]:
    """What a study segmented without some of the four sequences must say about it."""
    missing = [r for r in ROLES if r not in present]
    if not missing:
        return []
    lines = [f"segmented without {', '.join(missing)}: {segmenter.describe()['name']} ran on "
             f"{', '.join(r for r in ROLES if r in present)} only"]
    if "T1c" in missing:
        lines.append("no T1c: tumour core and enhancing tumour cannot be told apart from edema and are not reported")
    return lines


def segment(volumes: Mapping[str, Volume], segmenter: Segmenter, extractor: BrainExtractor | None = None,
            same_frame: bool = True, min_component_ml: float = 0.3, threshold: float = 0.5,
            quality_threshold: float = DEFAULT_THRESHOLD) -> Segmentation:
    """Segment the study made of ``volumes`` (role → Volume; FLAIR, T1, T1c, T2, or the
    subset of them ``segmenter.required_roles`` allows).

    ``extractor``: brain extraction (default: deepbet, see :mod:`glioma_node.inference.brain_extraction`);
    tumour is only sought inside its mask. ``min_component_ml``: tumour islands smaller
    than this are dropped (noise, vessels).
    """
    if not any(r in volumes for r in WHOLE_TUMOUR_ROLES):
        raise PreprocessingError(f"no FLAIR or T2 in this study (found {', '.join(sorted(volumes)) or 'none'}): "
                                 "the whole tumour is defined on them, so it cannot be segmented")
    needed = [r for r in segmenter.required_roles if r not in volumes]
    if needed:
        raise PreprocessingError(f"{segmenter.describe()['name']} needs {', '.join(segmenter.required_roles)}; "
                                 f"this study lacks {', '.join(needed)} (found {', '.join(sorted(volumes)) or 'none'})")
    extractor = extractor or BrainExtractor()
    t0 = time.perf_counter()
    prepared = prepare(volumes, same_frame=same_frame)
    t1 = time.perf_counter()
    brain: BrainMask = extractor.extract(prepared)
    t2 = time.perf_counter()
    maps = segmenter.predict(prepared, brain.mask)
    # Tumour only inside the brain (two voxels of margin for partial volume at its surface).
    inside = ndimage.binary_dilation(brain.mask, iterations=2).astype(np.float32)
    core = maps.tumour_core * inside if "T1c" in prepared.channels else np.zeros_like(maps.tumour_core)
    enhancing = maps.enhancing_tumour * inside if "T1c" in prepared.channels else np.zeros_like(core)
    notes = list(maps.notes)
    agreement, agreement_of = maps.agreement, maps.agreement_of
    maps = RegionMaps(maps.whole_tumour * inside, core, enhancing)
    t3 = time.perf_counter()
    min_voxels = int(round(min_component_ml / prepared.grid.voxel_ml))
    labels = compose(maps, threshold, min_voxels)
    source = {role: _to_source(prepared, maps, role, threshold, min_voxels) for role in prepared.source_grids}
    t4 = time.perf_counter()
    warnings = (list(prepared.warnings) + brain.warnings() + missing_input_warnings(list(prepared.channels), segmenter)
                + notes)
    region_ml = volumes_ml(labels, prepared.grid.voxel_ml)
    if region_ml["whole_tumour"] == 0:
        warnings.append("no tumour found")
    quality = assess_prepared(prepared, brain.mask, maps.whole_tumour, agreement, agreement_of,
                              quality_threshold, mask=labels > 0)
    t5 = time.perf_counter()
    return Segmentation(
        grid=prepared.grid, labels=labels, source_labels=source, brain=brain.mask, volumes_ml=region_ml,
        brain_volume_ml=brain.volume_ml, model=segmenter.describe(), prepared=prepared,
        timings_s={"preprocess": round(t1 - t0, 2), "brain_extraction": round(t2 - t1, 2),
                   "inference": round(t3 - t2, 2), "postprocess": round(t4 - t3, 2), "quality": round(t5 - t4, 2)},
        quality=quality,
        warnings=warnings,
        brain_extraction={**extractor.describe(), "method": brain.method, "series_role": brain.role or ""})
