"""Fusion classifiers: early fusion (a linear model) and attention fusion over feature groups.

Both read one case's full feature vector (radiomics, location and the 128-number deep
embedding, in the model's column order), take their own columns, impute missing values
with the training median and standardise with the training mean and standard deviation.
They return a logit; :meth:`FusionHead.probability` applies Platt calibration (fitted on
the validation split), so a probability of 0.8 means about 80 % of such cases were
positive in validation. The decision threshold is stored with the head.

* **early**: selected radiomic features concatenated with the embedding, one logistic
  regression (L2). Its SHAP values are exact (linear model).
* **attention**: each group (radiomics of FLAIR, of T1, of T1c, of T2, shape and location,
  the deep embedding) is mapped to 16 numbers; a learned score per group, softmaxed over
  the groups, weights their sum (Ilse et al. 2018, gated attention without the gate),
  which feeds a linear output. The weights say which groups the prediction leaned on.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


class FusionHead(nn.Module):
    """Common part: columns, imputation, standardisation, calibration and threshold."""

    kind = "base"
    # buffers (saved with the weights): imputation medians, standardisation, Platt scaling, threshold
    median: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    platt: torch.Tensor
    threshold: torch.Tensor

    def __init__(self, columns: list[int], names: list[str]) -> None:
        super().__init__()
        self.columns = list(columns)
        self.names = list(names)
        n = len(columns)
        self.register_buffer("median", torch.zeros(n))
        self.register_buffer("mean", torch.zeros(n))
        self.register_buffer("std", torch.ones(n))
        self.register_buffer("platt", torch.tensor([1.0, 0.0]))
        self.register_buffer("threshold", torch.tensor(0.5))

    def fit_scaler(self, x: np.ndarray) -> None:
        """Training-set median (for imputation), mean and standard deviation of the head's columns."""
        x = x[:, self.columns]
        median = np.nanmedian(x, axis=0)
        median = np.where(np.isfinite(median), median, 0.0)
        filled = np.where(np.isfinite(x), x, median)
        self.median.copy_(torch.tensor(median, dtype=torch.float32))
        self.mean.copy_(torch.tensor(filled.mean(axis=0), dtype=torch.float32))
        self.std.copy_(torch.tensor(np.maximum(filled.std(axis=0), 1e-6), dtype=torch.float32))

    def standardise(self, x: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The head's columns of full feature vectors ``(N, F)``, imputed and standardised."""
        x = torch.as_tensor(np.asarray(x, np.float32) if not isinstance(x, torch.Tensor) else x)[:, self.columns]
        x = torch.where(torch.isfinite(x), x, self.median)
        return (x - self.mean) / self.std

    def logit_standardised(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def calibrated(self, logit: torch.Tensor) -> torch.Tensor:
        """Platt-scaled probability of a raw logit."""
        return torch.sigmoid(self.platt[0] * logit + self.platt[1])

    def probability(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities for full feature vectors ``(N, F)``."""
        with torch.no_grad():
            return self.calibrated(self.logit_standardised(self.standardise(x))).numpy().astype(float)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "columns": self.columns, "names": self.names}


class EarlyFusion(FusionHead):
    """Logistic regression on the concatenated, standardised columns."""

    kind = "early"

    def __init__(self, columns: list[int], names: list[str]) -> None:
        super().__init__(columns, names)
        self.linear = nn.Linear(len(columns), 1)

    def logit_standardised(self, z: torch.Tensor) -> torch.Tensor:
        return self.linear(z)[:, 0]


class AttentionFusion(FusionHead):
    """Attention over feature groups (see the module doc). ``groups``: name → positions in ``columns``."""

    kind = "attention"

    def __init__(self, columns: list[int], names: list[str], groups: dict[str, list[int]], hidden: int = 16,
                 dropout: float = 0.3) -> None:
        super().__init__(columns, names)
        self.groups = {k: list(v) for k, v in groups.items()}
        self.encode = nn.ModuleDict({k: nn.Sequential(nn.Dropout(dropout), nn.Linear(len(v), hidden), nn.Tanh())
                                     for k, v in self.groups.items()})
        self.score = nn.Linear(hidden, 1)
        self.out = nn.Linear(hidden, 1)
        self.last_attention: dict[str, float] = {}

    def attention(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(group weights ``(N, G)``, group codes ``(N, G, hidden)``)."""
        codes = torch.stack([self.encode[k](z[:, idx]) for k, idx in self.groups.items()], dim=1)
        return torch.softmax(self.score(codes)[..., 0], dim=1), codes

    def logit_standardised(self, z: torch.Tensor) -> torch.Tensor:
        weights, codes = self.attention(z)
        return self.out((weights[..., None] * codes).sum(dim=1))[:, 0]

    def group_weights(self, x: np.ndarray) -> dict[str, float]:
        """Attention weight of each group for one case (sums to 1)."""
        with torch.no_grad():
            w, _ = self.attention(self.standardise(x[None] if x.ndim == 1 else x))
        return {k: round(float(v), 4) for k, v in zip(self.groups, w[0])}

    def config(self) -> dict[str, Any]:
        return {**super().config(), "groups": self.groups, "hidden": self.score.in_features}


def build_head(config: dict[str, Any]) -> FusionHead:
    """An untrained head of the stored ``config`` (load its state_dict afterwards)."""
    if config["kind"] == "early":
        return EarlyFusion(config["columns"], config["names"])
    if config["kind"] == "attention":
        return AttentionFusion(config["columns"], config["names"], config["groups"], config.get("hidden", 16))
    raise ValueError(f"unknown fusion head kind {config['kind']!r}; expected early or attention")
