"""Fitting the fusion heads and the Cox model on a feature matrix (rows: cases, columns:
the model's feature names). Selection, fitting and calibration use only the rows they
are given, so callers keep test cases out of everything but evaluation."""
from __future__ import annotations

import numpy as np
import torch
from scipy import stats
from scipy.optimize import minimize
from sklearn.linear_model import LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold

from glioma_node.core.roles import ROLES
from glioma_node.inference.radiogenomics.cox import CoxModel
from glioma_node.inference.radiogenomics.heads import AttentionFusion, EarlyFusion, FusionHead
from glioma_node.training.radiogenomics.metrics import auc
from glioma_node.training.radiogenomics.survival import concordance_index, fit_cox

SEQUENCE_GROUPS = ROLES
#: Ridge strengths tried for the Cox model (lifelines' ``penalizer``: per case, see
#: :func:`.survival.fit_cox`), picked by cross-validated C-index.
PENALTIES = (0.001, 0.01, 0.05, 0.2, 1.0)


def group_of(name: str) -> str:
    """Feature group: a sequence's radiomics, ``shape`` (shape and location) or ``deep``."""
    head = name.split(".", 1)[0]
    if head in SEQUENCE_GROUPS:
        return head
    return "deep" if head == "deep" else "shape"


def _filled(x: np.ndarray) -> np.ndarray:
    med = np.nanmedian(x, axis=0)
    return np.where(np.isfinite(x), x, np.where(np.isfinite(med), med, 0.0))


def column_auc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC-AUC of every column of ``scores`` ``(N, K)`` for ``y`` at once (Mann–Whitney ranks,
    ties one half): what scikit-learn's ``roc_auc_score`` gives column by column, in one
    vectorised pass over the thousands of candidate features. Needs both classes."""
    y = np.asarray(y).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUC needs both classes")
    ranks = stats.rankdata(scores, axis=0)
    return (ranks[y].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def rank_columns(x: np.ndarray, y: np.ndarray, columns: list[int], max_missing: float = 0.2,
                 max_correlation: float = 0.9, top: int = 24) -> list[int]:
    """``columns`` ranked by univariate |AUC − 0.5| on (``x``, ``y``), dropping columns with
    more than ``max_missing`` NaN or no variance, and any column correlated above
    ``max_correlation`` with a better one; the first ``top``."""
    sub = x[:, columns]
    filled = _filled(sub)
    scores = np.where(_usable(sub, filled, max_missing), np.abs(column_auc(y, filled) - 0.5), -1.0)
    return [columns[j] for j in _pick(filled, scores, top, max_correlation)]


def _usable(raw: np.ndarray, filled: np.ndarray, max_missing: float) -> np.ndarray:
    """Columns with at most ``max_missing`` NaN and some variance."""
    return (np.isnan(raw).mean(axis=0) <= max_missing) & (filled.std(axis=0) > 1e-9)


def _pick(filled: np.ndarray, scores: np.ndarray, top: int, max_correlation: float) -> list[int]:
    """Positions of the ``top`` best-scoring columns (score < 0: unusable), greedily skipping
    any column correlated above ``max_correlation`` with one already picked."""
    z = (filled - filled.mean(0)) / np.maximum(filled.std(0), 1e-9)
    chosen: list[int] = []
    for j in np.argsort(-scores):
        if scores[j] < 0 or len(chosen) >= top:
            break
        if chosen and np.max(np.abs(z[:, chosen].T @ z[:, j]) / len(z)) > max_correlation:
            continue
        chosen.append(int(j))
    return chosen


def fit_early(x: np.ndarray, y: np.ndarray, columns: list[int], names: list[str], seed: int = 0) -> EarlyFusion:
    """L2 logistic regression on ``columns`` (C chosen by 5-fold cross-validated AUC)."""
    head = EarlyFusion(columns, [names[c] for c in columns])
    head.fit_scaler(x)
    z = head.standardise(x).numpy()
    folds = max(2, min(5, int(np.bincount(y).min())))
    model = LogisticRegressionCV(Cs=np.logspace(-3, 1, 9).tolist(), cv=StratifiedKFold(folds, shuffle=True, random_state=seed),
                                 scoring="roc_auc", max_iter=5000).fit(z, y)
    with torch.no_grad():
        head.linear.weight.copy_(torch.tensor(model.coef_, dtype=torch.float32))
        head.linear.bias.copy_(torch.tensor(model.intercept_, dtype=torch.float32))
    return head


def fit_attention(x: np.ndarray, y: np.ndarray, columns: list[int], names: list[str], seed: int = 0,
                  epochs: int = 300) -> AttentionFusion:
    """Attention fusion over the groups of ``columns`` (AdamW, full batch; the number of
    epochs is picked on a 20 % inner hold-out, then the head is refitted on all rows)."""
    groups: dict[str, list[int]] = {}
    for pos, c in enumerate(columns):
        groups.setdefault(group_of(names[c]), []).append(pos)
    target = torch.tensor(y, dtype=torch.float32)

    def train(rows: np.ndarray, n_epochs: int, watch: np.ndarray | None) -> tuple[AttentionFusion, int]:
        torch.manual_seed(seed)
        head = AttentionFusion(columns, [names[c] for c in columns], groups)
        head.fit_scaler(x[rows])
        z = head.standardise(x)
        opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=5e-2)
        best, best_epoch = -1.0, n_epochs
        for epoch in range(1, n_epochs + 1):
            head.train()
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(head.logit_standardised(z[rows]), target[rows])
            loss.backward()
            opt.step()
            if watch is not None and epoch % 10 == 0 and len(set(y[watch])) == 2:
                head.eval()
                with torch.no_grad():
                    score = float(auc(y[watch], head.logit_standardised(z[watch]).numpy()))
                if score > best + 1e-4:
                    best, best_epoch = score, epoch
        head.eval()
        return head, best_epoch

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    inner = order[: max(2, len(y) // 5)]
    rest = order[len(inner):]
    _, n_epochs = train(rest, epochs, inner)
    head, _ = train(np.arange(len(y)), max(20, n_epochs), None)
    return head


def calibrate(head: FusionHead, x: np.ndarray, y: np.ndarray) -> None:
    """Platt scaling and the Youden-optimal threshold, fitted on (``x``, ``y``) (the validation split)."""
    with torch.no_grad():
        logit = head.logit_standardised(head.standardise(x)).numpy()
    a, b, threshold = calibration(logit, y)
    head.platt.copy_(torch.tensor([a, b]))
    head.threshold.copy_(torch.tensor(threshold))


def calibration(logit: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Platt coefficients (a, b) and the Youden threshold on the calibrated probabilities,
    for validation logits and labels (what every classifier stores)."""
    y = np.asarray(y, int)
    a, b = platt(logit, y)
    return a, b, youden_threshold(y, 1.0 / (1.0 + np.exp(-(a * np.asarray(logit) + b))))


