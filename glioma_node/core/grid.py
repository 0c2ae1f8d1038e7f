"""A regular voxel grid in patient space: a shape and the affine that places it.

Conventions (shared with :mod:`glioma_node.core.volume`): ``shape`` is
``(slices, rows, columns)``, i.e. ``(z, y, x)``; the 4×4 ``affine`` maps a voxel index
``(column, row, slice, 1)`` to patient coordinates in millimetres in DICOM's LPS frame.
Resampling between grids lives in :mod:`glioma_node.inference.resample`.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (slices, rows, columns) and its 4×4 LPS affine (mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm as (column step, row step, slice step)."""
        return spacing_of(self.affine)

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0

    @property
    def direction(self) -> np.ndarray:
        """3×3 matrix of unit vectors (LPS): columns are the column, row and slice directions."""
        return self.affine[:3, :3] / np.asarray(self.spacing)

    @property
    def origin(self) -> np.ndarray:
        """Centre of the first voxel, LPS mm."""
        return self.affine[:3, 3].copy()

    def corners(self) -> np.ndarray:
        """The eight corner voxel centres in LPS mm, shape (8, 3)."""
        z, y, x = (np.array([0, n - 1]) for n in self.shape)
        idx = np.array([[i, j, k, 1.0] for i in x for j in y for k in z])
        return (self.affine @ idx.T).T[:, :3]


def spacing_of(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm of a 4×4 affine, as (column step, row step, slice step)."""
    return tuple(float(np.linalg.norm(affine[:3, i])) for i in range(3))  # type: ignore[return-value]


def shape3(values: object) -> tuple[int, int, int]:
    """Three integers (a shape, index or size in z, y, x) from any sequence of three numbers."""
    items = list(values) if isinstance(values, Iterable) else []
    if len(items) != 3:
        raise ValueError(f"expected three numbers (z, y, x), got {values!r}")
    return int(items[0]), int(items[1]), int(items[2])
