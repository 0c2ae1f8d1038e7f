"""Bring a prior time point onto the current study's analysis grid: a rigid registration of
the prior's brain to the current brain, checked, then the prior's labels resampled.

Two visits are two sessions: the head lies elsewhere in the scanner and the Frames of
Reference differ, so the fit starts by matching the brains' centres of mass and is not
limited in how far it moves. It runs on the brain-extracted images (skull, fat and neck
change between visits and would pull the fit), same sequence to same sequence.
The fit is judged by what it is for: after it, the prior's brain mask must cover the
current brain mask with a Dice of at least ``MIN_BRAIN_DICE``; otherwise the alignment is
rejected with the reason, and the caller reports the comparison as unreliable rather than
measuring change on misaligned masks.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from glioma_node.core.grid import Grid
from glioma_node.inference.regions import dice
from glioma_node.inference.registration import Registration, register_rigid
from glioma_node.inference.resample import resample

MIN_BRAIN_DICE = 0.90


@dataclass
class PriorAlignment:
    """How the prior was aligned: ``transform`` maps a current-grid point (LPS mm) to the
    prior's (SimpleITK's pull-back); ``brain_dice`` the check's figure; ``accepted`` False
    with ``reason`` when the check failed."""

    transform: sitk.Transform
    registration: Registration
    brain_dice: float
    accepted: bool
    reason: str = ""

    def summary(self) -> dict:
        """JSON-ready figures for findings."""
        figures = {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                   for k, v in self.registration.summary().items()}  # a failed fit has no metric: null, not NaN
        return {**figures, "brain_dice": round(self.brain_dice, 4), "accepted": self.accepted, "reason": self.reason}


def align_prior(current: np.ndarray, current_brain: np.ndarray, current_grid: Grid,
                prior: np.ndarray, prior_brain: np.ndarray, prior_grid: Grid,
                min_brain_dice: float = MIN_BRAIN_DICE) -> PriorAlignment:
    """Rigidly align ``prior`` (one sequence, ``[z, y, x]`` on ``prior_grid``, its brain mask
    beside it) to the same sequence of the current study (on ``current_grid``)."""
    fixed = np.where(current_brain, current, 0).astype(np.float32)
    moving = np.where(prior_brain, prior, 0).astype(np.float32)
    registration = register_rigid(fixed, current_grid, moving, prior_grid, same_frame=False)
    transform = registration.transform
    warped_brain = resample(prior_brain.astype(np.uint8), prior_grid, current_grid, transform, "nearest") > 0
    overlap = dice(warped_brain, current_brain)
    if not registration.accepted:
        return PriorAlignment(transform, registration, overlap, False, registration.reason)
    if overlap < min_brain_dice:
        return PriorAlignment(transform, registration, overlap, False,
                              f"the prior's brain covers the current brain with Dice {overlap:.2f} after "
                              f"registration (< {min_brain_dice:.2f}): the two scans are not aligned")
    return PriorAlignment(transform, registration, overlap, True)


def labels_on_current(labels: np.ndarray, prior_grid: Grid, current_grid: Grid, alignment: PriorAlignment) -> np.ndarray:
    """The prior's label map (or lesion map) on the current grid, nearest neighbour."""
    return resample(labels, prior_grid, current_grid, alignment.transform, "nearest")
