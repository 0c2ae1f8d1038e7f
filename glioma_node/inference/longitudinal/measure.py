"""RANO's measurements of one tumour component: its lesions, their bidimensional products,
which are measurable, and the target lesions.

A lesion is a 26-connected component of the component's mask. On each axial slice, its
outline is filled (the necrotic centre of a ring-enhancing lesion is inside what a reader
measures across; a cyst or cavity that opens to the outside is not) and measured as a
reader measures it:

* the longest diameter: the longest chord that lies inside the lesion (searched every 10°
  on every slice, then every 1° on the three slices with the largest products), pixels
  taken as squares (a run of n pixels is n pixel widths long);
* the perpendicular diameter: the longest chord at right angles to it that crosses it and
  stays inside the lesion (a reader's cross). Chords inside the lesion, not distances
  between its points, so a rim around a resection cavity is measured as the thin rim it
  is, not across the cavity (RANO does not measure cavities).

The slice where longest × perpendicular is largest gives the lesion's measurement. A lesion
is measurable (RANO 2.0) when both diameters are at least 10 mm and it is seen on at least
two of the acquisition's axial slices. Target lesions: the measurable lesions with the
largest products, at most three (RANO 2.0); the others are non-target.

Frames: masks are ``[z, y, x]`` on an axis-aligned grid whose z axis is the patient's
axial direction (the node's analysis grid); ``affine`` maps (column, row, slice) to LPS mm.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from glioma_node.core.grid import spacing_of
from glioma_node.core.longitudinal import Burden, Component, Lesion

MIN_DIAMETER_MM = 10.0
MIN_SLICES = 2
MAX_TARGETS = 3
_FULL = np.ones((3, 3, 3), bool)  # 26-connectivity


def axial_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """(z, y, x) voxel sizes in mm of an axis-aligned affine whose slice axis is the
    patient's z; a clear error for any other grid."""
    m = np.asarray(affine, float)[:3, :3]
    if np.count_nonzero(np.abs(m) > 1e-6 * np.abs(m).max()) != 3:
        raise ValueError("RANO measurements need an axis-aligned grid (resample the mask to the analysis grid first)")
    if abs(m[2, 2]) == 0:
        raise ValueError("RANO measurements need the grid's slice axis to be the patient's axial (z) axis")
    column, row, slice_ = spacing_of(affine)
    return slice_, row, column


def _longest_runs(mask2d: np.ndarray) -> tuple[int, int, int, int]:
    """(length, row, start, stop) of the longest horizontal run of True in a 2D mask."""
    padded = np.pad(mask2d, ((0, 0), (1, 1))).astype(np.int8)
    change = np.diff(padded, axis=1)
    rows_s, cols_s = np.nonzero(change == 1)
    _, cols_e = np.nonzero(change == -1)
    if not len(rows_s):
        return 0, 0, 0, 0
    lengths = cols_e - cols_s  # starts and ends pair up in row-major order
    best = int(np.argmax(lengths))
    return int(lengths[best]), int(rows_s[best]), int(cols_s[best]), int(cols_e[best])


def _rotated(mask2d: np.ndarray, angle: float) -> np.ndarray:
    return ndimage.rotate(mask2d.astype(np.uint8), angle, order=0, reshape=True, prefilter=False) > 0


def _fine(mask2d: np.ndarray, spacing_yx: tuple[float, float]) -> tuple[np.ndarray, float]:
    """The slice cropped to the lesion, resampled to square pixels of half the finest pixel
    (so a rotated chord is within about half a pixel), and that pixel's size in mm."""
    ys, xs = np.nonzero(mask2d)
    crop = mask2d[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]
    pixel = min(spacing_yx) / 2.0
    reps = (max(1, int(round(spacing_yx[0] / pixel))), max(1, int(round(spacing_yx[1] / pixel))))
    return np.pad(np.repeat(np.repeat(crop, reps[0], axis=0), reps[1], axis=1), 2), pixel


def _longest_at(fine: np.ndarray, angles: np.ndarray) -> tuple[int, float]:
    """(length in fine pixels, angle) of the longest chord over ``angles`` (degrees)."""
    best = (-1, 0.0)
    for angle in angles:
        length = _longest_runs(_rotated(fine, float(angle)))[0]
        if length > best[0]:
            best = (length, float(angle))
    return best


def _cross(fine: np.ndarray, angle: float) -> tuple[int, int]:
    """(longest chord, the longest chord at right angles crossing it), fine pixels, at ``angle``."""
    rotated = _rotated(fine, angle)
    length, row, start, stop = _longest_runs(rotated)
    # Columns of the rotated slice are perpendicular to the chord: the longest vertical
    # run through the chord's row, over the chord's extent.
    perpendicular = 0
    for col in range(start, stop):
        column = rotated[:, col]
        top = row
        while top > 0 and column[top - 1]:
            top -= 1
        bottom = row
        while bottom + 1 < len(column) and column[bottom + 1]:
            bottom += 1
        perpendicular = max(perpendicular, bottom - top + 1)
    return length, perpendicular


COARSE_DEG, FINE_DEG = 10.0, 1.0


