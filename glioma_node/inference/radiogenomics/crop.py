"""Tumour-centred crops for the CNNs, and the way back to the study grid for heat maps.

A crop is a cube of ``size`` voxels of ``spacing_mm`` (the 1 mm study grid averaged in
blocks of ``spacing_mm`` voxels) centred on the whole tumour's centroid, zero outside
the image. Keeping a fixed physical size (not stretching the tumour box to fit) keeps
the tumour's size visible to the network. The patch variant takes several 1 mm cubes
inside the tumour instead, for encoders trained on small patches. The box variant is the
segmentation-guided bounding box of the chemotherapy-benefit study: the whole tumour's
box with a margin, stretched to a cube, so every tumour fills its input whatever its size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from glioma_node.core.grid import shape3


@dataclass(frozen=True)
class Crop:
    """Where a crop came from: ``corner`` (z, y, x) in voxels of the pooled grid, ``factor``
    the pooling factor from the 1 mm grid, ``size`` the cube side in pooled voxels."""

    corner: tuple[int, int, int]
    factor: int
    size: int
    extent: tuple[int, int, int] | None = None
    """For a box crop: the 1 mm voxels (z, y, x) the cube was stretched from (``factor`` is 1)."""


def _pool(array: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return array
    pad = [(0, 0)] * (array.ndim - 3) + [(0, (-n) % factor) for n in array.shape[-3:]]
    a = np.pad(array, pad)
    s = a.shape[-3:]
    a = a.reshape(a.shape[:-3] + (s[0] // factor, factor, s[1] // factor, factor, s[2] // factor, factor))
    return a.mean(axis=(-5, -3, -1))


def _cut(array: np.ndarray, corner: np.ndarray, size: int | np.ndarray) -> np.ndarray:
    """The box of ``size`` voxels (one side, or z, y, x) from ``corner`` of ``array``'s last three axes; zero outside."""
    sides = [int(n) for n in np.broadcast_to(size, 3)]
    out = np.zeros(array.shape[:-3] + tuple(sides), np.float32)
    src = [slice(max(0, c), min(n, c + side)) for c, side, n in zip(corner, sides, array.shape[-3:])]
    dst = [slice(s.start - c, s.stop - c) for s, c in zip(src, corner)]
    out[(...,) + tuple(dst)] = array[(...,) + tuple(src)]
    return out


def tumour_region(labels: np.ndarray, margin_mm: float) -> np.ndarray:
    """The whole tumour (``labels > 0`` on the 1 mm grid) and every voxel within ``margin_mm``
    of it (Euclidean), as a bool array of ``labels``' shape."""
    tumour = labels > 0
    if not tumour.any():
        raise ValueError("no tumour voxels: the tumour region needs a segmented tumour")
    reach = int(np.ceil(margin_mm)) + 1
    points = np.argwhere(tumour)
    low = np.maximum(points.min(0) - reach, 0)
    high = np.minimum(points.max(0) + 1 + reach, tumour.shape)
    box = tuple(slice(a, b) for a, b in zip(low, high))
    region = np.zeros_like(tumour)
    region[box] = ndimage.distance_transform_edt(~tumour[box]) <= margin_mm
    return region


def keep_tumour_context(stack: np.ndarray, labels: np.ndarray, context_mm: float | None) -> np.ndarray:
    """``stack`` ``(C, z, y, x)`` with every voxel farther than ``context_mm`` from the whole
    tumour set to 0 (the brain's mean after z-scoring, as outside the image); unchanged when
    ``context_mm`` is None. A network fed this cannot read the brain's outline, the crop's
    edges or the tumour's position in the head: only the tumour and its surroundings."""
    if context_mm is None:
        return stack
    return np.where(tumour_region(labels, float(context_mm))[None], stack, 0).astype(stack.dtype, copy=False)


def tumour_crop(stack: np.ndarray, labels: np.ndarray, size: int, spacing_mm: float) -> tuple[np.ndarray, Crop]:
    """A ``(C, size, size, size)`` float32 crop of ``stack`` (``(C, z, y, x)`` on the 1 mm grid)."""
    if not (labels > 0).any():
        raise ValueError("no tumour voxels: the tumour crop needs a segmented tumour")
    factor = max(1, int(round(spacing_mm)))
    centre = np.array(ndimage.center_of_mass(labels > 0)) / factor
    corner = np.round(centre - size / 2).astype(int)
    crop = _cut(_pool(stack.astype(np.float32), factor), corner, size)
    return crop, Crop(shape3(corner), factor, size)


def tumour_box(stack: np.ndarray, labels: np.ndarray, size: int, margin_mm: int = 8,
               min_side_mm: int = 16) -> tuple[np.ndarray, Crop]:
    """A ``(C, size, size, size)`` float32 cube resampled (linear) from the whole tumour's bounding
    box on the 1 mm grid, widened by ``margin_mm`` on every side and to at least ``min_side_mm``;
    zero outside the image."""
    points = np.argwhere(labels > 0)
    if not len(points):
        raise ValueError("no tumour voxels: the tumour box needs a segmented tumour")
    low, high = points.min(0) - margin_mm, points.max(0) + 1 + margin_mm
    grow = np.maximum(0, min_side_mm - (high - low))
    low, high = low - grow // 2, high + grow - grow // 2
    extent = high - low
    region = _cut(stack.astype(np.float32), low, extent)
    cube = np.stack([_resize(channel, (size,) * 3) for channel in region.reshape(-1, *region.shape[-3:])])
    return cube.reshape(region.shape[:-3] + (size,) * 3), Crop(shape3(low), 1, size, shape3(extent))


