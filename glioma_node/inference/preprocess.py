"""From the four role volumes of a study to co-registered 1 mm channels, and back.

Steps (each kept so every result can be mapped back exactly):

1. FLAIR, T1 and T2 are rigidly registered to the reference role (T1c by default) with
   :func:`glioma_node.inference.registration.register_rigid`; a rejected registration falls back
   to the scanner coordinates and adds a warning.
2. Every role is resampled (trilinear) onto one *canonical* grid: axis-aligned LPS,
   1 mm isotropic, covering the reference series' field of view. Networks therefore
   always see the same orientation, whatever the acquisition plane.
3. :meth:`PreparedStudy.to_source` maps an array on that grid back onto the grid of any
   source series, through the inverse of the registration of that series.

Brain extraction and intensity normalisation follow in :mod:`glioma_node.inference.segmentation`,
because the brain mask comes from the network.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from glioma_node.core.grid import Grid
from glioma_node.core.roles import ROLES
from glioma_node.core.volume import Volume
from glioma_node.inference.registration import Registration, register_rigid
from glioma_node.inference.resample import canonical_grid, resample


class PreprocessingError(ValueError):
    """The study cannot be prepared (e.g. a required sequence is missing)."""


@dataclass
class PreparedStudy:
    """Co-registered channels on one canonical grid, and the way back to each series.

    ``channels[role]`` is float32 ``[z, y, x]`` on ``grid`` (raw scanner intensities,
    not normalised). ``transforms[role]`` maps a point of the canonical grid (LPS mm)
    to the matching point of that role's source series.
    """

    grid: Grid
    channels: dict[str, np.ndarray]
    source_grids: dict[str, Grid]
    transforms: dict[str, sitk.Transform]
    registrations: dict[str, Registration]
    reference_role: str
    warnings: list[str] = field(default_factory=list)

    def to_source(self, array: np.ndarray, role: str, interpolation: str = "linear") -> np.ndarray:
        """``array`` (on :attr:`grid`) resampled onto the grid of ``role``'s source series.

        Use ``linear`` for probabilities and threshold afterwards, ``nearest`` for labels.
        """
        return resample(array, self.grid, self.source_grids[role], self.transforms[role].GetInverse(),
                        interpolation)


def volume_grid(volume: Volume) -> Grid:
    """The grid a Volume lies on."""
    return Grid(volume.shape, volume.affine)


# The series every other one is registered to, best first: T1c shows the tumour parts
# SEG and Grad-CAM are read on; FLAIR defines the whole tumour when there is no T1.
REFERENCE_ORDER = ("T1c", "T1", "FLAIR", "T2")


def prepare(volumes: Mapping[str, Volume], reference_role: str | None = None, spacing_mm: float = 1.0,
            same_frame: bool = True, multiple: int = 16, roles: tuple[str, ...] | None = None) -> PreparedStudy:
    """Co-register ``volumes`` (role → Volume) to ``reference_role`` and resample them.

    ``roles``: the roles to prepare (default: those of :data:`ROLES` present);
    ``reference_role``: default the first present of :data:`REFERENCE_ORDER`.
    ``same_frame``: the series share a Frame of Reference (registration starts from the
    scanner alignment). ``multiple``: grid dimensions are rounded up to a multiple of it
    (a network that halves its input four times needs 16).
    Raises :class:`PreprocessingError` naming the missing roles.
    """
    roles = roles or tuple(r for r in ROLES if r in volumes)
    missing = [r for r in roles if r not in volumes]
    if missing or not roles:
        raise PreprocessingError(f"sequences missing for segmentation: {', '.join(missing) or 'all'} "
                                 f"(found {', '.join(sorted(volumes)) or 'none'})")
    reference_role = reference_role or next(r for r in REFERENCE_ORDER if r in roles)
    reference = volumes[reference_role]
    ref_grid = volume_grid(reference)
    grid = canonical_grid(ref_grid.corners(), spacing_mm, multiple)
    channels: dict[str, np.ndarray] = {}
    transforms: dict[str, sitk.Transform] = {}
    registrations: dict[str, Registration] = {}
    warnings: list[str] = []
    for role in roles:
        vol = volumes[role]
        if role == reference_role:
            transform: sitk.Transform = sitk.Euler3DTransform()
        else:
            reg = register_rigid(reference.voxels, ref_grid, vol.voxels, volume_grid(vol), same_frame)
            registrations[role] = reg
            if not reg.accepted:
                warnings.append(f"{role} registration to {reference_role} rejected ({reg.reason}); "
                                f"scanner coordinates used")
            transform = reg.transform
        transforms[role] = transform
        channels[role] = resample(vol.voxels, volume_grid(vol), grid, transform, "linear")
    return PreparedStudy(grid, channels, {r: volume_grid(volumes[r]) for r in roles}, transforms, registrations,
                         reference_role, warnings)
