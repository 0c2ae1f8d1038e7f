"""`glioma-node evaluate radiogenomics`: a trained model applied, unchanged, to another cohort.

External validation as the MGMT study did it (trained on RSNA-MICCAI, validated on BraTS
2021): every case of ``--data`` (any layout the adapters read) is read and its features
extracted exactly as in training, with the model's own radiomics settings and crop; the
model's encoder embeds it; every stored head, end-to-end CNN and Cox model scores it with
its stored calibration, threshold and cutoff; nothing is refitted. Written to ``OUT``:
``metrics.json``, ``roc-<target>.png``, ``km-risk-groups*.png`` and
``EXTERNAL_VALIDATION.md`` (the card section), all on every labelled case of the cohort.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit

from glioma_node.core.clinical import Marker
from glioma_node.core.targets import Target
from glioma_node.dicom_io.sequence_rules import SequenceRules
from glioma_node.inference.radiogenomics.cox import CoxModel
from glioma_node.inference.radiogenomics.encoder import EMBEDDING_SIZE
from glioma_node.inference.radiogenomics.model import RadiogenomicModel, feature_vector
from glioma_node.training.radiogenomics import metrics, report, survival
from glioma_node.training.radiogenomics.adapters import LabelledCase, censored_before_endpoint, label_array, load_cases
from glioma_node.training.radiogenomics.features import (
    MaskSource,
    build_cache,
    build_crops,
    read_cache,
    reads_encoder_crops,
)
from glioma_node.training.radiogenomics.networks import cnn_logits, embed_all


def _classifiers(model: RadiogenomicModel, cases: list[LabelledCase], x: np.ndarray,
                 cnn_input: Callable[[dict[str, Any]], np.ndarray], results: dict, curves: dict) -> dict[str, np.ndarray]:
    """Every stored head and CNN on the labelled cases; the default variants' probabilities for all cases."""
    probabilities: dict[str, np.ndarray] = {}
    for target in sorted(set(model.heads) | set(model.cnns)):
        y = label_array(cases, target)
        known = np.isfinite(y)
        res: dict[str, Any] = {"cases_without_label": int((~known).sum())}
        if target == Target.CHEMO_BENEFIT:
            res["censored_before_endpoint"] = censored_before_endpoint(cases)
        scored: dict[str, np.ndarray] = {}
        for variant, head in model.heads.get(target, {}).items():
            scored[variant] = head.probability(x)
        if target in model.cnns:
            net, cfg = model.cnns[target]
            a, b = cfg["platt"]
            scored["cnn"] = expit(a * cnn_logits(net, cnn_input(cfg)) + b)
        default = model.variants.get(target, next(iter(scored)))
        probabilities[target] = scored[default]
        results["targets"][target] = res
        if len(set(y[known])) < 2:
            res["skipped"] = "the cohort needs both classes of this target"
            continue
        thresholds = {v: float(model.heads[target][v].threshold) for v in model.heads.get(target, {})}
        if "cnn" in scored:
            thresholds["cnn"] = float(model.cnns[target][1]["threshold"])
        res["variants"] = {v: {"test": metrics.classification(y[known], p[known], thresholds[v])}
                           for v, p in scored.items()}
        res["default_variant"] = default
        curves[target] = {v: (y[known], p[known]) for v, p in scored.items()}
    return probabilities


def _cox(cox: CoxModel, x: np.ndarray, names: list[str], extra: dict[str, np.ndarray], time: np.ndarray,
         event: np.ndarray) -> tuple[dict, tuple]:
    covariates = np.column_stack([extra[n] if n in extra else x[:, names.index(n)] for n in cox.names])
    risk = cox.risk(covariates)
    figures = survival.cox_figures(cox, risk, time, event)
    return figures, (time, event, risk >= cox.cutoff)


def _survival(model: RadiogenomicModel, cases: list[LabelledCase], x: np.ndarray, probabilities: dict[str, np.ndarray],
              results: dict, curves: dict) -> None:
    followed = np.array([c.survival_days is not None and c.event is not None for c in cases])
    if model.cox is None and model.cox_known is None:
        return
    if followed.sum() < 5 or sum(c.event or 0 for c in cases) < 2:
        results["survival"] = {"skipped": "the cohort needs follow-up on at least 5 cases and 2 deaths"}
        return
    rows = np.flatnonzero(followed)
    time = np.array([cases[i].survival_days for i in rows], float)
    event = np.array([cases[i].event for i in rows], int)
    nan = np.full(len(rows), np.nan)
    extra = {"mgmt_probability": probabilities.get("mgmt", nan)[rows] if "mgmt" in probabilities else nan,
             "idh_probability": probabilities.get("idh", nan)[rows] if "idh" in probabilities else nan,
             "age_years": np.array([np.nan if cases[i].age_years is None else cases[i].age_years for i in rows])}
    if model.cox is not None:
        results["survival"], km = _cox(model.cox, x[rows], model.feature_names, extra, time, event)
        curves["survival"] = {"km": km}
    if model.cox_known is not None:
        known_in: dict[str, int] = {}
        for marker in Marker:
            status = np.array([np.nan if getattr(cases[i], marker.value) is None else getattr(cases[i], marker.value)
                               for i in rows], float)
            known_in[marker.value] = int(np.isfinite(status).sum())
            fallback = extra.get(f"{marker.value}_probability", nan)
            name = "egfr_amplified" if marker == Marker.EGFR else f"{marker.value}_status"
            extra[name] = np.where(np.isfinite(status), status, fallback)
        figures, km = _cox(model.cox_known, x[rows], model.feature_names, extra, time, event)
        results["survival_known"] = {**figures, "markers": [m for m in known_in if known_in[m]],
                                     "known_in_test": known_in}
        curves["survival_known"] = {"km": km}


