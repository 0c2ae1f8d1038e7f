"""Evaluation: classification metrics with bootstrap confidence intervals, Kaplan–Meier
curves and the log-rank test."""
from __future__ import annotations

import numpy as np
from scipy import stats

from glioma_node.inference.radiogenomics.cox import concordance_index


def auc(y: np.ndarray, score: np.ndarray) -> np.ndarray | float:
    """ROC-AUC by the Mann–Whitney rank formula (ties count one half); ``score`` may be
    ``(N,)`` or ``(N, K)`` (one AUC per column). Needs both classes in ``y``."""
    y = np.asarray(y).astype(bool)
    ranks = stats.rankdata(score, axis=0)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUC needs both classes")
    return (ranks[y].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def _counts(y: np.ndarray, pred: np.ndarray) -> tuple[int, int, int, int]:
    tp = int((y & pred).sum())
    fp = int((~y & pred).sum())
    fn = int((y & ~pred).sum())
    return tp, fp, fn, int(len(y) - tp - fp - fn)


def _scores(y: np.ndarray, p: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tp, fp, fn, tn = _counts(y, pred)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    out = {"accuracy": (tp + tn) / len(y), "precision": precision, "recall": recall,
           "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}
    if 0 < y.sum() < len(y):
        out["auc"] = float(auc(y, p))
    return out


def _ci(values: list[float]) -> list[float | None]:
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)] if values else [None, None]


def classification(y: np.ndarray, p: np.ndarray, threshold: float, boots: int = 1000, seed: int = 0) -> dict:
    """Accuracy, precision, recall, F1 (at ``threshold``) and ROC-AUC, each with a 95 %
    percentile-bootstrap interval, and the confusion matrix ``[[TN, FP], [FN, TP]]``."""
    y, p = np.asarray(y).astype(bool), np.asarray(p, float)
    pred = p >= threshold
    point = _scores(y, p, pred)
    rng = np.random.default_rng(seed)
    samples = [_scores(y[s], p[s], pred[s]) for s in (rng.integers(0, len(y), len(y)) for _ in range(boots))]
    out: dict = {"n": int(len(y)), "positives": int(y.sum()), "threshold": round(float(threshold), 4)}
    for name in ("accuracy", "precision", "recall", "f1", "auc"):
        out[name] = round(float(point[name]), 4) if name in point else None
        out[name + "_ci95"] = _ci([b[name] for b in samples if name in b]) if name in point else [None, None]
    tp, fp, fn, tn = _counts(y, pred)
    out["confusion_matrix"] = [[tn, fp], [fn, tp]]
    return out


def c_index_with_ci(time: np.ndarray, risk: np.ndarray, event: np.ndarray, boots: int = 1000, seed: int = 0) -> dict:
    """Harrell's C with a 95 % bootstrap interval."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(boots):
        s = rng.integers(0, len(time), len(time))
        if event[s].sum() >= 1:
            try:
                values.append(concordance_index(time[s], risk[s], event[s]))
            except ValueError:
                pass
    return {"c_index": round(concordance_index(time, risk, event), 4), "c_index_ci95": _ci(values), "n": int(len(time)),
            "events": int(event.sum())}


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step points (times, survival probability), starting at (0, 1)."""
    order = np.argsort(time)
    time, event = np.asarray(time, float)[order], np.asarray(event, int)[order]
    times, surv, s = [0.0], [1.0], 1.0
    for t in np.unique(time[event == 1]):
        at_risk = (time >= t).sum()
        deaths = ((time == t) & (event == 1)).sum()
        s *= 1.0 - deaths / at_risk
        times.append(float(t))
        surv.append(s)
    return np.array(times), np.array(surv)


def logrank(time: np.ndarray, event: np.ndarray, group: np.ndarray) -> float:
    """p-value of the two-group log-rank test (chi-square, 1 degree of freedom)."""
    time, event, group = np.asarray(time, float), np.asarray(event, int), np.asarray(group, bool)
    observed = expected = variance = 0.0
    for t in np.unique(time[event == 1]):
        at_risk = time >= t
        n, n1 = at_risk.sum(), (at_risk & group).sum()
        d = ((time == t) & (event == 1)).sum()
        d1 = ((time == t) & (event == 1) & group).sum()
        observed += d1
        expected += d * n1 / n
        if n > 1:
            variance += d * (n1 / n) * (1 - n1 / n) * (n - d) / (n - 1)
    if variance <= 0:
        return 1.0
    return float(stats.chi2.sf((observed - expected) ** 2 / variance, 1))
