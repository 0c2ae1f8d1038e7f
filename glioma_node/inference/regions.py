"""BraTS labels and the nested regions they are reported as.

Labels (BraTS convention): 0 background, 1 necrotic / non-enhancing tumour core,
2 peritumoural edema, 4 enhancing tumour. Regions: whole tumour WT = {1, 2, 4},
tumour core TC = {1, 4}, enhancing tumour ET = {4}. Networks predict the regions
(nested sigmoid channels), reports give both.
"""
from __future__ import annotations

import numpy as np

NECROTIC_CORE, EDEMA, ENHANCING = 1, 2, 4
LABEL_NAMES = {NECROTIC_CORE: "necrotic_core", EDEMA: "edema", ENHANCING: "enhancing"}
REGIONS = ("whole_tumour", "tumour_core", "enhancing_tumour")


def regions_from_labels(labels: np.ndarray) -> np.ndarray:
    """(3, *labels.shape) bool: WT, TC, ET."""
    return np.stack([np.isin(labels, (1, 2, 4)), np.isin(labels, (1, 4)), labels == 4])


def labels_from_regions(wt: np.ndarray, tc: np.ndarray, et: np.ndarray) -> np.ndarray:
    """BraTS uint8 labels from region masks, forcing the nesting ET ⊂ TC ⊂ WT."""
    wt = wt.astype(bool)
    tc = tc.astype(bool) & wt
    et = et.astype(bool) & tc
    labels = np.zeros(wt.shape, np.uint8)
    labels[wt] = EDEMA
    labels[tc] = NECROTIC_CORE
    labels[et] = ENHANCING
    return labels


def volumes_ml(labels: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """Millilitres of each label and each region."""
    out = {name: float((labels == value).sum()) * voxel_ml for value, name in LABEL_NAMES.items()}
    for name, mask in zip(REGIONS, regions_from_labels(labels)):
        out[name] = float(mask.sum()) * voxel_ml
    return {k: round(v, 3) for k, v in out.items()}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two masks; 1.0 when both are empty."""
    a, b = a.astype(bool), b.astype(bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / total


def region_dice(labels: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Dice of WT, TC and ET between two BraTS label maps on one grid."""
    return {name: round(dice(p, r), 4) for name, p, r in zip(REGIONS, regions_from_labels(labels),
                                                              regions_from_labels(reference))}
