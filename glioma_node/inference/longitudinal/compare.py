"""One follow-up comparison: measure each time point, match the lesions to the latest prior,
and call the response against the baseline and the nadir.

The reference scans (RANO 2.0): the *baseline* is the latest prior marked baseline or
post-operative (the scan treatment is judged from), else the earliest prior; its target
lesions (:func:`glioma_node.inference.longitudinal.measure.burden`) are followed by tracking
UID at every later time point (:func:`tracked`); the *nadir* is the smallest burden from the
baseline on (sum of products and volume each at its smallest).
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


TOO_SMALL_MM2 = 25.0  # a target still there but too small to measure counts 5 x 5 mm


def tracked(found: list[Lesion], component: Component, volume_ml: float, targets: list[str]) -> Burden:
    """The burden of one time point over the baseline's target lesions (tracking UIDs):
    each target's product (with the pieces it split into; at least ``TOO_SMALL_MM2`` while
    it is there, 0 once it is gone), the other lesions as non-target."""
    total = 0.0
    kept: list[Lesion] = []
    for uid in targets:
        parts = [x for x in found if uid in (x.tracking_uid, x.part_of)]
        if parts:
            total += max(sum(x.product_mm2 for x in parts), TOO_SMALL_MM2)
            kept += parts
    others = tuple(x for x in found if x not in kept)
    return Burden(component, round(total, 2), round(float(volume_ml), 4), tuple(kept), others)


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
            alignment: dict | None = None, warnings: tuple[str, ...] = (), lesions_matched: bool = True) -> FollowUp:
    """Compare ``current`` with ``priors`` (oldest first, at least one; their lesions keep the
    tracking UIDs they were given). ``latest_maps_on_current``: the latest prior's lesion maps
    brought onto the current grid (:func:`glioma_node.inference.longitudinal.align.labels_on_current`);
    ``spacing_zyx``: the current grid's voxel size (mm); ``alignment`` and ``warnings`` are
    carried into the result (:meth:`glioma_node.inference.longitudinal.align.PriorAlignment.summary`);
    ``lesions_matched`` False (a rejected alignment) leaves new lesions unassessed."""
    if not priors:
        raise ValueError("a comparison needs at least one prior time point")
    b = reference_index([p.time_point for p in priors])
    baseline, latest = priors[b], priors[-1]
    component = choose_component(baseline.time_point.burdens[Component.ENHANCING],
                                 baseline.time_point.burdens[Component.NON_ENHANCING], thresholds)
    if any(not x.tracking_uid for p in priors for x in p.lesions[component]):
        raise ValueError("every prior lesion needs its tracking UID (from its own comparison or report)")
    matched = match(current.lesions[component], current.lesion_maps[component], latest.lesions[component],
                    latest_maps_on_current[component], spacing_zyx, new_uid)
    # RANO follows the baseline's target lesions: chosen once, by tracking UID.
    by_label = {x.label: x for x in baseline.lesions[component]}
    targets = [by_label[x.label].tracking_uid for x in baseline.time_point.burdens[component].targets]

    def burden_of(m: Measured, found: list[Lesion]) -> Burden:
        return tracked(found, component, m.time_point.burdens[component].volume_ml, targets)

    history = [burden_of(p, p.lesions[component]) for p in priors[b:]]
    now = burden_of(current, list(matched.lesions))
    notes: tuple[str, ...] = ()
    new_measurable, new_other = matched.new_measurable, len(matched.new) - matched.new_measurable
    if not lesions_matched:
        notes = ("new lesions not assessed: the prior could not be aligned",)
        new_measurable = new_other = 0
    gain = 0.0
    if component == Component.NON_ENHANCING:
        smallest = min(p.time_point.burdens[Component.ENHANCING].volume_ml for p in priors[b:])
        gain = current.time_point.burdens[Component.ENHANCING].volume_ml - smallest
    response = classify(now, history[0], _nadir(history), new_measurable, weeks_after_radiotherapy, thresholds,
                        new_non_measurable=new_other, enhancement_gain_ml=gain, notes=notes)

    def with_burden(m: Measured, burden: Burden) -> TimePoint:
        return dataclasses.replace(m.time_point, burdens={**m.time_point.burdens, component: burden})

    volume_change = {}
    for region, ml in current.time_point.volumes_ml.items():
        before = latest.time_point.volumes_ml.get(region, 0.0)
        fraction = change(ml, before)
        volume_change[region] = (round(ml - before, 3), None if fraction is None else round(fraction, 4))
    return FollowUp(component, response, with_burden(current, now), with_burden(baseline, history[0]),
                    with_burden(latest, history[-1]), matched.lesions, tuple(latest.lesions[component]), matched.new,
                    matched.gone, volume_change, dict(alignment or {}), tuple(warnings))
