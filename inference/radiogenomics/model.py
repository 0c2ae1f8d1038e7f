"""The radiogenomic model directory and the stage that runs it on one study.

Layout (see :mod:`inference.model_dir`)::

    manifest.json   kind glioma-node-radiogenomics, sha256 of model.pt, targets, variants
    model.pt        one torch file (loaded with weights_only): feature names, radiomics
                    settings, the deep encoder, the fusion heads per target and variant,
                    the optional end-to-end CNNs, the Cox model, SHAP backgrounds
    MODEL_CARD.md   training data, metrics, limits

Per study: radiomics + location + the 128-number embedding make one feature vector; each
target (``mgmt``, ``idh``) runs the variant chosen in the configuration (``early``,
``attention`` or ``cnn``); the Cox model scores the fused features with the MGMT and IDH
probabilities and age; Grad-CAM and SHAP explain each prediction.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from inference.model_dir import ModelError, read_manifest
from inference.radiogenomics import radiomics
from inference.radiogenomics.cnn import TumourCNN
from inference.radiogenomics.cox import CoxModel
from inference.radiogenomics.crop import tumour_crop, tumour_patches, uncrop
from inference.radiogenomics.encoder import DeepEncoder
from inference.radiogenomics.explain import cox_attributions, head_attributions
from inference.radiogenomics.gradcam import grad_cam
from inference.radiogenomics.heads import AttentionFusion, FusionHead, build_head
from inference.radiogenomics.location import location_features
from inference.radiogenomics.morphology import morphology_features
from inference.radiogenomics.tumour_study import TumourStudy

KIND = "glioma-node-radiogenomics"
TARGETS = ("mgmt", "idh")
POSITIVE = {"mgmt": ("methylated", "unmethylated"), "idh": ("mutant", "wildtype")}
VARIANTS = ("early", "attention", "cnn")
COX_EXTRA = ("mgmt_probability", "idh_probability", "age_years")
# Feature columns whose absence means "this sub-region is not there" (0 ml), not "unknown".
ZERO_WHEN_ABSENT = ("MeshVolume", "VoxelVolume", "SurfaceArea")


@dataclass
class StageResult:
    """Raw output of :meth:`RadiogenomicModel.run` on the 1 mm study grid."""

    probabilities: dict[str, float]
    thresholds: dict[str, float]
    variants: dict[str, str]
    attributions: dict[str, list[dict]]
    attention: dict[str, dict[str, float]]
    risk: tuple[float, float, str] | None
    risk_attributions: list[dict]
    cams: dict[str, np.ndarray]
    features: dict[str, float]
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def feature_vector(features: dict[str, float], names: list[str]) -> np.ndarray:
    """``features`` in the order of ``names``; absent sub-region volumes are 0, other absent values NaN."""
    out = np.full(len(names), np.nan, np.float64)
    for i, name in enumerate(names):
        if name in features:
            out[i] = features[name]
        elif name.startswith("shape.") and name.rsplit(".", 1)[-1] in ZERO_WHEN_ABSENT:
            out[i] = 0.0
    return out


def embed(encoder: DeepEncoder, config: dict[str, Any], stack: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The 128-number embedding of one study (``stack``: ``(4, z, y, x)`` z-scored, 1 mm)."""
    encoder.eval()
    with torch.no_grad():
        if config.get("variant", "crop") == "patch":
            patches, _ = tumour_patches(stack, labels, config["patch_size"], config["patch_count"])
            return encoder(torch.from_numpy(patches)).mean(dim=0).numpy()
        crop, _ = tumour_crop(stack, labels, config["crop_size"], config["crop_spacing_mm"])
        return encoder(torch.from_numpy(crop)[None])[0].numpy()


