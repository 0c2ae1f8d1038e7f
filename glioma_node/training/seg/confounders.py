"""What real brains show besides the tumour, drawn into a training sample's class map.

The network must learn that none of this is tumour. Each confounder is a class of its own
in the class map (so it gets its own contrast per sequence, see
:mod:`glioma_node.training.seg.generator`) and is never part of a tumour label: it only
ever replaces normal tissue, and tumour voxels are never touched.

Two levels:

* **Per case** (:func:`add_structures`, once when a label-driven case is loaded, on the
  whole brain at the working spacing): the ventricles told apart from sulcal CSF (CSF
  deep inside the brain), the dura (the falx in the interhemispheric fissure and the
  layer of extra-axial tissue on the brain's surface), the superior sagittal and
  transverse sinuses. These need the whole brain's geometry, which a training crop lacks.
* **Per sample** (:func:`perturb`, on the crop, with fresh random draws each time):
  ventricle size and asymmetry (atrophy, hydrocephalus, one side compressed by the mass),
  periventricular caps and bands, confluent and punctate white-matter hyperintensities
  (in crops that hold the falx, half of them mirrored about it: bilateral and symmetric;
  up to confluent deep white matter),
  the choroid plexus in the atria, cortical veins and arteries (enhancing, or flow voids),
  FLAIR inflow and pulsation artefacts in the ventricles and cisterns.

Arrays are ``[z, y, x]`` on the axis-aligned LPS working grid: x runs right to left, y
anterior to posterior, z inferior to superior (a crop is rotated by at most 12°, so these
directions still hold roughly).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from glioma_node.inference.symmetry import midline_x
from glioma_node.training.synth.anatomy import TISSUE_LABELS, smooth_noise

# Class indices after the tissues (1-8) and the tumour compartments (9-11) of the generator.
PERIVENTRICULAR, WMH, CHOROID, VESSEL, FLOW_VOID, CSF_FLOW, DURA, VENTRICLE = range(12, 20)
CONFOUNDERS = {"periventricular": PERIVENTRICULAR, "white-matter hyperintensity": WMH, "choroid plexus": CHOROID,
               "vessel or sinus": VESSEL, "flow void": FLOW_VOID, "CSF flow artefact": CSF_FLOW, "dura": DURA,
               "ventricle": VENTRICLE}
FIRST_TUMOUR_CLASS, LAST_TUMOUR_CLASS = 9, 11

_CSF, _GM, _WM, _EXT = (TISSUE_LABELS[t] for t in ("csf", "gm", "wm", "ext_csf"))
_NORMAL_BRAIN = (_CSF, _GM, _WM)


def is_tumour(classes: np.ndarray) -> np.ndarray:
    return (classes >= FIRST_TUMOUR_CLASS) & (classes <= LAST_TUMOUR_CLASS)


def falx_x(classes: np.ndarray, brain: np.ndarray) -> float | None:
    """The x of the mid-sagittal plane in a training crop: the median x of its falx (class
    DURA inside the brain, placed on the whole case by :func:`add_structures`). A crop
    centred on a tumour often cuts off the far hemisphere, so the middle of the crop's
    own brain is no midline. None when the crop holds under 20 falx voxels."""
    falx = np.argwhere((classes == DURA) & brain)
    return float(np.median(falx[:, 2])) if len(falx) >= 20 else None


def mirrored_x(shape: tuple[int, ...], mid: float) -> tuple[np.ndarray, np.ndarray]:
    """For an array of ``shape`` ``[z, y, x]``: the x index of each voxel's mirror image
    about the plane x = ``mid`` (broadcast to ``shape``, clipped into the grid), and where
    that image lies inside the grid."""
    x = np.arange(shape[2])[None, None, :]
    source = np.round(2 * mid - x).astype(int)
    inside = (source >= 0) & (source < shape[2])
    return (np.broadcast_to(np.clip(source, 0, shape[2] - 1), shape),
            np.broadcast_to(inside, shape))


def _depth(brain: np.ndarray, open_edges: bool) -> np.ndarray:
    """Distance (voxels) of each brain voxel to the nearest non-brain voxel; with
    ``open_edges`` the crop's faces do not count as the brain's surface."""
    if open_edges:
        padded = np.pad(brain, 1, constant_values=True)
        return ndimage.distance_transform_edt(padded)[1:-1, 1:-1, 1:-1]
    return ndimage.distance_transform_edt(brain)


def add_structures(classes: np.ndarray, brain: np.ndarray, spacing_mm: float = 2.0) -> np.ndarray:
    """Ventricles, dura and venous sinuses in a whole case's class map (see the module doc).

    ``classes``: the merged class map of a whole case (tissues and tumour), ``brain``
    its brain mask. Returns a new map; tumour voxels are unchanged.
    """
    out = classes.copy()
    free = ~is_tumour(classes)
    depth = _depth(brain, open_edges=False)
    deep_csf = (classes == _CSF) & (depth * spacing_mm >= 9.0)
    parts, n = ndimage.label(deep_csf)
    if n:
        sizes = ndimage.sum(deep_csf, parts, index=np.arange(1, n + 1))
        keep = np.isin(parts, 1 + np.nonzero(sizes * spacing_mm ** 3 >= 250.0)[0])
        # grow back into the CSF the depth rule cut off at the ventricles' walls
        grown = ndimage.binary_dilation(keep, iterations=max(1, int(round(4 / spacing_mm))),
                                        mask=(classes == _CSF) & (depth * spacing_mm >= 4.0))
        out[grown & free] = VENTRICLE
    mid = midline_x(brain)
    x = np.arange(brain.shape[2], dtype=np.float32)[None, None, :]
    near_mid = np.abs(x - mid[..., None]) <= max(0.6, 1.0 / spacing_mm)
    zs = np.nonzero(brain.any(axis=(1, 2)))[0]
    ys = np.nonzero(brain.any(axis=(0, 2)))[0]
    if len(zs) and len(ys):
        z = np.arange(brain.shape[0])[:, None, None]
        y = np.arange(brain.shape[1])[None, :, None]
        z_rel = (z - zs[0]) / max(1, zs[-1] - zs[0])
        y_rel = (y - ys[0]) / max(1, ys[-1] - ys[0])
        # the falx: the interhemispheric fissure above the corpus callosum (upper 45 % of the brain)
        falx = near_mid & (z_rel > 0.55) & np.isin(classes, (_CSF, _GM)) & brain
        out[falx & free] = DURA
        outside = ~brain & (_depth(~brain, open_edges=False) <= 1.5)
        out[outside & (classes == _EXT) & free] = DURA
        shell = ~brain & (_depth(~brain, open_edges=False) <= max(2.0, 5.0 / spacing_mm))
        sagittal = shell & (np.abs(x - mid[..., None]) <= max(1.0, 4.0 / spacing_mm)) & (z_rel > 0.45)
        sagittal &= np.isfinite(mid[..., None])
        transverse = shell & (y_rel > 0.8) & (z_rel > 0.2) & (z_rel < 0.45)
        out[(sagittal | transverse) & free] = VESSEL
    return out


def _grow(mask: np.ndarray, steps: int, allowed: np.ndarray) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=steps, mask=allowed) if steps > 0 and mask.any() else mask


def blobs(inside: np.ndarray, rng: np.random.Generator, count: int, radius: tuple[float, float]) -> np.ndarray:
    """``count`` balls of random radius (voxels) centred on random voxels of ``inside``."""
    out = np.zeros(inside.shape, bool)
    idx = np.argwhere(inside)
    if not len(idx) or count <= 0:
        return out
    for p in idx[rng.integers(len(idx), size=count)]:
        r = rng.uniform(*radius)
        k = int(np.ceil(r))
        lo, hi = np.maximum(p - k, 0), np.minimum(p + k + 1, inside.shape)
        g = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= sum((gi - pi) ** 2 for gi, pi in zip(g, p)) <= r * r
    return out


def _tubes(inside: np.ndarray, rng: np.random.Generator, count: int, length: tuple[int, int]) -> np.ndarray:
    """``count`` random smooth curves (1-voxel tubes) through ``inside``: vessels."""
    out = np.zeros(inside.shape, bool)
    idx = np.argwhere(inside)
    if not len(idx) or count <= 0:
        return out
    shape = np.array(inside.shape)
    for p in idx[rng.integers(len(idx), size=count)]:
        pos = p.astype(float)
        direction = rng.standard_normal(3)
        for _ in range(int(rng.integers(*length))):
            direction = direction / (np.linalg.norm(direction) + 1e-6) + 0.35 * rng.standard_normal(3)
            pos = pos + direction / (np.linalg.norm(direction) + 1e-6)
            q = np.round(pos).astype(int)
            if (q < 0).any() or (q >= shape).any():
                break
            out[tuple(q)] = True
    return out & inside


def perturb(classes: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw the per-sample confounders into a crop's class map (see the module doc).

    Only normal tissue (CSF, grey and white matter, ventricles, extra-axial tissue) is
    replaced; tumour voxels keep their class, so every confounder is background.
    """
    out = classes.copy()
    tumour = is_tumour(classes)
    normal = np.isin(classes, _NORMAL_BRAIN) & brain
    ventricle = classes == VENTRICLE
    x = np.arange(classes.shape[2])[None, None, :]
    side = x < (np.argwhere(brain)[:, 2].mean() if brain.any() else classes.shape[2] / 2)
    if ventricle.any():
        u = rng.random()
        if u < 0.45:  # enlarged (atrophy, hydrocephalus), sometimes on one side only
            region = normal & (side if rng.random() < 0.5 else ~side) if rng.random() < 0.35 else normal
            grown = _grow(ventricle, int(rng.integers(1, 4)), region | ventricle)
            out[grown & ~tumour] = VENTRICLE
        elif u < 0.65:  # small (young brains)
            shrunk = ndimage.binary_erosion(ventricle, iterations=1)
            out[ventricle & ~shrunk] = _WM
        if tumour.any() and rng.random() < 0.5:  # the mass compresses the ventricle beside it
            near = ndimage.distance_transform_edt(~tumour) <= rng.uniform(2, 6)
            out[(out == VENTRICLE) & near] = _WM
        ventricle = out == VENTRICLE
        if rng.random() < 0.65:  # periventricular band and caps: bright on FLAIR/T2, never tumour
            white = np.isin(out, (_WM, _GM)) & brain
            band = _grow(ventricle, int(rng.integers(1, 3)), white | ventricle) & white
            vy = np.nonzero(ventricle.any(axis=(0, 2)))[0]
            caps = np.zeros_like(band)
            if len(vy) > 3:
                y = np.arange(classes.shape[1])[None, :, None]
                span = vy[-1] - vy[0]
                horns = ventricle & ((y <= vy[0] + 0.2 * span) | (y >= vy[-1] - 0.2 * span))
                caps = _grow(horns, int(rng.integers(2, 8)), white | horns) & white  # 4-14 mm
            out[(band | caps) & ~tumour] = PERIVENTRICULAR
        if rng.random() < 0.7:  # choroid plexus: in the posterior (atrial) part of the ventricles
            vy = np.nonzero(ventricle.any(axis=(0, 2)))[0]
            y = np.arange(classes.shape[1])[None, :, None]
            atria = ventricle & (y >= vy[0] + 0.55 * (vy[-1] - vy[0])) if len(vy) else ventricle
            plexus = blobs(atria if atria.any() else ventricle, rng, int(rng.integers(1, 4)), (1.0, 2.5))
            out[plexus & ventricle] = CHOROID
        if rng.random() < 0.5:  # FLAIR inflow / pulsation artefact in the ventricles
            out[blobs(ventricle, rng, int(rng.integers(1, 6)), (1.0, 3.0)) & (out == VENTRICLE)] = CSF_FLOW
    white = (out == _WM) & brain
    if rng.random() < 0.5 and white.any():  # small-vessel disease: confluent patches and dots
        field = smooth_noise(classes.shape, rng, rng.uniform(2.0, 5.0), coarse=2)
        mid = falx_x(out, brain)
        if mid is not None and rng.random() < 0.5:  # bilateral, roughly symmetric, as small-vessel disease usually is
            source, inside = mirrored_x(field.shape, mid)
            field = np.where(inside, np.maximum(field, np.take_along_axis(field, source, axis=2)), field)
        depth = _depth(brain, open_edges=True)
        patches = (field > rng.uniform(1.2, 2.6)) & white & (depth >= 3)  # from a few patches to confluent
        out[(patches | blobs(white, rng, int(rng.integers(0, 25)), (0.6, 1.6))) & white] = WMH
    cisterns = (out == _CSF) & brain
    if rng.random() < 0.3 and cisterns.any():  # inflow in the basal cisterns and sulci
        out[blobs(cisterns, rng, int(rng.integers(1, 5)), (1.0, 2.5)) & cisterns] = CSF_FLOW
    surface = np.isin(out, (_CSF, _GM)) & brain & ~tumour
    veins = _tubes(surface, rng, int(rng.integers(0, 12)), (6, 25))
    arteries = _tubes((out == _CSF) & brain, rng, int(rng.integers(0, 8)), (6, 20))
    out[veins & np.isin(out, (_CSF, _GM))] = VESSEL
    out[arteries & (out == _CSF)] = FLOW_VOID
    out[tumour] = classes[tumour]
    return out
