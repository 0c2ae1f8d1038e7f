"""The Volume: one 3D image with its place in patient space (data only, no DICOM).

Conventions, used everywhere in glioma-node:

* ``voxels`` is a float32 array indexed ``[slice, row, column]`` (z, y, x), as
  SimpleITK's ``GetArrayFromImage`` returns it.
* ``affine`` is a 4×4 matrix mapping a voxel index ``(column, row, slice, 1)`` to
  patient coordinates in millimetres, in DICOM's LPS frame (x to the patient's
  left, y to posterior, z to superior). Column 0 of the affine is the step of one
  column, column 1 of one row, column 2 of one slice, column 3 the centre of the
  first voxel.
* ``sop_instance_uids[k]`` is the instance slice ``k`` came from (the same UID for
  every slice of a multi-frame object, with ``frame_numbers[k]`` telling which frame).

``dicom_io`` builds Volumes from DICOM; ``inference`` only ever sees Volumes.
The geometry is a :class:`~glioma_node.core.grid.Grid`; ``Volume.grid`` gives it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from glioma_node.core.grid import Grid


@dataclass(frozen=True)
class SeriesMetadata:
    """What later stages need to know about the series a Volume came from.

    Times are DICOM strings (``HHMMSS.FFFFFF``) as the headers give them; physics
    values are in milliseconds (TR, TE, TI) and tesla (field strength); ``None`` when
    the header does not say.
    """

    study_instance_uid: str
    series_instance_uid: str
    frame_of_reference_uid: str | None = None
    modality: str = "MR"
    sop_class_uid: str = ""
    series_description: str = ""
    protocol_name: str = ""
    series_number: int | None = None
    series_time: str = ""
    manufacturer: str = ""
    repetition_time_ms: float | None = None
    echo_time_ms: float | None = None
    inversion_time_ms: float | None = None
    mr_acquisition_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Volume:
    """A 3D image on a regular grid in patient (LPS, mm) space; see the module doc."""

    voxels: np.ndarray
    affine: np.ndarray
    sop_instance_uids: list[str]
    metadata: SeriesMetadata
    frame_numbers: list[int] | None = None

    def __post_init__(self) -> None:
        if self.voxels.ndim != 3:
            raise ValueError(f"Volume voxels must be 3D (slice, row, column); got shape {self.voxels.shape}")
        if self.affine.shape != (4, 4):
            raise ValueError(f"Volume affine must be 4x4; got {self.affine.shape}")
        if len(self.sop_instance_uids) != self.voxels.shape[0]:
            raise ValueError(
                f"Volume has {self.voxels.shape[0]} slices but {len(self.sop_instance_uids)} SOP Instance UIDs"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(slices, rows, columns)."""
        return tuple(int(n) for n in self.voxels.shape)  # type: ignore[return-value]

    @property
    def grid(self) -> Grid:
        """The voxel grid (shape and affine) this volume lies on."""
        return Grid(self.shape, self.affine)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm as (column step, row step, slice step)."""
        return self.grid.spacing

    @property
    def direction(self) -> np.ndarray:
        """3×3 matrix of unit vectors (LPS): columns are the column, row and slice directions."""
        return self.grid.direction

    @property
    def origin(self) -> np.ndarray:
        """Centre of the first voxel, LPS mm."""
        return self.grid.origin
