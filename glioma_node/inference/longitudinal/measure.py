"""RANO's measurements of one tumour component: its lesions, their bidimensional products,
which are measurable, and the target lesions.

A lesion is a 26-connected component of the component's mask. On each axial slice, its
outline is filled (the necrotic centre of a ring-enhancing lesion is inside what a reader
measures across; a cyst or cavity that opens to the outside is not) and measured as a
reader measures it:

* the longest diameter: the largest distance between two points of the lesion, pixels
  taken as squares (a run of n pixels is n pixel widths long);
* the perpendicular diameter: the longest chord perpendicular to it that stays inside
  the lesion (sampled every quarter pixel, so within half a pixel of exact).

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

from glioma_node.core.longitudinal import Burden, Component, Lesion

MIN_DIAMETER_MM = 10.0
MIN_SLICES = 2
MAX_TARGETS = 3
_FULL = np.ones((3, 3, 3), bool)  # 26-connectivity


def axial_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """(z, y, x) voxel sizes in mm of an axis-aligned affine whose slice axis is the
    patient's z; a clear error for any other grid."""
    m = np.asarray(affine, float)[:3, :3]
    if np.count_nonzero(np.abs(m) > 1e-6 * np.abs(m).max()) != 3 or not np.all(np.abs(m).max(axis=0) > 0):
        raise ValueError("RANO measurements need an axis-aligned grid (resample the mask to the analysis grid first)")
    spacing = np.abs(m).max(axis=0)  # per voxel axis (column, row, slice)
    if int(np.argmax(np.abs(m[:, 2]))) != 2:
        raise ValueError("RANO measurements need the grid's slice axis to be the patient's axial (z) axis")
    return float(spacing[2]), float(spacing[1]), float(spacing[0])


def _corners(mask2d: np.ndarray, spacing_yx: tuple[float, float]) -> np.ndarray:
    """The corner points (mm, (y, x)) of the pixels on the outline of a 2D mask."""
    edge = mask2d & ~ndimage.binary_erosion(mask2d)
    ys, xs = np.nonzero(edge)
    offsets = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    points = (np.stack([ys, xs], 1)[:, None, :] + offsets[None]).reshape(-1, 2)
    return np.unique(points, axis=0) * np.asarray(spacing_yx)


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull vertices of 2D points (Andrew's monotone chain)."""
    pts = points[np.lexsort((points[:, 1], points[:, 0]))]
    if len(pts) <= 2:
        return pts

    def turn(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))

    def half(seq: np.ndarray) -> list[np.ndarray]:
        out: list[np.ndarray] = []
        for p in seq:
            while len(out) >= 2 and turn(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.array(lower[:-1] + upper[:-1])


def diameters(mask2d: np.ndarray, spacing_yx: tuple[float, float]) -> tuple[float, float]:
    """(longest, perpendicular) diameters in mm of a filled 2D lesion (see the module doc);
    (0, 0) for an empty mask."""
    mask2d = np.asarray(mask2d, bool)
    if not mask2d.any():
        return 0.0, 0.0
    hull = _hull(_corners(mask2d, spacing_yx))
    gaps = hull[:, None, :] - hull[None, :, :]
    lengths = np.sqrt((gaps ** 2).sum(-1))
    i, j = np.unravel_index(int(np.argmax(lengths)), lengths.shape)
    longest = float(lengths[i, j])
    u = (hull[i] - hull[j]) / longest
    v = np.array([-u[1], u[0]])
    step = min(spacing_yx) / 4.0
    along = hull @ u
    across = hull @ v
    t = np.arange(along.min() + step / 2, along.max(), step)
    s = np.arange(across.min() + step / 2, across.max(), step)
    if not len(t) or not len(s):
        return longest, 0.0
    points = t[:, None, None] * u + s[None, :, None] * v  # (T, S, 2) mm (y, x)
    index = np.floor(points / np.asarray(spacing_yx) + 0.5).astype(int)
    inside = ((index[..., 0] >= 0) & (index[..., 0] < mask2d.shape[0])
              & (index[..., 1] >= 0) & (index[..., 1] < mask2d.shape[1]))
    hit = np.zeros(inside.shape, bool)
    hit[inside] = mask2d[index[..., 0][inside], index[..., 1][inside]]
    # The longest run of samples inside along s, for every t.
    padded = np.pad(hit, ((0, 0), (1, 1)))
    change = np.diff(padded.astype(np.int8), axis=1)
    best = 0
    for row in range(change.shape[0]):
        starts = np.flatnonzero(change[row] == 1)
        ends = np.flatnonzero(change[row] == -1)
        if len(starts):
            best = max(best, int((ends - starts).max()))
    return longest, float(best * step)


def lesions(mask: np.ndarray, affine: np.ndarray, slice_thickness_mm: float | None = None,
            min_diameter_mm: float = MIN_DIAMETER_MM, min_slices: int = MIN_SLICES) -> tuple[list[Lesion], np.ndarray]:
    """The lesions of a component mask (bool ``[z, y, x]``), largest product first, and the
    lesion map (int32, 0 background, ``Lesion.label`` inside each).

    ``slice_thickness_mm``: the acquisition's axial slice spacing, so that a lesion from
    one 5 mm slice resampled to 1 mm is still "seen on one slice" (default: the grid's)."""
    spacing_zyx = axial_spacing(affine)
    thickness = max(float(slice_thickness_mm or 0.0), spacing_zyx[0])
    labelled, count = ndimage.label(np.asarray(mask, bool), structure=_FULL)
    voxel_ml = float(np.prod(spacing_zyx)) / 1000.0
    found: list[Lesion] = []
    for index, box in enumerate(ndimage.find_objects(labelled), start=1):
        if box is None:
            continue
        part = labelled[box] == index
        best = (-1.0, 0.0, 0.0, 0)
        for k in range(part.shape[0]):
            if not part[k].any():
                continue
            longest, perpendicular = diameters(ndimage.binary_fill_holes(part[k]), spacing_zyx[1:])
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
