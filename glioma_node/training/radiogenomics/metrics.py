"""Evaluation: classification metrics (scikit-learn) with percentile-bootstrap 95 % intervals,
and Harrell's C with its interval (lifelines, through :mod:`.survival`).

The bootstrap is ours (scikit-learn has none): each resample's confusion matrix and AUC come
from scikit-learn, and accuracy, precision, recall and F1 are read off that matrix with
scikit-learn's definitions (0 where a ratio is undefined, as ``zero_division=0``).
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, roc_auc_score

from glioma_node.training.radiogenomics.survival import concordance_index


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC (scikit-learn) of ``score`` for ``y`` (1 positive). Needs both classes."""
    y = np.asarray(y).astype(int)
    if y.min() == y.max():
        raise ValueError("AUC needs both classes")
    return float(roc_auc_score(y, np.asarray(score, float)))


def _scores(y: np.ndarray, p: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    out = {"accuracy": (tp + tn) / len(y), "precision": precision, "recall": recall,
           "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}
    if 0 < y.sum() < len(y):
        out["auc"] = float(roc_auc_score(y, p))
    return out


def _ci(values: list[float]) -> list[float | None]:
    return [round(float(np.percentile(values, 2.5)), 4), round(float(np.percentile(values, 97.5)), 4)] if values else [None, None]


def classification(y: np.ndarray, p: np.ndarray, threshold: float, boots: int = 1000, seed: int = 0) -> dict:
    """Accuracy, precision, recall, F1 (at ``threshold``) and ROC-AUC, each with a 95 %
    percentile-bootstrap interval, and the confusion matrix ``[[TN, FP], [FN, TP]]``."""
    y, p = np.asarray(y).astype(int), np.asarray(p, float)
    pred = (p >= threshold).astype(int)
    point = _scores(y, p, pred)
    rng = np.random.default_rng(seed)
    samples = [_scores(y[s], p[s], pred[s]) for s in (rng.integers(0, len(y), len(y)) for _ in range(boots))]
    out: dict = {"n": int(len(y)), "positives": int(y.sum()), "threshold": round(float(threshold), 4)}
    for name in ("accuracy", "precision", "recall", "f1", "auc"):
        out[name] = round(float(point[name]), 4) if name in point else None
        out[name + "_ci95"] = _ci([b[name] for b in samples if name in b]) if name in point else [None, None]
    out["confusion_matrix"] = confusion_matrix(y, pred, labels=[0, 1]).tolist()
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