def platt(logit: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt's (1999) sigmoid fit p = σ(a·logit + b) with his smoothed targets
    ((N₊+1)/(N₊+2) and 1/(N₋+2)), which keeps a and b finite on separable data."""
    y = np.asarray(y, int)
    if len(set(y)) < 2:
        return 1.0, 0.0
    n1, n0 = y.sum(), len(y) - y.sum()
    t = np.where(y == 1, (n1 + 1) / (n1 + 2), 1 / (n0 + 2))

    def loss(ab: np.ndarray) -> float:
        f = ab[0] * logit + ab[1]
        return float(np.sum(np.logaddexp(0, f) - t * f))

    a, b = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead").x
    return float(a), float(b)


def youden_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability cut that maximises sensitivity + specificity − 1, placed midway
    between the two neighbouring validation probabilities (0.5 when undefined)."""
    if len(set(y)) < 2:
        return 0.5
    values = np.unique(p)
    cuts = np.concatenate([[values[0]], (values[:-1] + values[1:]) / 2]) if len(values) > 1 else values
    best, cut = -1.0, 0.5
    for t in cuts:
        pred = p >= t
        j = pred[y == 1].mean() + (~pred[y == 0]).mean() - 1
        if j > best:
            best, cut = j, float(t)
    return cut


def fit_survival(x: np.ndarray, time: np.ndarray, event: np.ndarray, names: list[str], candidates: list[int],
                 extra: np.ndarray, extra_names: list[str], top: int = 8, seed: int = 0) -> CoxModel:
    """Cox model on the ``top`` candidate features (univariate C-index, decorrelated) plus ``extra``
    columns (MGMT and IDH probabilities, age); the ridge penalty picked by 5-fold CV C-index."""
    raw = x[:, candidates]
    filled = _filled(raw)
    usable = _usable(raw, filled, 0.2)
    scores = np.array([abs(concordance_index(time, filled[:, j], event) - 0.5) if usable[j] else -1.0
                       for j in range(len(candidates))])
    cols = [candidates[j] for j in _pick(filled, scores, top, 0.8)]
    design = np.column_stack([x[:, cols], extra])
    design_names = [names[c] for c in cols] + list(extra_names)
    rng = np.random.default_rng(seed)
    folds = np.array_split(rng.permutation(len(time)), 5)
    n_extra = extra.shape[1]
    best, best_choice = -1.0, (len(cols), 1.0)
    # How many image features (a prefix of the ranking) and how much ridge: 5-fold CV C-index.
    for k in sorted({0, min(2, len(cols)), min(4, len(cols)), len(cols)}):
        keep = list(range(k)) + list(range(len(cols), len(cols) + n_extra))
        for penalty in PENALTIES:
            risk = np.zeros(len(time))
            try:
                for fold in folds:
                    train = np.setdiff1d(np.arange(len(time)), fold)
                    fitted = fit_cox(design[train][:, keep], time[train], event[train],
                                     [design_names[i] for i in keep], penalty)
                    risk[fold] = fitted.risk(design[fold][:, keep])
            except ValueError:  # a fold without two deaths, or no convergence: not a candidate
                continue
            c = concordance_index(time, risk, event)
            if c > best:
                best, best_choice = c, (k, penalty)
    k, penalty = best_choice
    keep = list(range(k)) + list(range(len(cols), len(cols) + n_extra))
    model = fit_cox(design[:, keep], time, event, [design_names[i] for i in keep], penalty)
    model.extra = {"cv_c_index": round(best, 4)}
    return model
