"""Match one component's lesions across two time points by overlap, after the prior's lesion
map has been brought onto the current grid (registration and nearest-neighbour resampling
are the caller's: :mod:`glioma_node.inference.registration`).

A current lesion continues the prior lesion it overlaps most, within ``margin_mm`` (what
registration and segmentation may shift a border by), and keeps its tracking UID. A lesion
that overlaps none is new; a measurable new lesion is a progression by RANO. Two current
lesions may continue one prior lesion (a lesion that split); two prior lesions that merged
give their one current lesion the UID of the larger overlap.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from glioma_node.core.longitudinal import Lesion

MARGIN_MM = 3.0


@dataclass(frozen=True)
class Matched:
    """The current lesions with their tracking UIDs, which of them are new, and the prior
    lesions that no current lesion continues (gone)."""

    lesions: tuple[Lesion, ...]
    new: tuple[Lesion, ...]
    gone: tuple[Lesion, ...]

    @property
    def new_measurable(self) -> int:
        """How many new lesions are measurable."""
        return sum(lesion.measurable for lesion in self.new)


def match(current: list[Lesion], current_map: np.ndarray, prior: list[Lesion], prior_map: np.ndarray,
          spacing_zyx: tuple[float, float, float], new_uid: Callable[[Lesion], str],
          margin_mm: float = MARGIN_MM) -> Matched:
    """Give each current lesion a tracking UID: the prior lesion's it continues, else
    ``new_uid(lesion)``. ``current_map``/``prior_map``: the lesion maps (``Lesion.label``
    inside each) on the current grid, ``spacing_zyx`` its voxel size in mm."""
    if current_map.shape != prior_map.shape:
        raise ValueError(f"lesion maps on different grids: {current_map.shape} and {prior_map.shape}; "
                         "resample the prior's onto the current grid first")
    by_label = {lesion.label: lesion for lesion in prior}
    radius = [max(0, int(round(margin_mm / s))) for s in spacing_zyx]
    grown = ndimage.grey_dilation(prior_map, size=tuple(2 * r + 1 for r in radius)) if any(radius) else prior_map
    # Where a grown lesion meets another, the lesion really there keeps its voxels.
    grown = np.where(prior_map > 0, prior_map, grown)
    out: list[Lesion] = []
    new: list[Lesion] = []
    continued: set[int] = set()
    for lesion in current:
        inside = grown[current_map == lesion.label]
        labels, counts = np.unique(inside[inside > 0], return_counts=True)
        candidates = [(int(c), int(lab)) for lab, c in zip(labels, counts) if int(lab) in by_label]
        if candidates:
            _, label = max(candidates)
            uid = by_label[label].tracking_uid or new_uid(by_label[label])
            continued.update(lab for _, lab in candidates)
            out.append(dataclasses.replace(lesion, tracking_uid=uid))
        else:
            made = dataclasses.replace(lesion, tracking_uid=new_uid(lesion))
            out.append(made)
            new.append(made)
    gone = tuple(lesion for lesion in prior if lesion.label not in continued)
    return Matched(tuple(out), tuple(new), gone)
