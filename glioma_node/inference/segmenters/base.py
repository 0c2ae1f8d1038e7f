"""What every segmenter gives back, whatever model family it wraps."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

from glioma_node.inference.preprocess import PreparedStudy


@dataclass
class RegionMaps:
    """Per-voxel results on the prepared study's 1 mm canonical grid.

    ``whole_tumour``, ``tumour_core`` and ``enhancing_tumour`` are probabilities (or 0/1
    for models that only give labels), float32 ``[z, y, x]``. ``notes``: what the
    findings should say about how they were made (e.g. an ensemble member left out).
    """

    whole_tumour: np.ndarray
    tumour_core: np.ndarray
    enhancing_tumour: np.ndarray
    notes: list[str] = field(default_factory=list)
    agreement: float | None = None  # whole-tumour Dice between test-time variants, when the segmenter has them
    agreement_of: str = "test-time variants"  # which: "the input and its mirror image", "the ensemble's members"


class Segmenter(Protocol):
    """A loaded segmentation model.

    ``required_roles``: the sequences it cannot run without; a role it can do without
    (trained with that channel dropped) is fed as zeros after normalisation.
    """

    required_roles: tuple[str, ...]

    def describe(self) -> dict[str, str]:
        """name, version, sha256 and kind of the model, for findings and reports."""

    def predict(self, prepared: PreparedStudy, brain: np.ndarray) -> RegionMaps:
        """Region probabilities for a prepared study; ``brain`` is the boolean brain mask
        on the prepared canonical grid (:mod:`glioma_node.inference.brain_extraction`)."""


def single_output(value: object) -> torch.Tensor:
    """The one tensor a sliding-window inference returns for a network with one output
    (MONAI types it as a tensor, a tuple or a dict of them)."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"the network returned {type(value).__name__}, not one tensor of logits")
    return value
