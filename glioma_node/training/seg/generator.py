"""Label-driven image synthesis with domain randomisation (in the spirit of SynthSeg).

Each training sample is drawn afresh from a class map (tissues, tumour compartments and
the confounders of :mod:`glioma_node.training.seg.confounders`):

* **Acquisition kinds**: each T1-weighted series (pre- and post-contrast, drawn
  separately, often alike) is a spin echo, a 3D gradient echo (MPRAGE) or a T1-weighted
  FLAIR, each with its own grey/white/CSF contrast (:data:`T1_KINDS`); FLAIR is 2D (CSF
  often incompletely suppressed) or 3D; contrasts come from ranges relative to white
  matter, never from one case.
* **Tumour contrast**: compartments are drawn *relative to white matter of the same
  sequence* within wide ranges that keep only what defines them: edema and tumour bright
  on FLAIR and T2, enhancing tumour brighter on T1c than white matter, necrosis
  fluid-like. Label 1 is drawn as necrosis, solid non-enhancing tumour, or
  T2-FLAIR-mismatch tumour.
* **Tumour forms**: soft borders (the tumour's contrast fades over 1-4 mm around its
  label, the label at half strength), diffuse non-enhancing tumours (no enhancing
  label), a second focus, a tumour crossing the midline.
* **Confounders, all background**: ventricles of varied size and symmetry, compressed
  by the mass; periventricular caps and bands; white-matter hyperintensities; the
  choroid plexus; dura, venous sinuses, veins and flow voids; FLAIR inflow artefacts
  in CSF; scalp or marrow left at the brain mask's edge; susceptibility loss near the
  skull base; motion ghosts.
* **Texture and partial volume**: per-tissue Gaussian noise, then a random blur.
* **Bias field**: a smooth multiplicative field, up to ±40 %.
* **Gamma**: intensities raised to a random power (contrast non-linearity).
* **Resolution**: with probability 0.6 one axis is acquired with thick slices
  (3–7 mm): averaged over the slab and interpolated back, as resampling a 2D
  acquisition to 1 mm does.
* **Missing slices**: a truncated field of view (top or bottom cut off), as in the
  26-slice clinical scans, and occasionally a few blank slices.
* **Noise**: Rician-like background noise.
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
from enum import StrEnum

import numpy as np
from scipy import ndimage

from glioma_node.core.roles import ROLES as CHANNELS
from glioma_node.inference.intensity import zscore
from glioma_node.inference.regions import regions_from_labels
from glioma_node.training.seg.confounders import (
    CHOROID,
    CSF_FLOW,
    DURA,
    FLOW_VOID,
    PERIVENTRICULAR,
    VENTRICLE,
    VESSEL,
    WMH,
    blobs,
    falx_x,
    is_tumour,
    mirrored_x,
    perturb,
)
from glioma_node.training.synth.anatomy import TISSUE_LABELS, smooth_noise
from glioma_node.training.synth.contrast import MEANS

# Class indices of the merged label map: tissues 0–8 (0 air), then tumour compartments, then
# the confounders of glioma_node.training.seg.confounders (12–19).
CORE, EDEMA_CLASS, ENHANCING_CLASS = 9, 10, 11
N_CLASSES = VENTRICLE + 1
_TISSUE_ORDER = ["air"] + sorted(TISSUE_LABELS, key=lambda name: TISSUE_LABELS[name])


class T1Kind(StrEnum):
    """How a T1-weighted series was acquired; each has its own tissue contrast."""

    SPIN_ECHO = "spin echo"
    GRADIENT_ECHO = "3D gradient echo (MPRAGE)"
    T1_FLAIR = "T1-weighted FLAIR"


# grey matter / white matter and CSF / white matter ranges of each T1 kind
T1_KINDS: dict[T1Kind, tuple[tuple[float, float], tuple[float, float]]] = {
    T1Kind.SPIN_ECHO: ((0.72, 0.92), (0.2, 0.45)),
    T1Kind.GRADIENT_ECHO: ((0.58, 0.8), (0.06, 0.3)),
    T1Kind.T1_FLAIR: ((0.52, 0.75), (0.02, 0.16)),
}
# FLAIR 2D (CSF often incompletely suppressed) and 3D; T2
FLAIR_KINDS = {"2D": ((1.08, 1.5), (0.08, 0.9)), "3D": ((1.04, 1.4), (0.04, 0.4))}
T2_RATIOS = ((1.12, 1.6), (1.8, 4.0))

@dataclass
class Sample:
    """One training pair: ``image`` (4, z, y, x) float32 normalised, ``target`` (3, z, y, x)
    float32 in [0, 1]: whole tumour, tumour core, enhancing tumour; ``known``: which of the
    three the label defines (the loss ignores the others)."""

    image: np.ndarray
    target: np.ndarray
    known: tuple[bool, bool, bool] = (True, True, True)


def merge_labels(tissues: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """One class map: tissue labels, overwritten by tumour (BraTS 1 → CORE, 2 → EDEMA_CLASS,
    4 → ENHANCING_CLASS)."""
    classes = tissues.astype(np.uint8).copy()
    classes[seg == 1] = CORE
    classes[seg == 2] = EDEMA_CLASS
    classes[seg == 4] = ENHANCING_CLASS
    return classes


def _tissue_means(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, str]]:
    """(4 sequences, N_CLASSES) means of the normal tissues for one sample, and the
    acquisition kind drawn for each sequence. White matter is the reference of each
    sequence; grey matter and CSF come from the ranges of the sequence's kind; the head
    tissues keep their textbook ratio to white matter, jittered."""
    means = np.zeros((len(CHANNELS), N_CLASSES), np.float32)
    t1_kind = T1Kind(rng.choice(list(T1Kind)))
    t1c_kind = t1_kind if rng.random() < 0.6 else T1Kind(rng.choice(list(T1Kind)))
    flair_kind = str(rng.choice(list(FLAIR_KINDS), p=[0.6, 0.4]))
    kinds = {"T1": str(t1_kind), "T1c": str(t1c_kind), "FLAIR": f"{flair_kind} FLAIR", "T2": "T2"}
    ratios = {"T1": T1_KINDS[t1_kind], "T1c": T1_KINDS[t1c_kind], "FLAIR": FLAIR_KINDS[flair_kind], "T2": T2_RATIOS}
    jitter = {t: float(np.exp(rng.normal(0, 0.2))) for t in _TISSUE_ORDER[1:]}
    for c, seq in enumerate(CHANNELS):
        base = MEANS[seq]
        wm = base["wm"] * float(np.exp(rng.normal(0, 0.15)))
        for i, tissue in enumerate(_TISSUE_ORDER[1:], start=1):
            means[c, i] = wm * base[tissue] / base["wm"] * jitter[tissue]
        gm_range, csf_range = ratios[seq]
        means[c, TISSUE_LABELS["wm"]] = wm
        means[c, TISSUE_LABELS["gm"]] = wm * rng.uniform(*gm_range)
        means[c, TISSUE_LABELS["csf"]] = wm * rng.uniform(*csf_range)
        means[c, TISSUE_LABELS["ext_csf"]] = means[c, TISSUE_LABELS["csf"]] * rng.uniform(0.8, 1.2)
        means[c, VENTRICLE] = means[c, TISSUE_LABELS["csf"]] * rng.uniform(0.85, 1.15)
    if flair_kind == "2D" and rng.random() < 0.5:  # ventricular CSF less suppressed than sulcal CSF
        means[CHANNELS.index("FLAIR"), VENTRICLE] *= rng.uniform(1.0, 1.8)
    return means, kinds


def _class_means(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, str]]:
    """(4 sequences, N_CLASSES) mean intensities for one sample (see the module doc), and
    the acquisition kinds drawn.

    Tumour compartments are drawn relative to the brighter of grey and white matter of
    the same sequence, so edema is always conspicuous on FLAIR and T2 (as it is on real
    scans); necrosis is fluid-like on T2 but never as dark as CSF on FLAIR and T1
    (protein and debris), so the ventricles are not a model of necrosis. The confounders
    overlap the tumour's ranges on purpose: what tells them apart is where and how they
    lie, not their brightness.
    """
    means, kinds = _tissue_means(rng)
    core_kind = rng.choice(["necrosis", "solid", "mismatch"], p=[0.45, 0.45, 0.1])
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
    gradient_echo = kinds["T1c"] == T1Kind.GRADIENT_ECHO
    confounders = {
        PERIVENTRICULAR: {f: parenchyma[f] * u(1.05, 1.6), t2: parenchyma[t2] * u(1.05, 1.6), t1: wm[t1] * u(0.8, 1.0)},
        WMH: {f: parenchyma[f] * u(1.1, 1.9), t2: parenchyma[t2] * u(1.1, 2.0), t1: wm[t1] * u(0.6, 0.95)},
        CHOROID: {f: parenchyma[f] * u(0.6, 1.4), t2: parenchyma[t2] * u(0.8, 1.6), t1: gm[t1] * u(0.8, 1.2),
                  t1c: wm[t1c] * u(1.0, 2.0)},
        VESSEL: {f: parenchyma[f] * u(0.1, 1.2), t2: parenchyma[t2] * u(0.1, 1.0), t1: wm[t1] * u(0.3, 1.0),
                 t1c: wm[t1c] * u(1.1, 2.5)},
        FLOW_VOID: {f: wm[f] * u(0.03, 0.3), t2: wm[t2] * u(0.03, 0.3), t1: wm[t1] * u(0.03, 0.3),
                    t1c: wm[t1c] * (u(1.0, 2.0) if gradient_echo else u(0.03, 0.3))},
        CSF_FLOW: {f: parenchyma[f] * u(0.7, 1.8), t2: csf[t2] * u(0.3, 1.1), t1: csf[t1] * u(0.8, 1.5)},
        DURA: {f: parenchyma[f] * u(0.3, 1.0), t2: parenchyma[t2] * u(0.2, 0.7), t1: wm[t1] * u(0.3, 0.7),
               t1c: wm[t1c] * (u(1.0, 2.0) if gradient_echo else u(0.6, 1.4))},
    }
    for c in range(len(CHANNELS)):
        means[c, CORE], means[c, EDEMA_CLASS], means[c, ENHANCING_CLASS] = core[c], edema[c], enhancing[c]
        for cls, values in confounders.items():
            means[c, cls] = values.get(c, values[t1] * u(0.95, 1.05) if c == t1c else 0.0)
    return means, kinds


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


def _background_classes(classes: np.ndarray, tumour: np.ndarray) -> np.ndarray:
    """The class map with every tumour voxel given the class of its nearest non-tumour voxel."""
    if not tumour.any() or tumour.all():
        return classes
    nearest = ndimage.distance_transform_edt(tumour, return_distances=False, return_indices=True)
    return classes[tuple(nearest)]


def render_classes(classes: np.ndarray, tumour: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
                   border_sigma: float | None = None) -> np.ndarray:
    """(4, z, y, x) raw intensities drawn from the class map: random contrasts, texture,
    unlabelled distractor spots, the tumour's border hard or soft, and partial-volume blur
    (see the module doc). A soft border fades the tumour's contrast into the tissue around
    it over ``σ`` of 0.5-2 voxels; the label's edge lies where the contrast is half."""
    shape = classes.shape
    means, _ = _class_means(rng)
    vessels = blobs(brain & ~tumour, rng, int(rng.integers(0, 40)), (0.8, 2.0)) & brain & ~tumour
    white = classes == TISSUE_LABELS["wm"]
    wmh = blobs(white, rng, int(rng.integers(0, 12)), (0.8, 2.0)) & white
    blur = rng.uniform(0.3, 1.0)
    soft = rng.uniform(0.5, 2.0) if tumour.any() and rng.random() < 0.5 else 0.0
    if border_sigma is not None:  # a given border (voxels; 0: hard) instead of a random one
        soft = border_sigma if tumour.any() else 0.0
    background = _background_classes(classes, tumour) if soft else classes
    foreground = classes
    if soft:  # every voxel's nearest tumour class, so the contrast fades outwards as well as in
        nearest = ndimage.distance_transform_edt(~tumour, return_distances=False, return_indices=True)
        foreground = classes[tuple(nearest)]
    weight = ndimage.gaussian_filter(tumour.astype(np.float32), soft) if soft else None
    channels = []
    for c, seq in enumerate(CHANNELS):
        m = means[c]
        std = m * rng.uniform(0.02, 0.12, N_CLASSES)
        noise = rng.standard_normal(shape).astype(np.float32)
        img = m[classes] + noise * std[classes]
        if weight is not None:
            img = (weight * (m[foreground] + noise * std[foreground])
                   + (1 - weight) * (m[background] + noise * std[background]))
        if seq == "T1c":
            img[vessels] = m[TISSUE_LABELS["wm"]] * rng.uniform(1.3, 2.2)
        if seq in ("FLAIR", "T2"):
            img[wmh] = m[EDEMA_CLASS] * rng.uniform(0.8, 1.1)
        channels.append(ndimage.gaussian_filter(img.astype(np.float32), blur))
    return np.stack(channels)


