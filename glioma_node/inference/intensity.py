"""Intensity normalisation of MR images, shared by inference and training.

MR intensities have no unit: scanners scale them arbitrarily. Every image a network
sees is therefore z-scored inside a mask (the head, or the brain once it is known),
with the statistics taken between the 0.5th and 99.5th percentiles so a few bright
vessels or fat voxels cannot set the scale. Outside the mask the value is 0.
Training calls these same functions on synthetic images, so a model never meets a
normalisation it was not trained with.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def head_mask(image: np.ndarray, fraction: float = 0.08) -> np.ndarray:
    """The voxels of the head (or of the brain, in a skull-stripped image), boolean.

    A voxel is foreground above ``fraction`` of the 99.5th percentile of the positive
    voxels; the largest connected part, with holes (dark CSF, air sinuses) filled.
    """
    positive = image[image > 0]
    if positive.size == 0:
        return np.zeros(image.shape, bool)
    mask = image > fraction * np.percentile(positive, 99.5)
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(mask)


def zscore(image: np.ndarray, mask: np.ndarray, clip: float = 6.0) -> np.ndarray:
    """``image`` minus its robust mean over ``mask``, divided by its robust std; 0 outside.

    Result is float32, clipped to ±``clip`` standard deviations.
    """
    out = np.zeros(image.shape, np.float32)
    values = image[mask]
    if values.size < 10:
        return out
    lo, hi = np.percentile(values, [0.5, 99.5])
    core = values[(values >= lo) & (values <= hi)]
    std = float(core.std()) or 1.0
    out[mask] = np.clip((values - float(core.mean())) / std, -clip, clip)
    return out
