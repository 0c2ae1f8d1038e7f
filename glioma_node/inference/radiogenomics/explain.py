"""SHAP attributions (Lundberg & Lee 2017) for the fusion heads and the Cox model.

Values are in the model's output units: log-odds for MGMT and IDH (before calibration),
log relative hazard for the Cox risk. Positive values push towards methylated, mutant,
or higher risk. The background is a sample of training cases stored with the model.
The 128 deep-embedding numbers have no meaning one by one, so their SHAP values are
summed into one entry, ``deep.embedding`` (SHAP values are additive, so the sum is the
embedding's share of the prediction).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shap
import torch
from torch import nn

from glioma_node.inference.radiogenomics.cox import CoxModel
from glioma_node.inference.radiogenomics.heads import AttentionFusion, EarlyFusion, FusionHead

DEEP_PREFIX = "deep."


@dataclass
class Attribution:
    """One feature's SHAP value; ``value`` is the feature's raw value (None for a group)."""

    feature: str
    value: float | None
    shap: float

    def to_json(self) -> dict:
        value = None if self.value is None or not np.isfinite(self.value) else round(float(self.value), 6)
        return {"feature": self.feature, "value": value, "shap": round(float(self.shap), 6)}


class _Logit(nn.Module):
    def __init__(self, head: FusionHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head.logit_standardised(z)[:, None]


def _ranked(names: list[str], raw: np.ndarray, values: np.ndarray, top: int) -> list[Attribution]:
    deep = np.array([n.startswith(DEEP_PREFIX) for n in names])
    items = [Attribution(n, float(r), float(v)) for n, r, v, d in zip(names, raw, values, deep) if not d]
    if deep.any():
        items.append(Attribution("deep.embedding", None, float(values[deep].sum())))
    return sorted(items, key=lambda a: -abs(a.shap))[:top]


def head_attributions(head: FusionHead, x: np.ndarray, background: np.ndarray, top: int = 10) -> list[Attribution]:
    """The ``top`` features by |SHAP| behind ``head``'s logit for one full feature vector ``x``."""
    z = head.standardise(x[None])
    zb = head.standardise(background)
    if isinstance(head, EarlyFusion):
        w = head.linear.weight.detach().numpy()[0]
        b = float(head.linear.bias.detach())
        explainer = shap.LinearExplainer((w, b), shap.maskers.Independent(zb.numpy(), max_samples=len(zb)))
        values = np.asarray(explainer.shap_values(z.numpy()))[0]
    elif isinstance(head, AttentionFusion):
        head.eval()
        explainer = shap.GradientExplainer(_Logit(head), zb)
        values = np.asarray(explainer.shap_values(z, nsamples=200)).reshape(-1)[: z.shape[1]]
    else:
        raise TypeError(f"no SHAP explainer for {type(head).__name__}")
    return _ranked(head.names, x[head.columns], values, top)


def cox_attributions(model: CoxModel, x: np.ndarray, background: np.ndarray, top: int = 10) -> list[Attribution]:
    """The ``top`` covariates by |SHAP| behind the Cox risk score of covariate row ``x``."""
    z = model.standardise(x[None])
    explainer = shap.LinearExplainer((model.beta, 0.0), shap.maskers.Independent(model.standardise(background),
                                                                                 max_samples=len(background)))
    values = np.asarray(explainer.shap_values(z))[0]
    return _ranked(model.names, x, values, top)