def _ghosts(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Motion ghosts: faint copies shifted by about half the field of view along an
    in-plane phase-encoding axis."""
    axis = int(rng.integers(1, 3))
    out = img.copy()
    for k in range(int(rng.integers(1, 3))):
        shift = img.shape[axis] // (2 + k) + int(rng.integers(-3, 4))
        out += rng.uniform(0.03, 0.15) * np.roll(img, shift, axis=axis)
    return out


def _susceptibility(brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A multiplicative field < 1 around a few points of the inferior brain surface (the
    skull base, sinuses and mastoids), with a little pile-up at its edge."""
    field = np.ones(brain.shape, np.float32)
    surface = brain & ~ndimage.binary_erosion(brain, iterations=2)
    zs = np.nonzero(brain.any(axis=(1, 2)))[0]
    if not surface.any() or not len(zs):
        return field
    low = surface & (np.arange(brain.shape[0])[:, None, None] <= zs[0] + 0.35 * (zs[-1] - zs[0]))
    idx = np.argwhere(low if low.any() else surface)
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in brain.shape], indexing="ij")
    for p in idx[rng.integers(len(idx), size=int(rng.integers(1, 4)))]:
        r = rng.uniform(3.0, 8.0)
        d2 = (z - p[0]) ** 2 + (y - p[1]) ** 2 + (x - p[2]) ** 2
        blob = np.exp(-d2 / (2 * r * r))
        ring = np.exp(-((np.sqrt(d2) - 1.6 * r) ** 2) / (2 * (0.4 * r) ** 2))
        field *= 1 - rng.uniform(0.4, 0.95) * blob + rng.uniform(0.0, 0.5) * ring
    return field


