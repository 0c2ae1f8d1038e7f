"""Label-driven image synthesis with domain randomisation (in the spirit of SynthSeg).

Each training sample is drawn afresh from a tissue label map and a tumour label map:

* **Contrast**: every tissue gets a random mean intensity per sequence, around the
  textbook appearance of :data:`glioma_node.training.synth.contrast.MEANS` but jittered by a
  log-normal factor (σ = 0.3), so no fixed intensity can be learned. Tumour
  compartments are drawn *relative to white matter of the same sequence* within wide
  ranges that keep only what defines them: edema and tumour bright on FLAIR and T2,
  enhancing tumour brighter on T1c than white matter, necrosis fluid-like. Label 1 is
  drawn as necrosis, solid non-enhancing tumour, or T2-FLAIR-mismatch tumour.
* **Texture and partial volume**: per-tissue Gaussian noise, then a random blur.
* **Bias field**: a smooth multiplicative field, up to ±40 %.
* **Gamma**: intensities raised to a random power (contrast non-linearity).
* **Resolution**: with probability 0.6 one axis is acquired with thick slices
  (3–7 mm): averaged over the slab and interpolated back, as resampling a 2D
  acquisition to 1 mm does.
* **Missing slices**: a truncated field of view (top or bottom cut off), as in the
  26-slice clinical scans, and occasionally a few blank slices.
* **Noise**: Rician-like background noise.
* **Distractors**: unlabelled small bright spots on T1c (vessels, choroid plexus) and on
  FLAIR/T2 (small white-matter hyperintensities), so brightness alone is not tumour.
* **Skull**: every sample is skull-stripped, as inference strips the skull first
  (:mod:`glioma_node.inference.brain_extraction`), with a brain mask eroded or dilated by up to
  2 voxels (4 mm), as real brain extraction errs.
* **Missing sequences**: with probability 0.35 some sequences are dropped (each with
  probability 0.5, but never both FLAIR and T2, on which the whole tumour is seen) and
  fed as zeros, the value inference gives a sequence a study lacks; a study of FLAIR
  alone, or of T2 alone, is still segmented.
* **Healthy**: 8 % of samples have the tumour replaced by the tissue around it.

All arrays are ``[z, y, x]`` on an axis-aligned LPS grid at the working spacing (2 mm
by default); see :mod:`glioma_node.training.seg.dataset` for how label maps get there.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from glioma_node.core.roles import ROLES as CHANNELS
from glioma_node.inference.intensity import zscore
from glioma_node.inference.regions import regions_from_labels
from glioma_node.training.synth.anatomy import TISSUE_LABELS, smooth_noise
from glioma_node.training.synth.contrast import MEANS

# Class indices of the merged label map: tissues 0–8 (0 air), then tumour compartments.
CORE, EDEMA_CLASS, ENHANCING_CLASS = 9, 10, 11
N_CLASSES = 12
_TISSUE_ORDER = ["air"] + sorted(TISSUE_LABELS, key=lambda name: TISSUE_LABELS[name])


@dataclass
class Sample:
    """One training pair: ``image`` (4, z, y, x) float32 normalised, ``target`` (3, z, y, x)
    float32 in [0, 1]: whole tumour, tumour core, enhancing tumour."""

    image: np.ndarray
    target: np.ndarray


def merge_labels(tissues: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """One class map: tissue labels, overwritten by tumour (BraTS 1 → CORE, 2 → EDEMA_CLASS,
    4 → ENHANCING_CLASS)."""
    classes = tissues.astype(np.uint8).copy()
    classes[seg == 1] = CORE
    classes[seg == 2] = EDEMA_CLASS
    classes[seg == 4] = ENHANCING_CLASS
    return classes


def _class_means(rng: np.random.Generator) -> np.ndarray:
    """(4 sequences, N_CLASSES) mean intensities for one sample (see the module doc).

    Tumour compartments are drawn relative to the brighter of grey and white matter of
    the same sequence, so edema is always conspicuous on FLAIR and T2 (as it is on real
    scans); necrosis is fluid-like on T2 but never as dark as CSF on FLAIR and T1
    (protein and debris), so the ventricles are not a model of necrosis.
    """
    means = np.zeros((len(CHANNELS), N_CLASSES), np.float32)
    core_kind = rng.choice(["necrosis", "solid", "mismatch"], p=[0.45, 0.45, 0.1])
    jitter = {t: float(np.exp(rng.normal(0, 0.2))) for t in _TISSUE_ORDER[1:]}
    for c, seq in enumerate(CHANNELS):
        base = MEANS[seq]
        for i, tissue in enumerate(_TISSUE_ORDER[1:], start=1):
            means[c, i] = base[tissue] * jitter[tissue] * np.exp(rng.normal(0, 0.1))
    wm = means[:, TISSUE_LABELS["wm"]]
    gm = means[:, TISSUE_LABELS["gm"]]
    csf = means[:, TISSUE_LABELS["csf"]]
    parenchyma = np.maximum(wm, gm)
    f, t1, t1c, t2 = (CHANNELS.index(s) for s in ("FLAIR", "T1", "T1c", "T2"))
    u = rng.uniform
    edema = {f: parenchyma[f] * u(1.15, 2.2), t2: parenchyma[t2] * u(1.2, 2.5), t1: wm[t1] * u(0.5, 0.95)}
    edema[t1c] = edema[t1] * u(0.95, 1.15)
    if core_kind == "necrosis":
        core = {f: max(csf[f] * u(2.5, 5.0), wm[f] * u(0.6, 1.6)), t2: max(csf[t2] * u(0.6, 1.0), parenchyma[t2] * 1.3),
                t1: min(csf[t1] * u(1.3, 2.2), wm[t1] * 0.8)}
    elif core_kind == "solid":
        core = {f: parenchyma[f] * u(1.15, 2.4), t2: parenchyma[t2] * u(1.2, 2.8), t1: wm[t1] * u(0.45, 0.9)}
    else:  # T2-FLAIR mismatch: bright on T2, suppressed on FLAIR
        core = {f: csf[f] * u(1.5, 3.0), t2: parenchyma[t2] * u(1.6, 3.0), t1: wm[t1] * u(0.45, 0.8)}
    core[t1c] = core[t1] * u(0.95, 1.2)
    enhancing = {f: parenchyma[f] * u(1.05, 2.0), t2: parenchyma[t2] * u(1.05, 2.2), t1: wm[t1] * u(0.55, 1.0),
                 t1c: wm[t1c] * u(1.2, 2.2)}
    for c in range(len(CHANNELS)):
        means[c, CORE], means[c, EDEMA_CLASS], means[c, ENHANCING_CLASS] = core[c], edema[c], enhancing[c]
    return means


def _thick_slices(image: np.ndarray, axis: int, factor: float) -> np.ndarray:
    """Average over slabs ``factor`` voxels thick along ``axis`` and interpolate back."""
    sigma = [0.0, 0.0, 0.0]
    sigma[axis] = factor / 2.355  # FWHM of the slab profile = slab thickness
    blurred = ndimage.gaussian_filter(image, sigma)
    zoom = [1.0, 1.0, 1.0]
    zoom[axis] = 1.0 / factor
    low = ndimage.zoom(blurred, zoom, order=1)
    back = ndimage.zoom(low, [a / b for a, b in zip(image.shape, low.shape)], order=1)
    return back[tuple(slice(0, n) for n in image.shape)]


def _spots(shape: tuple[int, ...], inside: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """A mask of ``count`` small random blobs (1–2 voxels radius) within ``inside``."""
    out = np.zeros(shape, bool)
    idx = np.argwhere(inside)
    if len(idx) == 0:
        return out
    for p in idx[rng.integers(len(idx), size=count)]:
        r = rng.uniform(0.8, 2.0)
        lo = np.maximum(p - 3, 0)
        hi = np.minimum(p + 4, shape)
        g = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
        out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] |= sum((gi - pi) ** 2 for gi, pi in zip(g, p)) <= r * r
    return out & inside


def render_classes(classes: np.ndarray, tumour: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(4, z, y, x) raw intensities drawn from the class map: random contrasts, texture,
    unlabelled distractor spots and partial-volume blur (see the module doc)."""
    shape = classes.shape
    means = _class_means(rng)
    vessels = _spots(shape, brain & ~tumour, rng, int(rng.integers(0, 40)))
    wmh = _spots(shape, (classes == TISSUE_LABELS["wm"]), rng, int(rng.integers(0, 12)))
    blur = rng.uniform(0.3, 1.0)
    channels = []
    for c, seq in enumerate(CHANNELS):
        m = means[c]
        std = m * rng.uniform(0.02, 0.12, N_CLASSES)
        img = m[classes] + rng.standard_normal(shape).astype(np.float32) * std[classes]
        if seq == "T1c":
            img[vessels] = m[TISSUE_LABELS["wm"]] * rng.uniform(1.3, 2.2)
        if seq in ("FLAIR", "T2"):
            img[wmh] = m[EDEMA_CLASS] * rng.uniform(0.8, 1.1)
        channels.append(ndimage.gaussian_filter(img.astype(np.float32), blur))
    return np.stack(channels)


