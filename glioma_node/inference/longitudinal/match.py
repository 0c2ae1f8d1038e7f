"""Match one component's lesions across two time points by overlap, after the prior's lesion
map has been brought onto the current grid (registration and nearest-neighbour resampling
are the caller's: :mod:`glioma_node.inference.registration`).

A current lesion continues the prior lesion it overlaps most, within ``margin_mm`` (what
registration and segmentation may shift a border by), and keeps its tracking UID. A lesion
that overlaps none is new; a measurable new lesion is a progression by RANO. When a lesion
split, the piece that overlaps it most keeps its UID and the other pieces get their own,
marked ``part_of`` it (they count toward it, and are not new); two prior lesions that merged
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
    best: dict[int, tuple[int, int]] = {}  # current label -> (overlap, prior label)
    for lesion in current:
        inside = grown[current_map == lesion.label]
        labels, counts = np.unique(inside[inside > 0], return_counts=True)
        candidates = [(int(c), int(lab)) for lab, c in zip(labels, counts) if int(lab) in by_label]
        if candidates:
            best[lesion.label] = max(candidates)
    # Each prior lesion's UID goes to the current lesion that overlaps it most; other pieces
    # of a lesion that split get their own UID, marked as part of it (not new).
    heir: dict[int, int] = {}
    for label, (_, prior_label) in sorted(best.items(), key=lambda item: -item[1][0]):
        heir.setdefault(prior_label, label)
    out: list[Lesion] = []
    new: list[Lesion] = []
    for lesion in current:
        if lesion.label not in best:
            made = dataclasses.replace(lesion, tracking_uid=new_uid(lesion))
            new.append(made)
            out.append(made)
            continue
        prior_lesion = by_label[best[lesion.label][1]]
        uid = prior_lesion.tracking_uid
        if not uid:
            raise ValueError("the prior's lesions need their tracking UIDs (from its own comparison or report)")
        if heir[prior_lesion.label] == lesion.label:
            out.append(dataclasses.replace(lesion, tracking_uid=uid, part_of=prior_lesion.part_of))
        else:
            out.append(dataclasses.replace(lesion, tracking_uid=new_uid(lesion), part_of=prior_lesion.part_of or uid))
    continued = {prior_label for _, prior_label in best.values()}
    gone = tuple(lesion for lesion in prior if lesion.label not in continued)
    return Matched(tuple(out), tuple(new), gone)
