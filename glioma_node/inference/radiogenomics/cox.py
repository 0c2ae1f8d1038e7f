"""Cox proportional hazards: a risk score and a high/low group from fused features.

The model is h(t | x) = h0(t)·exp(β·z), z the standardised covariates (training mean and
standard deviation, missing values imputed with the training median). The risk score is
β·z (log relative hazard; higher = shorter expected survival); the group is "high" at or
above the cutoff, the median score of the training cases. Fitting maximises Breslow's
partial likelihood with a ridge penalty (scipy, exact gradient).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize


@dataclass
class CoxModel:
    """Fitted coefficients per covariate and what scoring needs (see the module doc)."""

    names: list[str]
    beta: np.ndarray
    median: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    cutoff: float = 0.0
    penalty: float = 0.0
    extra: dict = field(default_factory=dict)

    def standardise(self, x: np.ndarray) -> np.ndarray:
        x = np.where(np.isfinite(x), x, self.median)
        return (x - self.mean) / self.std

    def risk(self, x: np.ndarray) -> np.ndarray:
        """Risk scores (log relative hazard) of covariate rows ``(N, len(names))``."""
        return self.standardise(np.atleast_2d(x)) @ self.beta

    def group(self, score: float) -> str:
        return "high" if score >= self.cutoff else "low"

    def to_dict(self) -> dict:
        return {"names": self.names, "beta": self.beta.tolist(), "median": self.median.tolist(),
                "mean": self.mean.tolist(), "std": self.std.tolist(), "cutoff": self.cutoff,
                "penalty": self.penalty, "extra": self.extra}

    @classmethod
    def from_dict(cls, d: dict) -> CoxModel:
        return cls(list(d["names"]), np.asarray(d["beta"], float), np.asarray(d["median"], float),
                   np.asarray(d["mean"], float), np.asarray(d["std"], float), float(d["cutoff"]),
                   float(d.get("penalty", 0.0)), dict(d.get("extra", {})))


def _neg_log_partial_likelihood(beta: np.ndarray, z: np.ndarray, time: np.ndarray, event: np.ndarray,
                                penalty: float) -> tuple[float, np.ndarray]:
    order = np.argsort(-time, kind="stable")  # descending: risk sets are prefixes
    z, time, event = z[order], time[order], event[order]
    eta = z @ beta
    shift = eta.max()
    w = np.exp(eta - shift)
    cum_w = np.cumsum(w)
    cum_wz = np.cumsum(w[:, None] * z, axis=0)
    # Breslow ties: every tied death shares the risk set of the last tied time.
    last = np.searchsorted(-time, -time, side="right") - 1
    d = event.astype(bool)
    loglik = float((eta[d] - shift - np.log(cum_w[last[d]])).sum())
    grad = (z[d] - cum_wz[last[d]] / cum_w[last[d], None]).sum(axis=0)
    return -loglik + 0.5 * penalty * float(beta @ beta), -grad + penalty * beta


def fit_cox(x: np.ndarray, time: np.ndarray, event: np.ndarray, names: list[str], penalty: float = 1.0) -> CoxModel:
    """Fit on covariates ``x`` ``(N, P)``, follow-up ``time`` (days) and ``event`` (1 = death)."""
    if int(np.sum(event)) < 2:
        raise ValueError("a Cox model needs at least two observed events")
    median = np.nanmedian(x, axis=0)
    median = np.where(np.isfinite(median), median, 0.0)
    filled = np.where(np.isfinite(x), x, median)
    mean, std = filled.mean(axis=0), np.maximum(filled.std(axis=0), 1e-6)
    model = CoxModel(list(names), np.zeros(x.shape[1]), median, mean, std, penalty=penalty)
    z = model.standardise(x)
    result = minimize(_neg_log_partial_likelihood, np.zeros(x.shape[1]), args=(z, np.asarray(time, float),
                      np.asarray(event, int), penalty), jac=True, method="L-BFGS-B")
    model.beta = result.x
    model.cutoff = float(np.median(z @ result.x))
    return model


def concordance_index(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C: the share of comparable pairs (the earlier time is a death) ordered
    correctly by risk (higher risk dies first); ties in risk count one half."""
    time, risk, event = (np.asarray(a, float) for a in (time, risk, event))
    earlier = (time[:, None] < time[None, :]) & (event[:, None] == 1)
    if not earlier.any():
        raise ValueError("no comparable pairs: the concordance index needs observed events")
    right = (risk[:, None] > risk[None, :]) & earlier
    tied = (risk[:, None] == risk[None, :]) & earlier
    return float((right.sum() + 0.5 * tied.sum()) / earlier.sum())