def external_card(results: dict, model_dir: Path, data: Path, plots: list[str]) -> str:
    """EXTERNAL_VALIDATION.md: the model's figures on the external cohort."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    lines = [f"# External validation of {manifest['name']} {manifest['version']}", "",
             "**Research use only, not for diagnosis.**", "",
             f"Model: `{model_dir}` (sha256 {manifest.get('sha256', '?')[:12]}), trained on "
             f"`{manifest['training']['data']}`. External cohort: `{data}` ({results['layout']} layout), "
             f"{results['cases']} cases; {len(results['left_out'])} left out (unreadable). Every figure is on every "
             "labelled case of the external cohort with the model unchanged (stored calibration, thresholds and "
             "risk cutoff); 95 % bootstrap intervals.", "", report.PUBLISHED, ""]
    for target, res in results["targets"].items():
        lines += report.target_lines(target, res, split="external", skipped="Not evaluated")
    lines += report.survival_lines("## Survival (Cox risk group)", results.get("survival"), "Not evaluated")
    lines += report.survival_lines("## Survival with laboratory-known status (Cox risk group)",
                                   results.get("survival_known"), "Not evaluated")
    return "\n".join(lines + ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""])


def evaluate_radiogenomics(model_dir: Path, data: Path, out: Path, layout: str = "auto", workers: int = 1,
                           cache: Path | None = None, segmentation_model: Path | None = None,
                           progress: bool = True, sequence_rules: SequenceRules | None = None,
                           masks: MaskSource = MaskSource.TRUE) -> dict[str, Any]:
    """Apply the model in ``model_dir`` to the cohort in ``data``; figures and plots into ``out``
    (``sequence_rules``: how the series of a TCIA cohort are recognised; ``masks``: inside
    which masks the features are read, the cohort's own or the segmentation model's)."""
    model = RadiogenomicModel(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    cases = load_cases(data, layout)
    cache = cache or out / "cache"
    errors = build_cache(cases, cache, model.params, model.encoder_config, workers, segmentation_model, progress,
                         sequence_rules, masks)
    cases, feats, crops = read_cache(cases, cache, model.params, model.encoder_config, masks, segmentation_model)
    if not cases:
        raise ValueError(f"{data}: no case could be read ({len(errors)} failed)")
    x = np.stack([feature_vector(f, model.feature_names) for f in feats])
    deep = [i for i, n in enumerate(model.feature_names) if n.startswith("deep.")]
    if len(deep) != EMBEDDING_SIZE:
        raise ValueError(f"{model_dir}: the model's feature names hold {len(deep)} deep columns, not {EMBEDDING_SIZE}")
    x[:, deep] = embed_all(model.encoder, crops, model.encoder_config)
    results: dict[str, Any] = {"cases": len(cases), "left_out": errors, "layout": layout, "data": str(data),
                               "masks": str(masks),
                               "model": str(model_dir), "targets": {}}
    curves: dict[str, Any] = {}

    def cnn_input(cfg: dict[str, Any]) -> np.ndarray:
        """The crops a stored CNN reads: the cached encoder crops when they are its input, else its own."""
        if reads_encoder_crops(cfg, model.encoder_config):
            return crops
        return build_crops(cases, cache, cfg["crop_size"], cfg["crop_spacing_mm"], workers, segmentation_model,
                           progress, cfg.get("context_mm"), masks)

    probabilities = _classifiers(model, cases, x, cnn_input, results, curves)
    _survival(model, cases, x, probabilities, results, curves)
    plots = report.roc_plots(out, curves)
    plots += report.km_plot(out, curves, results.get("survival", {}).get("logrank_p_test"))
    plots += report.km_plot(out, curves, results.get("survival_known", {}).get("logrank_p_test"), "survival_known",
                            "km-risk-groups-known-status.png", "Risk groups, known status")
    (out / "metrics.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "EXTERNAL_VALIDATION.md").write_text(external_card(results, model_dir, data, plots))
    return results

