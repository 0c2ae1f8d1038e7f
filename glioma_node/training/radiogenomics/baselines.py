"""The comparisons and analyses the studies report beside their models.

* **Dictionary learning** (the survival study's sparse-coding baseline): a dictionary of
  atoms learnt on the training rows' standardised radiomic features (scikit-learn's
  ``MiniBatchDictionaryLearning``, L1-penalised codes), each case described by its sparse
  code, and a plain L2 logistic regression (or Cox model) on the codes.
* **PCA-GMM augmentation** (the LGG study's second dataset): per class, a Gaussian
  mixture in the PCA space of the training rows' selected features; synthetic rows drawn
  from it and mapped back. A model fitted on real + synthetic rows is measured on the
  real test cases only, beside the same model on real rows. Metrics of a model trained on
  augmented data overstate what it does on real patients: the synthetic rows can only
  repeat structure the few real ones already had.
* **Variance analysis of feature groups**: per group (each sequence's radiomics, shape and
  location, the deep embedding), a one-way ANOVA F-test of every feature between the two
  classes (scikit-learn's ``f_classif``), the share significant after Benjamini–Hochberg
  at 5 %, and the median F.

Rows are cases; NaN values are imputed with the training median everywhere here.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import false_discovery_control
from sklearn.decomposition import PCA, MiniBatchDictionaryLearning
from sklearn.feature_selection import f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture

AUGMENTATION_CAVEAT = ("Metrics of a model trained on PCA-GMM-augmented data overstate its performance on real "
                       "patients: synthetic rows only repeat the structure of the real training rows. Both columns are "
                       "measured on the same real test cases.")


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    median = np.nanmedian(x, axis=0)
    median = np.where(np.isfinite(median), median, 0.0)
    filled = np.where(np.isfinite(x), x, median)
    return median, filled.mean(axis=0), np.maximum(filled.std(axis=0), 1e-9)


def _standardise(x: np.ndarray, scaler: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    median, mean, std = scaler
    return (np.where(np.isfinite(x), x, median) - mean) / std


class SparseCoder:
    """A dictionary learnt on training rows; :meth:`codes` describes any rows with it."""

    def __init__(self, x_train: np.ndarray, atoms: int = 24, alpha: float = 1.0, seed: int = 0) -> None:
        self.scaler = _standardiser(x_train)
        z = _standardise(x_train, self.scaler)
        self.model = MiniBatchDictionaryLearning(n_components=min(atoms, len(z)), alpha=alpha, random_state=seed,
                                                 batch_size=min(32, len(z)), max_iter=200, transform_alpha=alpha,
                                                 transform_algorithm="lasso_lars").fit(z)

    def codes(self, x: np.ndarray) -> np.ndarray:
        """The sparse code ``(N, atoms)`` of each row."""
        return self.model.transform(_standardise(x, self.scaler))


def dictionary_classifier(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                          x_test: np.ndarray, seed: int = 0) -> tuple[np.ndarray, float]:
    """Test probabilities of the sparse-coding baseline and its threshold (Youden on
    validation, as every variant's): (``(N_test,)``, threshold)."""
    from glioma_node.training.radiogenomics.fit import calibration

    coder = SparseCoder(x_train, seed=seed)
    clf = LogisticRegression(C=1.0, max_iter=5000).fit(coder.codes(x_train), y_train.astype(int))
    a, b, threshold = calibration(clf.decision_function(coder.codes(x_val)), y_val.astype(int))
    return 1.0 / (1.0 + np.exp(-(a * clf.decision_function(coder.codes(x_test)) + b))), threshold


def pca_gmm_augment(x: np.ndarray, y: np.ndarray, factor: float = 1.0, variance: float = 0.95,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``factor`` × the real rows of each class drawn from a per-class Gaussian mixture (up to
    3 components, diagonal) in the PCA space (``variance`` explained) of all rows; returned
    after the real rows: (``x`` with synthetic rows appended, ``y`` likewise)."""
    scaler = _standardiser(x)
    z = _standardise(x, scaler)
    pca = PCA(n_components=variance, random_state=seed).fit(z)
    rows, labels = [x], [y]
    for cls in np.unique(y):
        scores = pca.transform(z[y == cls])
        count = int(round(factor * len(scores)))
        if count == 0 or len(scores) < 2:
            continue
        gmm = GaussianMixture(n_components=max(1, min(3, len(scores) // 10)), covariance_type="diag",
                              random_state=seed, reg_covar=1e-3).fit(scores)
        drawn, _ = gmm.sample(count)
        _, mean, std = scaler
        rows.append(pca.inverse_transform(drawn) * std + mean)
        labels.append(np.full(count, cls))
    return np.concatenate(rows), np.concatenate(labels)


def group_variance(x: np.ndarray, y: np.ndarray, names: list[str], group_of) -> dict[str, dict[str, Any]]:
    """Per feature group: features tested, the share whose class means differ (ANOVA F-test,
    Benjamini–Hochberg q < 0.05) and the median F."""
    filled = np.where(np.isfinite(x), x, np.nanmedian(x, axis=0))
    usable = np.isfinite(filled).all(axis=0) & (np.nanstd(filled, axis=0) > 1e-9)
    f, p = f_classif(filled[:, usable], y.astype(int))
    q = false_discovery_control(np.nan_to_num(p, nan=1.0))
    kept = [n for n, u in zip(names, usable) if u]
    out: dict[str, dict[str, Any]] = {}
    for group in sorted({group_of(n) for n in kept}):
        idx = [i for i, n in enumerate(kept) if group_of(n) == group]
        out[group] = {"features": len(idx), "significant_share": round(float(np.mean(q[idx] < 0.05)), 4),
                      "median_f": round(float(np.nanmedian(f[idx])), 3)}
    return out
