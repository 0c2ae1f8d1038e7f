"""Regular grids in patient space and resampling between them (SimpleITK underneath).

A :class:`Grid` is a shape ``(z, y, x)`` and an affine with the conventions of
:mod:`inference.volume` (voxel ``(column, row, slice)`` to LPS millimetres). SimpleITK
works in the same LPS physical space, so a Grid converts to an ``sitk.Image`` by
splitting the affine into origin, spacing and direction.

Transforms passed to :func:`resample` follow SimpleITK's convention: they map a point
of the *target* grid to the point of the *source* image to sample (a pull-back).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (slices, rows, columns) and its 4×4 LPS affine (mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm as (column step, row step, slice step)."""
        return tuple(float(np.linalg.norm(self.affine[:3, i])) for i in range(3))  # type: ignore[return-value]

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    def image(self, voxels: np.ndarray | None = None) -> sitk.Image:
        """An ``sitk.Image`` on this grid, holding ``voxels`` (``[z, y, x]``), or an empty
        uint8 image when ``voxels`` is None (a resampling reference)."""
        if voxels is None:
            image = sitk.Image([int(n) for n in self.shape[::-1]], sitk.sitkUInt8)
        elif tuple(voxels.shape) != tuple(self.shape):
            raise ValueError(f"voxels of shape {voxels.shape} do not fit a grid of shape {self.shape}")
        else:
            image = sitk.GetImageFromArray(np.ascontiguousarray(voxels))
        spacing = np.asarray(self.spacing)
        image.SetSpacing(tuple(float(s) for s in spacing))
        image.SetOrigin(tuple(float(v) for v in self.affine[:3, 3]))
        image.SetDirection(tuple(float(v) for v in (self.affine[:3, :3] / spacing).ravel()))
        return image

    def corners(self) -> np.ndarray:
        """The eight corner voxel centres in LPS mm, shape (8, 3)."""
        z, y, x = (np.array([0, n - 1]) for n in self.shape)
        idx = np.array([[i, j, k, 1.0] for i in x for j in y for k in z])
        return (self.affine @ idx.T).T[:, :3]


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
    image = source.image(voxels.astype(np.float32) if interpolation != "nearest" else voxels)
    out = sitk.Resample(image, target.image(), transform or sitk.Transform(),
                        _INTERPOLATORS[interpolation], float(default),
                        image.GetPixelID())
    return sitk.GetArrayFromImage(out)
