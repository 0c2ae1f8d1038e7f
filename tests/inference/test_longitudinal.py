"""RANO measurements, lesion matching and response rules (inference.longitudinal), each
against a shape or a case whose answer is known by hand."""
from __future__ import annotations

import dataclasses
import datetime

import numpy as np
import pytest

from glioma_node.core.longitudinal import Burden, Component, Lesion, ResponseCategory, ResponseStatus
from glioma_node.inference.longitudinal.match import match
from glioma_node.inference.longitudinal.measure import burden, diameters, lesions
from glioma_node.inference.longitudinal.rano import choose_component, classify, confirms

E, N = Component.ENHANCING, Component.NON_ENHANCING


def ellipse(shape: tuple[int, int], centre: tuple[float, float], a: float, b: float, angle_deg: float) -> np.ndarray:
    """A filled ellipse with semi-axes a, b (pixels) rotated by angle (degrees)."""
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    t = np.deg2rad(angle_deg)
    u = (x - centre[1]) * np.cos(t) + (y - centre[0]) * np.sin(t)
    v = -(x - centre[1]) * np.sin(t) + (y - centre[0]) * np.cos(t)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


@pytest.mark.parametrize("angle", [0, 30, 90, 135])
def test_diameters_of_an_ellipse_are_its_axes_at_any_angle(angle):
    longest, perpendicular = diameters(ellipse((80, 80), (40, 40), 15, 6, angle), (1.0, 1.0))
    assert longest == pytest.approx(30, abs=1.5)
    assert perpendicular == pytest.approx(12, abs=1.5)


def test_diameters_follow_the_pixel_size_and_a_run_of_pixels_is_its_width():
    row = np.zeros((5, 30), bool)
    row[2, 5:25] = True  # 20 pixels in a row
    assert diameters(row, (1.0, 0.5)) == pytest.approx((10.0, 1.0), abs=0.2)
    assert diameters(np.zeros((4, 4), bool), (1, 1)) == (0.0, 0.0)


def _volume(*balls: tuple[tuple[int, int, int], tuple[float, float, float]], shape=(40, 80, 80)) -> np.ndarray:
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    mask = np.zeros(shape, bool)
    for (cz, cy, cx), (rz, ry, rx) in balls:
        mask |= ((z - cz) / rz) ** 2 + ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1
    return mask


AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def test_lesions_are_measured_on_their_largest_slice_and_ranked_by_product():
    mask = _volume(((20, 30, 30), (6, 12, 8)), ((20, 60, 60), (2, 3, 3)))
    found, lesion_map = lesions(mask, AFFINE)
    assert len(found) == 2
    big, small = found
    assert big.longest_mm == pytest.approx(24, abs=1.5) and big.perpendicular_mm == pytest.approx(16, abs=1.5)
    assert big.slice_index == 20 and big.measurable
    assert not small.measurable  # 6-7 mm across
    assert big.volume_ml == pytest.approx(4 / 3 * np.pi * 6 * 12 * 8 / 1000, rel=0.1)
    assert set(np.unique(lesion_map)) == {0, big.label, small.label}
    assert big.centroid_mm == pytest.approx((30, 30, 20), abs=0.5)  # LPS (x, y, z)


def test_a_lesion_on_one_thick_slice_is_not_measurable():
    mask = _volume(((20, 30, 30), (2, 12, 12)))  # 5 mm tall on a 1 mm grid
    (lesion,), _ = lesions(mask, AFFINE, slice_thickness_mm=5.0)
    assert lesion.slices == 1 and not lesion.measurable
    (lesion,), _ = lesions(mask, AFFINE, slice_thickness_mm=1.0)
    assert lesion.slices == 5 and lesion.measurable


def test_a_ring_is_measured_across_its_necrotic_centre():
    ring = _volume(((20, 40, 40), (8, 14, 14))) & ~_volume(((20, 40, 40), (6, 10, 10)))
    (lesion,), _ = lesions(ring, AFFINE)
    assert lesion.longest_mm == pytest.approx(28, abs=1.5) and lesion.perpendicular_mm == pytest.approx(28, abs=1.5)


