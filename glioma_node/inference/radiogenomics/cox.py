"""Cox proportional hazards: a risk score and a high/low group from fused features.

The model is h(t | x) = h0(t)·exp(β·z), z the standardised covariates (training mean and
standard deviation, missing values imputed with the training median). The risk score is
β·z (log relative hazard; higher = shorter expected survival); the group is "high" at or
above the cutoff, the median score of the training cases. The node only scores; the fit
(lifelines, ridge-penalised) is training's: ``training/radiogenomics/survival.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


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
