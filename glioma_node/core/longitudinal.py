"""The vocabulary of follow-up studies: time points, measured lesions and response calls.

Data only (no I/O, no DICOM, no arrays): ``inference.longitudinal`` measures and classifies,
``dicom_io`` writes these into the SR, the service finds the priors. Lengths are in mm,
areas in mm², volumes in ml; dates are ``datetime.date``.

The response words follow RANO 2.0 (Wen et al., J Clin Oncol 2023;41:5187–5199) and, for
tumours without enhancement, RANO-LGG (van den Bent et al., Lancet Oncol 2011;12:583–593),
which adds the minor response; ``docs/rano.md`` gives every rule and its source.
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class TimePointKind(StrEnum):
    """Where a study stands in the patient's course (TID 1502's time point type)."""

    BASELINE = "baseline"
    POST_OPERATIVE = "post-operative"
    FOLLOW_UP = "follow-up"


class Component(StrEnum):
    """Which part of the tumour the response is measured on: the enhancing tumour (RANO 2.0),
    or for a tumour without measurable enhancement the FLAIR/T2 hyperintensity (RANO-LGG)."""

    ENHANCING = "enhancing"
    NON_ENHANCING = "non-enhancing"


class ResponseCategory(StrEnum):
    """A response call. ``MINOR_RESPONSE`` exists only for the non-enhancing component;
    ``NOT_EVALUABLE`` when no call can be made (no baseline, or a baseline without disease
    to compare against), with the reason."""

    COMPLETE_RESPONSE = "complete response"
    PARTIAL_RESPONSE = "partial response"
    MINOR_RESPONSE = "minor response"
    STABLE_DISEASE = "stable disease"
    PROGRESSIVE_DISEASE = "progressive disease"
    NOT_EVALUABLE = "not evaluable"


class ResponseStatus(StrEnum):
    """A call stands as ``PRELIMINARY`` until a later scan (at least 4 weeks on) gives the
    same category, which makes it ``CONFIRMED``."""

    PRELIMINARY = "preliminary"
    CONFIRMED = "confirmed"


@dataclass(frozen=True)
class Lesion:
    """One connected lesion of a component at one time point.

    ``longest_mm`` and ``perpendicular_mm``: the longest in-plane diameter and the longest
    diameter perpendicular to it, on the axial slice where their product is largest
    (``slice_index`` on the measured grid, ``slice_z_mm`` its patient z); ``slices``: on how
    many of the acquisition's axial slices it is seen. ``measurable``: both diameters at
    least the threshold and seen on enough slices. ``centroid_mm``: LPS mm.
    ``tracking_uid`` stays the same for the same lesion across time points (set when
    lesions are matched); ``part_of``: for a piece of a lesion that split, the tracking UID
    of the lesion it split from (its products count toward that lesion's); ``label`` is its
    index in the measured component's lesion map."""

    label: int
    volume_ml: float
    longest_mm: float
    perpendicular_mm: float
    slices: int
    measurable: bool
    centroid_mm: tuple[float, float, float]
    slice_index: int
    slice_z_mm: float
    tracking_uid: str = ""
    part_of: str = ""

    @property
    def product_mm2(self) -> float:
        """The bidimensional product (longest × perpendicular), mm²."""
        return self.longest_mm * self.perpendicular_mm


@dataclass(frozen=True)
class Burden:
    """What RANO compares between time points for one component: the target lesions'
    sum of products (mm²) and the component's whole volume (ml). On a follow-up the targets
    are the baseline's, followed by tracking UID (a target that shrank under 10 mm still
    counts, at least 5 × 5 mm while it is there; one that is gone counts 0)."""

    component: Component
    sum_of_products_mm2: float
    volume_ml: float
    targets: tuple[Lesion, ...] = ()
    non_targets: tuple[Lesion, ...] = ()

    @property
    def measurable(self) -> bool:
        """Whether there are target lesions to measure (their sum of products is above 0)."""
        return self.sum_of_products_mm2 > 0

    @property
    def any_measurable(self) -> bool:
        """Whether any lesion, target or not, is measurable now."""
        return any(x.measurable for x in (*self.targets, *self.non_targets))


@dataclass(frozen=True)
class TimePoint:
    """One study of a patient as the longitudinal comparison sees it."""

    study_instance_uid: str
    date: datetime.date | None
    kind: TimePointKind
    volumes_ml: dict[str, float] = field(default_factory=dict)
    burdens: dict[Component, Burden] = field(default_factory=dict)


@dataclass(frozen=True)
class Response:
    """A response call for one component at one time point against the reference scans.

    ``change_sum_of_products`` and ``change_volume`` are fractions (−0.5: half the size)
    against the reference the rule that decided used (baseline for responses, nadir for
    progression); ``reasons``: plain sentences a reader checks the call with;
    ``possible_pseudoprogression``: a progression call within 12 weeks of the end of
    radiotherapy."""

    component: Component
    category: ResponseCategory
    status: ResponseStatus
    reasons: tuple[str, ...]
    change_sum_of_products: float | None = None
    change_volume: float | None = None
    new_lesions: int = 0
    possible_pseudoprogression: bool = False


def _lesion_json(lesion: Lesion) -> dict[str, Any]:
    return {"tracking_uid": lesion.tracking_uid, **({"part_of": lesion.part_of} if lesion.part_of else {}),
            "longest_mm": lesion.longest_mm,
            "perpendicular_mm": lesion.perpendicular_mm, "product_mm2": round(lesion.product_mm2, 2),
            "volume_ml": lesion.volume_ml, "slices": lesion.slices, "measurable": lesion.measurable,
            "centroid_mm": list(lesion.centroid_mm), "slice_z_mm": lesion.slice_z_mm}


def _time_point_json(time_point: TimePoint) -> dict[str, Any]:
    return {"study_instance_uid": time_point.study_instance_uid,
            "date": None if time_point.date is None else time_point.date.isoformat(), "kind": str(time_point.kind),
            "volumes_ml": time_point.volumes_ml,
            "burdens": {str(c): {"sum_of_products_mm2": b.sum_of_products_mm2, "volume_ml": b.volume_ml,
                                 "targets": [t.tracking_uid for t in b.targets]} for c, b in time_point.burdens.items()}}


@dataclass(frozen=True)
class FollowUp:
    """What a follow-up study's findings say about its priors, for the component the
    response is called on.

    ``lesions``: the current lesions with tracking UIDs; ``prior_lesions``: the latest
    prior's, as measured on it; ``new``/``gone`` against the latest prior;
    ``volume_change``: region → (ml, fraction) against the latest prior (fraction None
    when the prior had none of it); ``baseline``/``latest``: the priors used; ``alignment``:
    how the latest prior was registered (figures, accepted, reason); ``warnings``: what
    makes the comparison less reliable (a rejected alignment, say)."""

    component: Component
    response: Response
    current: TimePoint
    baseline: TimePoint
    latest: TimePoint
    lesions: tuple[Lesion, ...]
    prior_lesions: tuple[Lesion, ...]
    new: tuple[Lesion, ...]
    gone: tuple[Lesion, ...]
    volume_change: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    alignment: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """What findings.json holds under ``follow_up``."""
        r = self.response
        new = {lesion.tracking_uid for lesion in self.new}
        return {
            "component": str(self.component),
            "response": {"category": str(r.category), "status": str(r.status), "reasons": list(r.reasons),
                         "change_sum_of_products": r.change_sum_of_products, "change_volume": r.change_volume,
                         "new_lesions": r.new_lesions, "possible_pseudoprogression": r.possible_pseudoprogression},
            "current": _time_point_json(self.current), "baseline": _time_point_json(self.baseline),
            "latest_prior": _time_point_json(self.latest),
            "lesions": [{**_lesion_json(x), "new": x.tracking_uid in new} for x in self.lesions],
            "prior_lesions": [_lesion_json(x) for x in self.prior_lesions],
            "gone": [x.tracking_uid for x in self.gone],
            "volume_change": {k: {"ml": ml, "fraction": f} for k, (ml, f) in self.volume_change.items()},
            "alignment": self.alignment, "warnings": list(self.warnings),
        }
