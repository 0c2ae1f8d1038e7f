"""Plots and the model card of a radiogenomic training run."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from glioma_node.core.targets import TARGET_INFO  # noqa: E402
from glioma_node.inference.radiogenomics.explain import head_attributions  # noqa: E402
from glioma_node.inference.radiogenomics.heads import FusionHead  # noqa: E402
from glioma_node.training.radiogenomics.networks import Curve  # noqa: E402
from glioma_node.training.radiogenomics.survival import kaplan_meier  # noqa: E402

PUBLISHED = ("On real patients, published MRI-based results are: MGMT promoter methylation AUC about 0.56-0.62 "
             "(RSNA-MICCAI 2021 and its external validation), IDH mutation AUC 0.86-0.96, overall-survival "
             "C-index 0.63-0.77.")
NAMES = {t: info.title for t, info in TARGET_INFO.items()}


def _save(fig, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=100)
    plt.close(fig)
    return name


def roc_plots(out: Path, curves: dict) -> list[str]:
    files = []
    for target, by_variant in curves.items():
        if target.startswith("survival"):
            continue
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        for variant, (y, p) in by_variant.items():
            fpr, tpr, _ = roc_curve(y.astype(int), p)
            ax.plot(fpr, tpr, label=variant)
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"{NAMES[target]} (test)")
        ax.legend(loc="lower right", fontsize=8)
        files.append(_save(fig, out, f"roc-{target}.png"))
    return files


def km_plot(out: Path, curves: dict, p: float | None, key: str = "survival", name: str = "km-risk-groups.png",
        title: str = "Risk groups") -> list[str]:
    if key not in curves:
        return []
    time, event, high = curves[key]["km"]
    fig, ax = plt.subplots(figsize=(5, 4))
    for mask, label, colour in ((high, "high risk", "#c0392b"), (~high, "low risk", "#2e86c1")):
        if mask.any():
            t, s, ci = kaplan_meier(time[mask], event[mask])
            ax.step(t, s, where="post", color=colour, label=f"{label} (n={int(mask.sum())})")
            ax.fill_between(t, ci[:, 0], ci[:, 1], step="post", color=colour, alpha=0.15, linewidth=0)
    ax.set(xlabel="days", ylabel="survival probability (95 % CI)", ylim=(0, 1.02),
           title=(f"{title} (test), log-rank p = {p:.3g}" if p is not None else f"{title} (test)"))
    ax.legend()
    return [_save(fig, out, name)]


def _shap(out: Path, heads: dict[str, FusionHead], x_test: np.ndarray, background: np.ndarray) -> list[str]:
    files = []
    for key, head in heads.items():
        target, variant = key.split(":")
        totals: dict[str, float] = {}
        for row in x_test[:20]:
            for a in head_attributions(head, row, background, top=1000):
                totals[a.feature] = totals.get(a.feature, 0.0) + abs(a.shap) / min(20, len(x_test))
        top = sorted(totals.items(), key=lambda kv: -kv[1])[:12][::-1]
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.barh([k for k, _ in top], [v for _, v in top], color="#3b6ea8")
        ax.set_xlabel("mean |SHAP| (log-odds), test cases")
        ax.set_title(f"{NAMES[target]}: {variant} fusion", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
        files.append(_save(fig, out, f"shap-{target}-{variant}.png"))
    return files


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def _ci(m: dict, key: str) -> str:
    lo, hi = m.get(f"{key}_ci95", [None, None])
    return f"{_fmt(m.get(key))} ({_fmt(lo)}–{_fmt(hi)})"


def target_lines(target: str, res: dict, split: str = "test", skipped: str = "Not trained") -> list[str]:
    """The card section of one classification target: each variant's figures on ``split``."""
    lines = [f"## {NAMES.get(target, target)}"]
    if res.get("cases_without_label"):
        why = (f", {res['censored_before_endpoint']} of them censored alive before 24 months"
               if "censored_before_endpoint" in res else "")
        lines += ["", f"Cases left out for lack of a label: {res['cases_without_label']}{why}."]
    if "skipped" in res:
        return lines + ["", f"{skipped}: {res['skipped']}.", ""]
    lines += ["", f"Default variant: **{res['default_variant']}** (the better fusion variant by cross-validated "
                  "AUC in training; radiomics alone and deep alone are reported, never the default).", "",
              f"| variant | {split} AUC (95 % CI) | accuracy | precision | recall | F1 | 5-fold CV AUC | features |",
              "|---|---|---|---|---|---|---|---|"]
    for variant, m in res["variants"].items():
        t = m["test"]
        cv = m.get("cv", {})
        lines.append(f"| {variant} | {_ci(t, 'auc')} | {_fmt(t['accuracy'])} | {_fmt(t['precision'])} | "
                     f"{_fmt(t['recall'])} | {_fmt(t['f1'])} | "
                     f"{(_fmt(cv['auc_mean']) + ' ± ' + _fmt(cv['auc_sd'])) if cv else 'not run'} | "
                     f"{m.get('features', '–')} |")
    t = res["variants"][res["default_variant"]]["test"]
    lines += ["", f"Confusion matrix of the default variant on {split} ([[TN, FP], [FN, TP]], threshold "
                  f"{t['threshold']}): {t['confusion_matrix']}", ""]
    if "dictionary" in res["variants"]:
        lines += ["`dictionary`: sparse codes (24 atoms) of the 200 radiomic features ranked best on the training "
                  "rows, then a logistic regression: the dictionary-learning baseline.", ""]
    aug = res.get("augmentation")
    if aug:
        lines += [f"PCA-GMM augmentation ({aug['variant']} fusion, {aug['factor']}× synthetic rows per class), "
                  f"measured on the same real {split} cases:", "",
                  "| training rows | AUC (95 % CI) | accuracy | F1 |", "|---|---|---|---|"]
        for name in ("real_only", "augmented"):
            m = aug[name]
            lines.append(f"| {name.replace('_', ' ')} ({m['training_rows']}) | {_ci(m, 'auc')} | "
                         f"{_fmt(m['accuracy'])} | {_fmt(m['f1'])} |")
        lines += ["", f"*{aug['caveat']}*", ""]
    variance = res.get("variance_analysis")
    if variance:
        lines += ["Variance analysis of the feature groups on the training rows (one-way ANOVA between the classes, "
                  "Benjamini–Hochberg q < 0.05):", "", "| group | features | significant | median F |", "|---|---|---|---|"]
        lines += [f"| {g} | {v['features']} | {v['significant_share']:.1%} | {v['median_f']} |" for g, v in variance.items()]
        lines.append("")
    return lines


