"""Is this tumour mask probably wrong? A quality score from evidence the node already has.

A node that cannot yet be right on every scan must say when it is probably wrong. Each
piece of evidence gives a factor in [0, 1] (1: nothing suspicious); the score is the
smallest factor, so its reason is the one to read. The factors and their limits were set
from what a glioma is and how our segmenters fail (the ventricles and the periventricular
rim taken for edema, the mirror images of normal anatomy), not fitted to any case.

* **Symmetry along the ventricles**: the share of the whole tumour whose mirror image
  about the brain's own mid-sagittal plane is also tumour and that lies within 4 mm of
  the ventricles (:func:`deep_csf`). Gliomas are mostly one-sided, and a butterfly glioma
  crossing the corpus callosum is symmetric through the white matter; the ventricles,
  periventricular caps and choroid plexus are symmetric at the ventricles. Share 0.25 → 1,
  0.6 → 0. Without a T1w or T2 series to find the ventricles: any mirrored share, 0.5 → 1, 0.9 → 0.
* **CSF**: the share of the whole tumour that looks like CSF deep in the brain (darker than
  the brain's 10th percentile on the T1-weighted series, not bright on FLAIR, more than
  15 mm from the brain's surface): the ventricles. Share 0.15 → 1, 0.45 → 0. Needs a T1w series.
* **Against the FLAIR asymmetry**: the volume that is brighter than its mirror image on
  FLAIR (or T2) by one standard deviation of the brain, smoothed, islands under 0.3 ml
  dropped, against the volume of the whole tumour's one-sided part (what its mirror image
  does not also hold). A ratio within 1/3-3 → 1, 1/9 or 9 → 0:
  an over-call of symmetric tissue, or a miss of an obvious one-sided lesion.
  With no mask at all, 3 ml of such asymmetry → 1, 10 ml → 0 (a missed lesion).
* **Fit to the hyperintensity**: the whole tumour is the FLAIR (or T2) abnormality, so
  the share of the mask that is hyperintense on neither FLAIR nor T2 (0.3 → 1, 0.6 → 0:
  tumour drawn over normal-looking tissue; a T2-FLAIR mismatch core or a necrosis is
  bright on T2), and the FLAIR-hyperintense volume contiguous with the mask but more
  than 2 mm outside it, over the mask's volume (0.5 → 1, 1.5 → 0: part of the lesion
  missed; FLAIR only, as CSF would join it on T2). Hyperintense: smoothed z-score above 1 and above half-way between the mask's
  median and the rest of the brain's.
* **Outside the brain**: the share of the whole tumour outside the brain mask. 0.05 → 1, 0.3 → 0.
* **Agreement**: Dice between test-time variants (the input and its mirror image, or
  the members of an ensemble), when the segmenter reports one. 0.8 → 1, 0.5 → 0.
* **Uncertainty**: the volume with probability above 0.3 over the volume above 0.7, less
  one: how much of the mask is undecided. 0.6 → 1, 2.0 → 0.
* **Fragments**: the share of the whole tumour outside its largest 26-connected part
  (multifocal gliomas exist, so only a mask mostly in pieces counts). 0.4 → 1, 0.8 → 0.

Brainstem lesions without a contiguous supratentorial one are not checked (it would need
an atlas). Arrays are ``[z, y, x]`` on an axis-aligned LPS grid of ``spacing_mm`` voxels.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from glioma_node.core.findings import SegmentationQuality
from glioma_node.inference.intensity import zscore
from glioma_node.inference.preprocess import PreparedStudy
from glioma_node.inference.symmetry import mirror

DEFAULT_THRESHOLD = 0.5


def _ramp(value: float, good: float, bad: float) -> float:
    """1 at ``good``, 0 at ``bad``, linear between (either direction)."""
    if good == bad:
        return 1.0
    return float(np.clip((value - bad) / (good - bad), 0.0, 1.0))


def _largest_share(mask: np.ndarray) -> float:
    parts, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return 1.0
    sizes = ndimage.sum_labels(mask, parts, index=np.arange(1, n + 1))
    return float(sizes.max() / sizes.sum())


def flair_asymmetry_ml(channels: Mapping[str, np.ndarray], brain: np.ndarray, spacing_mm: float) -> float | None:
    """Millilitres of brain brighter on FLAIR (else T2) than its mirror image by one
    standard deviation (smoothed by 2 mm, islands under 0.3 ml dropped); None without
    either sequence."""
    role = "FLAIR" if "FLAIR" in channels else "T2" if "T2" in channels else None
    if role is None or not brain.any():
        return None
    z = ndimage.gaussian_filter(zscore(channels[role] * brain, brain), 2.0 / spacing_mm)
    inner = ndimage.binary_erosion(brain, iterations=max(1, int(round(4 / spacing_mm))))
    bright = inner & (z - mirror(z, brain) > 1.0) & (z > 1.0)
    voxel_ml = spacing_mm ** 3 / 1000
    parts, n = ndimage.label(bright)
    if n:
        sizes = ndimage.sum_labels(bright, parts, index=np.arange(1, n + 1))
        bright = np.isin(parts, 1 + np.nonzero(sizes * voxel_ml >= 0.3)[0])
    return float(bright.sum() * voxel_ml)


def deep_csf(channels: Mapping[str, np.ndarray], brain: np.ndarray, spacing_mm: float) -> np.ndarray | None:
    """CSF more than 15 mm inside the brain, the ventricles: darker than the brain's 10th
    percentile on the T1-weighted series (else brighter than 2 SD on T2). None without
    either, or without a brain."""
    if brain.sum() < 10:
        return None
    deep = ndimage.distance_transform_edt(brain) * spacing_mm > 15.0
    t1w = "T1" if "T1" in channels else "T1c" if "T1c" in channels else None
    if t1w is not None:
        t1 = zscore(channels[t1w] * brain, brain)
        return (t1 < np.percentile(t1[brain], 10)) & deep
    if "T2" in channels:
        return (zscore(channels["T2"] * brain, brain) > 2.0) & deep
    return None


def hyperintensity_fit(channels: Mapping[str, np.ndarray], brain: np.ndarray, wt: np.ndarray, spacing_mm: float
                      ) -> tuple[float, float] | None:
    """How the mask fits the FLAIR (else T2) hyperintensity that defines a whole tumour:
    (share of the mask that is not hyperintense, hyperintense volume contiguous with the
    mask but outside it over the mask's volume). Hyperintense: smoothed z-score above
    both 1 and half-way between the mask's median and the rest of the brain's. None
    without FLAIR or T2, or with an empty mask."""
    roles = [r for r in ("FLAIR", "T2") if r in channels]
    if not roles or not wt.any() or not brain.any():
        return None
    around = brain & ~ndimage.binary_dilation(wt, iterations=max(1, int(round(4 / spacing_mm))))
    if not around.any():
        return None
    bright: dict[str, np.ndarray] = {}
    for role in roles:
        z = ndimage.gaussian_filter(zscore(channels[role] * brain, brain), 1.0 / spacing_mm)
        cut = max(1.0, (float(np.median(z[wt & brain])) if (wt & brain).any() else 0.0) / 2
                  + float(np.median(z[around])) / 2)
        bright[role] = (z > cut) & brain
    # not hyperintense on either: a T2-FLAIR mismatch core or a necrosis is bright on T2
    either = np.logical_or.reduce(list(bright.values()))
    not_bright = float((wt & ~either).sum() / wt.sum())
    beyond = 0.0
    if "FLAIR" in bright:  # the lesion's extent on FLAIR (on T2, CSF would join it)
        flair = bright["FLAIR"]
        parts, _ = ndimage.label(flair)
        touching = np.unique(parts[wt & flair])
        contiguous = np.isin(parts, touching[touching > 0])
        rim = ndimage.binary_dilation(wt, iterations=max(1, int(round(2 / spacing_mm))))
        beyond = float((contiguous & ~rim).sum() / wt.sum())
    return not_bright, beyond


def assess(channels: Mapping[str, np.ndarray], brain: np.ndarray, whole_tumour: np.ndarray, spacing_mm: float,
           agreement: float | None = None, agreement_of: str = "test-time variants",
           threshold: float = DEFAULT_THRESHOLD, mask: np.ndarray | None = None) -> SegmentationQuality:
    """The quality of one whole-tumour probability map (see the module doc).

    ``channels``: role → image on the grid (any scale; z-scored here inside ``brain``);
    ``brain``: the brain mask; ``whole_tumour``: probabilities in [0, 1]; ``mask``: the
    whole tumour as reported (after post-processing; default: probability > 0.5);
    ``agreement``: Dice between the segmenter's test-time variants, described by
    ``agreement_of``.
    """
    voxel_ml = spacing_mm ** 3 / 1000
    wt = whole_tumour > 0.5 if mask is None else mask.astype(bool)
    wt_ml = float(wt.sum() * voxel_ml)
    evidence: dict[str, float] = {"whole_tumour_ml": round(wt_ml, 2)}
    factors: list[tuple[float, str]] = []
    asym = flair_asymmetry_ml(channels, brain, spacing_mm)
    if asym is not None:
        evidence["flair_asymmetry_ml"] = round(asym, 2)
    if not wt.any():
        if asym is not None and asym >= 3.0:
            factors.append((_ramp(asym, 3.0, 10.0), f"no tumour segmented, but {asym:.0f} ml of the brain is brighter "
                                                    "than its mirror image on FLAIR"))
        return _result(factors, evidence, threshold)
    symmetric_mask = wt & mirror(wt, brain)
    symmetric = float(symmetric_mask.sum() / wt.sum())
    evidence["symmetric_share"] = symmetric
    ventricles = deep_csf(channels, brain, spacing_mm)
    if ventricles is not None:
        # what is mirrored AND lies at the ventricles: their walls, caps and plexus, not a butterfly glioma
        near = ndimage.binary_dilation(ventricles, iterations=max(1, int(round(4 / spacing_mm))))
        periventricular = float((symmetric_mask & near).sum() / wt.sum())
        evidence["symmetric_periventricular_share"] = periventricular
        factors.append((_ramp(periventricular, 0.25, 0.6),
                        f"{periventricular:.0%} of the whole tumour is mirrored on the other side along the "
                        "ventricles (ventricles or periventricular signal?)"))
    else:
        factors.append((_ramp(symmetric, 0.5, 0.9),
                        f"{symmetric:.0%} of the whole tumour is mirrored on the other side (symmetric: "
                        "ventricles, periventricular signal or normal anatomy?)"))
    if ventricles is not None and ("T1" in channels or "T1c" in channels):
        dark = ventricles  # found on the T1-weighted series: CSF-dark, deep
        if "FLAIR" in channels:
            dark = dark & (zscore(channels["FLAIR"] * brain, brain) < 0.5)
        if "T1c" in channels:  # a necrotic core lies inside an enhancing rim; a ventricle does not
            enhancing = (zscore(channels["T1c"] * brain, brain) > 2.0) & wt
            dark = dark & ~ndimage.binary_dilation(enhancing, iterations=max(1, int(round(6 / spacing_mm))))
        csf = float((wt & dark).sum() / wt.sum())
        evidence["deep_csf_share"] = csf
        factors.append((_ramp(csf, 0.15, 0.45), f"{csf:.0%} of the whole tumour looks like ventricular CSF"))
    if asym is not None:
        # the mask's one-sided part against the one-sided signal (a butterfly's mirrored halves cancel in both)
        one_sided_ml = float((wt & ~symmetric_mask).sum() * voxel_ml)
        ratio = (one_sided_ml + 1.0) / (asym + 1.0)
        evidence["volume_to_asymmetry"] = ratio
        factors.append((_ramp(abs(np.log(ratio)), np.log(3.0), np.log(9.0)),
                        f"{one_sided_ml:.0f} ml of one-sided whole tumour against {asym:.0f} ml of one-sided FLAIR "
                        "hyperintensity"))
    fit = hyperintensity_fit(channels, brain, wt, spacing_mm)
    if fit is not None:
        not_bright, beyond = fit
        evidence["not_hyperintense_share"], evidence["contiguous_beyond_ratio"] = not_bright, beyond
        factors.append((_ramp(not_bright, 0.3, 0.6), f"{not_bright:.0%} of the whole tumour is not hyperintense on "
                                                     "FLAIR (tumour drawn over normal-looking tissue?)"))
        factors.append((_ramp(beyond, 0.5, 1.5), f"the FLAIR hyperintensity it belongs to extends {beyond:.1f}× the "
                                                  "mask's volume beyond it (part of the lesion missed?)"))
    outside = float((wt & ~brain).sum() / wt.sum())
    evidence["outside_brain_share"] = outside
    factors.append((_ramp(outside, 0.05, 0.3), f"{outside:.0%} of the whole tumour lies outside the brain mask"))
    if agreement is not None:
        evidence["agreement_dice"] = agreement
        factors.append((_ramp(agreement, 0.8, 0.5), f"{agreement_of} agree on the whole tumour with Dice "
                                                     f"{agreement:.2f} only"))
    confident = int((whole_tumour > 0.7).sum())
    if confident:
        undecided = float((whole_tumour > 0.3).sum() / confident - 1.0)
        evidence["undecided_ratio"] = undecided
        factors.append((_ramp(undecided, 0.6, 2.0), f"the model is undecided on much of the mask "
                                                    f"({undecided:.1f}× the confident volume)"))
    else:
        factors.append((0.0, "no voxel of the mask has a probability above 0.7"))
    fragments = 1.0 - _largest_share(wt)
    evidence["fragment_share"] = fragments
    factors.append((_ramp(fragments, 0.4, 0.8), f"{fragments:.0%} of the whole tumour lies outside its largest part"))
    return _result(factors, evidence, threshold)


def _result(factors: list[tuple[float, str]], evidence: dict[str, float], threshold: float) -> SegmentationQuality:
    score = min((f for f, _ in factors), default=1.0)
    # the reasons of a doubtful mask: every factor below 0.7, weakest first; none for a plausible one
    reasons = [why for f, why in sorted(factors) if f < 0.7] if score < threshold else []
    return SegmentationQuality(score=round(score, 4), threshold=threshold, doubtful=score < threshold,
                               reasons=reasons, evidence={k: float(v) for k, v in evidence.items()})


def _pool(array: np.ndarray, factor: int) -> np.ndarray:
    """Block means of ``factor``³ voxels (the grid cropped to a multiple of ``factor``)."""
    if factor <= 1:
        return array.astype(np.float32)
    z, y, x = (n // factor * factor for n in array.shape)
    a = array[:z, :y, :x].astype(np.float32)
    return a.reshape(z // factor, factor, y // factor, factor, x // factor, factor).mean(axis=(1, 3, 5))


def assess_prepared(prepared: PreparedStudy, brain: np.ndarray, whole_tumour: np.ndarray, agreement: float | None,
                    agreement_of: str, threshold: float = DEFAULT_THRESHOLD, spacing_mm: float = 2.0,
                    mask: np.ndarray | None = None) -> SegmentationQuality:
    """:func:`assess` of a prepared study (1 mm canonical grid), computed at ``spacing_mm``
    (block means: the evidence is about millilitres, and 2 mm keeps it under a second);
    ``mask``: the reported whole tumour on the 1 mm grid."""
    factor = max(1, int(round(spacing_mm / prepared.grid.spacing[0])))
    spacing = prepared.grid.spacing[0] * factor
    low_brain = _pool(brain, factor) > 0.5
    channels = {role: _pool(image, factor) for role, image in prepared.channels.items()}
    low_mask = None if mask is None else _pool(mask.astype(np.float32), factor) >= 0.5
    return assess(channels, low_brain, _pool(whole_tumour, factor), spacing, agreement, agreement_of, threshold,
                  low_mask)
