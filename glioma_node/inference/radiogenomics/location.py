"""Where the tumour lies in the brain, as features (IDH-mutant gliomas favour the frontal lobe).

Positions are fractions of the brain's extent along each LPS axis, so they do not depend
on head size or on where the scanner put the origin.
"""
from __future__ import annotations

import numpy as np

from glioma_node.core.grid import Grid, shape3


def _points_mm(mask: np.ndarray, grid: Grid) -> np.ndarray:
    zyx = np.argwhere(mask)[:, ::-1].astype(float)
    return zyx @ grid.affine[:3, :3].T + grid.affine[:3, 3]


def location_features(labels: np.ndarray, brain: np.ndarray, grid: Grid) -> dict[str, float]:
    """``location.*``: tumour centroid as 0–1 fractions of the brain box (LPS) and laterality.

    ``location.anterior``: 1 at the front of the brain, 0 at the back; ``location.superior``:
    1 at the top; ``location.lateral``: 0 at the midline, 1 at the side;
    ``location.brain_fraction``: whole-tumour volume over brain volume.
    """
    tumour = _points_mm(labels > 0, grid)
    if not len(tumour):
        raise ValueError("no tumour voxels: location features need a segmented tumour")
    half = brain[::2, ::2, ::2]
    brain_pts = _points_mm(half, Grid(shape3(half.shape), grid.affine @ np.diag([2, 2, 2, 1])))
    lo, hi = np.percentile(brain_pts, 1, axis=0), np.percentile(brain_pts, 99, axis=0)
    centre = tumour.mean(axis=0)
    frac = np.clip((centre - lo) / np.maximum(hi - lo, 1.0), 0, 1)
    return {
        "location.anterior": float(1.0 - frac[1]),  # LPS: +y is posterior
        "location.superior": float(frac[2]),
        "location.lateral": float(abs(frac[0] - 0.5) * 2.0),
        "location.brain_fraction": float((labels > 0).sum() / max(1, int(brain.sum()))),
    }
