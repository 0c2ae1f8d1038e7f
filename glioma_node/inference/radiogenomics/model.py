"""The radiogenomic model directory and the stage that runs it on one study.

Layout (see :mod:`glioma_node.inference.model_dir`)::

    manifest.json   kind glioma-node-radiogenomics, sha256 of model.pt, targets, variants
    model.pt        one torch file (loaded with weights_only): feature names, radiomics
                    settings, the deep encoder, the fusion heads per target and variant,
                    the optional end-to-end CNNs, the Cox model, SHAP backgrounds
    MODEL_CARD.md   training data, metrics, limits

Per study: radiomics + location + the 128-number embedding make one feature vector; each
target the model has (``mgmt``, ``idh``, ``chemo-benefit``: :mod:`glioma_node.core.targets`)
runs the variant chosen in the configuration (``early``, ``attention`` or ``cnn``); the Cox
model scores the fused features with the MGMT and IDH probabilities and age; Grad-CAM and SHAP explain each prediction.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glioma_node.core.clinical import CovariateSource, Marker
from glioma_node.core.targets import TARGET_INFO, TARGETS
from glioma_node.inference.model_dir import ModelError, read_manifest
from glioma_node.inference.networks import device as default_device
from glioma_node.inference.radiogenomics import radiomics
from glioma_node.inference.radiogenomics.bundle import BundleError, RadiogenomicBundle
from glioma_node.inference.radiogenomics.cnn import TumourCNN
from glioma_node.inference.radiogenomics.cox import CoxModel
from glioma_node.inference.radiogenomics.crop import (
    Crop,
    edge_taper,
    keep_tumour_context,
    tumour_box,
    tumour_crop,
    tumour_patches,
    tumour_region,
    tumour_slices,
    uncrop,
)
from glioma_node.inference.radiogenomics.encoder import SLICE_DEFAULTS, build_encoder
from glioma_node.inference.radiogenomics.explain import cox_attributions, head_attributions
from glioma_node.inference.radiogenomics.gradcam import grad_cam
from glioma_node.inference.radiogenomics.heads import AttentionFusion, FusionHead, build_head
from glioma_node.inference.radiogenomics.location import location_features
from glioma_node.inference.radiogenomics.morphology import morphology_features
from glioma_node.inference.radiogenomics.tumour_study import TumourStudy

KIND = "glioma-node-radiogenomics"
__all__ = ["TARGETS"]  # re-exported for training
POSITIVE = {t: (TARGET_INFO[t].positive, TARGET_INFO[t].negative) for t in TARGETS}
COX_EXTRA = ("mgmt_probability", "idh_probability", "age_years")
# The Cox model with laboratory-known status: MGMT and IDH known (else the predicted
# probability), EGFR amplification known (else missing: the training median).
COX_KNOWN = ("mgmt_status", "idh_status", "egfr_amplified", "age_years")
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
    risk_inputs: dict[str, str]
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


class EncoderVariant(StrEnum):
    """What the deep-feature encoder sees of a study (``encoder.variant`` of a model)."""

    CROP = "crop"
    """One tumour-centred cube of fixed physical size (``crop_size`` voxels of ``crop_spacing_mm``)."""
    PATCH = "patch"
    """``patch_count`` 1 mm cubes of ``patch_size`` inside the tumour."""
    BOX = "box"
    """The tumour's bounding box with a margin, stretched to ``crop_size``³ (segmentation-guided)."""
    BOX_PATCH = "box+patch"
    """The box (at ``patch_size``³) and the patches; their embeddings weigh half each."""
    SLICES = "slices"
    """``slice_count`` axial slices of ``slice_size``² through the tumour, for the 2D slice encoder."""


def encoder_input(stack: np.ndarray, labels: np.ndarray, config: dict[str, Any]) -> tuple[np.ndarray, list[Crop]]:
    """The encoder's input for one study, ``(P, 4, s, s, s)`` float32 (``(P, 4, s, s)`` slices),
    and where each piece came from (see :class:`EncoderVariant`; P = 1 for a crop or a box).
    With ``context_mm`` in ``config``, only the whole tumour and that much of its
    surroundings are seen (:func:`keep_tumour_context`)."""
    variant = EncoderVariant(config.get("variant", "crop"))
    stack = keep_tumour_context(stack, labels, config.get("context_mm"))
    if variant == EncoderVariant.SLICES:
        return tumour_slices(stack, labels, config.get("slice_size", SLICE_DEFAULTS["slice_size"]),
                             config.get("slice_count", SLICE_DEFAULTS["slice_count"]))
    if variant == EncoderVariant.PATCH:
        return tumour_patches(stack, labels, config["patch_size"], config["patch_count"])
    if variant == EncoderVariant.BOX_PATCH:
        box, box_at = tumour_box(stack, labels, config["patch_size"])
        patches, patches_at = tumour_patches(stack, labels, config["patch_size"], config["patch_count"])
        return np.concatenate([box[None], patches]), [box_at, *patches_at]
    if variant == EncoderVariant.BOX:
        box, box_at = tumour_box(stack, labels, config["crop_size"])
        return box[None], [box_at]
    crop, where = tumour_crop(stack, labels, config["crop_size"], config["crop_spacing_mm"])
    return crop[None], [where]