def corrupt(image: np.ndarray, brain: np.ndarray, tumour: np.ndarray, targets: np.ndarray,
            rng: np.random.Generator) -> Sample:
    """Scanner effects on raw intensities (4, z, y, x), then the normalisation inference uses.

    Bias field, gamma, thick slices, Rician noise, skull stripping with an imperfect
    mask, truncated field of view, blank slices and dropped sequences (see the module
    doc). ``targets`` (3, z, y, x): WT, TC, ET; zeroed where the field of view was cut.
    """
    shape = brain.shape
    brain_in = brain
    step = int(rng.integers(-2, 3))
    if step > 0:
        brain_in = ndimage.binary_dilation(brain, iterations=step)
    elif step < 0:
        brain_in = ndimage.binary_erosion(brain, iterations=-step) | tumour
    thick_axis = int(rng.integers(0, 3)) if rng.random() < 0.6 else None
    thick = rng.uniform(1.5, 3.5)  # in 2 mm voxels: 3-7 mm slices
    bias_strength = rng.uniform(0.0, 0.35)
    channels = []
    for img in image:
        img = img * np.exp(bias_strength * smooth_noise(shape, rng, 40.0, coarse=4))
        img = np.clip(img, 0, None)
        img = (img / (img.max() + 1e-6)) ** float(np.exp(rng.normal(0, 0.2)))
        if thick_axis is not None:
            img = _thick_slices(img, thick_axis, thick)
        noise = rng.uniform(0.0, 0.04)
        img = np.sqrt((img + noise * rng.standard_normal(shape)) ** 2 + (noise * rng.standard_normal(shape)) ** 2)
        img = img * brain_in
        channels.append(img.astype(np.float32))
    image = np.stack(channels)
    visible = np.ones(shape[0], bool)  # per slice: what was not acquired cannot be labelled
    if rng.random() < 0.4:  # truncated field of view along z (superior or inferior)
        z = np.nonzero(brain.any(axis=(1, 2)))[0]
        if len(z):
            cut = int(rng.integers(0, max(1, (z[-1] - z[0]) // 4)))
            if rng.random() < 0.5:
                visible[: z[0] + cut] = False
            else:
                visible[z[-1] - cut + 1:] = False
    if rng.random() < 0.1:
        visible[rng.integers(0, shape[0], size=int(rng.integers(1, 4)))] = False
    image[:, ~visible] = 0
    inside = brain_in & visible[:, None, None]
    normalised = np.stack([zscore(ch, inside) for ch in image])
    if rng.random() < 0.35:
        dropped = {role for role in CHANNELS if rng.random() < 0.5}
        if {"FLAIR", "T2"} <= dropped:
            dropped.discard(str(rng.choice(["FLAIR", "T2"])))
        for role in dropped:
            normalised[CHANNELS.index(role)] = 0.0
    return Sample(normalised, (targets * visible[None, :, None, None]).astype(np.float32))


def synthesise(classes: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
               soft_regions: np.ndarray | None = None) -> Sample:
    """Draw one randomised, normalised 4-channel sample from the class map ``classes``.

    ``brain``: the brain mask (bool). ``soft_regions`` (3, z, y, x): partial-volume
    fractions of whole tumour, core and enhancing tumour from the finer source grid;
    derived from ``classes`` when None.
    """
    shape = classes.shape
    tumour = classes >= CORE
    if rng.random() < 0.08 and tumour.any():
        # Healthy: tumour voxels take the tissue of their nearest non-tumour neighbour.
        nearest = ndimage.distance_transform_edt(tumour, return_distances=False, return_indices=True)
        classes = classes[tuple(nearest)]
        soft_regions = np.zeros((3, *shape), np.float32)
        tumour = np.zeros(shape, bool)
    if soft_regions is None:
        labels = np.select([classes == CORE, classes == EDEMA_CLASS, classes == ENHANCING_CLASS], [1, 2, 4], 0)
        soft_regions = regions_from_labels(labels).astype(np.float32)
    image = render_classes(classes, tumour, brain, rng)
    return corrupt(image, brain, tumour, soft_regions.astype(np.float32), rng)


def augment(images: np.ndarray, brain: np.ndarray, soft_regions: np.ndarray, rng: np.random.Generator) -> Sample:
    """A randomised sample from real images (4, z, y, x): per-channel contrast
    stretch, then :func:`corrupt`. Skull-stripped public data stays skull-stripped."""
    scaled = np.stack([ch * float(np.exp(rng.normal(0, 0.2))) for ch in images])
    tumour = soft_regions[0] > 0.5
    return corrupt(scaled, brain, tumour, soft_regions.astype(np.float32), rng)