def _residual_edge(brain_in: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The brain mask grown by 2-5 voxels over a few patches of its edge: scalp, marrow
    or dura that real brain extraction leaves behind."""
    edge = brain_in & ~ndimage.binary_erosion(brain_in)
    if not edge.any():
        return brain_in
    grown = ndimage.binary_dilation(brain_in, iterations=int(rng.integers(2, 6)))
    patches = blobs(edge, rng, int(rng.integers(1, 5)), (4.0, 12.0))
    return brain_in | (grown & patches)


def corrupt(image: np.ndarray, brain: np.ndarray, tumour: np.ndarray, targets: np.ndarray,
            rng: np.random.Generator, present: tuple[bool, ...] | None = None) -> Sample:
    """Scanner effects on raw intensities (4, z, y, x), then the normalisation inference uses.

    Bias field, gamma, thick slices, Rician noise, skull stripping with an imperfect
    mask, truncated field of view, blank slices and dropped sequences (see the module
    doc). ``targets`` (3, z, y, x): WT, TC, ET; zeroed where the field of view was cut.
    ``present``: the sequences the case has (default all); a missing one is zeros, and the
    last of FLAIR and T2 it has is never dropped.
    """
    shape = brain.shape
    brain_in = brain
    step = int(rng.integers(-2, 3))
    if step > 0:
        brain_in = ndimage.binary_dilation(brain, iterations=step)
    elif step < 0:
        brain_in = ndimage.binary_erosion(brain, iterations=-step) | tumour
    if rng.random() < 0.35:
        brain_in = _residual_edge(brain_in, rng)
    susceptibility = _susceptibility(brain, rng) if rng.random() < 0.3 else None
    ghosts = rng.random() < 0.2
    thick_axis = int(rng.integers(0, 3)) if rng.random() < 0.6 else None
    thick = rng.uniform(1.5, 3.5)  # in 2 mm voxels: 3-7 mm slices
    bias_strength = rng.uniform(0.0, 0.35)
    channels = []
    for img in image:
        img = img * np.exp(bias_strength * smooth_noise(shape, rng, 40.0, coarse=4))
        if susceptibility is not None:  # a tumour keeps at least 60 % of its signal, so its label stays true
            loss = susceptibility ** rng.uniform(0.5, 1.5)
            img = img * np.where(tumour, np.maximum(loss, 0.6), loss)
        if ghosts and rng.random() < 0.7:
            img = _ghosts(img, rng)
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
    has = {role for role, p in zip(CHANNELS, present or (True,) * len(CHANNELS)) if p}
    dropped = set(CHANNELS) - has
    if rng.random() < 0.35:
        dropped |= {role for role in CHANNELS if role in has and rng.random() < 0.5}  # in order: same seed, same sample
        whole_tumour_roles = [r for r in ("FLAIR", "T2") if r in has]
        if whole_tumour_roles and set(whole_tumour_roles) <= dropped:
            dropped.discard(str(rng.choice(whole_tumour_roles)))
    for role in dropped:
        normalised[CHANNELS.index(role)] = 0.0
    return Sample(normalised, (targets * visible[None, :, None, None]).astype(np.float32))


def _labels(classes: np.ndarray) -> np.ndarray:
    return np.select([classes == CORE, classes == EDEMA_CLASS, classes == ENHANCING_CLASS], [1, 2, 4], 0)


def _second_focus(classes: np.ndarray, brain: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """A small separate tumour (edema around a core, enhancing or not) in white matter
    at least 10 voxels from the first one; None when there is no room."""
    tumour = is_tumour(classes)
    white = (classes == TISSUE_LABELS["wm"]) & brain
    if tumour.any():
        white &= ndimage.distance_transform_edt(~tumour) >= 10
    idx = np.argwhere(white)
    if not len(idx):
        return None
    centre = idx[rng.integers(len(idx))]
    z, y, x = np.meshgrid(*[np.arange(n) for n in classes.shape], indexing="ij")
    r = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2)
    r = r * (1 + 0.15 * np.clip(smooth_noise(classes.shape, rng, 3.0, coarse=2), -2, 2))
    radius = rng.uniform(2.0, 5.0)
    out = classes.copy()
    normal = brain & np.isin(classes, (TISSUE_LABELS["gm"], TISSUE_LABELS["wm"]))
    normal &= ndimage.distance_transform_edt(~is_tumour(classes)) >= 3  # separate from the first tumour
    out[(r <= radius + rng.uniform(1.0, 4.0)) & normal] = EDEMA_CLASS
    out[(r <= radius) & normal] = ENHANCING_CLASS if rng.random() < 0.5 else CORE
    return out


def _across_midline(classes: np.ndarray, soft: np.ndarray, brain: np.ndarray, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """A tumour near the midline spread across it, as a glioma crossing the corpus callosum
    does: infiltration (edema) bridging the midline in the rows where the tumour comes
    within a few voxels of it, and the tumour's part near the midline mirrored into the
    other hemisphere. The midline is the falx (class DURA inside the brain); only grey and
    white matter is taken over. None when the tumour is far from the midline or the crop
    holds no falx."""
    mid = falx_x(classes, brain)
    tumour = is_tumour(classes)
    if mid is None or not tumour.any():
        return None
    width = rng.uniform(3.0, 9.0)
    x = np.arange(classes.shape[2])[None, None, :]
    near = tumour & (np.abs(x - mid) <= width)
    if near.sum() < 10:
        return None
    parenchyma = brain & np.isin(classes, (TISSUE_LABELS["gm"], TISSUE_LABELS["wm"]))
    source, _ = mirrored_x(classes.shape, mid)
    mirrored = np.take_along_axis(near, source, axis=2) & parenchyma & ~tumour
    rows = ndimage.binary_dilation(near.any(axis=2), iterations=1)[..., None]
    bridge = rows & (np.abs(x - mid) <= rng.uniform(2.0, 4.0) + abs(width - 3.0) / 2) & parenchyma & ~tumour
    bridge &= ~mirrored
    out = classes.copy()
    out[mirrored] = np.take_along_axis(classes, source, axis=2)[mirrored]
    out[bridge] = EDEMA_CLASS
    soft = soft.copy()
    for k in range(3):
        soft[k][mirrored] = np.take_along_axis(soft[k], source, axis=2)[mirrored]
        soft[k][bridge] = 1.0 if k == 0 else 0.0
    return out, soft


def sample_classes(classes: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
                   soft_regions: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The class map and targets of one sample: healthy (8 %), or the tumour's form drawn
    (crossing the midline, a second focus, diffuse non-enhancing), then the per-sample
    confounders (:func:`glioma_node.training.seg.confounders.perturb`). ``soft_regions``
    (3, z, y, x): partial-volume fractions of whole tumour, core and enhancing tumour from
    the finer source grid, derived from ``classes`` when None; they follow every change
    made to the tumour, and no confounder touches them."""
    shape = classes.shape
    tumour = is_tumour(classes)
    soft: np.ndarray = (regions_from_labels(_labels(classes)).astype(np.float32) if soft_regions is None
                        else soft_regions)
    if rng.random() < 0.08 and tumour.any():
        # Healthy: tumour voxels take the tissue of their nearest non-tumour neighbour.
        classes = _background_classes(classes, tumour)
        soft = np.zeros((3, *shape), np.float32)
    else:
        if rng.random() < 0.12:
            crossed = _across_midline(classes, soft, brain, rng)
            if crossed is not None:
                classes, soft = crossed
        if rng.random() < 0.12:
            focus = _second_focus(classes, brain, rng)
            if focus is not None:
                added = is_tumour(focus) & ~is_tumour(classes)
                extra = regions_from_labels(np.where(added, _labels(focus), 0)).astype(np.float32)
                classes, soft = focus, np.maximum(soft, extra)
        if rng.random() < 0.15:  # diffuse non-enhancing glioma: no enhancing label, one solid core
            classes = np.where(classes == ENHANCING_CLASS, CORE, classes).astype(classes.dtype)
            soft = np.stack([soft[0], np.maximum(soft[1], soft[2]),
                                     np.zeros(shape, np.float32)])
    drawn = perturb(classes, brain, rng)
    soft = _agree(soft, drawn)
    soft[:, drawn != classes] = 0.0  # a confounder drawn over normal tissue is background, not partly tumour
    return drawn, soft


def _agree(soft: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Targets that agree with the class map the image is drawn from: a voxel drawn as a
    region is at least 0.55 of it, a voxel drawn as anything else (a ventricle, CSF, a
    confounder) at most 0.45. The partial-volume fractions come from a finer grid than the
    nearest-neighbour class map, and differ from it by a voxel at thin places."""
    drawn = regions_from_labels(_labels(classes)).astype(bool)
    return np.where(drawn, np.maximum(soft, 0.55), np.minimum(soft, 0.45)).astype(np.float32)


def synthesise(classes: np.ndarray, brain: np.ndarray, rng: np.random.Generator,
               soft_regions: np.ndarray | None = None) -> Sample:
    """Draw one randomised, normalised 4-channel sample from the class map ``classes``
    (:func:`sample_classes`, then :func:`render_classes` and :func:`corrupt`).

    ``brain``: the brain mask (bool); ``soft_regions`` as :func:`sample_classes` takes them.
    """
    classes, soft_regions = sample_classes(classes, brain, rng, soft_regions)
    tumour = is_tumour(classes)
    image = render_classes(classes, tumour, brain, rng)
    return corrupt(image, brain, tumour, soft_regions, rng)


def augment(images: np.ndarray, brain: np.ndarray, soft_regions: np.ndarray, rng: np.random.Generator,
            present: tuple[bool, ...] | None = None, known: tuple[bool, bool, bool] = (True, True, True)) -> Sample:
    """A randomised sample from real images (4, z, y, x): per-channel contrast
    stretch, then :func:`corrupt`. Skull-stripped public data stays skull-stripped.
    ``present``: the sequences the case has; a missing one stays zeros (never noise)."""
    scaled = np.stack([ch * float(np.exp(rng.normal(0, 0.2))) for ch in images])
    tumour = soft_regions[0] > 0.5
    sample = corrupt(scaled, brain, tumour, soft_regions.astype(np.float32), rng, present)
    sample.known = known
    return sample