def diameters(mask2d: np.ndarray, spacing_yx: tuple[float, float], refine: bool = True) -> tuple[float, float]:
    """(longest, perpendicular) diameters in mm of a 2D lesion (see the module doc): the
    longest chord that lies inside it (searched every 10°, then with ``refine`` every 1°
    within 10° of the best), and the longest chord at right angles to it that crosses it
    inside the lesion; (0, 0) for an empty mask. Pixels count as squares (a run of n pixels
    is n pixel widths)."""
    mask2d = np.asarray(mask2d, bool)
    if not mask2d.any():
        return 0.0, 0.0
    fine, pixel = _fine(mask2d, spacing_yx)
    best = _longest_at(fine, np.arange(0.0, 180.0, COARSE_DEG))
    if refine:
        best = max(best, _longest_at(fine, np.arange(best[1] - COARSE_DEG, best[1] + COARSE_DEG + 1e-9, FINE_DEG)))
    length, perpendicular = _cross(fine, best[1])
    return length * pixel, perpendicular * pixel


REFINED_SLICES = 3


def lesions(mask: np.ndarray, affine: np.ndarray, slice_thickness_mm: float | None = None,
            min_diameter_mm: float = MIN_DIAMETER_MM, min_slices: int = MIN_SLICES,
            cavity: np.ndarray | None = None) -> tuple[list[Lesion], np.ndarray]:
    """The lesions of a component mask (bool ``[z, y, x]``), largest product first, and the
    lesion map (int32, 0 background, ``Lesion.label`` inside each).

    ``slice_thickness_mm``: the acquisition's axial slice spacing, so that a lesion from
    one 5 mm slice resampled to 1 mm is still "seen on one slice" (default: the grid's).
    ``cavity``: a resection cavity (bool, same grid), never filled into a lesion that
    surrounds it: RANO does not measure cavities."""
    spacing_zyx = axial_spacing(affine)
    thickness = max(float(slice_thickness_mm or 0.0), spacing_zyx[0])
    labelled, count = ndimage.label(np.asarray(mask, bool), structure=_FULL)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    found: list[Lesion] = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None:
            continue
        part = labelled[box] == index
        hole_free = None if cavity is None else ~np.asarray(cavity, bool)[box]
        filled_slices: dict[int, np.ndarray] = {}
        coarse: list[tuple[float, int]] = []
        for k in range(part.shape[0]):
            if not part[k].any():
                continue
            filled = ndimage.binary_fill_holes(part[k])
            if hole_free is not None:
                filled &= hole_free[k]
            if not filled.any():
                continue
            filled_slices[k] = filled
            longest, perpendicular = diameters(filled, spacing_zyx[1:], refine=False)
            coarse.append((longest * perpendicular, k))
        # Every slice measured coarsely; the few largest again finely (a 10° step misses a
        # chord's length by under 1 %, so the largest product is among them).
        best = (-1.0, 0.0, 0.0, 0)
        for _, k in sorted(coarse, reverse=True)[:REFINED_SLICES]:
            longest, perpendicular = diameters(filled_slices[k], spacing_zyx[1:])
            if longest * perpendicular > best[0]:
                best = (longest * perpendicular, longest, perpendicular, k)
        _, longest, perpendicular, k = best
        z_extent = (box[0].stop - box[0].start) * spacing_zyx[0]
        slices = max(1, int(round(z_extent / thickness)))
        zyx = np.array(ndimage.center_of_mass(part)) + [s.start for s in box]
        centroid = (np.asarray(affine, float) @ np.array([zyx[2], zyx[1], zyx[0], 1.0]))[:3]
        slice_z = float((np.asarray(affine, float) @ np.array([0.0, 0.0, box[0].start + k, 1.0]))[2])
        found.append(Lesion(label=index, volume_ml=round(float(part.sum()) * voxel_ml, 4),
                            longest_mm=round(longest, 2), perpendicular_mm=round(perpendicular, 2), slices=slices,
                            measurable=bool(longest >= min_diameter_mm and perpendicular >= min_diameter_mm
                                            and slices >= min_slices),
                            centroid_mm=tuple(round(float(c), 2) for c in centroid),  # type: ignore[arg-type]
                            slice_index=box[0].start + k, slice_z_mm=round(slice_z, 2)))
    found.sort(key=lambda lesion: -lesion.product_mm2)
    return found, labelled.astype(np.int32)


def burden(found: list[Lesion], component: Component, volume_ml: float, max_targets: int = MAX_TARGETS) -> Burden:
    """Target lesions (the largest measurable ones, at most ``max_targets``), the others as
    non-target, their sum of products and the component's volume (ml)."""
    ranked = sorted(found, key=lambda lesion: -lesion.product_mm2)
    targets = tuple(lesion for lesion in ranked if lesion.measurable)[:max_targets]
    others = tuple(lesion for lesion in ranked if lesion not in targets)
    return Burden(component=component, sum_of_products_mm2=round(sum(t.product_mm2 for t in targets), 2),
                  volume_ml=round(float(volume_ml), 4), targets=targets, non_targets=others)