def study_features(study: TumourStudy, params: dict[str, Any], encoder: DeepEncoder, encoder_config: dict[str, Any],
                   workers: int = 1) -> tuple[dict[str, float], dict[str, float]]:
    """(all named features of one study, seconds per part): radiomics, location, morphology, ``deep.NNN``."""
    t0 = time.perf_counter()
    feats = radiomics.extract(study.images, study.labels, study.grid.spacing, params, workers)
    t1 = time.perf_counter()
    feats.update(location_features(study.labels, study.brain, study.grid))
    feats.update(morphology_features(feats))
    emb = embed(encoder, encoder_config, study.stack(), study.labels)
    feats.update({f"deep.{i:03d}": float(v) for i, v in enumerate(emb)})
    return feats, {"radiomics": round(t1 - t0, 2), "deep_features": round(time.perf_counter() - t1, 2)}


class RadiogenomicModel:
    """A loaded radiogenomic model directory (checksum checked)."""

    def __init__(self, directory: Path, variants: dict[str, str] | None = None) -> None:
        self.manifest = read_manifest(Path(directory), KIND)
        try:
            blob = torch.load(self.manifest.weights_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
            raise ModelError(f"{self.manifest.weights_path}: cannot be read as a glioma-node radiogenomic model ({exc})") from exc
        self.feature_names: list[str] = list(blob["feature_names"])
        self.params: dict[str, Any] = blob["radiomics_settings"]
        self.encoder_config: dict[str, Any] = dict(blob["encoder"]["config"])
        self.encoder = DeepEncoder(self.encoder_config["widths"])
        # The training heads (IDH and MGMT logits on the embedding) are not used here.
        self.encoder.load_state_dict({k: v.float() if v.is_floating_point() else v
                                      for k, v in blob["encoder"]["state"].items() if not k.startswith("heads.")})
        self.encoder.eval()
        self.heads: dict[str, dict[str, FusionHead]] = {}
        for target, by_variant in blob["heads"].items():
            self.heads[target] = {}
            for variant, stored in by_variant.items():
                head = build_head(stored["config"])
                head.load_state_dict(stored["state"])
                head.eval()
                self.heads[target][variant] = head
        self.cnns: dict[str, tuple[TumourCNN, dict[str, Any]]] = {}
        for target, stored in blob.get("cnn", {}).items():
            net = TumourCNN(stored["config"]["model_name"])
            net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in stored["state"].items()})
            net.eval()
            self.cnns[target] = (net, dict(stored["config"]))
        self.cox = CoxModel.from_dict(blob["cox"]) if blob.get("cox") else None
        stored = blob["background"]
        self.background = np.full((stored["values"].shape[0], len(self.feature_names)), np.nan)
        self.background[:, np.asarray(stored["columns"])] = np.asarray(stored["values"], np.float64)
        self.cox_background = np.asarray(blob["cox_background"], np.float64) if blob.get("cox") else None
        defaults = dict(blob["default_variants"])
        chosen = {**defaults, **{k: v for k, v in (variants or {}).items() if v not in (None, "default")}}
        for target, variant in chosen.items():
            available = list(self.heads.get(target, {})) + (["cnn"] if target in self.cnns else [])
            if variant not in available:
                raise ModelError(f"{directory}: no {variant!r} model for {target}; this model has {', '.join(available) or 'none'}")
        self.variants = chosen

    def describe(self) -> dict[str, str]:
        return {**self.manifest.describe(), "variants": ", ".join(f"{k}={v}" for k, v in sorted(self.variants.items()))}

    def _deep_output(self, head: FusionHead, x: np.ndarray,
                     fixed: tuple[torch.Tensor, int] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The head's logit as a function of the encoder input, the other features held at ``x``.

        ``fixed``: embeddings of all patches and the index of the one the input replaces.
        """
        deep = [i for i, n in enumerate(self.feature_names) if n.startswith("deep.")]
        base = torch.tensor(x, dtype=torch.float32)

        def output(crop: torch.Tensor) -> torch.Tensor:
            full = base.clone()
            emb = self.encoder(crop)
            if fixed is not None:
                others, index = fixed
                emb = torch.cat([others[:index], emb, others[index + 1:]])
            full[deep] = emb.mean(dim=0)
            return head.logit_standardised(head.standardise(full[None]))[0]

        return output

    def _fusion_cam(self, head: FusionHead, x: np.ndarray, study: TumourStudy, stack: np.ndarray) -> np.ndarray:
        cfg = self.encoder_config
        if cfg.get("variant", "crop") == "patch":
            patches, crops = tumour_patches(stack, study.labels, cfg["patch_size"], cfg["patch_count"])
            out = np.zeros(study.labels.shape, np.float32)
            # The embedding averages the patches, so each patch is explained with the
            # others held fixed, and the maps are merged by their maximum.
            batch = torch.from_numpy(patches)
            with torch.no_grad():
                all_embeddings = self.encoder(batch)
            for i, crop in enumerate(crops):
                output = self._deep_output(head, x, fixed=(all_embeddings, i))
                cam = grad_cam(batch[i:i + 1], self.encoder.last_conv, output)
                out = np.maximum(out, uncrop(cam, crop, study.labels.shape))
            return out
        crop, where = tumour_crop(stack, study.labels, cfg["crop_size"], cfg["crop_spacing_mm"])
        cam = grad_cam(torch.from_numpy(crop)[None], self.encoder.last_conv, self._deep_output(head, x))
        return uncrop(cam, where, study.labels.shape)

    def run(self, study: TumourStudy, workers: int = 1, thresholds: dict[str, float | None] | None = None,
            explain: bool = True) -> StageResult:
        """Predict, score and explain one study. ``thresholds`` override the stored ones."""
        t0 = time.perf_counter()
        feats, timings = study_features(study, self.params, self.encoder, self.encoder_config, workers)
        x = feature_vector(feats, self.feature_names)
        stack = study.stack()
        probs, thr, attributions, attention, cams = {}, {}, {}, {}, {}
        warnings: list[str] = []
        t_explain = 0.0
        for target, variant in sorted(self.variants.items()):
            if variant == "cnn":
                net, cfg = self.cnns[target]
                crop, where = tumour_crop(stack, study.labels, cfg["crop_size"], cfg["crop_spacing_mm"])
                tensor = torch.from_numpy(crop)[None]
                with torch.no_grad():
                    logit = net(tensor)[0, 0]
                probs[target] = float(torch.sigmoid(cfg["platt"][0] * logit + cfg["platt"][1]))
                thr[target] = float(cfg["threshold"])
                te = time.perf_counter()
                if explain:
                    cams[target] = uncrop(grad_cam(tensor, net.last_conv, lambda t: net(t)[0, 0]), where, study.labels.shape)
                    attributions[target] = []
                t_explain += time.perf_counter() - te
                continue
            head = self.heads[target][variant]
            probs[target] = float(head.probability(x[None])[0])
            thr[target] = float(head.threshold)
            if isinstance(head, AttentionFusion):
                attention[target] = head.group_weights(x)
            te = time.perf_counter()
            if explain:
                attributions[target] = [a.to_json() for a in head_attributions(head, x, self.background)]
                cams[target] = self._fusion_cam(head, x, study, stack)
            t_explain += time.perf_counter() - te
        for target, value in (thresholds or {}).items():
            if value is not None and target in thr:
                thr[target] = float(value)
        risk, risk_attr = None, []
        if self.cox is not None:
            extra = {"mgmt_probability": probs.get("mgmt", np.nan), "idh_probability": probs.get("idh", np.nan),
                     "age_years": study.age_years if study.age_years is not None else np.nan}
            if study.age_years is None:
                warnings.append("patient age unknown (no PatientAge, PatientBirthDate/StudyDate): the risk score "
                                "used the training cohort's median age")
            covariates = np.array([extra[n] if n in extra else x[self.feature_names.index(n)] for n in self.cox.names])
            score = float(self.cox.risk(covariates)[0])
            risk = (score, self.cox.cutoff, self.cox.group(score))
            if explain:
                risk_attr = [a.to_json() for a in cox_attributions(self.cox, covariates, self.cox_background)]
        timings.update({"explanations": round(t_explain, 2), "radiogenomics_total": round(time.perf_counter() - t0, 2)})
        return StageResult(probs, thr, dict(self.variants), attributions, attention, risk, risk_attr, cams, feats,
                           timings, warnings)
