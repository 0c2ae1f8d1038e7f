"""The statistics of training and the model card, checked against the libraries that the
people reading our cards use (lifelines, scikit-learn) and against hand counts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_score, recall_score, roc_auc_score

from glioma_node.training.radiogenomics.fit import column_auc
from glioma_node.training.radiogenomics.metrics import classification
from glioma_node.training.radiogenomics.survival import (
    concordance_index,
    fit_cox,
    horizon_figures,
    kaplan_meier,
    logrank,
    status_at,
)


def _cohort(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2)) * [3.0, 0.5] + [10.0, -2.0]
    t = rng.exponential(100.0 / np.exp(1.0 * (x[:, 0] - 10.0) / 3.0))  # x0 raises the hazard, x1 does nothing
    censor = rng.exponential(200.0, n)
    return x, np.minimum(t, censor), (t <= censor).astype(int)


def test_cox_recovers_the_hazard_direction_and_orders_patients():
    x, time, event = _cohort()
    model = fit_cox(x, time, event, ["a", "b"], penalty=0.001)
    assert model.beta[0] > 0.7 and abs(model.beta[1]) < 0.2  # per standard deviation
    assert concordance_index(time, model.risk(x), event) > 0.65
    high = model.risk(x) >= model.cutoff
    assert high.sum() == pytest.approx(150, abs=2)  # the cutoff is the training median
    assert logrank(time, event, high) < 1e-4


def test_cox_coefficients_are_lifelines_own_on_the_raw_covariates():
    x, time, event = _cohort(200, seed=3)
    model = fit_cox(x, time, event, ["a", "b"], penalty=0.0)
    reference = CoxPHFitter().fit(pd.DataFrame(x, columns=["a", "b"]).assign(t=time, e=event), "t", "e")
    # Unpenalised, standardising only rescales: β per SD / SD = β per unit.
    assert model.beta / model.std == pytest.approx(reference.params_[["a", "b"]].to_numpy(), rel=1e-4)
    # A missing value is scored as the training median.
    row = np.array([[np.nan, -2.0]])
    assert model.risk(row)[0] == pytest.approx(model.risk(np.array([[np.median(x[:, 0]), -2.0]]))[0])


def test_cox_refuses_a_cohort_without_two_deaths():
    x, time, _ = _cohort(30)
    with pytest.raises(ValueError, match="two observed events"):
        fit_cox(x, time, np.r_[1, np.zeros(29, int)], ["a", "b"])


def test_c_index_is_the_share_of_correctly_ordered_comparable_pairs():
    rng = np.random.default_rng(5)
    time = rng.permutation(60).astype(float) + 1  # no tied times
    event = (rng.random(60) < 0.6).astype(int)
    risk = -time + rng.normal(0, 15, 60)
    right = comparable = 0.0
    for i in range(60):
        for j in range(60):
            if time[i] < time[j] and event[i]:
                comparable += 1
                right += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    assert concordance_index(time, risk, event) == pytest.approx(right / comparable)
    with pytest.raises(ValueError, match="comparable pairs"):
        concordance_index(time[:3], risk[:3], np.zeros(3, int))


def test_kaplan_meier_steps_down_at_deaths_only_with_an_interval():
    t, s, ci = kaplan_meier(np.array([1, 2, 3, 4.0]), np.array([1, 0, 1, 0]))
    at = dict(zip(t.tolist(), s.tolist()))
    assert at[0.0] == 1.0 and at[1.0] == pytest.approx(0.75) and at[2.0] == pytest.approx(0.75)
    assert at[3.0] == pytest.approx(0.375) and at[4.0] == pytest.approx(0.375)
    assert np.all(ci[:, 0] <= s + 1e-12) and np.all(s <= ci[:, 1] + 1e-12)


def test_logrank_separates_groups_and_answers_one_for_a_single_group():
    x, time, event = _cohort()
    assert logrank(time, event, x[:, 0] > 10.0) < 1e-4
    assert logrank(time, event, np.zeros(len(time), bool)) == 1.0


def test_horizon_figures_leave_out_and_count_cases_censored_before_the_horizon():
    time = np.array([100, 200, 400, 800, 900, 300, 1000.0])
    event = np.array([1, 1, 1, 0, 1, 0, 0])
    risk = np.array([3.0, 2.0, 1.5, -1.0, 0.5, 2.5, -2.0])
    assert np.array_equal(status_at(time, event, 365), [1, 1, 0, 0, 0, np.nan, 0], equal_nan=True)
    h = horizon_figures(time, risk, event, cutoff=1.0, horizons=(365,))["365d"]
    known = np.array([0, 1, 2, 3, 4, 6])
    y = np.array([1, 1, 0, 0, 0, 0])
    assert h["n"] == 6 and h["censored_before"] == 1
    assert h["auc"] == pytest.approx(roc_auc_score(y, risk[known]))
    # High risk (≥ 1.0): cases 0, 1, 2 → TP 2, FP 1; low: 3, 4, 6 → TN 3, FN 0.
    assert h["confusion_matrix"] == [[3, 1], [0, 2]]
    assert h["sensitivity"] == 1.0 and h["specificity"] == 0.75 and h["f1"] == pytest.approx(0.8)


def test_classification_metrics_are_scikit_learns_with_intervals():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 80)
    p = np.clip(0.3 * y + rng.random(80) * 0.7, 0, 1)
    m = classification(y, p, 0.5, boots=300)
    pred = (p >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-4)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-4)
    assert m["precision"] == pytest.approx(precision_score(y, pred), abs=1e-4)
    assert m["recall"] == pytest.approx(recall_score(y, pred), abs=1e-4)
    assert m["f1"] == pytest.approx(f1_score(y, pred), abs=1e-4)
    assert m["confusion_matrix"] == confusion_matrix(y, pred).tolist()
    for name in ("auc", "accuracy", "precision", "recall", "f1"):
        low, high = m[name + "_ci95"]
        assert low <= m[name] <= high and high - low > 0.01


def test_column_auc_is_roc_auc_score_column_by_column():
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 50)
    scores = np.column_stack([rng.normal(size=50) + y, rng.integers(0, 3, 50), -y + rng.normal(size=50)])
    assert column_auc(y, scores) == pytest.approx([roc_auc_score(y, scores[:, k]) for k in range(3)])


def test_a_constant_covariate_gets_no_weight_instead_of_breaking_the_fit():
    x, time, event = _cohort(100)
    model = fit_cox(np.column_stack([x, np.zeros(100)]), time, event, ["a", "b", "unused"], penalty=0.01)
    assert model.beta[2] == 0.0 and model.beta[0] > 0.5
