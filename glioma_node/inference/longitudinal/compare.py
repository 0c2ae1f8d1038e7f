"""One follow-up comparison: measure each time point, match the lesions to the latest prior,
and call the response against the baseline and the nadir.

The reference scans (RANO 2.0): the *baseline* is the latest prior marked baseline or
post-operative (the scan treatment is judged from), else the earliest prior; the *nadir* is
the smallest burden from the baseline on (sum of products and volume each at its smallest).
Lesions are matched to the most recent prior only, whose tracking UIDs carry the chain: a
lesion already new at an earlier follow-up is not new again.

Components (:class:`glioma_node.core.longitudinal.Component`): the enhancing tumour is BraTS
label 4; the non-enhancing component is the whole FLAIR/T2 hyperintensity (labels 1, 2, 4),
as RANO-LGG measures it.
"""
from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from glioma_node.core.longitudinal import Burden, Component, FollowUp, Lesion, TimePoint, TimePointKind
from glioma_node.inference.longitudinal.match import match
from glioma_node.inference.longitudinal.measure import axial_spacing, burden, lesions
from glioma_node.inference.longitudinal.rano import DEFAULT, Thresholds, change, choose_component, classify
from glioma_node.inference.regions import volumes_ml

COMPONENT_LABELS: dict[Component, tuple[int, ...]] = {
    Component.ENHANCING: (4,),
    Component.NON_ENHANCING: (1, 2, 4),
}


@dataclass(frozen=True)
class Measured:
    """One time point measured: its :class:`TimePoint` (volumes and burdens) and, per
    component, its lesions and lesion map on the grid it was measured on."""

    time_point: TimePoint
    lesions: dict[Component, list[Lesion]]
    lesion_maps: dict[Component, np.ndarray]


def measure_time_point(labels: np.ndarray, affine: np.ndarray, study_instance_uid: str,
                       date: datetime.date | None, kind: TimePointKind,
                       slice_thickness_mm: float | None = None, cavity: np.ndarray | None = None) -> Measured:
    """Volumes of every region and RANO burdens of both components of one time point
    (BraTS ``labels`` ``[z, y, x]`` on an axis-aligned grid, see
    :mod:`glioma_node.inference.longitudinal.measure`; ``cavity``: the resection cavity,
    bool on the same grid, reported as ``cavity`` ml and never measured as tumour)."""
    spacing = axial_spacing(affine)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    found, maps, burdens = {}, {}, {}
    for component, values in COMPONENT_LABELS.items():
        mask = np.isin(labels, values)
        found[component], maps[component] = lesions(mask, affine, slice_thickness_mm, cavity=cavity)
        burdens[component] = burden(found[component], component, float(mask.sum()) * voxel_ml)
    volumes = volumes_ml(labels, voxel_ml)
    if cavity is not None:
        volumes["cavity"] = round(float(np.count_nonzero(cavity)) * voxel_ml, 3)
    time_point = TimePoint(study_instance_uid, date, kind, volumes, burdens)
    return Measured(time_point, found, maps)


def _nadir(burdens: list[Burden]) -> Burden:
    smallest = min(burdens, key=lambda b: (b.sum_of_products_mm2, b.volume_ml))
    return dataclasses.replace(smallest, volume_ml=min(b.volume_ml for b in burdens))


def reference_index(priors: list[TimePoint]) -> int:
    """Which prior (oldest first) is the baseline: the latest marked baseline or post-operative,
    else the earliest."""
    marked = [i for i, p in enumerate(priors) if p.kind in (TimePointKind.BASELINE, TimePointKind.POST_OPERATIVE)]
    return marked[-1] if marked else 0


def compare(current: Measured, priors: list[Measured], latest_maps_on_current: dict[Component, np.ndarray],
            spacing_zyx: tuple[float, float, float], new_uid: Callable[[Lesion], str],
            weeks_after_radiotherapy: float | None = None, thresholds: Thresholds = DEFAULT,
            alignment: dict | None = None, warnings: tuple[str, ...] = ()) -> FollowUp:
    """Compare ``current`` with ``priors`` (oldest first, at least one; their lesions keep the
    tracking UIDs they were given). ``latest_maps_on_current``: the latest prior's lesion maps
    brought onto the current grid (:func:`glioma_node.inference.longitudinal.align.labels_on_current`);
    ``spacing_zyx``: the current grid's voxel size (mm); ``alignment`` and ``warnings`` are
    carried into the result (:meth:`glioma_node.inference.longitudinal.align.PriorAlignment.summary`)."""
    if not priors:
        raise ValueError("a comparison needs at least one prior time point")
    b = reference_index([p.time_point for p in priors])
    baseline, latest = priors[b], priors[-1]
    component = choose_component(baseline.time_point.burdens[Component.ENHANCING],
                                 baseline.time_point.burdens[Component.NON_ENHANCING], thresholds)
    matched = match(current.lesions[component], current.lesion_maps[component], latest.lesions[component],
                    latest_maps_on_current[component], spacing_zyx, new_uid)
    nadir = _nadir([p.time_point.burdens[component] for p in priors[b:]])
    response = classify(current.time_point.burdens[component], baseline.time_point.burdens[component], nadir,
                        matched.new_measurable, weeks_after_radiotherapy, thresholds)
    # The current burden's lesions, with the tracking UIDs matching gave them.
    by_label = {lesion.label: lesion for lesion in matched.lesions}
    measured = current.time_point.burdens[component]
    tracked = dataclasses.replace(measured, targets=tuple(by_label.get(x.label, x) for x in measured.targets),
                                  non_targets=tuple(by_label.get(x.label, x) for x in measured.non_targets))
    current_time_point = dataclasses.replace(current.time_point, burdens={**current.time_point.burdens, component: tracked})
    volume_change = {}
    for region, now in current.time_point.volumes_ml.items():
        before = latest.time_point.volumes_ml.get(region, 0.0)
        fraction = change(now, before)
        volume_change[region] = (round(now - before, 3), None if fraction is None else round(fraction, 4))
    return FollowUp(component, response, current_time_point, baseline.time_point, latest.time_point,
                    matched.lesions, tuple(latest.lesions[component]), matched.new, matched.gone, volume_change,
                    dict(alignment or {}), tuple(warnings))