def _resize(volume: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``volume`` linearly resampled to ``shape`` over the same extent (voxel centres aligned as
    boxes: the first and last output voxels lie half an output voxel inside the edges)."""
    axes = [(np.arange(n) + 0.5) * m / n - 0.5 for n, m in zip(shape, volume.shape)]
    return ndimage.map_coordinates(volume, np.meshgrid(*axes, indexing="ij"), order=1, mode="nearest").astype(np.float32)


def tumour_slices(stack: np.ndarray, labels: np.ndarray, size: int = 224, count: int = 8) -> tuple[np.ndarray, list[Crop]]:
    """``(count, C, size, size)`` axial slices (1 mm pixels) spread evenly over the tumour's axial
    extent, each centred in-plane on the tumour's centroid, zero outside the image; and where
    each came from (a box one voxel deep)."""
    points = np.argwhere(labels > 0)
    if not len(points):
        raise ValueError("no tumour voxels: tumour slices need a segmented tumour")
    z_low, z_high = int(points[:, 0].min()), int(points[:, 0].max())
    levels = np.unique(np.round(np.linspace(z_low, z_high, count + 2)[1:-1]).astype(int)) if z_high > z_low \
        else np.array([z_low])
    levels = np.resize(levels, count)  # a thin tumour repeats its few slices
    centre = np.round(points[:, 1:].mean(0) - size / 2).astype(int)
    slices, where = [], []
    for z in levels:
        corner = np.array([z, centre[0], centre[1]])
        slices.append(_cut(stack, corner, np.array([1, size, size]))[..., 0, :, :])
        where.append(Crop(shape3(corner), 1, size, (1, size, size)))
    return np.stack(slices), where


def tumour_patches(stack: np.ndarray, labels: np.ndarray, size: int = 32, count: int = 8) -> tuple[np.ndarray, list[Crop]]:
    """``(count, C, size, size, size)`` 1 mm patches centred on tumour voxels, spread over the tumour,
    and where each came from.

    Centres are the tumour voxels farthest from each other (greedy), starting from the
    centroid, so large tumours are covered from several sides; deterministic.
    """
    points = np.argwhere(labels[::4, ::4, ::4] > 0) * 4
    if not len(points):
        raise ValueError("no tumour voxels: tumour patches need a segmented tumour")
    chosen = [points[np.argmin(((points - points.mean(0)) ** 2).sum(1))]]
    dist = ((points - chosen[0]) ** 2).sum(1)
    while len(chosen) < count:
        chosen.append(points[int(np.argmax(dist))])
        dist = np.minimum(dist, ((points - chosen[-1]) ** 2).sum(1))
    corners = [np.asarray(c) - size // 2 for c in chosen]
    return (np.stack([_cut(stack, c, size) for c in corners]),
            [Crop(shape3(c), 1, size) for c in corners])


def edge_taper(size: int, fraction: float = 0.125, dims: int = 3) -> np.ndarray:
    """A ``(size,) * dims`` weight that is 1 inside and falls smoothly (half cosine) to 0
    over the outer ``fraction`` of each side: a heat map multiplied by it fades out at the
    crop's faces instead of ending in a step (near them the network saw zero padding)."""
    ramp = max(1, int(round(size * fraction)))
    edge = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
    line = np.ones(size, np.float32)
    line[:ramp], line[size - ramp:] = edge, edge[::-1]
    if dims == 2:
        return (line[:, None] * line[None, :]).astype(np.float32)
    return (line[:, None, None] * line[None, :, None] * line[None, None, :]).astype(np.float32)


def uncrop(values: np.ndarray, crop: Crop, shape: tuple[int, int, int]) -> np.ndarray:
    """``values`` (any cube resolution over the crop; a 2D map for a slice) placed back on the 1 mm
    grid of ``shape``.

    Linear interpolation to the crop's voxels (stretched back to its box for a box crop), then
    up by the pooling factor; 0 outside the crop.
    """
    pooled_shape = tuple(-(-n // crop.factor) for n in shape)
    sides = crop.extent or (crop.size,) * 3
    if values.ndim == 2:
        values = values[None]
    cube = (_resize(values.astype(np.float32), sides) if crop.extent
            else ndimage.zoom(values.astype(np.float32), crop.size / values.shape[0], order=1))
    canvas = np.zeros(pooled_shape, np.float32)
    src = [slice(max(0, -c), min(side, n - c)) for c, side, n in zip(crop.corner, sides, pooled_shape)]
    dst = [slice(max(0, c), max(0, c) + (s.stop - s.start)) for c, s in zip(crop.corner, src)]
    if all(s.stop > s.start for s in src):
        canvas[tuple(dst)] = cube[tuple(src)]
    if crop.factor > 1:
        canvas = ndimage.zoom(canvas, crop.factor, order=1)
    return canvas[: shape[0], : shape[1], : shape[2]]