def survival_variant_lines(results: dict) -> list[str]:
    """The survival baselines beside the stored (fusion) Cox model, on the same test cases."""
    variants = results.get("survival_variants")
    fusion = results.get("survival", {})
    if not variants or "test" not in fusion:
        return []
    lines = ["## Survival: baselines beside the fusion model", "",
             "Each is a Cox model with age, fitted on the same training rows, measured on the same test cases.", "",
             "| inputs | test C-index (95 % CI) | log-rank p | AUC at 1 year | AUC at 2 years |", "|---|---|---|---|---|"]
    rows = [("fusion: shape features, MGMT and IDH probabilities (stored)", fusion)]
    rows += [({"radiomics": "radiomics alone", "deep": "deep features alone",
               "dictionary": "sparse codes of the radiomics (dictionary learning)"}.get(k, k), v)
             for k, v in variants.items()]
    for label, v in rows:
        if "skipped" in v:
            lines.append(f"| {label} | not fitted: {v['skipped']} | | | |")
            continue
        h = v.get("horizons_test", {})
        lines.append(f"| {label} | {_ci(v['test'], 'c_index')} | {v['logrank_p_test']:.3g} | "
                     f"{_fmt(h.get('365d', {}).get('auc'))} | {_fmt(h.get('730d', {}).get('auc'))} |")
    return lines + [""]


MASK_WORDS = {"segmenter": "the segmentation model's masks, drawn as the node draws them (brain extraction, "
                             "registration, segmentation)",
              "true": "the cohort's own mask files (for a synthetic cohort: the generator's tumour and brain masks)"}


