"""Synthetic heads: the MNI152 2009 template, deformed per case, wrapped in head tissues.

The template and its grey/white matter maps ship inside nilearn (no download). CSF is
what the brain mask holds that is neither grey nor white matter. Because the template
is skull-stripped, extra-axial CSF, skull (cortical bone and marrow), scalp and
subcutaneous fat are added as shells of random, spatially varying thickness around
the deformed brain, so brain extraction can be learned and tested.

All arrays use the Volume convention ([slice, row, column] with an LPS affine in mm,
see :mod:`glioma_node.core.volume`); the working grid is 1 mm isotropic and axis-aligned.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage

from glioma_node.core.grid import shape3
from glioma_node.dicom_io.nifti import read_nifti

PAD_MM = 22  # room around the brain for the head shells
TISSUES = ("csf", "gm", "wm", "ext_csf", "bone", "marrow", "scalp", "fat")


@dataclass
class Template:
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    affine: np.ndarray  # LPS


@lru_cache(maxsize=1)
def load_template() -> Template:
    """The nilearn-bundled MNI152 2009 (sym, 1 mm) probability maps, padded, Volume convention."""
    import nilearn.datasets

    data_dir = Path(nilearn.datasets.__file__).parent / "data"
    t1, affine = read_nifti(data_dir / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
    gm, _ = read_nifti(data_dir / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")
    wm, _ = read_nifti(data_dir / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")
    gm = gm.astype(np.float32) / 255.0
    wm = wm.astype(np.float32) / 255.0
    brain = ndimage.binary_fill_holes(ndimage.binary_closing(t1 > 20, iterations=2))
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0.0, 1.0)
    pad = [(PAD_MM, PAD_MM)] * 3
    shifted = affine.copy()
    shifted[:3, 3] -= affine[:3, :3] @ np.array([PAD_MM] * 3, float)
    return Template(np.pad(gm, pad), np.pad(wm, pad), np.pad(csf, pad), shifted)


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, scale_vox: float, coarse: int = 4) -> np.ndarray:
    """Zero-mean, unit-std smooth random field; ``scale_vox`` is the feature size in voxels.

    Made on a grid ``coarse`` times smaller and zoomed up, because smoothing the full
    grid would dominate synthesis time.
    """
    small = tuple(max(2, s // coarse) for s in shape)
    field = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), scale_vox / coarse)
    field = ndimage.zoom(field, [s / m for s, m in zip(shape, small)], order=1)
    field -= field.mean()
    return field / (field.std() + 1e-6)


@dataclass
class Deformation:
    """Where each output voxel samples the template (pull-back), template voxel coordinates."""

    coords: np.ndarray  # (3, z, y, x) float32


def random_deformation(shape: tuple[int, int, int], rng: np.random.Generator, mass_centre: np.ndarray | None = None,
                       mass_radius_vox: float = 0.0, mass_strength: float = 0.0) -> Deformation:
    """A random affine (±8° rotation, ±8 % scale per axis) plus a smooth elastic field
    (≈4 mm amplitude, ≈25 mm wavelength), plus, when given, the radial push of a mass
    around ``mass_centre`` (voxel coordinates) that displaces tissue outward."""
    coarse = 8
    small = tuple(s // coarse + 1 for s in shape)
    grid = np.stack(np.meshgrid(*[np.linspace(0, s - 1, n) for s, n in zip(shape, small)], indexing="ij"))
    centre = (np.array(shape, float) - 1) / 2
    angles = np.radians(rng.uniform(-8, 8, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rot = (np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
           @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]))
    scale = np.diag(rng.uniform(0.92, 1.08, 3))
    matrix = rot @ scale
    rel = grid.reshape(3, -1) - centre[:, None]
    src = (matrix @ rel + centre[:, None]).reshape(grid.shape)
    for axis in range(3):
        src[axis] += 4.0 * ndimage.gaussian_filter(rng.standard_normal(small), 25.0 / coarse / 2)
    if mass_centre is not None and mass_strength > 0:
        d = grid - mass_centre.reshape(3, 1, 1, 1)
        r2 = (d ** 2).sum(axis=0)
        src -= mass_strength * d * np.exp(-r2 / (2 * (1.6 * mass_radius_vox) ** 2))
    full = np.stack([ndimage.zoom(src[a], [s / n for s, n in zip(shape, small)], order=1) for a in range(3)])
    return Deformation(full.astype(np.float32))


def warp(volume: np.ndarray, deformation: Deformation) -> np.ndarray:
    return ndimage.map_coordinates(volume, deformation.coords, order=1, mode="constant", cval=0.0).astype(np.float32)


@dataclass
class Head:
    """Tissue membership maps (0–1) on the working grid, plus that grid's LPS affine."""

    maps: dict[str, np.ndarray]
    affine: np.ndarray

    @property
    def brain(self) -> np.ndarray:
        """Brain mask (grey + white matter + intracranial CSF ≥ 0.5), the brain-extraction truth."""
        return (self.maps["gm"] + self.maps["wm"] + self.maps["csf"]) >= 0.5

    @property
    def shape(self) -> tuple[int, int, int]:
        return shape3(self.maps["gm"].shape)


