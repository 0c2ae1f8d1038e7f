"""Is this tumour mask probably wrong? A quality score from evidence the node already has.

A node that cannot yet be right on every scan must say when it is probably wrong. Each
piece of evidence gives a factor in [0, 1] (1: nothing suspicious); the score is the
smallest factor, so its reason is the one to read. The factors and their limits were set
from what a glioma is and how our segmenters fail (the ventricles and the periventricular
rim taken for edema, the mirror images of normal anatomy), not fitted to any case.

* **Symmetry**: the share of the whole tumour whose mirror image about the brain's own
  mid-sagittal plane is also tumour. Gliomas are mostly one-sided; ventricles,
  periventricular caps and choroid plexus are symmetric. Share 0.35 → 1, 0.75 → 0.
* **CSF**: the share of the whole tumour that looks like CSF deep in the brain (darker than
  the brain's 10th percentile on the T1-weighted series, not bright on FLAIR, more than
  15 mm from the brain's surface): the ventricles. Share 0.15 → 1, 0.45 → 0. Needs a T1w series.
* **Against the FLAIR asymmetry**: the volume that is brighter than its mirror image on
  FLAIR (or T2) by one standard deviation of the brain, smoothed, islands under 0.3 ml
  dropped, against the whole tumour's volume. A ratio within 1/3-3 → 1, 1/9 or 9 → 0:
  an over-call of symmetric tissue, or a miss of an obvious one-sided lesion.
  With no mask at all, 3 ml of such asymmetry → 1, 10 ml → 0 (a missed lesion).
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


def assess(channels: Mapping[str, np.ndarray], brain: np.ndarray, whole_tumour: np.ndarray, spacing_mm: float,
           agreement: float | None = None, agreement_of: str = "test-time variants",
           threshold: float = DEFAULT_THRESHOLD) -> SegmentationQuality:
    """The quality of one whole-tumour probability map (see the module doc).

    ``channels``: role → image on the grid (any scale; z-scored here inside ``brain``);
    ``brain``: the brain mask; ``whole_tumour``: probabilities in [0, 1]; ``agreement``:
    Dice between the segmenter's test-time variants, described by ``agreement_of``.
    """
    voxel_ml = spacing_mm ** 3 / 1000
    wt = whole_tumour > 0.5
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
    symmetric = float((wt & (mirror(wt, brain))).sum() / wt.sum())
    evidence["symmetric_share"] = symmetric
    factors.append((_ramp(symmetric, 0.35, 0.75),
                    f"{symmetric:.0%} of the whole tumour is mirrored on the other side (symmetric: ventricles, "
                    "periventricular signal or normal anatomy?)"))
    t1w = "T1" if "T1" in channels else "T1c" if "T1c" in channels else None
    if t1w is not None:
        t1 = zscore(channels[t1w] * brain, brain)
        dark = t1 < np.percentile(t1[brain], 10)
        if "FLAIR" in channels:
            dark &= zscore(channels["FLAIR"] * brain, brain) < 0.5
        deep = ndimage.distance_transform_edt(brain) * spacing_mm > 15.0
        csf = float((wt & dark & deep).sum() / wt.sum())
        evidence["deep_csf_share"] = csf
        factors.append((_ramp(csf, 0.15, 0.45), f"{csf:.0%} of the whole tumour looks like ventricular CSF"))
    if asym is not None:
        ratio = (wt_ml + 1.0) / (asym + 1.0)
        evidence["volume_to_asymmetry"] = ratio
        factors.append((_ramp(abs(np.log(ratio)), np.log(3.0), np.log(9.0)),
                        f"whole tumour {wt_ml:.0f} ml against {asym:.0f} ml of one-sided FLAIR hyperintensity"))
    outside = float((wt & ~brain).sum() / wt.sum())
    evidence["outside_brain_share"] = outside
    factors.append((_ramp(outside, 0.05, 0.3), f"{outside:.0%} of the whole tumour lies outside the brain mask"))
    if agreement is not None:
        evidence["agreement_dice"] = agreement
        factors.append((_ramp(agreement, 0.8, 0.5), f"{agreement_of} agree on the whole tumour with Dice "
                                                     f"{agreement:.2f} only"))
    undecided = float((whole_tumour > 0.3).sum() / max(1, (whole_tumour > 0.7).sum()) - 1.0)
    evidence["undecided_ratio"] = undecided
    factors.append((_ramp(undecided, 0.6, 2.0), f"the model is undecided on much of the mask "
                                                f"({undecided:.1f}× the confident volume)"))
    fragments = 1.0 - _largest_share(wt)
    evidence["fragment_share"] = fragments
    factors.append((_ramp(fragments, 0.4, 0.8), f"{fragments:.0%} of the whole tumour lies outside its largest part"))
    return _result(factors, evidence, threshold)


def _result(factors: list[tuple[float, str]], evidence: dict[str, float], threshold: float) -> SegmentationQuality:
    score = min((f for f, _ in factors), default=1.0)
    reasons = [why for f, why in sorted(factors) if f < 0.7]
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
                    agreement_of: str, threshold: float = DEFAULT_THRESHOLD, spacing_mm: float = 2.0
                    ) -> SegmentationQuality:
    """:func:`assess` of a prepared study (1 mm canonical grid), computed at ``spacing_mm``
    (block means: the evidence is about millilitres, and 2 mm keeps it under a second)."""
    factor = max(1, int(round(spacing_mm / prepared.grid.spacing[0])))
    spacing = prepared.grid.spacing[0] * factor
    low_brain = _pool(brain, factor) > 0.5
    channels = {role: _pool(image, factor) for role, image in prepared.channels.items()}
    return assess(channels, low_brain, _pool(whole_tumour, factor), spacing, agreement, agreement_of, threshold)