def test_an_oblique_grid_is_refused_with_what_to_do():
    t = np.deg2rad(20)
    oblique = np.array([[np.cos(t), -np.sin(t), 0, 0], [np.sin(t), np.cos(t), 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    with pytest.raises(ValueError, match="axis-aligned"):
        lesions(np.ones((3, 3, 3), bool), oblique)


def _lesion(label: int, longest: float, perp: float, measurable: bool = True, volume: float = 1.0) -> Lesion:
    return Lesion(label, volume, longest, perp, 3, measurable, (0.0, 0.0, 0.0), 0, 0.0)


def test_burden_takes_at_most_three_measurable_targets():
    found = [_lesion(1, 20, 20), _lesion(2, 30, 30), _lesion(3, 12, 11), _lesion(4, 15, 15), _lesion(5, 40, 8, False)]
    b = burden(found, E, volume_ml=12.0)
    assert [t.label for t in b.targets] == [2, 1, 4]
    assert b.sum_of_products_mm2 == pytest.approx(900 + 400 + 225)
    assert {n.label for n in b.non_targets} == {3, 5}


def B(spd: float, volume: float, component: Component = E) -> Burden:
    """A burden with one target lesion of that product (none when 0)."""
    targets = (_lesion(1, spd ** 0.5, spd ** 0.5),) if spd > 0 else ()
    return Burden(component, spd, volume, targets)


@pytest.mark.parametrize("current, baseline, nadir, new, expected", [
    (B(1000, 10), B(1000, 10), None, 0, ResponseCategory.STABLE_DISEASE),
    (B(1260, 10), B(1000, 10), None, 0, ResponseCategory.PROGRESSIVE_DISEASE),   # +26 % products
    (B(1240, 10), B(1000, 10), None, 0, ResponseCategory.STABLE_DISEASE),        # +24 %
    (B(1000, 14.1), B(1000, 10), None, 0, ResponseCategory.PROGRESSIVE_DISEASE),  # +41 % volume
    (B(1000, 10), B(1000, 10), None, 1, ResponseCategory.PROGRESSIVE_DISEASE),   # a new measurable lesion
    (B(490, 10), B(1000, 10), None, 0, ResponseCategory.PARTIAL_RESPONSE),       # -51 % products
    (B(1000, 3.4), B(1000, 10), None, 0, ResponseCategory.PARTIAL_RESPONSE),     # -66 % volume
    (B(1000, 3.6), B(1000, 10), None, 0, ResponseCategory.STABLE_DISEASE),       # -64 %
    (B(510, 10), B(1000, 10), None, 0, ResponseCategory.STABLE_DISEASE),         # -49 % products
    (B(1000, 13.9), B(1000, 10), None, 0, ResponseCategory.STABLE_DISEASE),      # +39 % volume
    (B(740, 10, N), B(1000, 10, N), None, 0, ResponseCategory.MINOR_RESPONSE),  # -26 % products
    (B(760, 6.6, N), B(1000, 10, N), None, 0, ResponseCategory.STABLE_DISEASE), # -24 %, -34 %
    (B(0, 0.05), B(1000, 10), None, 0, ResponseCategory.COMPLETE_RESPONSE),
    (B(0, 0.5), B(1000, 10), None, 0, ResponseCategory.PARTIAL_RESPONSE),        # non-measurable rest: not complete
    (B(700, 7), B(1000, 10), B(500, 5), 0, ResponseCategory.PROGRESSIVE_DISEASE),  # +40 % on the nadir
    (B(700, 7, N), B(1000, 10, N), None, 0, ResponseCategory.MINOR_RESPONSE),   # -30 %: RANO-LGG only
    (B(700, 7), B(1000, 10), None, 0, ResponseCategory.STABLE_DISEASE),          # the same for enhancing tumour
    (B(0, 0.3), B(0, 0.2), None, 0, ResponseCategory.NOT_EVALUABLE),              # nothing to measure at baseline
    (B(150, 0.4), B(0, 0.2), None, 0, ResponseCategory.PROGRESSIVE_DISEASE),     # measurable where there was none
])
def test_each_rano_rule(current, baseline, nadir, new, expected):
    assert classify(current, baseline, nadir, new).category == expected


def test_volume_rules_do_not_fire_on_a_speck():
    # 0.5 ml to 0.9 ml is +80 %, but below the 1 ml floor a volume change is noise.
    assert classify(B(0, 0.9), B(0, 0.5)).category == ResponseCategory.NOT_EVALUABLE
    assert classify(B(1000, 0.9), B(1000, 0.5)).category == ResponseCategory.STABLE_DISEASE


def test_a_call_states_its_reasons_and_changes_and_is_preliminary():
    r = classify(B(1300, 15), B(1000, 10), new_measurable=0)
    assert r.status == ResponseStatus.PRELIMINARY
    assert r.change_sum_of_products == pytest.approx(0.3) and r.change_volume == pytest.approx(0.5)
    assert any("+30 %" in reason for reason in r.reasons) and any("+50 %" in reason for reason in r.reasons)
    assert classify(B(1000, 10), None).category == ResponseCategory.NOT_EVALUABLE


def test_progression_soon_after_radiotherapy_is_possible_pseudoprogression():
    early = classify(B(1500, 15), B(1000, 10), weeks_after_radiotherapy=8)
    late = classify(B(1500, 15), B(1000, 10), weeks_after_radiotherapy=20)
    assert early.category == late.category == ResponseCategory.PROGRESSIVE_DISEASE
    assert early.possible_pseudoprogression and not late.possible_pseudoprogression
    assert any("pseudoprogression" in reason for reason in early.reasons)


def test_confirmation_needs_four_weeks_and_an_agreeing_call():
    pr = classify(B(400, 4), B(1000, 10))
    cr = classify(B(0, 0), B(1000, 10))
    pd = classify(B(1500, 15), B(1000, 10))
    assert confirms(pr, cr, 6) and confirms(pr, pr, 4)
    assert not confirms(pr, cr, 3) and not confirms(pr, pd, 8) and not confirms(cr, pr, 8)
    assert confirms(pd, pd, 5) and not confirms(pd, pr, 5)


def test_the_component_is_the_enhancing_tumour_when_there_is_any_to_measure():
    assert choose_component(B(400, 3), B(2000, 40, N)) == E
    assert choose_component(B(0, 0.2), B(2000, 40, N)) == N


def test_matching_keeps_a_moved_lesion_and_finds_a_new_one():
    prior_mask = _volume(((20, 30, 30), (6, 10, 10)))
    current_mask = _volume(((20, 32, 31), (6, 11, 11)), ((20, 60, 62), (6, 8, 8)))
    prior, prior_map = lesions(prior_mask, AFFINE)
    prior = [dataclasses.replace(p, tracking_uid="2.25.1") for p in prior]
    current, current_map = lesions(current_mask, AFFINE)
    made = []
    result = match(current, current_map, prior, prior_map, (1.0, 1.0, 1.0),
                   lambda lesion: made.append(lesion.label) or f"2.25.{100 + lesion.label}")
    uids = {lesion.centroid_mm[1] // 10: lesion.tracking_uid for lesion in result.lesions}
    assert uids[3] == "2.25.1"             # the lesion that moved 2 mm keeps its UID
    assert uids[6].startswith("2.25.10")   # the other is new
    assert len(result.new) == 1 and result.new_measurable == 1 and not result.gone


def test_matching_reports_a_lesion_that_is_gone_and_refuses_two_grids():
    prior, prior_map = lesions(_volume(((20, 30, 30), (6, 10, 10))), AFFINE)
    result = match([], np.zeros_like(prior_map), prior, prior_map, (1.0, 1.0, 1.0), lambda lesion: "2.25.9")
    assert [g.label for g in result.gone] == [prior[0].label]
    with pytest.raises(ValueError, match="different grids"):
        match([], np.zeros((2, 2, 2), np.int32), prior, prior_map, (1.0, 1.0, 1.0), lambda lesion: "")


def _head(shape=(56, 64, 64), seed=3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured ellipsoid 'brain' with a 'tumour' ball: (image, brain mask, tumour labels)."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]].astype(float)
    brain = ((z - 28) / 22) ** 2 + ((y - 32) / 27) ** 2 + ((x - 32) / 23) ** 2 <= 1
    texture = ndi.gaussian_filter(rng.normal(size=shape), 2.0)
    image = np.where(brain, 100 + 400 * texture + 30 * (y / shape[1]), 0).astype(np.float32)
    tumour = ((z - 30) ** 2 + (y - 24) ** 2 + (x - 40) ** 2) <= 36
    image[tumour] += 80
    return image, brain, np.where(tumour, 4, 0).astype(np.uint8)


def test_a_prior_from_another_session_is_aligned_and_its_labels_land_on_the_current_tumour():
    from glioma_node.core.grid import Grid
    from glioma_node.inference.longitudinal.align import align_prior, labels_on_current
    from glioma_node.inference.regions import dice

    image, brain, labels = _head()
    current = Grid(image.shape, np.diag([1.5, 1.5, 1.5, 1.0]))
    t = np.deg2rad(6)
    moved = np.eye(4)
    moved[:3, :3] = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]) @ np.diag([1.5] * 3)
    moved[:3, 3] = [16.0, -11.0, 7.0]  # the same head, lying elsewhere at the earlier visit
    prior = Grid(image.shape, moved)
    alignment = align_prior(image, brain, current, image, brain, prior)
    assert alignment.accepted, alignment.reason
    assert alignment.brain_dice > 0.95
    assert dice(labels_on_current(labels, prior, current, alignment) == 4, labels == 4) > 0.85
    # Without the registration (scanner coordinates) the masks would barely touch.
    from glioma_node.inference.resample import resample
    assert dice(resample(labels, prior, current, None, "nearest") == 4, labels == 4) < 0.3


def test_an_alignment_that_does_not_cover_the_brain_is_rejected_with_the_reason():
    from glioma_node.core.grid import Grid
    from glioma_node.inference.longitudinal.align import align_prior

    image, brain, _ = _head()
    grid = Grid(image.shape, np.diag([1.5, 1.5, 1.5, 1.0]))
    half = brain.copy()
    half[:, :, 32:] = False  # a prior that holds half a brain cannot cover this one
    alignment = align_prior(image, brain, grid, np.where(half, image, 0), half, grid)
    assert not alignment.accepted and "Dice" in alignment.reason


def test_a_follow_up_comparison_calls_progression_on_growth_and_a_new_lesion_and_keeps_the_tracking_uid():
    from glioma_node.core.longitudinal import TimePointKind
    from glioma_node.inference.longitudinal.compare import compare, measure_time_point

    def labels(*balls):
        out = np.zeros((40, 80, 80), np.uint8)
        for centre, radii, value in balls:
            out[_volume((centre, radii)) & (out == 0)] = value
        return out

    tumour = [((20, 30, 30), (4, 6, 6), 1), ((20, 30, 30), (7, 10, 10), 4), ((20, 30, 30), (10, 16, 16), 2)]
    day = datetime.date(2026, 1, 5)
    base = measure_time_point(labels(*tumour), AFFINE, "1.2.3", day, TimePointKind.POST_OPERATIVE)
    base = dataclasses.replace(base, lesions={c: [dataclasses.replace(x, tracking_uid=f"2.25.{c == E}{x.label}")
                                                  for x in found] for c, found in base.lesions.items()})
    same = measure_time_point(labels(*tumour), AFFINE, "1.2.4", day + datetime.timedelta(days=60),
                              TimePointKind.FOLLOW_UP)
    stable = compare(same, [base], base.lesion_maps, (1.0, 1.0, 1.0), lambda lesion: "2.25.999")
    assert stable.component == E and stable.response.category == ResponseCategory.STABLE_DISEASE
    assert stable.lesions[0].tracking_uid == "2.25.True1" and not stable.new
    assert stable.volume_change["whole_tumour"] == (0.0, 0.0)

    grown = [((20, 30, 30), (4, 6, 6), 1), ((20, 31, 30), (8, 12, 12), 4), ((20, 30, 30), (11, 18, 18), 2),
             ((22, 62, 62), (6, 7, 7), 4)]
    later = measure_time_point(labels(*grown), AFFINE, "1.2.5", day + datetime.timedelta(days=120),
                               TimePointKind.FOLLOW_UP)
    same = dataclasses.replace(same, lesions={**same.lesions, E: list(stable.lesions)})  # the UIDs it was given
    result = compare(later, [base, same], same.lesion_maps, (1.0, 1.0, 1.0), lambda lesion: "2.25.999")
    assert result.response.category == ResponseCategory.PROGRESSIVE_DISEASE
    assert result.baseline.study_instance_uid == "1.2.3" and result.latest.study_instance_uid == "1.2.4"
    assert [x.tracking_uid for x in result.new] == ["2.25.999"] and result.response.new_lesions == 1
    assert result.volume_change["enhancing"][0] > 0 and result.volume_change["enhancing"][1] > 0.4


def test_a_rim_around_a_cavity_is_measured_as_the_rim_it_is():
    z, y, x = np.mgrid[:40, :80, :80].astype(float)
    cavity = ((y - 40) ** 2 + (x - 40) ** 2 <= 100) & (np.abs(z - 20) <= 8)
    rim = _volume(((20, 40, 40), (8, 14, 14))) & ~cavity
    (lesion,), _ = lesions(rim, AFFINE, cavity=cavity)
    assert lesion.perpendicular_mm < 10 and not lesion.measurable  # filled, it would be 28 x 28
    (filled,), _ = lesions(rim, AFFINE)  # the same hole as necrosis is measured across
    assert filled.perpendicular_mm == pytest.approx(28, abs=1.5)


def test_a_follow_up_of_the_same_tumour_moved_in_the_scanner_is_stable_and_keeps_its_lesion():
    from glioma_node.core.grid import Grid
    from glioma_node.core.longitudinal import TimePointKind
    from glioma_node.inference.longitudinal.follow_up import TimePointImages, follow_up, tracking_of
    from glioma_node.inference.resample import resample

    image, brain, _ = _head()
    z, y, x = np.mgrid[:56, :64, :64].astype(float)
    labels = np.zeros(image.shape, np.uint8)
    labels[((z - 28) ** 2 + (y - 24) ** 2 + (x - 38) ** 2) <= 81] = 2
    labels[((z - 28) ** 2 + (y - 24) ** 2 + (x - 38) ** 2) <= 36] = 4
    grid = Grid(image.shape, np.diag([1.5, 1.5, 1.5, 1.0]))
    t = np.deg2rad(5)
    moved = np.eye(4)
    moved[:3, :3] = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]) * 1.5
    moved[:3, 3] = [12.0, -8.0, 5.0]
    # The current study: the same head lying elsewhere, resampled onto an axis-aligned grid.
    current_grid = Grid(image.shape, np.diag([1.5, 1.5, 1.5, 1.0]))
    back = Grid(image.shape, moved)
    cur_image = resample(image, back, current_grid, None, "linear")
    cur_brain = resample(brain.astype(np.uint8), back, current_grid, None, "nearest") > 0
    cur_labels = resample(labels, back, current_grid, None, "nearest")
    prior = TimePointImages("1.2.1", datetime.date(2026, 1, 1), TimePointKind.POST_OPERATIVE, grid, image, brain, labels,
                            tracking={Component.ENHANCING: {1: "2.25.4242"}})
    current = TimePointImages("1.2.2", datetime.date(2026, 3, 1), TimePointKind.FOLLOW_UP, current_grid, cur_image,
                              cur_brain, cur_labels)
    result = follow_up(current, [prior], lambda study, lesion: f"2.25.{abs(hash(study)) % 1000}{lesion.label}")
    assert result.alignment["accepted"], result.alignment
    assert result.response.category == ResponseCategory.STABLE_DISEASE, result.response
    assert [x.tracking_uid for x in result.lesions] == ["2.25.4242"] and not result.new and not result.warnings
    assert abs(result.volume_change["whole_tumour"][1]) < 0.1
    assert tracking_of(result) == {Component.ENHANCING: {result.lesions[0].label: "2.25.4242"}}


def _tp(mask_balls, uid, kind, day, value=4, with_uids=None):
    """A measured time point of enhancing balls ((centre, radius), ...), lesions given UIDs."""
    from glioma_node.inference.longitudinal.compare import measure_time_point

    labels = np.zeros((40, 80, 80), np.uint8)
    for centre, r in mask_balls:
        labels[_volume((centre, (r, r, r)))] = value
    m = measure_time_point(labels, AFFINE, uid, datetime.date(2026, 1, day), kind)
    if with_uids:
        m = dataclasses.replace(m, lesions={c: [dataclasses.replace(x, tracking_uid=f"{with_uids}.{x.label}")
                                                for x in found] for c, found in m.lesions.items()})
    return m


def _compare(current, priors, **kw):
    from glioma_node.inference.longitudinal.compare import compare

    return compare(current, priors, priors[-1].lesion_maps, (1.0, 1.0, 1.0), lambda x: f"2.25.9{x.label}", **kw)


def test_a_target_that_shrinks_under_10_mm_still_counts_it_is_not_a_partial_response():
    from glioma_node.core.longitudinal import TimePointKind

    base = _tp([((20, 30, 30), 5)], "1.1", TimePointKind.POST_OPERATIVE, 1, with_uids="2.25.1")  # 11.5 mm
    small = _tp([((20, 30, 30), 4.5)], "1.2", TimePointKind.FOLLOW_UP, 20)  # 9.5 mm: not measurable
    result = _compare(small, [base])
    assert not result.lesions[0].measurable and result.lesions[0].tracking_uid == "2.25.1.1"
    assert result.response.category == ResponseCategory.STABLE_DISEASE, result.response
    assert -0.5 < result.response.change_sum_of_products < -0.25


def test_a_rejected_alignment_leaves_new_lesions_unassessed():
    from glioma_node.core.longitudinal import TimePointKind

    base = _tp([((20, 30, 30), 10)], "1.1", TimePointKind.POST_OPERATIVE, 1, with_uids="2.25.1")
    later = _tp([((20, 30, 30), 10), ((20, 62, 62), 6)], "1.2", TimePointKind.FOLLOW_UP, 20)  # +21 % volume
    assert _compare(later, [base]).response.category == ResponseCategory.PROGRESSIVE_DISEASE
    blind = _compare(later, [base], lesions_matched=False).response
    assert blind.category == ResponseCategory.STABLE_DISEASE and blind.new_lesions == 0
    assert any("not assessed" in reason for reason in blind.reasons)


def test_a_new_lesion_too_small_to_measure_rules_out_a_response():
    from glioma_node.core.longitudinal import TimePointKind

    base = _tp([((20, 30, 30), 10)], "1.1", TimePointKind.POST_OPERATIVE, 1, with_uids="2.25.1")
    shrunk = _tp([((20, 30, 30), 5)], "1.2", TimePointKind.FOLLOW_UP, 20)
    assert _compare(shrunk, [base]).response.category == ResponseCategory.PARTIAL_RESPONSE
    speck = _tp([((20, 30, 30), 5), ((20, 62, 62), 3)], "1.3", TimePointKind.FOLLOW_UP, 20)
    result = _compare(speck, [base]).response
    assert result.category == ResponseCategory.STABLE_DISEASE and "no response" in " ".join(result.reasons)


def test_new_enhancement_in_a_non_enhancing_tumour_is_progression():
    from glioma_node.core.longitudinal import TimePointKind

    base = _tp([((20, 30, 30), 12)], "1.1", TimePointKind.POST_OPERATIVE, 1, value=2, with_uids="2.25.1")
    assert base.time_point.burdens[Component.ENHANCING].volume_ml == 0
    later = _tp([((20, 30, 30), 12)], "1.2", TimePointKind.FOLLOW_UP, 20, value=2)
    # The same FLAIR lesion with 2 ml of enhancement inside it.
    labels = np.zeros((40, 80, 80), np.uint8)
    labels[_volume(((20, 30, 30), (12, 12, 12)))] = 2
    labels[_volume(((20, 30, 30), (8, 8, 8)))] = 4
    from glioma_node.inference.longitudinal.compare import measure_time_point
    enhancing = measure_time_point(labels, AFFINE, "1.3", datetime.date(2026, 1, 20), TimePointKind.FOLLOW_UP)
    assert _compare(later, [base]).response.category == ResponseCategory.STABLE_DISEASE
    result = _compare(enhancing, [base])
    assert result.component == N and result.response.category == ResponseCategory.PROGRESSIVE_DISEASE
    assert any("enhancement" in reason for reason in result.response.reasons)


def test_a_lesion_that_splits_keeps_one_uid_gives_its_piece_another_and_both_count():
    from glioma_node.core.longitudinal import TimePointKind

    base = _tp([((20, 30, 40), 14)], "1.1", TimePointKind.POST_OPERATIVE, 1, with_uids="2.25.1")
    split = _tp([((20, 30, 31), 6), ((20, 30, 50), 6)], "1.2", TimePointKind.FOLLOW_UP, 20)
    result = _compare(split, [base])
    uids = [x.tracking_uid for x in result.lesions]
    assert len(set(uids)) == 2 and "2.25.1.1" in uids and not result.new
    piece = next(x for x in result.lesions if x.tracking_uid != "2.25.1.1")
    assert piece.part_of == "2.25.1.1"
    assert result.current.burdens[E].sum_of_products_mm2 == pytest.approx(sum(x.product_mm2 for x in result.lesions))