def mask_lines(results: dict) -> list[str]:
    """The card section that says inside which masks the features were read, the test figures
    in the other masks and as the node reports them (doubtful masks withheld), the robustness
    screen and how far the fold encoders agree."""
    masks = results.get("masks")
    if not masks:
        return []
    other = "true" if masks == "segmenter" else "segmenter"
    lines = ["## Masks", "", f"Features were extracted inside {MASK_WORDS.get(masks, masks)}."]
    if results.get("left_out"):
        lines += ["", f"Cases left out ({len(results['left_out'])}), each counted in no figure: "
                  + "; ".join(f"{k}: {v}" for k, v in sorted(results["left_out"].items())[:10])
                  + (" …" if len(results["left_out"]) > 10 else "") + "."]
    screen = results.get("mask_robustness")
    if screen:
        low = sorted(screen.get("shape_agreement", {}).items(), key=lambda kv: kv[1])[:5]
        lines += ["", f"Robustness screen: of {screen['features']} radiomic features, {len(screen['excluded'])} whose "
                  f"values in the true and the segmenter's masks agree less than Lin's concordance "
                  f"{screen['threshold']} over {screen['training_cases']} training cases (or cannot be "
                  "compared) are read by no head, baseline or Cox model. The deep features are not screened: "
                  "the test figures in the other masks below are their check. Least robust shape features: "
                  + ", ".join(f"`{n}` {v}" for n, v in low) + "."]
    rows = []
    for target, res in results.get("targets", {}).items():
        if "variants" not in res:
            continue
        for variant in dict.fromkeys([res["default_variant"], "cnn"]):
            m = res["variants"].get(variant)
            if not m:
                continue
            node = m.get("test_as_node")
            rows.append(f"| {NAMES.get(target, target)} ({variant}) | AUC {_ci(m['test'], 'auc')} | "
                        + (f"AUC {_ci(m[f'test_{other}_masks'], 'auc')}" if f"test_{other}_masks" in m else "–")
                        + " | " + (f"AUC {_ci(node, 'auc')}, {node['withheld']} withheld" if node else "–") + " |")
    surv = results.get("survival", {})
    if "test" in surv:
        node = surv.get("test_as_node")
        rows.append(f"| Survival (Cox) | C-index {_ci(surv['test'], 'c_index')} | "
                    + (f"C-index {_ci(surv[f'test_{other}_masks'], 'c_index')}" if f"test_{other}_masks" in surv
                       else "–")
                    + " | " + (f"C-index {_ci(node, 'c_index')}, {node['withheld']} withheld" if node else "–") + " |")
    if rows:
        lines += ["", f"The same model on the same test cases, their features read in {masks} masks (as trained), "
                  f"in {other} masks, and as the node reports (the segmenter's masks, a study whose mask the "
                  "node's quality control calls doubtful withheld):", "",
                  f"| target (variant) | {masks} masks | {other} masks | as the node reports |", "|---|---|---|---|",
                  *rows]
    agreement = results.get("encoder_agreement", {})
    if "correlation" in agreement:
        lines += ["", f"The deep embedding of a new case is the mean of the {agreement['members']} fold encoders' "
                  "(each training case was embedded by the one that never saw it). Their coordinates agree with a "
                  f"mean per-dimension correlation of {agreement['correlation']} over {agreement['cases']} "
                  f"validation and test cases, and the mean embedding keeps {agreement['spread_ratio']:.0%} of the "
                  "spread of the training cases' single-encoder embeddings."]
    return lines + [""]


