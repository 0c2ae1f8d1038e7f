"""`glioma-node train radiogenomics`: fit, compare and package the radiogenomic models.

1. Cases from a dataset adapter; features and crops cached (:mod:`.features`).
2. A stratified split (70/15/15 train/validation/test, strata IDH × MGMT where known).
3. The deep encoder trained on the training split (IDH and MGMT logits), once per
   cross-fitting fold: the training rows get cross-fitted embeddings (each fold embedded
   by the encoder that did not see it), so the heads do not learn to trust an embedding
   that memorised them; every other case (validation, test, and at inference) is embedded
   by all fold encoders, averaged (the stored :class:`EncoderEnsemble`).
4. Per target, four variants fitted on the training split, calibrated (Platt) and
   thresholded (Youden) on validation, measured on test: radiomics alone, deep alone,
   early fusion and attention fusion (and the end-to-end CNN when asked); 5-fold
   cross-validated AUC on train + validation for each.
5. The Cox model on fused features + out-of-fold MGMT/IDH probabilities + age; C-index
   and Kaplan–Meier curves of the risk groups with the log-rank p on test.
6. ``model.pt``, ``manifest.json``, ``metrics.json``, plots and ``MODEL_CARD.md``.
"""
from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split

from glioma_node.core.files import atomic_path
from glioma_node.core.targets import Target
from glioma_node.dicom_io.sequence_rules import SequenceRules
from glioma_node.inference.model_dir import write_manifest
from glioma_node.inference.radiogenomics import radiomics
from glioma_node.inference.radiogenomics.bundle import RadiogenomicBundle
from glioma_node.inference.radiogenomics.cnn import DEFAULT_CNN, TumourCNN
from glioma_node.inference.radiogenomics.encoder import DEFAULT_ENCODER, EMBEDDING_SIZE, EncoderEnsemble
from glioma_node.inference.radiogenomics.heads import FusionHead
from glioma_node.inference.radiogenomics.model import COX_EXTRA, KIND, TARGETS, feature_vector
from glioma_node.training.radiogenomics import baselines, metrics, survival
from glioma_node.training.radiogenomics.adapters import LabelledCase, censored_before_endpoint, label_array, load_cases
from glioma_node.training.radiogenomics.features import (
    MaskSource,
    build_cache,
    build_crops,
    mask_digest,
    mask_doubtful,
    read_cache,
    reads_encoder_crops,
)
from glioma_node.training.radiogenomics.fit import (
    calibrate,
    calibration,
    fit_attention,
    fit_early,
    fit_survival,
    group_of,
    rank_columns,
)
from glioma_node.training.radiogenomics.networks import Curve, cnn_logits, embed_all, train_cnn, train_encoder

VARIANTS_COMPARED = ("radiomics", "deep", "early", "attention")
#: Radiomic features (ranked by univariate AUC on the training rows) the sparse-coding baseline reads.
DICTIONARY_FEATURES = 200


@dataclass
class RadiogenomicSettings:
    """Training choices; defaults are what the committed model used."""

    targets: tuple[str, ...] = (*TARGETS, "survival")
    layout: str = "auto"
    seed: int = 0
    encoder_steps: int = 300
    cross_fit_folds: int = 3
    radiomic_features: int = 24
    per_group_features: int = 6
    cv_folds: int = 5
    cnn_targets: tuple[str, ...] = ()
    cnn_steps: int = 300
    cnn_pretrain_steps: int = 200
    cnn_weights: Path | None = None
    medicalnet: Path | None = None
    encoder: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ENCODER))
    cnn: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_CNN))
    workers: int = 1
    cache: Path | None = None
    segmentation_model: Path | None = None
    sequence_rules: SequenceRules | None = None
    radiomics_settings: Path = radiomics.DEFAULT_SETTINGS
    external: Path | None = None
    augment: float = 0.0
    version: str = "1.0.0"
    """The model's version in its manifest and card."""
    masks: MaskSource = MaskSource.TRUE
    """Inside which masks every case's features are extracted for training (the node reads
    them inside its segmenter's: :attr:`MaskSource.SEGMENTER` trains as it runs)."""
    compare_masks: bool = False
    """Extract every case in the other masks too: test figures on both, and the robustness
    screen (``robust_ccc``)."""
    robust_ccc: float | None = 0.75
    """With ``compare_masks``: radiomic features whose values inside the true and the
    segmenter's masks agree less than this (Lin's concordance correlation coefficient on
    the training rows) are read by no head and no Cox model: they measure the mask's
    raggedness more than the tumour."""


