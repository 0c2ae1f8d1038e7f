"""Survival statistics from lifelines: the Cox fit, Harrell's C, Kaplan–Meier, the log-rank
test, and the survival AUC and risk-group figures at fixed horizons.

Times are in days, ``event`` is 1 for an observed death and 0 for censoring, ``risk`` is a
log relative hazard (higher = shorter expected survival), as :class:`CoxModel` scores it.
The node scores with :class:`CoxModel` alone; lifelines is needed only to train.
"""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter, KaplanMeierFitter
from lifelines.exceptions import ConvergenceError, ConvergenceWarning
from lifelines.statistics import logrank_test
from lifelines.utils import concordance_index as _lifelines_c
from sklearn.metrics import confusion_matrix, roc_auc_score

from glioma_node.inference.radiogenomics.cox import CoxModel

#: Survival horizons (days) at which the AUC and the risk groups are judged: 1 and 2 years.
HORIZONS_DAYS = (365, 730)


def fit_cox(x: np.ndarray, time: np.ndarray, event: np.ndarray, names: list[str], penalty: float = 0.01) -> CoxModel:
    """Cox proportional hazards on covariates ``x`` ``(N, P)`` by lifelines' ``CoxPHFitter``
    (Efron ties), on covariates standardised with the training mean and standard deviation
    after imputing missing values with the training median.

    ``penalty`` is lifelines' ``penalizer`` (ridge, ``l1_ratio`` 0): it weighs
    ``½·penalty·‖β‖²`` against the mean (per case) log partial likelihood.

    Raises:
        ValueError: fewer than two deaths, or the fit did not converge (collinear covariates
            with too little penalty; raise ``penalty``).
    """
    time, event = np.asarray(time, float), np.asarray(event, int)
    if int(event.sum()) < 2:
        raise ValueError("a Cox model needs at least two observed events")
    median = np.nanmedian(x, axis=0) if len(x) else np.zeros(x.shape[1])
    median = np.where(np.isfinite(median), median, 0.0)
    filled = np.where(np.isfinite(x), x, median)
    mean, std = filled.mean(axis=0), np.maximum(filled.std(axis=0), 1e-6)
    model = CoxModel(list(names), np.zeros(x.shape[1]), median, mean, std, penalty=penalty)
    z = model.standardise(x)
    # A constant column (a sparse-code atom no case uses, say) carries nothing and makes the
    # fit singular: it keeps a coefficient of 0.
    varying = np.flatnonzero(filled.std(axis=0) > 1e-9)
    columns = [f"x{i}" for i in varying]
    frame = pd.DataFrame(z[:, varying], columns=columns).assign(_time=np.maximum(time, 1e-3), _event=event)
    fitter = CoxPHFitter(penalizer=penalty, l1_ratio=0.0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fitter.fit(frame, duration_col="_time", event_col="_event")
    except ConvergenceError as e:
        raise ValueError(f"the Cox fit did not converge with penalty {penalty} (raise it): {e}") from e
    model.beta = np.zeros(x.shape[1])
    model.beta[varying] = fitter.params_[columns].to_numpy(float)
    model.cutoff = float(np.median(z @ model.beta))
    return model


def concordance_index(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C (lifelines): the share of comparable pairs ordered correctly by ``risk``
    (higher risk dies first); ties in risk count one half."""
    time, risk, event = np.asarray(time, float), np.asarray(risk, float), np.asarray(event, int)
    try:
        return float(_lifelines_c(time, -risk, event))
    except ZeroDivisionError as e:
        raise ValueError("no comparable pairs: the concordance index needs observed events") from e


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Kaplan–Meier estimate as step points from (0, 1): (days, survival probability,
    ``(K, 2)`` 95 % interval, exponential Greenwood as lifelines computes it)."""
    km = KaplanMeierFitter().fit(np.asarray(time, float), np.asarray(event, int))
    t = km.survival_function_.index.to_numpy(float)
    s = km.survival_function_.iloc[:, 0].to_numpy(float)
    ci = km.confidence_interval_survival_function_.to_numpy(float)
    return t, s, ci


def logrank(time: np.ndarray, event: np.ndarray, group: np.ndarray) -> float:
    """p-value of the two-group log-rank test (lifelines; 1 when a group is empty)."""
    time, event, group = np.asarray(time, float), np.asarray(event, int), np.asarray(group, bool)
    if group.all() or not group.any():
        return 1.0
    result = logrank_test(time[group], time[~group], event[group], event[~group])
    return float(result.p_value)


def cox_figures(cox: CoxModel, risk: np.ndarray, time: np.ndarray, event: np.ndarray, seed: int = 0) -> dict:
    """What a card reports of a Cox model on evaluation cases with scores ``risk``: C-index
    with its interval, log-rank p and sizes of its risk groups, the horizon figures, its
    covariates and cutoff."""
    from glioma_node.training.radiogenomics.metrics import c_index_with_ci

    high = risk >= cox.cutoff
    return {"test": c_index_with_ci(time, risk, event, seed=seed), "train_cv_c_index": cox.extra.get("cv_c_index"),
            "logrank_p_test": logrank(time, event, high), "horizons_test": horizon_figures(time, risk, event, cox.cutoff),
            "groups_test": {"high": int(high.sum()), "low": int((~high).sum())},
            "covariates": dict(zip(cox.names, np.round(cox.beta, 4).tolist())), "cutoff": cox.cutoff}


def status_at(time: np.ndarray, event: np.ndarray, horizon_days: float) -> np.ndarray:
    """Per case at ``horizon_days``: 1 died before it, 0 known alive at it (followed that
    long), NaN censored before it (status unknown; such cases are left out, and counted)."""
    time, event = np.asarray(time, float), np.asarray(event, int)
    out = np.full(len(time), np.nan)
    out[(time < horizon_days) & (event == 1)] = 1.0
    out[time >= horizon_days] = 0.0
    return out


def horizon_figures(time: np.ndarray, risk: np.ndarray, event: np.ndarray, cutoff: float,
                    horizons: tuple[int, ...] = HORIZONS_DAYS) -> dict[str, dict]:
    """At each horizon: the AUC of ``risk`` for death before it (scikit-learn), and the high
    risk group (``risk >= cutoff``) read as a prediction of that death: sensitivity,
    specificity, F1 and the confusion matrix ``[[TN, FP], [FN, TP]]``. Cases censored
    before the horizon are left out and counted; a horizon with one class only has no AUC."""
    out = {}
    for h in horizons:
        status = status_at(time, event, h)
        known = np.isfinite(status)
        y, r = status[known].astype(int), np.asarray(risk, float)[known]
        pred = (r >= cutoff).astype(int)
        tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
        sens = tp / (tp + fn) if tp + fn else None
        spec = tn / (tn + fp) if tn + fp else None
        prec = tp / (tp + fp) if tp + fp else None
        f1 = 2 * prec * sens / (prec + sens) if prec and sens else (0.0 if sens is not None and prec is not None else None)
        out[f"{h}d"] = {
            "auc": round(float(roc_auc_score(y, r)), 4) if 0 < y.sum() < len(y) else None,
            "sensitivity": None if sens is None else round(sens, 4),
            "specificity": None if spec is None else round(spec, 4),
            "f1": None if f1 is None else round(f1, 4),
            "confusion_matrix": [[tn, fp], [fn, tp]],
            "n": int(known.sum()), "censored_before": int((~known).sum()),
        }
    return out
