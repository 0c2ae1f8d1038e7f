"""Response calls by RANO 2.0 (enhancing tumours) and RANO-LGG's thresholds (tumours without
measurable enhancement, measured on the FLAIR/T2 hyperintensity), one small rule each.

The rules, in the order they are applied (``docs/rano.md`` cites each):

1. No reference scan, or a reference without disease to measure: not evaluable.
2. Progression, against the nadir (the smallest burden from the baseline on): a new
   measurable lesion; measurable disease where the nadir had none; the sum of products
   ≥ 25 % larger; the volume ≥ 40 % larger; or, for the non-enhancing component, at least
   1 ml of new or increased enhancement (RANO-LGG).
2b. A new lesion too small to measure rules out any response (stable disease at best).
3. Complete response: measurable disease at baseline, none now, and what is left of the
   component below ``complete_volume_ml`` (RANO asks for all of it gone, measurable or not).
4. Partial response, against the baseline: the sum of products ≥ 50 % smaller, or the
   volume ≥ 65 % smaller.
5. Minor response (the non-enhancing component only, RANO-LGG): the sum of products
   ≥ 25 % smaller, or the volume ≥ 35 % smaller.
6. Stable disease otherwise.

The volume thresholds are the bidimensional ones raised to the power 3/2 (a sphere's
volume against its cross-section): 0.5^1.5 ≈ 0.35 (65 % smaller), 1.25^1.5 ≈ 1.40 (40 %
larger), 0.75^1.5 ≈ 0.65 (35 % smaller). A volume rule applies only when its reference holds
at least ``min_volume_ml`` (1 ml, the measurable volume of the modified RANO criteria), and a
product rule only when its reference has measurable disease: a change from a speck is noise.

Every call is preliminary (:func:`confirms` says when a later scan confirms it); a
progression within 12 weeks of the end of radiotherapy carries "possible
pseudoprogression".
"""
from __future__ import annotations

from dataclasses import dataclass

from glioma_node.core.longitudinal import Burden, Component, Response, ResponseCategory, ResponseStatus


@dataclass(frozen=True)
class Thresholds:
    """Fractions of change (−0.5: half the size) that make each call, and the floors."""

    progression_product: float = 0.25
    progression_volume: float = 0.40
    partial_product: float = -0.50
    partial_volume: float = -0.65
    minor_product: float = -0.25
    minor_volume: float = -0.35
    complete_volume_ml: float = 0.1
    min_volume_ml: float = 1.0
    pseudoprogression_weeks: float = 12.0
    confirmation_weeks: float = 4.0


DEFAULT = Thresholds()


def change(current: float, reference: float) -> float | None:
    """(current − reference) / reference, or None when the reference is 0."""
    return None if reference <= 0 else (current - reference) / reference


def _product_change(current: Burden, reference: Burden) -> float | None:
    return change(current.sum_of_products_mm2, reference.sum_of_products_mm2) if reference.measurable else None


def _volume_change(current: Burden, reference: Burden, t: Thresholds) -> float | None:
    return change(current.volume_ml, reference.volume_ml) if reference.volume_ml >= t.min_volume_ml else None


def _pct(value: float) -> str:
    return f"{value * 100:+.0f} %"


def progression(current: Burden, nadir: Burden, new_measurable: int, t: Thresholds = DEFAULT,
                enhancement_gain_ml: float = 0.0) -> list[str]:
    """The reasons (empty: none) the current burden is a progression against the nadir.
    ``enhancement_gain_ml``: for the non-enhancing component, how much the enhancing tumour
    grew from its smallest (RANO-LGG: new or increased enhancement is progression)."""
    reasons = []
    if new_measurable:
        reasons.append(f"{new_measurable} new measurable lesion{'s' if new_measurable > 1 else ''}")
    if not nadir.measurable and current.any_measurable and not new_measurable:
        reasons.append("measurable disease where the nadir had none")
    if current.component == Component.NON_ENHANCING and enhancement_gain_ml >= t.min_volume_ml:
        reasons.append(f"new or increased enhancement (+{enhancement_gain_ml:.1f} ml, ≥ {t.min_volume_ml:g} ml)")
    product = _product_change(current, nadir)
    if product is not None and product >= t.progression_product:
        reasons.append(f"sum of products {_pct(product)} against the nadir (≥ {_pct(t.progression_product)})")
    volume = _volume_change(current, nadir, t)
    if volume is not None and volume >= t.progression_volume:
        reasons.append(f"volume {_pct(volume)} against the nadir (≥ {_pct(t.progression_volume)})")
    return reasons


def complete(current: Burden, baseline: Burden, t: Thresholds = DEFAULT) -> list[str]:
    """The reasons for a complete response (empty: not one)."""
    if baseline.measurable and not current.any_measurable and current.volume_ml < t.complete_volume_ml:
        return [f"no measurable disease and {current.volume_ml:.2f} ml left (< {t.complete_volume_ml:g} ml)"]
    return []


def shrinkage(current: Burden, baseline: Burden, product_limit: float, volume_limit: float,
              t: Thresholds = DEFAULT) -> list[str]:
    """The reasons the burden shrank past the limits against the baseline (empty: it did not)."""
    reasons = []
    product = _product_change(current, baseline)
    if product is not None and product <= product_limit:
        reasons.append(f"sum of products {_pct(product)} against the baseline (≤ {_pct(product_limit)})")
    volume = _volume_change(current, baseline, t)
    if volume is not None and volume <= volume_limit:
        reasons.append(f"volume {_pct(volume)} against the baseline (≤ {_pct(volume_limit)})")
    return reasons


