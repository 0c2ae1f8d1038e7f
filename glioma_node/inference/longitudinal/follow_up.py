"""A follow-up from segmented time points: what :func:`glioma_node.inference.analyze.analyze`
and the repeatability evaluation call with the node's own segmentations.

:class:`TimePointImages` is what a time point keeps for later comparisons (the node stores it
with each study's results, so a later study compares with it without segmenting the prior
again): the reference sequence and brain mask for registration, the labels (and resection
cavity) for measurement, all on the study's 1 mm canonical grid, and the tracking UIDs its
lesions were given.
"""
from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from glioma_node.core.grid import Grid
from glioma_node.core.longitudinal import Component, FollowUp, Lesion, TimePointKind
from glioma_node.inference.longitudinal.align import align_prior, labels_on_current
from glioma_node.inference.longitudinal.compare import Measured, compare, measure_time_point


@dataclass
class TimePointImages:
    """One segmented time point on its canonical grid (``grid``: 1 mm, axis-aligned LPS).

    ``reference``: the registration sequence's raw intensities (float32); ``brain``: bool;
    ``labels``: BraTS uint8; ``cavity``: the resection cavity (bool) when known;
    ``slice_thickness_mm``: the reference acquisition's slice spacing (for "seen on two
    slices"); ``tracking``: component → lesion label → tracking UID, for lesions given one."""

    study_instance_uid: str
    date: datetime.date | None
    kind: TimePointKind
    grid: Grid
    reference: np.ndarray
    brain: np.ndarray
    labels: np.ndarray
    slice_thickness_mm: float | None = None
    cavity: np.ndarray | None = None
    tracking: dict[Component, dict[int, str]] = field(default_factory=dict)

    def measure(self) -> Measured:
        """This time point's volumes, lesions and burdens, its lesions carrying the tracking UIDs known."""
        measured = measure_time_point(self.labels, self.grid.affine, self.study_instance_uid, self.date, self.kind,
                                      self.slice_thickness_mm, self.cavity)
        lesions = {c: [replace(x, tracking_uid=self.tracking.get(c, {}).get(x.label, x.tracking_uid)) for x in found]
                   for c, found in measured.lesions.items()}
        return replace(measured, lesions=lesions)


def follow_up(current: TimePointImages, priors: list[TimePointImages], new_uid: Callable[[str, Lesion], str],
              weeks_after_radiotherapy: float | None = None) -> FollowUp:
    """Compare ``current`` with ``priors`` (oldest first). The latest prior is registered to the
    current study (:mod:`glioma_node.inference.longitudinal.align`); a rejected registration
    keeps the comparison (volumes and diameters are measured on each study alone) with a
    warning, and new lesions are then not assessed (every lesion would look new on misaligned
    scans). ``new_uid(study uid,
    lesion)`` makes the tracking UID of a lesion that has none (deterministic, so a
    recomputed version gives the same UIDs)."""
    if not priors:
        raise ValueError("a follow-up needs at least one prior time point")
    measured_priors = []
    for prior in priors:
        m = prior.measure()
        lesions = {c: [x if x.tracking_uid else replace(x, tracking_uid=new_uid(prior.study_instance_uid, x))
                       for x in found] for c, found in m.lesions.items()}
        measured_priors.append(replace(m, lesions=lesions))
    latest = priors[-1]
    alignment = align_prior(current.reference, current.brain, current.grid, latest.reference, latest.brain, latest.grid)
    warnings: tuple[str, ...] = ()
    if not alignment.accepted:
        warnings = (f"the prior study {latest.study_instance_uid} could not be aligned ({alignment.reason}): volumes "
                    "and diameters stand, lesion matching and new lesions are not reliable",)
    maps = {c: labels_on_current(lesion_map, latest.grid, current.grid, alignment)
            for c, lesion_map in measured_priors[-1].lesion_maps.items()}
    spacing = tuple(float(s) for s in current.grid.spacing[::-1])
    return compare(current.measure(), measured_priors, maps, spacing,  # type: ignore[arg-type]
                   lambda lesion: new_uid(current.study_instance_uid, lesion), weeks_after_radiotherapy,
                   alignment=alignment.summary(), warnings=warnings, lesions_matched=alignment.accepted)


def tracking_of(result: FollowUp) -> dict[Component, dict[int, str]]:
    """The tracking UIDs a follow-up gave the current study's lesions, to keep with its time point."""
    return {result.component: {x.label: x.tracking_uid for x in result.lesions}}