def build_head(template: Template, deformation: Deformation, rng: np.random.Generator) -> Head:
    """Deform the brain and add extra-axial CSF, skull, marrow, scalp and fat shells."""
    maps = {name: warp(getattr(template, name), deformation) for name in ("gm", "wm", "csf")}
    brain = (maps["gm"] + maps["wm"] + maps["csf"]) >= 0.5
    outside = ndimage.distance_transform_edt(~brain).astype(np.float32)
    # Thicknesses vary over the head by ±25 % (smooth), like real skull and scalp.
    variation = 1.0 + 0.25 * np.clip(smooth_noise(brain.shape, rng, 30.0), -2, 2)
    d = outside / variation
    t_csf, t_bone, t_scalp = rng.uniform(1.0, 3.0), rng.uniform(5.0, 8.0), rng.uniform(4.0, 8.0)
    edges = np.cumsum([t_csf, t_bone, t_scalp])
    shell = (d > 0)
    maps["ext_csf"] = (shell & (d <= edges[0])).astype(np.float32)
    skull = shell & (d > edges[0]) & (d <= edges[1])
    marrow_band = (d > edges[0] + 0.3 * t_bone) & (d <= edges[0] + 0.7 * t_bone)
    maps["marrow"] = (skull & marrow_band).astype(np.float32)
    maps["bone"] = (skull & ~marrow_band).astype(np.float32)
    scalp = shell & (d > edges[1]) & (d <= edges[2])
    fat_band = (d > edges[1] + 0.3 * t_scalp) & (d <= edges[1] + 0.75 * t_scalp)
    maps["fat"] = (scalp & fat_band).astype(np.float32)
    maps["scalp"] = (scalp & ~fat_band).astype(np.float32)
    for name in ("ext_csf", "marrow", "bone", "fat", "scalp"):
        maps[name] = ndimage.gaussian_filter(maps[name], 0.6)  # partial volume at tissue borders
    return Head(maps=maps, affine=template.affine)


# Label of each tissue in tissues.nii.gz; 0 is air. Order is part of the cohort format.
TISSUE_LABELS = {name: i for i, name in enumerate(TISSUES, start=1)}


def tissue_map(head: Head) -> np.ndarray:
    """The hard tissue label map (uint8, TISSUE_LABELS; 0 where no tissue reaches 0.5 in total).

    Each voxel takes its most likely tissue, so partial volume is lost here and put back
    by the blur of label-driven training (:mod:`glioma_node.training.seg.generator`).
    """
    names = list(head.maps)
    stack = np.stack([head.maps[n] for n in names])
    labels = np.array([TISSUE_LABELS[n] for n in names], np.uint8)[np.argmax(stack, axis=0)]
    labels[stack.sum(axis=0) < 0.5] = 0
    return labels