def classify(current: Burden, baseline: Burden | None, nadir: Burden | None = None, new_measurable: int = 0,
             weeks_after_radiotherapy: float | None = None, t: Thresholds = DEFAULT, *,
             new_non_measurable: int = 0, enhancement_gain_ml: float = 0.0,
             notes: tuple[str, ...] = ()) -> Response:
    """The response of ``current`` against ``baseline`` and ``nadir`` (the smallest burden
    since the baseline; default the baseline), all of one component; ``new_measurable`` and
    ``new_non_measurable``: lesions not matched to any earlier lesion (a new lesion of any
    size rules out a response); ``weeks_after_radiotherapy``: since the end of radiotherapy,
    when the site knows it; ``enhancement_gain_ml``: see :func:`progression`; ``notes``:
    sentences added to the reasons (why new lesions were not assessed, say)."""
    component = current.component
    nadir = nadir or baseline
    if baseline is None or nadir is None:
        return Response(component, ResponseCategory.NOT_EVALUABLE, ResponseStatus.PRELIMINARY,
                        ("no baseline to compare against",), new_lesions=new_measurable)
    if any(b.component != component for b in (baseline, nadir)):
        raise ValueError(f"a response compares one component; got {component}, {baseline.component} "
                         f"and {nadir.component}")
    product = _product_change(current, baseline)
    volume = _volume_change(current, baseline, t)

    def call(category: ResponseCategory, reasons: list[str], pseudo: bool = False,
             product_change: float | None = product, volume_change: float | None = volume) -> Response:
        return Response(component, category, ResponseStatus.PRELIMINARY, (*reasons, *notes),
                        None if product_change is None else round(product_change, 4),
                        None if volume_change is None else round(volume_change, 4),
                        new_measurable + new_non_measurable, pseudo)

    reasons = progression(current, nadir, new_measurable, t, enhancement_gain_ml)
    if reasons:
        pseudo = weeks_after_radiotherapy is not None and 0 <= weeks_after_radiotherapy <= t.pseudoprogression_weeks
        if pseudo:
            reasons.append(f"{weeks_after_radiotherapy:.0f} weeks after the end of radiotherapy "
                           f"(≤ {t.pseudoprogression_weeks:.0f}): possible pseudoprogression, unless the growth "
                           "lies outside the radiation field (which the node does not know)")
        return call(ResponseCategory.PROGRESSIVE_DISEASE, reasons, pseudo,
                    _product_change(current, nadir), _volume_change(current, nadir, t))
    if not baseline.measurable and baseline.volume_ml < t.min_volume_ml:
        return call(ResponseCategory.NOT_EVALUABLE,
                    [f"the baseline has no measurable disease and {baseline.volume_ml:.2f} ml "
                     f"(< {t.min_volume_ml:g} ml): only progression can be called"])
    if new_non_measurable:
        return call(ResponseCategory.STABLE_DISEASE,
                    [f"{new_non_measurable} new non-measurable lesion{'s' if new_non_measurable > 1 else ''}: "
                     "no response while new disease appears"])
    reasons = complete(current, baseline, t)
    if reasons:
        return call(ResponseCategory.COMPLETE_RESPONSE, reasons)
    reasons = shrinkage(current, baseline, t.partial_product, t.partial_volume, t)
    if reasons:
        return call(ResponseCategory.PARTIAL_RESPONSE, reasons)
    if component == Component.NON_ENHANCING:
        reasons = shrinkage(current, baseline, t.minor_product, t.minor_volume, t)
        if reasons:
            return call(ResponseCategory.MINOR_RESPONSE, reasons)
    described = [f"sum of products {_pct(product)} against the baseline" if product is not None else "",
                 f"volume {_pct(volume)} against the baseline" if volume is not None else ""]
    return call(ResponseCategory.STABLE_DISEASE, [d for d in described if d] or ["no change past a threshold"])


def confirms(earlier: Response, later: Response, weeks_between: float, t: Thresholds = DEFAULT) -> bool:
    """Whether ``later`` (a scan at least 4 weeks after ``earlier``) confirms ``earlier``'s
    call: a response by the same or a better response, a progression by a progression (and,
    for completeness, stable disease by stable disease or better)."""
    if weeks_between < t.confirmation_weeks or earlier.component != later.component:
        return False
    order = [ResponseCategory.COMPLETE_RESPONSE, ResponseCategory.PARTIAL_RESPONSE,
             ResponseCategory.MINOR_RESPONSE, ResponseCategory.STABLE_DISEASE]
    if earlier.category == ResponseCategory.PROGRESSIVE_DISEASE:
        return later.category == ResponseCategory.PROGRESSIVE_DISEASE
    if earlier.category in order and later.category in order:
        return order.index(later.category) <= order.index(earlier.category)
    return False


def choose_component(baseline_enhancing: Burden, baseline_non_enhancing: Burden, t: Thresholds = DEFAULT) -> Component:
    """Which component a patient's response is called on: the enhancing tumour when the
    baseline has measurable enhancing disease or at least ``min_volume_ml`` of it (RANO 2.0),
    otherwise the FLAIR/T2 hyperintensity (RANO-LGG's thresholds)."""
    if baseline_enhancing.measurable or baseline_enhancing.volume_ml >= t.min_volume_ml:
        return Component.ENHANCING
    return Component.NON_ENHANCING
