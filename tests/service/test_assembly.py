"""The assembly decision, with plain values: when a study is processed, waits or fails."""
from __future__ import annotations

import pytest

from glioma_node.service.assembly import FORCED, Action, decide
from glioma_node.service.config import Assembly
from glioma_node.service.state import Series, Study, StudyState

RULES = Assembly(required_roles=["FLAIR", "T1", "T1c", "T2"], quiet_period_s=5, force_timeout_s=300,
                 reprocess_new_series=True)
ALL = {"FLAIR", "T1", "T1c", "T2"}


def study(state=StudyState.RECEIVED, last_at=100.0, surveyed_at=None) -> Study:
    return Study("1.2", state, None, 0, None, 90.0, last_at, surveyed_at, None, None)


def series(instances=20, expected=None, last_at=100.0, uid="1.2.1") -> Series:
    return Series(uid, "1.2", instances, expected, last_at)


def test_a_series_complete_by_count_is_judged_at_once():
    facts = (study(), [series(20, expected=20)], True, set())
    assert decide(*facts, None, RULES, now=100.5).action is Action.SURVEY
    decision = decide(*facts, ALL, RULES, now=100.5)
    assert decision.action is Action.PROCESS and decision.reason == "required roles complete"


def test_without_a_count_the_series_waits_for_the_quiet_period_and_a_closed_association():
    assert decide(study(), [series()], False, set(), ALL, RULES, now=103).action is Action.NONE
    assert decide(study(), [series()], True, set(), ALL, RULES, now=110).action is Action.NONE  # still sending
    assert decide(study(), [series()], False, set(), ALL, RULES, now=106).action is Action.PROCESS


def test_a_missing_role_waits_with_its_name_then_fails_at_the_force_timeout():
    waiting = decide(study(), [series()], False, set(), {"FLAIR", "T1", "T2"}, RULES, now=110)
    assert waiting.action is Action.WAIT and waiting.reason == "missing T1c (found FLAIR, T1, T2)"
    failed = decide(study(StudyState.WAITING, surveyed_at=110), [series()], False, set(), {"FLAIR"}, RULES, now=401)
    assert failed.action is Action.FAIL and "incomplete after 300 s: missing T1, T1c, T2" in failed.reason


def test_a_waiting_study_is_not_surveyed_again_until_something_new_arrives():
    quiet = study(StudyState.WAITING, last_at=100, surveyed_at=110)
    assert decide(quiet, [series()], False, set(), None, RULES, now=120).action is Action.NONE
    newer = study(StudyState.WAITING, last_at=115, surveyed_at=110)
    assert decide(newer, [series(last_at=115)], False, set(), None, RULES, now=121).action is Action.SURVEY


@pytest.mark.parametrize("broken", [True, False])
def test_a_cut_off_series_waits_for_the_force_timeout_and_is_processed_with_a_warning(broken):
    cut = [series(17, expected=30)]
    early = decide(study(), cut, False, {"1.2.1"} if broken else set(), ALL, RULES, now=160)
    assert early.action is (Action.NONE if broken else Action.PROCESS)
    forced = decide(study(), cut, False, {"1.2.1"}, ALL, RULES, now=401)
    assert forced.action is Action.PROCESS and forced.reason == FORCED
