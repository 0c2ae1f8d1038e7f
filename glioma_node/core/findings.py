"""Findings: everything the node concludes about one study (data only).

``dicom_io`` writes DICOM objects from Findings, so this module imports nothing but
numpy and the standard library.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from glioma_node.core.longitudinal import FollowUp

RESEARCH_USE = "Research use only, not for diagnosis."


@dataclass
class LabelMask:
    """BraTS labels (uint8 ``[z, y, x]``) on the grid of one source series.

    ``affine`` maps (column, row, slice) to LPS mm as in :mod:`glioma_node.core.volume`;
    ``series_instance_uid`` and ``sop_instance_uids`` (one per slice) name the source.
    """

    role: str
    series_instance_uid: str
    labels: np.ndarray
    affine: np.ndarray
    sop_instance_uids: list[str]
    frame_numbers: list[int] | None = None


@dataclass
class HeatMap:
    """A Grad-CAM map (float32 ``[z, y, x]``, 0–1, no unit) on the grid of one source series.

    1 marks the voxels that most raised the prediction named by ``target``; the values
    are relative within the map.
    """

    target: str
    role: str
    series_instance_uid: str
    values: np.ndarray
    affine: np.ndarray
    sop_instance_uids: list[str]
    frame_numbers: list[int] | None = None


@dataclass
class Prediction:
    """A calibrated probability for one target (``mgmt``: promoter methylated, ``idh``: mutant).

    ``status`` is the positive label when ``probability >= threshold``. ``top_features``:
    SHAP attributions (log-odds) as dicts ``feature, value, shap``; ``attention``: the
    attention-fusion weight of each feature group, when that variant ran.
    """

    target: str
    probability: float
    threshold: float
    status: str
    variant: str
    top_features: list[dict[str, Any]] = field(default_factory=list)
    attention: dict[str, float] = field(default_factory=dict)


@dataclass
class RiskScore:
    """Cox risk: ``score`` (log relative hazard, higher = shorter expected survival), the
    training-median ``cutoff`` and the ``group`` (high or low). ``inputs``: for a model
    that takes genomic markers, marker → where its value came from
    (:class:`~glioma_node.core.clinical.CovariateSource` text), and ``known_from`` the
    clinical source's file and key when it supplied any."""

    score: float
    cutoff: float
    group: str
    top_features: list[dict[str, Any]] = field(default_factory=list)
    inputs: dict[str, str] = field(default_factory=dict)
    known_from: str = ""


@dataclass
class Radiogenomics:
    """What the radiogenomic stage concludes: predictions, risk and Grad-CAM maps."""

    predictions: dict[str, Prediction]
    risk: RiskScore | None
    heat_maps: dict[str, HeatMap]
    model: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "predictions": {k: {"probability": round(p.probability, 4), "threshold": round(p.threshold, 4),
                                "status": p.status, "variant": p.variant, "top_features": p.top_features,
                                **({"attention": p.attention} if p.attention else {})}
                            for k, p in self.predictions.items()},
            "risk": None if self.risk is None else {"score": round(self.risk.score, 4), "cutoff": round(self.risk.cutoff, 4),
                                                    "group": self.risk.group, "top_features": self.risk.top_features,
                                                    "inputs": self.risk.inputs, "known_from": self.risk.known_from},
            "heat_maps": {k: {"role": h.role, "series_instance_uid": h.series_instance_uid} for k, h in self.heat_maps.items()},
        }


@dataclass
class SegmentationQuality:
    """How far the tumour mask can be trusted, from evidence the node has (see
    :mod:`glioma_node.inference.quality`).

    ``score`` in [0, 1] is the weakest piece of evidence; ``doubtful`` when it is below
    ``threshold``; ``reasons`` say in words what made it low; ``evidence`` the measured
    values by name (shares in [0, 1], volumes in ml, Dice for agreement).
    """

    score: float
    threshold: float
    doubtful: bool
    reasons: list[str] = field(default_factory=list)
    evidence: dict[str, float] = field(default_factory=dict)

    @property
    def warning(self) -> str:
        """The sentence findings, the SR and the summary carry when the mask is doubtful."""
        return "segmentation doubtful: " + "; ".join(self.reasons or ["quality score below threshold"]) + \
            f" (quality {self.score:.2f} < {self.threshold:.2f})"

    def to_json(self) -> dict[str, Any]:
        return {"score": round(self.score, 3), "threshold": self.threshold, "doubtful": self.doubtful,
                "reasons": self.reasons, "evidence": {k: round(v, 4) for k, v in self.evidence.items()}}


@dataclass
class Findings:
    """The results for one study; see docs/design.md, "Key types".

    ``volumes_ml``: millilitres per label (necrotic_core, edema, enhancing) and region
    (whole_tumour, tumour_core, enhancing_tumour). ``masks``: role → LabelMask on that
    role's source series; ``reference_role`` names the one reports point at.
    ``timings_s``: seconds per stage. ``completed_utc``: when the analysis finished (ISO
    8601, UTC); the DICOM results carry it as their content date and time. ``follow_up``: the
    comparison with the patient's earlier studies, when there are any (RANO; docs/rano.md).
    """

    study_instance_uid: str
    reference_role: str
    masks: dict[str, LabelMask]
    volumes_ml: dict[str, float]
    brain_volume_ml: float | None
    models: list[dict[str, str]]
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    registration: dict[str, dict] = field(default_factory=dict)
    radiogenomics: Radiogenomics | None = None
    completed_utc: str | None = None
    segmentation_quality: SegmentationQuality | None = None
    follow_up: FollowUp | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (no voxel arrays): what findings.json holds."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "notice": RESEARCH_USE,
            "segmentation": {
                "labels": {"1": "necrotic / non-enhancing tumour core", "2": "edema", "4": "enhancing tumour"},
                "volumes_ml": self.volumes_ml,
                "brain_volume_ml": self.brain_volume_ml,
                "reference_role": self.reference_role,
                "reference_series_instance_uid": self.masks[self.reference_role].series_instance_uid,
                "series": {role: m.series_instance_uid for role, m in self.masks.items()},
                "quality": None if self.segmentation_quality is None else self.segmentation_quality.to_json(),
            },
            "radiogenomics": None if self.radiogenomics is None else self.radiogenomics.to_json(),
            "follow_up": None if self.follow_up is None else self.follow_up.to_json(),
            "registration": self.registration,
            "models": self.models,
            "timings_s": self.timings_s,
            "warnings": self.warnings,
            "completed_utc": self.completed_utc,
        }
