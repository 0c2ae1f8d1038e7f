"""Resampling between regular grids in patient space (SimpleITK underneath).

Grids follow :mod:`glioma_node.core.grid` (voxel ``(column, row, slice)`` to LPS
millimetres). SimpleITK works in the same LPS physical space, so a Grid converts to an
``sitk.Image`` by splitting the affine into origin, spacing and direction
(:func:`to_image`).

Transforms passed to :func:`resample` follow SimpleITK's convention: they map a point
of the *target* grid to the point of the *source* image to sample (a pull-back).
"""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from glioma_node.core.grid import Grid


def to_image(grid: Grid, voxels: np.ndarray | None = None) -> sitk.Image:
    """An ``sitk.Image`` on ``grid``, holding ``voxels`` (``[z, y, x]``), or an empty
    uint8 image when ``voxels`` is None (a resampling reference)."""
    if voxels is None:
        image = sitk.Image([int(n) for n in grid.shape[::-1]], sitk.sitkUInt8)
    elif tuple(voxels.shape) != tuple(grid.shape):
        raise ValueError(f"voxels of shape {voxels.shape} do not fit a grid of shape {grid.shape}")
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(voxels))
    image.SetSpacing(tuple(float(s) for s in grid.spacing))
    image.SetOrigin(tuple(float(v) for v in grid.origin))
    image.SetDirection(tuple(float(v) for v in grid.direction.ravel()))
    return image


def canonical_grid(points_lps: np.ndarray, spacing_mm: float, multiple: int = 1) -> Grid:
    """The axis-aligned grid (x to the left, y to posterior, z to superior, all indices
    increasing along +L, +P, +S) of ``spacing_mm`` voxels covering ``points_lps``.

    ``multiple`` rounds each dimension up to a multiple (networks that halve the grid
    several times need it); the extra voxels are split evenly on both sides.
    Every study is segmented on such a grid, so a network only ever sees one orientation.
    """
    lo, hi = points_lps.min(axis=0), points_lps.max(axis=0)
    size = np.floor((hi - lo) / spacing_mm).astype(int) + 1
    padded = (np.ceil(size / multiple) * multiple).astype(int)
    lo = lo - (padded - size) / 2.0 * spacing_mm
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = lo
    return Grid((int(padded[2]), int(padded[1]), int(padded[0])), affine)


_INTERPOLATORS = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}


def resample(voxels: np.ndarray, source: Grid, target: Grid, transform: sitk.Transform | None = None,
             interpolation: str = "linear", default: float = 0.0) -> np.ndarray:
    """``voxels`` (on ``source``) sampled at every voxel centre of ``target``.

    ``transform`` maps target points to source points (identity when None).
    ``interpolation`` is ``nearest`` (labels), ``linear`` or ``bspline``; points outside
    the source take ``default``. Returns float32, or the input dtype for ``nearest``.
    """
    image = to_image(source, voxels.astype(np.float32) if interpolation != "nearest" else voxels)
    out = sitk.Resample(image, to_image(target), transform or sitk.Transform(),
                        _INTERPOLATORS[interpolation], float(default),
                        image.GetPixelID())
    return sitk.GetArrayFromImage(out)