def split(cases: list[LabelledCase], seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices of train, validation and test (70/15/15), stratified on IDH × MGMT (−1 unknown)."""
    strata = np.array([(c.idh if c.idh is not None else -1) * 3 + (c.mgmt if c.mgmt is not None else -1) for c in cases])
    _, counts = np.unique(strata, return_counts=True)
    stratify = strata if counts.min() >= 4 else None
    idx = np.arange(len(cases))
    train, rest = train_test_split(idx, test_size=0.3, random_state=seed, stratify=stratify)
    strat_rest = strata[rest] if stratify is not None and np.unique(strata[rest], return_counts=True)[1].min() >= 2 else None
    val, test = train_test_split(rest, test_size=0.5, random_state=seed, stratify=strat_rest)
    return np.sort(train), np.sort(val), np.sort(test)


def _head_columns(names: list[str], variant: str, x: np.ndarray, y: np.ndarray, s: RadiogenomicSettings,
                  excluded: frozenset[str] = frozenset()) -> list[int]:
    deep = [i for i, n in enumerate(names) if n.startswith("deep.")]
    other = [i for i, n in enumerate(names) if not n.startswith("deep.") and n not in excluded]
    if variant == "deep":
        return deep
    if variant in ("radiomics", "early"):
        # Shape, morphology and location (a few dozen descriptors) are ranked apart from the
        # thousands of texture features, so noise among the many cannot crowd them out.
        compact = [i for i in other if group_of(names[i]) == "shape"]
        texture = [i for i in other if group_of(names[i]) != "shape"]
        n_compact = s.radiomic_features // 3
        chosen = rank_columns(x, y, compact, top=n_compact) + rank_columns(x, y, texture, top=s.radiomic_features - n_compact)
        return chosen + (deep if variant == "early" else [])
    chosen = []
    for group in ("FLAIR", "T1", "T1c", "T2", "shape"):
        cols = [i for i in other if group_of(names[i]) == group]
        chosen += rank_columns(x, y, cols, top=s.per_group_features)
    return chosen + deep


def fit_variant(variant: str, names: list[str], x: np.ndarray, y: np.ndarray, train: np.ndarray, val: np.ndarray,
                s: RadiogenomicSettings, excluded: frozenset[str] = frozenset()) -> FusionHead:
    """One head fitted on ``train`` rows and calibrated on ``val`` rows, reading no column of ``excluded``."""
    cols = _head_columns(names, variant, x[train], y[train].astype(int), s, excluded)
    head: FusionHead
    if variant == "attention":
        head = fit_attention(x[train], y[train].astype(int), cols, names, seed=s.seed)
    else:
        head = fit_early(x[train], y[train].astype(int), cols, names, seed=s.seed)
    calibrate(head, x[val], y[val].astype(int))
    return head


def _cv_auc(variant: str, names: list[str], x: np.ndarray, y: np.ndarray, rows: np.ndarray, s: RadiogenomicSettings,
            excluded: frozenset[str] = frozenset()) -> dict:
    aucs = []
    folds = StratifiedKFold(s.cv_folds, shuffle=True, random_state=s.seed)
    for tr, te in folds.split(rows, y[rows].astype(int)):
        head = fit_variant(variant, names, x, y, rows[tr], rows[tr], s, excluded)
        aucs.append(float(metrics.auc(y[rows[te]], head.probability(x[rows[te]]))))
    return {"auc_mean": round(float(np.mean(aucs)), 4), "auc_sd": round(float(np.std(aucs)), 4), "folds": len(aucs)}


def _oof_probability(head_variant: str, names: list[str], x: np.ndarray, y: np.ndarray, rows: np.ndarray,
                     s: RadiogenomicSettings, excluded: frozenset[str] = frozenset()) -> np.ndarray:
    """Out-of-fold probabilities for ``rows`` (the Cox model must not see in-sample fits)."""
    out = np.full(len(rows), np.nan)
    known = np.isfinite(y[rows])
    idx = np.flatnonzero(known)
    folds = StratifiedKFold(min(5, int(np.bincount(y[rows][idx].astype(int)).min())), shuffle=True, random_state=s.seed)
    for tr, te in folds.split(idx, y[rows][idx].astype(int)):
        head = fit_variant(head_variant, names, x, y, rows[idx[tr]], rows[idx[tr]], s, excluded)
        out[idx[te]] = head.probability(x[rows[idx[te]]])
    unknown = np.flatnonzero(~known)
    if len(unknown):
        head = fit_variant(head_variant, names, x, y, rows[idx], rows[idx], s, excluded)
        out[unknown] = head.probability(x[rows[unknown]])
    return out


def _state(module: torch.nn.Module, half: bool = False) -> dict[str, torch.Tensor]:
    """A CPU copy of the weights; ``half`` stores floats as float16 (half the file; loading widens them again)."""
    return {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).to("cpu", copy=True)
            for k, v in module.state_dict().items()}


@dataclass
class _Table:
    """The training table: every case's features (radiomic + deep, columns ``names``), its
    crops and labels, and the split (row indices)."""

    cases: list[LabelledCase]
    x: np.ndarray
    names: list[str]
    radiomic_x: np.ndarray
    radiomic_names: list[str]
    crops: np.ndarray
    y: dict[str, np.ndarray]
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    cnn_crops: np.ndarray | None = None
    """The end-to-end CNN's input when it differs from the encoder's ``crops``."""
    other_x: np.ndarray | None = None
    """With ``compare_masks``: every case's features (radiomic + deep, columns ``names``) in the other masks."""
    other_masks: str = ""
    excluded: frozenset[str] = frozenset()
    """Radiomic features no head or Cox model may read (the mask robustness screen)."""
    node_x: np.ndarray | None = None
    """The features inside the segmenter's masks (``x`` or ``other_x``), when either is."""
    withheld: np.ndarray | None = None
    """Per case: its segmenter mask was doubtful, so the node would withhold MGMT, IDH and risk."""
    other_crops: np.ndarray | None = None
    """With ``compare_masks``: every case's encoder input in the other masks."""
    node_cnn_crops: np.ndarray | None = None
    """The end-to-end CNN's input inside the segmenter's masks, when it was extracted."""

    def as_node(self, y: np.ndarray, test: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
                inputs: np.ndarray | None, threshold: float, seed: int) -> dict[str, Any] | None:
        """Test figures as the node reports them: ``predict`` on ``inputs`` (read inside the
        segmenter's masks) of the ``test`` rows whose mask the node's quality control does not
        call doubtful, with how many were withheld; None where there is nothing to measure."""
        if inputs is None or self.withheld is None:
            return None
        shown = test[~self.withheld[test]]
        if len(set(y[shown])) < 2:
            return None
        return {**metrics.classification(y[shown], predict(inputs[shown]), threshold, seed=seed),
                "withheld": int(len(test) - len(shown))}


@dataclass
class _Fitted:
    """What the per-target fits produce: metrics, stored heads and CNNs, default variants, plot data."""

    results: dict[str, Any]
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    cnns: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    shap_rows: dict[str, FusionHead] = field(default_factory=dict)
    curves_nets: dict[str, Curve] = field(default_factory=dict)


def _cnn_crop(s: RadiogenomicSettings) -> dict[str, Any]:
    """The end-to-end CNN's input: a tumour-centred cube, voxels per side and mm per voxel (and
    the tumour context kept, when the input is masked)."""
    crop: dict[str, Any] = {"crop_size": int(s.cnn["crop_size"]), "crop_spacing_mm": float(s.cnn["crop_spacing_mm"])}
    if s.cnn.get("context_mm") is not None:
        crop["context_mm"] = float(s.cnn["context_mm"])
    return crop


def _cnn_probability(net: TumourCNN, a: float, b: float, crops: np.ndarray) -> np.ndarray:
    """The end-to-end CNN's calibrated probability (Platt ``a``, ``b`` fitted on validation)."""
    return 1.0 / (1.0 + np.exp(-(a * cnn_logits(net, crops) + b)))


def encoder_agreement(embeddings: list[np.ndarray]) -> float:
    """How far the fold encoders' coordinates agree: per embedding dimension, the Pearson
    correlation over the same cases between two members' embeddings, averaged over the
    dimensions that vary in both and over every pair of members (1: interchangeable encoders)."""
    values = []
    for i, j in itertools.combinations(range(len(embeddings)), 2):
        a, b = (e - e.mean(axis=0) for e in (embeddings[i], embeddings[j]))
        sa, sb = a.std(axis=0), b.std(axis=0)
        varying = (sa > 1e-8) & (sb > 1e-8)
        values.extend((a[:, varying] * b[:, varying]).mean(axis=0) / (sa[varying] * sb[varying]))
    return float(np.mean(values)) if values else float("nan")


def _deep_features(crops: np.ndarray, enc_labels: np.ndarray, train: np.ndarray, s: RadiogenomicSettings,
                   progress: bool, curve: Curve | None = None) -> tuple[np.ndarray, torch.nn.Module, dict[str, Any]]:
    """Cross-fitted embeddings for the training rows (each fold's by the encoder trained
    without it), and for the other rows the mean of the fold encoders' embeddings, as
    inference embeds a new case (:class:`EncoderEnsemble`); that ensemble; and how far its
    members agree on the other rows (:func:`encoder_agreement`, and the spread of the mean
    embedding against the training rows' single-encoder ones: below 1 where the members
    disagree and their mean shrinks).

    Every fold encoder starts from the same weights (one seed), so that their coordinates
    stay close and a row embedded by one member looks like a row embedded by another."""
    if s.cross_fit_folds < 2:
        raise ValueError(f"cross_fit_folds: {s.cross_fit_folds}; cross-fitted embeddings need at least 2 folds")
    emb = np.zeros((len(crops), EMBEDDING_SIZE), np.float32)
    folds = np.array_split(np.random.default_rng(s.seed).permutation(train), s.cross_fit_folds)
    members = []
    for k, fold in enumerate(folds):
        rest = np.setdiff1d(train, fold)
        enc = train_encoder(crops[rest], enc_labels[rest], s.encoder, s.encoder_steps, seed=s.seed,
                            medicalnet=s.medicalnet, progress=progress, desc=f"encoder fold {k + 1}/{len(folds)}",
                            curve=curve if k == 0 else None)
        emb[fold] = embed_all(enc, crops[fold], s.encoder)
        enc.heads = None  # the training targets' logits; inference reads the embedding only
        members.append(enc)
    # The other rows as the ensemble embeds them (the mean of its members', EncoderEnsemble.forward),
    # each member's kept to measure how far they agree.
    others = np.setdiff1d(np.arange(len(crops)), train)
    per_member = [embed_all(m, crops[others], s.encoder) for m in members]
    emb[others] = np.mean(per_member, axis=0)
    agreement: dict[str, Any] = {"members": len(members), "seed": s.seed}
    if len(others) >= 3:
        spread = float(np.mean(emb[others].std(axis=0)) / max(1e-12, float(np.mean(emb[train].std(axis=0)))))
        agreement.update({"correlation": round(encoder_agreement(per_member), 4), "spread_ratio": round(spread, 4),
                          "cases": int(len(others))})
    return emb, EncoderEnsemble(members), agreement


def _baselines(table: _Table, target: str, rows: dict[str, np.ndarray], per_variant: dict[str, dict[str, Any]],
               res: dict[str, Any], curves: dict[str, Any], s: RadiogenomicSettings) -> None:
    """The studies' comparisons for one target (see :mod:`.baselines`), fitted on the training
    rows, calibrated on validation, measured on test; none is stored in the model."""
    x, names, yt = table.x, table.names, table.y[target]
    tr, va, te = rows["train"], rows["val"], rows["test"]
    radiomic = [i for i, n in enumerate(names) if not n.startswith("deep.") and n not in table.excluded]
    screened = rank_columns(x[tr], yt[tr].astype(int), radiomic, top=DICTIONARY_FEATURES)
    p, threshold = baselines.dictionary_classifier(x[tr][:, screened], yt[tr], x[va][:, screened], yt[va],
                                                   x[te][:, screened], seed=s.seed)
    per_variant["dictionary"] = {"test": metrics.classification(yt[te], p, threshold, seed=s.seed),
                                 "features": len(screened)}
    curves["dictionary"] = (yt[te], p)
    res["variance_analysis"] = baselines.group_variance(x[tr], yt[tr], names, group_of)
    if s.augment > 0:
        cols = _head_columns(names, "early", x[tr], yt[tr].astype(int), s, table.excluded)
        sub = [names[c] for c in cols]
        figures = {}
        for name, (xa, ya) in (("real_only", (x[tr][:, cols], yt[tr])),
                               ("augmented", baselines.pca_gmm_augment(x[tr][:, cols], yt[tr], s.augment, seed=s.seed))):
            head = fit_early(xa, ya.astype(int), list(range(len(cols))), sub, seed=s.seed)
            calibrate(head, x[va][:, cols], yt[va].astype(int))
            figures[name] = metrics.classification(yt[te], head.probability(x[te][:, cols]), float(head.threshold),
                                                   seed=s.seed)
            figures[name]["training_rows"] = int(len(ya))
        res["augmentation"] = {**figures, "variant": "early", "factor": s.augment, "caveat": baselines.AUGMENTATION_CAVEAT}


def _fit_classifiers(table: _Table, fitted: _Fitted, s: RadiogenomicSettings, progress: bool) -> None:
    """Every compared variant (and the CNN where asked) per molecular target, into ``fitted``."""
    x, names_all, y, train, val, test = table.x, table.names, table.y, table.train, table.val, table.test
    radiomic_x, names = table.radiomic_x, table.radiomic_names
    crops = table.cnn_crops if table.cnn_crops is not None else table.crops
    results, heads, cnns, defaults, curves, shap_rows = (fitted.results, fitted.heads, fitted.cnns, fitted.defaults,
                                                         fitted.curves, fitted.shap_rows)
    for target in [t for t in TARGETS if t in s.targets]:
        yt = y[target]
        rows = {name: r[np.isfinite(yt[r])] for name, r in (("train", train), ("val", val), ("test", test))}
        unlabelled = {"cases_without_label": int(np.isnan(yt).sum())}
        if target == Target.CHEMO_BENEFIT:
            unlabelled["censored_before_endpoint"] = censored_before_endpoint(table.cases)
        results["targets"][target] = dict(unlabelled)
        if min(len(set(yt[rows["train"]])), len(set(yt[rows["val"]])), len(set(yt[rows["test"]]))) < 2:
            results["targets"][target]["skipped"] = "both classes are needed in train, validation and test"
            continue
        per_variant: dict[str, dict[str, Any]] = {}
        heads[target], curves[target] = {}, {}
        for variant in VARIANTS_COMPARED:
            head = fit_variant(variant, names_all, x, yt, rows["train"], rows["val"], s, table.excluded)
            p = head.probability(x[rows["test"]])
            per_variant[variant] = {"test": metrics.classification(yt[rows["test"]], p, float(head.threshold), seed=s.seed),
                                    "cv": _cv_auc(variant, names_all, x, yt, np.concatenate([rows["train"], rows["val"]]),
                                                  s, table.excluded),
                                    "features": len(head.columns)}
            node = table.as_node(yt, rows["test"], head.probability, table.node_x, float(head.threshold), s.seed)
            if node is not None:
                per_variant[variant]["test_as_node"] = node
            if table.other_x is not None:  # the same head, the test cases' features in the other masks
                per_variant[variant][f"test_{table.other_masks}_masks"] = metrics.classification(
                    yt[rows["test"]], head.probability(table.other_x[rows["test"]]), float(head.threshold), seed=s.seed)
            curves[target][variant] = (yt[rows["test"]], p)
            if variant in ("early", "attention"):
                heads[target][variant] = {"config": head.config(), "state": _state(head)}
                shap_rows[f"{target}:{variant}"] = head
        if target in s.cnn_targets:
            # Pretraining targets that need no molecular label: sizes, composition, position.
            descriptors = radiomic_x[:, [i for i, n in enumerate(names) if n.startswith(("morphology.", "location."))]]
            fitted.curves_nets[f"cnn-{target}"] = Curve(f"end-to-end CNN, {target}")
            net = train_cnn(crops[rows["train"]], yt[rows["train"]], np.nan_to_num(descriptors[rows["train"]]), s.cnn,
                            s.cnn_pretrain_steps, s.cnn_steps, seed=s.seed, weights=s.cnn_weights, progress=progress,
                            curve=fitted.curves_nets[f"cnn-{target}"], validation=(crops[rows["val"]], yt[rows["val"]]))
            a, b, thr = calibration(cnn_logits(net, crops[rows["val"]]), yt[rows["val"]])
            cnn_probability = functools.partial(_cnn_probability, net, a, b)
            p = cnn_probability(crops[rows["test"]])
            per_variant["cnn"] = {"test": metrics.classification(yt[rows["test"]], p, thr, seed=s.seed)}
            node = table.as_node(yt, rows["test"], cnn_probability, table.node_cnn_crops, thr, s.seed)
            if node is not None:
                per_variant["cnn"]["test_as_node"] = node
            if table.other_crops is not None and table.cnn_crops is None:  # it read the encoder's crops
                per_variant["cnn"][f"test_{table.other_masks}_masks"] = metrics.classification(
                    yt[rows["test"]], cnn_probability(table.other_crops[rows["test"]]), thr, seed=s.seed)
            curves[target]["cnn"] = (yt[rows["test"]], p)
            cfg = {**s.cnn, **_cnn_crop(s), "platt": [a, b], "threshold": thr}
            cnns[target] = {"config": cfg, "state": _state(net, half=True)}
        _baselines(table, target, rows, per_variant, results["targets"][target], curves[target], s)
        # The default is the better fusion variant by cross-validated AUC (never the test
        # split): fusion because the deep path is what Grad-CAM explains, and the studies
        # followed fuse; radiomics alone and deep alone are reported beside it.
        best = max(("early", "attention"), key=lambda v: float(per_variant[v]["cv"]["auc_mean"]))
        defaults[target] = best
        results["targets"][target].update({"variants": per_variant, "default_variant": best})


def _known_status(cases: list[LabelledCase], marker: str) -> np.ndarray:
    values = [getattr(c, marker) for c in cases]
    return np.array([np.nan if v is None else float(v) for v in values])


@dataclass
class _CoxFit:
    """One fitted Cox model, its SHAP background rows, its test figures and KM curve data."""

    model: Any
    background: np.ndarray
    figures: dict[str, Any]
    km: tuple[np.ndarray, np.ndarray, np.ndarray]


def _cox_on(table: _Table, tr: np.ndarray, te: np.ndarray, extra: np.ndarray, extra_names: list[str],
            s: RadiogenomicSettings, candidates: list[int] | None = None) -> _CoxFit:
    """A Cox model on ``candidates`` image features (default: shape and location) + ``extra``
    columns, fitted on ``tr``, measured on ``te``."""
    x, names_all, cases = table.x, table.names, table.cases
    time_ = np.array([c.survival_days or 0.0 for c in cases], float)
    event = np.array([c.event or 0 for c in cases], int)
    if candidates is None:
        candidates = [i for i, n in enumerate(names_all) if group_of(n) == "shape" and n not in table.excluded]
    cox = fit_survival(x[tr], time_[tr], event[tr], names_all, candidates, extra[tr], extra_names, seed=s.seed)
    columns = [names_all.index(n) for n in cox.names if n in names_all]
    design = lambda rows: np.column_stack([x[rows][:, columns], extra[rows]])  # noqa: E731
    risk_te = cox.risk(design(te))
    figures = survival.cox_figures(cox, risk_te, time_[te], event[te], seed=s.seed)
    return _CoxFit(cox, design(tr), figures, (time_[te], event[te], risk_te >= cox.cutoff))


def _survival_baselines(table: _Table, tr: np.ndarray, te: np.ndarray, age: np.ndarray,
                        s: RadiogenomicSettings) -> dict[str, dict[str, Any]]:
    """Survival from radiomics alone, deep features alone and sparse codes of the radiomics
    (each + age), beside the stored fusion model: test figures only, nothing stored."""
    x, names = table.x, table.names
    time_ = np.array([c.survival_days or 0.0 for c in table.cases], float)
    event = np.array([c.event or 0 for c in table.cases], int)
    radiomic = [i for i, n in enumerate(names) if not n.startswith("deep.") and n not in table.excluded]
    deep = [i for i, n in enumerate(names) if n.startswith("deep.")]
    out: dict[str, dict[str, Any]] = {}
    for name, candidates in (("radiomics", radiomic), ("deep", deep)):
        try:
            out[name] = _cox_on(table, tr, te, age[:, None], ["age_years"], s, candidates).figures
        except ValueError as exc:
            out[name] = {"skipped": str(exc)}
    filled = np.where(np.isfinite(x[tr][:, radiomic]), x[tr][:, radiomic], np.nanmedian(x[tr][:, radiomic], axis=0))
    strength = np.array([abs(survival.concordance_index(time_[tr], filled[:, j], event[tr]) - 0.5)
                         if np.isfinite(filled[:, j]).all() and filled[:, j].std() > 0 else -1.0
                         for j in range(len(radiomic))])
    screened = [radiomic[j] for j in np.argsort(-strength)[:DICTIONARY_FEATURES] if strength[j] >= 0]
    try:
        coder = baselines.SparseCoder(x[tr][:, screened], seed=s.seed)
        codes = coder.codes(x[:, screened])
        atoms = [f"atom.{k:02d}" for k in range(codes.shape[1])]
        out["dictionary"] = _cox_on(table, tr, te, np.column_stack([codes, age]), [*atoms, "age_years"], s, []).figures
    except ValueError as exc:
        out["dictionary"] = {"skipped": str(exc)}
    return out


def _fit_cox(table: _Table, fitted: _Fitted, s: RadiogenomicSettings) -> tuple[_CoxFit | None, _CoxFit | None]:
    """The Cox models on the training rows with follow-up, their test figures into ``fitted``:
    one on fused features + out-of-fold MGMT and IDH probabilities + age; and, when the cohort
    knows MGMT, IDH or EGFR status for at least half of those rows, one that takes the known
    status (a predicted probability where MGMT/IDH is unknown, the training median for EGFR)."""
    x, names_all, y, train, test, cases = table.x, table.names, table.y, table.train, table.test, table.cases
    results, defaults, curves, shap_rows = fitted.results, fitted.defaults, fitted.curves, fitted.shap_rows
    followed = np.array([c.survival_days is not None and c.event is not None for c in cases])
    tr = train[followed[train]]
    te = test[followed[test]]
    event = np.array([c.event or 0 for c in cases], int)
    if len(tr) < 20 or event[tr].sum() < 5:
        results["survival"] = {"skipped": "needs at least 20 training cases with follow-up and 5 deaths"}
        return None, None
    age = np.array([np.nan if c.age_years is None else c.age_years for c in cases])
    probs: dict[str, np.ndarray] = {}
    for target in ("mgmt", "idh"):  # what the Cox model reads
        variant = defaults.get(target)
        if variant is None:
            probs[target] = np.full(len(cases), np.nan)
            continue
        p = np.full(len(cases), np.nan)
        p[tr] = _oof_probability(variant, names_all, x, y[target], tr, s, table.excluded)
        head = shap_rows[f"{target}:{variant}"]
        p[te] = head.probability(x[te])
        probs[target] = p
    predicted = _cox_on(table, tr, te, np.column_stack([probs["mgmt"], probs["idh"], age]), list(COX_EXTRA), s)
    results["survival"] = predicted.figures

    def test_figures(features: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
        """The same Cox model and heads on ``rows`` with their features taken from ``features``."""
        extra = {"age_years": age[rows]}
        for target in ("mgmt", "idh"):
            variant = defaults.get(target)
            extra[f"{target}_probability"] = (shap_rows[f"{target}:{variant}"].probability(features[rows]) if variant
                                              else np.full(len(rows), np.nan))
        design = np.column_stack([extra[n] if n in extra else features[rows][:, names_all.index(n)]
                                  for n in predicted.model.names])
        time_ = np.array([cases[i].survival_days or 0.0 for i in rows], float)
        return survival.cox_figures(predicted.model, predicted.model.risk(design), time_, event[rows],
                                    seed=s.seed)["test"]

    if table.other_x is not None:  # the test cases' features in the other masks
        results["survival"][f"test_{table.other_masks}_masks"] = test_figures(table.other_x, te)
    if table.node_x is not None and table.withheld is not None:  # as the node reports: doubtful masks withheld
        shown = te[~table.withheld[te]]
        if event[shown].sum() >= 2:  # a C-index needs deaths to order
            results["survival"]["test_as_node"] = {**test_figures(table.node_x, shown),
                                                   "withheld": int(len(te) - len(shown))}
    curves["survival"] = {"km": predicted.km}
    results["survival_variants"] = _survival_baselines(table, tr, te, age, s)
    status = {m: _known_status(cases, m) for m in ("mgmt", "idh", "egfr")}
    markers = [m for m in status if np.isfinite(status[m][tr]).mean() >= 0.5]
    if not markers:
        results["survival_known"] = {"skipped": "the cohort knows no MGMT, IDH or EGFR status for half of the "
                                                "training cases with follow-up"}
        return predicted, None
    columns, names = [], []
    for m in markers:
        columns.append(np.where(np.isfinite(status[m]), status[m], probs[m]) if m in probs else status[m])
        names.append(f"{m}_status" if m in probs else "egfr_amplified")
    known = _cox_on(table, tr, te, np.column_stack([*columns, age]), [*names, "age_years"], s)
    results["survival_known"] = {**known.figures, "markers": markers,
                                 "known_in_test": {m: int(np.isfinite(status[m][te]).sum()) for m in markers}}
    curves["survival_known"] = {"km": known.km}
    return predicted, known


def concordance(a: np.ndarray, b: np.ndarray) -> float:
    """Lin's concordance correlation coefficient of two measurements of one quantity (rows
    where both are finite): 1 when they agree exactly, lower for scatter and for bias."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    a, b = a[ok], b[ok]
    denominator = a.var() + b.var() + (a.mean() - b.mean()) ** 2
    return float(2 * np.mean((a - a.mean()) * (b - b.mean())) / denominator) if denominator > 0 else float("nan")


def mask_robustness(x: np.ndarray, x_other: np.ndarray, names: list[str], threshold: float | None) -> dict[str, Any]:
    """Per radiomic feature, the agreement (:func:`concordance`) of its values in the two masks
    over the rows given (the training split); those below ``threshold`` (or with no
    agreement to measure) are excluded. Returns the threshold, the excluded names, and the
    agreement of every shape, location and morphology feature (the ones that describe the
    mask itself)."""
    agreement = {n: concordance(x[:, j], x_other[:, j]) for j, n in enumerate(names)}
    excluded = sorted(n for n, c in agreement.items() if threshold is not None and not c >= threshold)
    return {"threshold": threshold, "features": len(names), "excluded": excluded,
            "shape_agreement": {n: round(c, 3) for n, c in sorted(agreement.items())
                                if group_of(n) == "shape" and np.isfinite(c)}}


def _write_split(out: Path, cases: list[LabelledCase], train: np.ndarray, val: np.ndarray, test: np.ndarray,
                 seed: int) -> None:
    """``split.json``: the case names of each split, so the test cases can be found again
    (``glioma-node evaluate pointing``) and never mistaken for unseen ones."""
    from glioma_node.training.radiogenomics.pointing import SPLIT_FILE

    with atomic_path(out / SPLIT_FILE) as tmp:
        tmp.write_text(json.dumps({"seed": seed, **{name: [cases[i].name for i in rows] for name, rows in
                                                    (("train", train), ("validation", val), ("test", test))},
                                   "test_masks_sha256": {cases[i].name: mask_digest(cases[i]) for i in test}},
                                  indent=1))


def train_radiogenomics(data: Path, out: Path, s: RadiogenomicSettings, progress: bool = True,
                        command: str = "") -> dict[str, Any]:
    """Train, evaluate and write a radiogenomic model directory (see the module doc)."""
    from glioma_node.training.radiogenomics import report

    started = time.time()
    out.mkdir(parents=True, exist_ok=True)
    params = radiomics.load_settings(s.radiomics_settings)
    cases = load_cases(data, s.layout)
    cache = s.cache or out / "cache"
    masks = MaskSource(s.masks)
    other_masks = MaskSource.TRUE if masks == MaskSource.SEGMENTER else MaskSource.SEGMENTER
    errors = build_cache(cases, cache, params, s.encoder, s.workers, s.segmentation_model, progress, s.sequence_rules,
                         masks)
    if s.compare_masks:
        for name, error in build_cache(cases, cache, params, s.encoder, s.workers, s.segmentation_model, progress,
                                       s.sequence_rules, other_masks).items():
            errors[name] = "; ".join(filter(None, (errors.get(name), f"in the {other_masks} masks: {error}")))
    cases, feats, crops = read_cache(cases, cache, params, s.encoder, masks, s.segmentation_model)
    other_feats: list[dict[str, float]] = []
    other_crops = np.zeros((0,))
    if s.compare_masks:  # only cases read in both masks
        both, other_feats, other_crops = read_cache(cases, cache, params, s.encoder, other_masks, s.segmentation_model)
        keep = [i for i, c in enumerate(cases) if c in both]
        cases, feats, crops = [cases[i] for i in keep], [feats[i] for i in keep], crops[keep]
    if len(cases) < 20:
        raise ValueError(f"only {len(cases)} usable cases; radiogenomic training needs at least 20")
    names = sorted({k for f in feats for k in f})
    radiomic_x = np.stack([feature_vector(f, names) for f in feats])
    train, val, test = split(cases, s.seed)
    _write_split(out, cases, train, val, test, s.seed)
    screen: dict[str, Any] = {}
    if s.compare_masks:
        other_radiomic = np.stack([feature_vector(f, names) for f in other_feats])
        # A case without a mask file is segmented in both modes: its two values agree by construction.
        with_mask = train[[cases[i].seg is not None for i in train]]
        if len(with_mask) < 10:
            raise ValueError(f"--compare-masks needs training cases with mask files; {len(with_mask)} have one")
        screen = mask_robustness(radiomic_x[with_mask], other_radiomic[with_mask], names, s.robust_ccc)
        screen["training_cases"] = int(len(with_mask))
    y = {t: label_array(cases, t) for t in TARGETS}
    enc_labels = np.column_stack([y["idh"], y["mgmt"]])

    # Deep encoder: cross-fitted embeddings for the training rows, the fold encoders' mean for the rest.
    encoder_curve = Curve("deep-feature encoder, first fold (IDH and MGMT logits)")
    emb, encoder, agreement = _deep_features(crops, enc_labels, train, s, progress, encoder_curve)
    deep_names = [f"deep.{i:03d}" for i in range(EMBEDDING_SIZE)]
    names_all = names + deep_names
    x = np.column_stack([radiomic_x, emb]).astype(np.float64)
    table = _Table(cases, x, names_all, radiomic_x, names, crops, y, train, val, test,
                   excluded=frozenset(screen.get("excluded", ())))
    if s.compare_masks:
        table.other_x = np.column_stack([other_radiomic, embed_all(encoder, other_crops, s.encoder)]).astype(np.float64)
        table.other_masks = str(other_masks)
        table.other_crops = other_crops
    if MaskSource.SEGMENTER in (masks, other_masks if s.compare_masks else masks) and s.segmentation_model:
        table.node_x = x if masks == MaskSource.SEGMENTER else table.other_x
        table.withheld = np.array([bool(mask_doubtful(c, cache, s.segmentation_model)) for c in cases])
    crop = _cnn_crop(s)
    if s.cnn_targets and not reads_encoder_crops(crop, s.encoder):
        table.cnn_crops = build_crops(cases, cache, crop["crop_size"], crop["crop_spacing_mm"], s.workers,
                                      s.segmentation_model, progress, crop.get("context_mm"), masks)
    if masks == MaskSource.SEGMENTER:  # the CNN's input inside the segmenter's masks, where it was cut
        table.node_cnn_crops = table.cnn_crops if table.cnn_crops is not None else crops
    elif table.node_x is not None and table.cnn_crops is None:  # it reads the encoder's crops, cut in both
        table.node_cnn_crops = table.other_crops

    fitted = _Fitted({"cases": len(cases), "left_out": errors, "masks": str(masks),
                      **({"withheld_test_cases": int(table.withheld[test].sum())} if table.withheld is not None else {}),
                      "split": {"train": len(train), "validation": len(val), "test": len(test)}, "targets": {},
                      **({"mask_robustness": screen} if screen else {}), "encoder_agreement": agreement})
    fitted.curves_nets["encoder"] = encoder_curve
    _fit_classifiers(table, fitted, s, progress)
    cox, cox_known = _fit_cox(table, fitted, s) if "survival" in s.targets else (None, None)
    results, heads, cnns, defaults, curves, shap_rows = (fitted.results, fitted.heads, fitted.cnns, fitted.defaults,
                                                         fitted.curves, fitted.shap_rows)

    rng = np.random.default_rng(s.seed)
    background = x[rng.choice(train, min(64, len(train)), replace=False)]
    # SHAP needs the background only in the columns some head reads; the rest stay NaN
    # (never read), so the stored matrix is small.
    used = sorted({c for by_variant in heads.values() for h in by_variant.values() for c in h["config"]["columns"]})
    background_columns = torch.tensor(used, dtype=torch.long)
    background_values = torch.tensor(background[:, used], dtype=torch.float32)
    bundle = RadiogenomicBundle(
        feature_names=names_all,
        radiomics_settings=params,
        radiomics_sha256=radiomics.settings_digest(params),
        encoder={"config": {**s.encoder, "members": s.cross_fit_folds}, "state": _state(encoder, half=True)},
        heads=heads,
        cnn=cnns,
        cox=cox.model.to_dict() if cox is not None else None,
        background={"columns": background_columns, "values": background_values},
        cox_background=torch.tensor(cox.background[:64], dtype=torch.float32) if cox is not None else None,
        cox_known=cox_known.model.to_dict() if cox_known is not None else None,
        cox_known_background=(torch.tensor(cox_known.background[:64], dtype=torch.float32)
                              if cox_known is not None else None),
        default_variants=defaults,
    )
    bundle.to_file(out / "model.pt")
    results["seconds"] = round(time.time() - started, 1)
    write_manifest(out, {
        "name": "glioma-node-radiogenomics", "version": s.version, "kind": KIND, "weights": "model.pt",
        "input": {"channels": ["FLAIR", "T1", "T1c", "T2"], "grid": "1 mm axis-aligned LPS",
                  "normalisation": "inference.intensity.zscore inside the brain", "labels": "BraTS 1/2/4",
                  "radiomics_settings_sha256": bundle.radiomics_sha256,
                  "encoder": {**s.encoder, "members": s.cross_fit_folds}},
        "output": {"targets": sorted(heads) + (["survival"] if cox is not None else []), "default_variants": defaults,
                   **({"survival_known_markers": results["survival_known"]["markers"]} if cox_known else {}),
                   "thresholds": {t: float(shap_rows[f"{t}:{v}"].threshold) for t, v in defaults.items()}},
        "training": {"data": str(data), "layout": s.layout, "command": command, "cases": len(cases),
                     "seconds": results["seconds"]},
        "intended_use": "research use only, not for diagnosis",
    })
    if s.external is not None:
        from glioma_node.training.radiogenomics.evaluate import evaluate_radiogenomics

        # Its own layout (detected) and cache: its case names may repeat the training cohort's.
        external = evaluate_radiogenomics(out, s.external, out / "external", "auto", s.workers, None,
                                          s.segmentation_model, progress, s.sequence_rules, masks)
        results["external"] = {"data": str(s.external), "cases": external["cases"],
                               "auc": {t: r["variants"][r["default_variant"]]["test"]["auc"]
                                       for t, r in external["targets"].items() if "variants" in r},
                               "c_index": external.get("survival", {}).get("test", {}).get("c_index")}
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    report.write_report(out, results, curves, shap_rows, x[test], names_all, fitted.curves_nets)
    return results