def piece_weights(config: dict[str, Any], pieces: int) -> np.ndarray:
    """How much each of a study's ``pieces`` weighs in its embedding (they sum to 1): equal,
    except for ``box+patch``, where the box weighs as much as all the patches together."""
    if EncoderVariant(config.get("variant", "crop")) == EncoderVariant.BOX_PATCH and pieces > 1:
        return np.array([0.5] + [0.5 / (pieces - 1)] * (pieces - 1))
    return np.full(pieces, 1.0 / pieces)


def image_features(study: TumourStudy, params: dict[str, Any], workers: int = 1,
                   only: list[str] | None = None) -> dict[str, float]:
    """Radiomic, location and morphology features of one study, by name (training uses it
    too, with all features; ``only`` limits intensity and texture to those names)."""
    features = radiomics.extract(study.images, study.labels, study.grid.spacing, params, workers, only)
    features.update(location_features(study.labels, study.brain, study.grid))
    features.update(morphology_features(features))
    return features


def _first_logit(net: TumourCNN) -> Callable[[torch.Tensor], torch.Tensor]:
    """The CNN's logit of the first image of a batch, as Grad-CAM differentiates it."""
    return lambda t: net(t)[0, 0]


class RadiogenomicModel:
    """A loaded radiogenomic model directory (checksum checked).

    The convolutional networks (the deep encoder, the end-to-end CNNs) and their Grad-CAM
    run on ``device`` (default: a CUDA GPU when torch sees one); the fusion heads and the
    Cox model, a few hundred numbers each, and SHAP run on the CPU.
    """

    def __init__(self, directory: Path, variants: dict[str, str] | None = None,
                 device: torch.device | None = None) -> None:
        self.device = device or default_device()
        self.manifest = read_manifest(Path(directory), KIND)
        try:
            bundle = RadiogenomicBundle.from_file(self.manifest.weights_path)
        except BundleError as exc:
            raise ModelError(str(exc)) from exc
        self.feature_names: list[str] = list(bundle.feature_names)
        self.params: dict[str, Any] = bundle.radiomics_settings
        self.encoder_config: dict[str, Any] = dict(bundle.encoder["config"])
        self.encoder = build_encoder(self.encoder_config)
        # The training heads (IDH and MGMT logits on the embedding) are not used here.
        self.encoder.load_state_dict({k: v.float() if v.is_floating_point() else v
                                      for k, v in bundle.encoder["state"].items() if not k.startswith("heads.")})
        self.encoder.to(self.device).eval()
        self.heads: dict[str, dict[str, FusionHead]] = {}
        for target, by_variant in bundle.heads.items():
            self.heads[target] = {}
            for variant, stored in by_variant.items():
                head = build_head(stored["config"])
                head.load_state_dict(stored["state"])
                head.eval()
                self.heads[target][variant] = head
        self.cnns: dict[str, tuple[TumourCNN, dict[str, Any]]] = {}
        for target, stored in bundle.cnn.items():
            net = TumourCNN(stored["config"]["model_name"])
            net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in stored["state"].items()})
            net.to(self.device).eval()
            self.cnns[target] = (net, dict(stored["config"]))
        if bundle.cox and bundle.cox_background is None:
            raise ModelError(f"{self.manifest.weights_path}: the Cox model has no SHAP background rows")
        self.cox = CoxModel.from_dict(bundle.cox) if bundle.cox else None
        stored = bundle.background
        self.background = np.full((stored["values"].shape[0], len(self.feature_names)), np.nan)
        self.background[:, np.asarray(stored["columns"])] = np.asarray(stored["values"], np.float64)
        self.cox_background = (np.asarray(bundle.cox_background, np.float64)
                               if bundle.cox and bundle.cox_background is not None else None)
        if bundle.cox_known and bundle.cox_known_background is None:
            raise ModelError(f"{self.manifest.weights_path}: the known-status Cox model has no SHAP background rows")
        self.cox_known = CoxModel.from_dict(bundle.cox_known) if bundle.cox_known else None
        self.cox_known_background = (np.asarray(bundle.cox_known_background, np.float64)
                                     if bundle.cox_known is not None and bundle.cox_known_background is not None else None)
        defaults = dict(bundle.default_variants)
        chosen = {**defaults, **{k: v for k, v in (variants or {}).items() if v not in (None, "default")}}
        for target, variant in chosen.items():
            available = list(self.heads.get(target, {})) + (["cnn"] if target in self.cnns else [])
            if variant not in available:
                raise ModelError(f"{directory}: no {variant!r} model for {target}; "
                                 f"this model has {', '.join(available) or 'none'}")
        self.variants = chosen
        # What the chosen heads and the Cox models read: all the radiomics inference computes.
        read = {self.feature_names[c] for t, v in chosen.items() if v != "cnn" for c in self.heads[t][v].columns}
        read |= {n for cox in (self.cox, self.cox_known) if cox is not None for n in cox.names}
        self.features_read: list[str] | None = sorted(read)  # None: every feature (as training extracts)

    def describe(self) -> dict[str, str]:
        return {**self.manifest.describe(), "variants": ", ".join(f"{k}={v}" for k, v in sorted(self.variants.items()))}

    def _deep_output(self, head: FusionHead, x: np.ndarray, others: torch.Tensor,
                     index: int) -> Callable[[torch.Tensor], torch.Tensor]:
        """The head's logit as a function of encoder input piece ``index`` (crop or patch), the
        other pieces' embeddings (``others``) and the other features held at their values."""
        deep = [i for i, n in enumerate(self.feature_names) if n.startswith("deep.")]
        base = torch.tensor(x, dtype=torch.float32)
        weights = torch.tensor(piece_weights(self.encoder_config, len(others)), dtype=torch.float32)

        def output(piece: torch.Tensor) -> torch.Tensor:
            full = base.clone()
            # The encoder runs on the model's device, the head on the CPU; .cpu() keeps the gradient path.
            emb = torch.cat([others[:index], self.encoder(piece).cpu(), others[index + 1:]])
            full[deep] = weights @ emb  # the embedding is the weighted mean of the pieces (one for a crop)
            return head.logit_standardised(head.standardise(full[None]))[0]

        return output

    def _fusion_cam(self, head: FusionHead, x: np.ndarray, pieces: torch.Tensor, embeddings: torch.Tensor,
                    where: list[Crop], shape: tuple[int, int, int]) -> np.ndarray:
        """Grad-CAM of the head's logit through the encoder, one map per piece merged by maximum."""
        out = np.zeros(shape, np.float32)
        for i, crop in enumerate(where):
            cam = grad_cam(pieces[i:i + 1], self.encoder.cam_layers, self._deep_output(head, x, embeddings, i))
            cam *= edge_taper(cam.shape[-1], dims=cam.ndim)
            out = np.maximum(out, uncrop(cam, crop, shape))
        return out

    def _risk(self, study: TumourStudy, x: np.ndarray, probs: dict[str, float],
              warnings: list[str]) -> tuple[tuple[float, float, str], list[dict], dict[str, str]]:
        """The Cox score, group, SHAP attributions and where each marker input came from.

        The known-status model runs when the study has laboratory-known markers and the
        model has one; a marker it lacks is the predicted probability (MGMT, IDH) or the
        training median (EGFR). Otherwise the model on predicted probabilities runs.
        """
        known = study.known_markers
        use_known = self.cox_known is not None and bool(known)
        cox, background = (self.cox_known, self.cox_known_background) if use_known else (self.cox, self.cox_background)
        if cox is None:  # only a known-status model, and nothing known: it runs on predictions
            cox, background, use_known = self.cox_known, self.cox_known_background, True
        assert cox is not None and background is not None  # checked when the model was loaded
        extra = {"mgmt_probability": probs.get("mgmt", np.nan), "idh_probability": probs.get("idh", np.nan),
                 "age_years": study.age_years if study.age_years is not None else np.nan}
        inputs: dict[str, str] = {}
        for marker in (Marker.MGMT, Marker.IDH):
            if use_known and marker in known:
                extra[f"{marker}_status"], inputs[marker] = float(known[marker]), CovariateSource.CLINICAL
            else:
                extra[f"{marker}_status"], inputs[marker] = probs.get(marker, np.nan), CovariateSource.PREDICTED
        if use_known:
            extra["egfr_amplified"], inputs[Marker.EGFR] = ((float(known[Marker.EGFR]), CovariateSource.CLINICAL)
                                                             if Marker.EGFR in known else (np.nan, CovariateSource.IMPUTED))
        elif known:
            warnings.append("genomic status known from the clinical source was not used: this model's survival "
                            "head was trained on predicted MGMT/IDH only")
        if study.age_years is None:
            warnings.append("patient age unknown (no PatientAge, PatientBirthDate/StudyDate): the risk score "
                            "used the training cohort's median age")
        covariates = np.array([extra[n] if n in extra else x[self.feature_names.index(n)] for n in cox.names])
        score = float(cox.risk(covariates)[0])
        attributions = [a.to_json() for a in cox_attributions(cox, covariates, background)]
        return (score, cox.cutoff, cox.group(score)), attributions, {str(k): str(v) for k, v in inputs.items()}

    def seen_region(self, target: str, study: TumourStudy) -> np.ndarray:
        """Where ``target``'s network saw the study (its study grid): the brain, or with
        ``context_mm`` only the whole tumour and that much around it inside the brain.
        Grad-CAM maps are kept there."""
        context = (self.cnns[target][1] if self.variants[target] == "cnn" else self.encoder_config).get("context_mm")
        return study.brain if context is None else study.brain & tumour_region(study.labels, float(context))

    def run(self, study: TumourStudy, workers: int = 1, thresholds: dict[str, float | None] | None = None) -> StageResult:
        """Predict, score and explain one study. ``thresholds`` override the stored ones."""
        t0 = time.perf_counter()
        feats = image_features(study, self.params, workers, self.features_read)
        t1 = time.perf_counter()
        stack = study.stack()
        arrays, where = encoder_input(stack, study.labels, self.encoder_config)
        pieces = torch.from_numpy(arrays).to(self.device)
        with torch.no_grad():
            embeddings = self.encoder(pieces).cpu()
        weights = piece_weights(self.encoder_config, len(embeddings))
        feats.update({f"deep.{i:03d}": float(v) for i, v in enumerate(weights @ embeddings.numpy())})
        timings = {"radiomics": round(t1 - t0, 2), "deep_features": round(time.perf_counter() - t1, 2)}
        x = feature_vector(feats, self.feature_names)
        probs: dict[str, float] = {}
        thr: dict[str, float] = {}
        attributions: dict[str, list[dict]] = {}
        attention: dict[str, dict[str, float]] = {}
        cams: dict[str, np.ndarray] = {}
        warnings: list[str] = []
        t_explain = 0.0
        for target, variant in sorted(self.variants.items()):
            if variant == "cnn":
                net, cfg = self.cnns[target]
                crop, crop_at = tumour_crop(keep_tumour_context(stack, study.labels, cfg.get("context_mm")),
                                            study.labels, cfg["crop_size"], cfg["crop_spacing_mm"])
                tensor = torch.from_numpy(crop)[None].to(self.device)
                with torch.no_grad():
                    logit = net(tensor)[0, 0].cpu()
                probs[target] = float(torch.sigmoid(cfg["platt"][0] * logit + cfg["platt"][1]))
                thr[target] = float(cfg["threshold"])
                te = time.perf_counter()
                cam = grad_cam(tensor, net.cam_layers, _first_logit(net)) * edge_taper(tensor.shape[-1])
                cams[target] = uncrop(cam, crop_at, study.labels.shape)
                attributions[target] = []
            else:
                head = self.heads[target][variant]
                probs[target] = float(head.probability(x[None])[0])
                thr[target] = float(head.threshold)
                if isinstance(head, AttentionFusion):
                    attention[target] = head.group_weights(x)
                te = time.perf_counter()
                attributions[target] = [a.to_json() for a in head_attributions(head, x, self.background)]
                cams[target] = self._fusion_cam(head, x, pieces, embeddings, where, study.labels.shape)
            t_explain += time.perf_counter() - te
        for target, cam in cams.items():
            # The networks see the 128 mm cube around the tumour; relevance outside the brain is the skull's or air's.
            # A network fed only the tumour's context (``context_mm``) received a constant blank elsewhere: what
            # Grad-CAM puts there is the layers' constant response to nothing, so the map is kept where it saw.
            inside = np.where(self.seen_region(target, study), cam, 0.0).astype(np.float32)
            peak = float(inside.max())
            cams[target] = inside / peak if peak > 0 else inside
        for target, value in (thresholds or {}).items():
            if value is not None and target in thr:
                thr[target] = float(value)
        risk: tuple[float, float, str] | None = None
        risk_attr: list[dict] = []
        risk_inputs: dict[str, str] = {}
        if self.cox is not None or self.cox_known is not None:
            risk, risk_attr, risk_inputs = self._risk(study, x, probs, warnings)
        timings.update({"explanations": round(t_explain, 2), "radiogenomics_total": round(time.perf_counter() - t0, 2)})
        return StageResult(probabilities=probs, thresholds=thr, variants=dict(self.variants),
                           attributions=attributions, attention=attention, risk=risk, risk_attributions=risk_attr,
                           risk_inputs=risk_inputs,
                           cams=cams, features=feats, timings_s=timings, warnings=warnings)
