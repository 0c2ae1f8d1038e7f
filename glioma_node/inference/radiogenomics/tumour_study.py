"""TumourStudy: what the radiogenomic stage reads of one study (arrays only).

Inference builds it from the segmentation (:func:`from_segmentation`), training from a
dataset case; both go through :func:`tumour_study`, so the normalisation a model was
trained with is the one it meets.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from glioma_node.core.grid import Grid
from glioma_node.core.roles import ROLES
from glioma_node.inference.intensity import head_mask, zscore


@dataclass
class TumourStudy:
    """Four z-scored sequences, labels and brain on one axis-aligned 1 mm LPS grid.

    ``images[role]``: float32 ``[z, y, x]``, z-scored inside ``brain`` (0 outside);
    ``labels``: BraTS labels 1/2/4 (uint8); ``brain``: bool; ``age_years`` may be None;
    ``known_markers``: marker → 1/0 status known from the laboratory (may be empty).
    """

    grid: Grid
    images: dict[str, np.ndarray]
    labels: np.ndarray
    brain: np.ndarray
    age_years: float | None = None
    known_markers: dict[str, int] = field(default_factory=dict)

    def stack(self) -> np.ndarray:
        """The images as one float32 array ``(4, z, y, x)`` in the order of ``ROLES``."""
        return np.stack([self.images[r] for r in ROLES])


def tumour_study(grid: Grid, channels: dict[str, np.ndarray], labels: np.ndarray, brain: np.ndarray | None,
                 age_years: float | None = None, known_markers: dict[str, int] | None = None) -> TumourStudy:
    """Normalise raw ``channels`` (role → array on ``grid``) inside ``brain`` (or the head)."""
    missing = [r for r in ROLES if r not in channels]
    if missing:
        raise ValueError(f"radiogenomics needs all four sequences; missing {', '.join(missing)}")
    if grid.spacing != (1.0, 1.0, 1.0) and not np.allclose(grid.spacing, 1.0):
        raise ValueError(f"radiogenomics works on a 1 mm grid, got spacing {grid.spacing}")
    if brain is None or not brain.any():
        brain = head_mask(channels["T1"])
    brain = brain | (labels > 0)
    images = {role: zscore(channels[role], brain) for role in ROLES}
    return TumourStudy(grid, images, labels.astype(np.uint8), brain, age_years, dict(known_markers or {}))
