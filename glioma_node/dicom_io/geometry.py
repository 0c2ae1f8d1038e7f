"""Slice geometry: sort slices along the normal and refuse stacks that are not one volume.

All positions and vectors are DICOM patient coordinates (LPS, mm). ``orientation`` is
ImageOrientationPatient: the row direction (increasing column index) then the column
direction (increasing row index).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from glioma_node.dicom_io.errors import SeriesRefused

ORIENTATION_TOLERANCE = 1e-3  # max difference of direction cosines between slices
POSITION_TOLERANCE_MM = 0.01  # positions closer than this are the same slice location
SPACING_RELATIVE_TOLERANCE = 0.02  # slice steps may differ by 2 % (rounding in headers)
SPACING_ABSOLUTE_TOLERANCE_MM = 0.02


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """Unit normal of the image plane: row direction × column direction."""
    normal = np.cross(orientation[:3], orientation[3:6])
    return normal / np.linalg.norm(normal)


@dataclass(frozen=True)
class Stack:
    """Slices in order along the normal, with the uniform step between them."""

    order: list[int]
    step: np.ndarray  # LPS vector from one slice centre to the next, mm


def check_orientation(orientations: np.ndarray) -> np.ndarray:
    """The common orientation of all slices, or :class:`SeriesRefused` if they differ."""
    reference = orientations[0]
    if np.linalg.norm(reference[:3]) < 0.5 or np.linalg.norm(reference[3:6]) < 0.5:
        raise SeriesRefused("missing_geometry", "ImageOrientationPatient is not a pair of unit vectors")
    deviation = np.abs(orientations - reference).max(axis=1)
    if np.any(deviation > ORIENTATION_TOLERANCE):
        distinct = len({tuple(np.round(o, 3)) for o in orientations})
        raise SeriesRefused(
            "mixed_orientation",
            f"slices have {distinct} different orientations (a localizer or a multi-stack series); "
            "one volume needs one orientation",
        )
    return reference


def stack_slices(positions: np.ndarray, orientation: np.ndarray) -> Stack:
    """Sort slice positions along the normal and check they form a uniform stack.

    Raises :class:`SeriesRefused` for a single slice, duplicate locations, gaps,
    non-uniform spacing, or slices that are not stacked along the normal (shear,
    gantry tilt).
    """
    n = len(positions)
    if n < 2:
        raise SeriesRefused("single_slice", "the series has a single slice; a volume needs at least two")
    normal = slice_normal(orientation)
    distances = positions @ normal
    order = [int(i) for i in np.argsort(distances, kind="stable")]
    sorted_d = distances[order]
    steps = np.diff(sorted_d)
    if np.any(steps < POSITION_TOLERANCE_MM):
        duplicates = int(np.sum(steps < POSITION_TOLERANCE_MM))
        raise SeriesRefused(
            "duplicate_positions",
            f"{duplicates} slices share a location with another slice; a volume has one slice per location",
        )
    median = float(np.median(steps))
    tolerance = max(SPACING_ABSOLUTE_TOLERANCE_MM, SPACING_RELATIVE_TOLERANCE * median)
    bad = np.where(np.abs(steps - median) > tolerance)[0]
    if len(bad):
        i = int(bad[0])
        kind = "gap" if steps[i] > median else "nonuniform_spacing"
        what = "a gap" if kind == "gap" else "non-uniform slice spacing"
        raise SeriesRefused(
            kind,
            f"{what}: slices {i + 1} and {i + 2} (along the normal) are {steps[i]:.3f} mm apart, "
            f"the usual step is {median:.3f} mm ({len(bad)} irregular steps); missing or extra slices?",
        )
    sorted_positions = positions[order]
    step = (sorted_positions[-1] - sorted_positions[0]) / (n - 1)
    # Every slice must lie where first + k * step puts it; otherwise the stack is sheared.
    expected = sorted_positions[0] + np.outer(np.arange(n), step)
    shear = float(np.abs(sorted_positions - expected).max())
    if shear > max(0.1, 0.05 * median):
        raise SeriesRefused(
            "sheared",
            f"slice positions deviate up to {shear:.2f} mm from a straight stack (gantry tilt or shear); "
            "resample the series before sending it",
        )
    return Stack(order=order, step=step)


def affine_directions(affine: np.ndarray, tolerance: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Unit direction columns (3×3) and voxel spacing (3,) of an affine; ValueError if sheared.

    DICOM can only express grids whose axes are orthogonal, so a sheared or
    degenerate affine (e.g. a NIfTI with a skewed sform) is refused with a reason.
    """
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(affine)):
        raise ValueError(f"affine has a zero-length or non-finite axis: spacing {spacing}")
    direction = affine[:3, :3] / spacing
    off_diagonal = np.abs(direction.T @ direction - np.eye(3)).max()
    if off_diagonal > tolerance:
        raise ValueError(f"affine axes are not orthogonal (max |cos| {off_diagonal:.2e}); DICOM needs an orthogonal grid")
    return direction, spacing


def affine_from_geometry(
    row_direction: np.ndarray,
    column_direction: np.ndarray,
    pixel_spacing: tuple[float, float],
    first_position: np.ndarray,
    slice_step: np.ndarray,
) -> np.ndarray:
    """Build a Volume affine from DICOM-style geometry.

    ``row_direction`` is the first triplet of ImageOrientationPatient (the direction of
    increasing column index), ``column_direction`` the second; ``pixel_spacing`` is
    DICOM PixelSpacing, i.e. (distance between rows, distance between columns) in mm;
    ``first_position`` the ImagePositionPatient of the first slice and ``slice_step`` the
    vector from one slice position to the next (LPS mm).
    """
    affine = np.eye(4)
    affine[:3, 0] = np.asarray(row_direction, float) * float(pixel_spacing[1])
    affine[:3, 1] = np.asarray(column_direction, float) * float(pixel_spacing[0])
    affine[:3, 2] = np.asarray(slice_step, float)
    affine[:3, 3] = np.asarray(first_position, float)
    return affine