def card_text(results: dict, manifest: dict, plots: list[str], notes: str = "") -> str:
    """MODEL_CARD.md for a run's results and manifest."""
    lines = [f"# {manifest['name']} {manifest['version']}", "",
             "**Research use only, not for diagnosis.**", "",
             f"Training data: `{manifest['training']['data']}` ({manifest['training']['layout']} layout), "
             f"{results['cases']} cases; split train/validation/test "
             f"{results['split']['train']}/{results['split']['validation']}/{results['split']['test']}.", "",
             f"Reproduce: `{manifest['training']['command']}`", "", PUBLISHED, ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += mask_lines(results)
    for target, res in results["targets"].items():
        lines += target_lines(target, res)
    lines += survival_lines("## Survival (Cox risk group)", results.get("survival"))
    lines += survival_lines("## Survival with laboratory-known status (Cox risk group)", results.get("survival_known"))
    lines += survival_variant_lines(results)
    external = results.get("external")
    if external:
        lines += ["## External validation", "",
                  f"The model unchanged on `{external['data']}` ({external['cases']} cases): AUC of the default variant "
                  + ", ".join(f"{NAMES.get(t, t)} {_fmt(a)}" for t, a in external["auc"].items())
                  + f"; C-index {_fmt(external['c_index'])}. Every figure, interval and plot: "
                  "[external/EXTERNAL_VALIDATION.md](external/EXTERNAL_VALIDATION.md).", ""]
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def survival_lines(title: str, surv: dict | None, skipped: str = "Not trained") -> list[str]:
    """The card section of one Cox model's figures (``results["survival"]`` or ``["survival_known"]``)."""
    if not surv:
        return []
    lines = [title, ""]
    if "skipped" in surv:
        return lines + [f"{skipped}: {surv['skipped']}.", ""]
    if "markers" in surv:
        lines += [f"Inputs known from the cohort's tables: {', '.join(m.upper() for m in surv['markers'])} "
                  f"(known in test: {surv['known_in_test']}); where MGMT or IDH is unknown the predicted "
                  "probability stands in, where EGFR is unknown the training median. The node runs this model "
                  "when a site's clinical source knows a study's status.", ""]
    t = surv["test"]
    lines += [f"Test C-index {_ci(t, 'c_index')} on {t['n']} cases ({t['events']} deaths); training "
              f"cross-validated C-index {_fmt(surv['train_cv_c_index'])}; log-rank p of the high/low groups "
              f"on test {surv['logrank_p_test']:.3g} (groups {surv['groups_test']}). Cutoff (training "
              f"median risk) {surv['cutoff']:.4f}.", "", "Covariates (standardised log hazard ratios):", ""]
    lines += [f"- `{k}`: {v}" for k, v in surv["covariates"].items()]
    lines += ["", "The high-risk group read as a prediction of death before a horizon (test cases; those "
              "censored before it are left out):", "",
              "| horizon | AUC of the risk score | sensitivity | specificity | F1 | [[TN, FP], [FN, TP]] | "
              "cases (censored before) |", "|---|---|---|---|---|---|---|"]
    for horizon, h in surv.get("horizons_test", {}).items():
        lines.append(f"| {horizon} | {_fmt(h['auc'])} | {_fmt(h['sensitivity'])} | {_fmt(h['specificity'])} | "
                     f"{_fmt(h['f1'])} | {h['confusion_matrix']} | {h['n']} ({h['censored_before']}) |")
    return lines + [""]


def curve_plots(out: Path, nets: dict[str, Curve]) -> list[str]:
    """``curves-<net>.png``: each trained network's loss per step (raw and a 20-step moving
    mean, per phase) and its validation loss where it was measured."""
    files = []
    for key, curve in nets.items():
        if not curve.train:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for phase in dict.fromkeys(p for p, _, _ in curve.train):
            steps = np.array([s for p, s, _ in curve.train if p == phase])
            loss = np.array([v for p, _, v in curve.train if p == phase])
            line = ax.plot(steps, loss, alpha=0.25)[0]
            window = min(20, len(loss))
            ax.plot(steps[window - 1:], np.convolve(loss, np.ones(window) / window, mode="valid"), color=line.get_color(),
                    label=f"{phase} loss (20-step mean)")
        if curve.validation:
            ax.plot(*zip(*curve.validation), "o-", color="black", label="validation loss")
        if min(v for _, _, v in curve.train) > 0:
            ax.set_yscale("log")  # pretraining (MSE) and training (focal) losses differ by orders of magnitude
        ax.set(xlabel="step", ylabel="loss", title=curve.name)
        ax.legend(fontsize=8)
        files.append(_save(fig, out, f"curves-{key}.png"))
    return files


def write_report(out: Path, results: dict, curves: dict, heads: dict[str, FusionHead], x_test: np.ndarray,
                 names: list[str], nets: dict[str, Curve] | None = None) -> None:
    """ROC, Kaplan–Meier and SHAP plots, and MODEL_CARD.md, into ``out``."""
    import json

    from glioma_node.inference.radiogenomics.model import RadiogenomicModel

    background = RadiogenomicModel(out).background
    plots = roc_plots(out, curves) + km_plot(out, curves, results.get("survival", {}).get("logrank_p_test"))
    plots += km_plot(out, curves, results.get("survival_known", {}).get("logrank_p_test"), "survival_known",
                 "km-risk-groups-known-status.png", "Risk groups, known status")
    plots += _shap(out, heads, x_test, background)
    plots += curve_plots(out, nets or {})
    manifest = json.loads((out / "manifest.json").read_text())
    notes_file = out / "training-notes.md"
    (out / "MODEL_CARD.md").write_text(card_text(results, manifest, plots, notes_file.read_text() if notes_file.exists() else ""))
