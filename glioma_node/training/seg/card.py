"""MODEL_CARD.md of a segmentation model directory, from its manifest, log and evaluation."""
from __future__ import annotations

import json
from pathlib import Path

from glioma_node.inference.networks import build_network
from glioma_node.inference.regions import REGIONS


def dice_table(results: dict) -> list[str]:
    """The Markdown table of the model card and docs: one row per case and segmenter."""
    lines = ["| case | sequences | segmenter | Dice WT | Dice TC | Dice ET | WT ml | TC ml | ET ml | brain ml | s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, case in results["cases"].items():
        seqs = "+".join(case["sequences"])
        ref = case.get("reference_volumes_ml")
        if ref:
            vols = " | ".join(f"{ref[k]:.1f}" if k in ref else "–" for k in REGIONS)
            lines.append(f"| {name} | {seqs} | reference | | | | {vols} | | |")
        for seg, r in case["segmenters"].items():
            if not r["ran"]:
                lines.append(f"| {name} | {seqs} | {seg} | cannot run: {r['reason'][:70]} | | | | | | | |")
                continue
            d = r.get("dice", {})
            dice = " | ".join(f"{d[k]:.3f}" if k in d else "–" for k in REGIONS)
            v = r["volumes_ml"]
            lines.append(f"| {name} | {seqs} | {seg} | {dice} | {v['whole_tumour']:.1f} | {v['tumour_core']:.1f} | "
                         f"{v['enhancing_tumour']:.1f} | {r['brain_volume_ml']:.0f} | {r['seconds']:.0f} |")
    for seg, m in results.get("medians", {}).items():
        lines.append(f"| **TCGA-LGG median ({m['cases']} of {m['of']})** | FLAIR+T1+T1c | {seg} | "
                     f"**{m['median_whole_tumour']:.3f}** (min {m['min_whole_tumour']:.3f}) | | | | | | | |")
    return lines



def _steps(training: dict) -> str:
    """How many steps ran, against how many the schedule planned when a run stopped early."""
    done, planned = training.get("steps_done", training["iterations"]), training["iterations"]
    return f"{done} steps" if done == planned else f"{done} of {planned} planned steps"


def write_card(model_dir: Path, evaluation: dict | None = None, notes: str = "") -> Path:
    """Write ``model_dir/MODEL_CARD.md``; ``evaluation`` is tools/eval_segmentation.py's result."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    log = json.loads((model_dir / "training-log.json").read_text())
    net = build_network(manifest["architecture"])
    params = sum(p.numel() for p in net.parameters())
    size_mb = (model_dir / manifest["weights"]).stat().st_size / 1e6
    chosen_step = log.get("chosen_step")
    best = (next((v for v in log["validation"] if v["step"] == chosen_step), None) if chosen_step is not None
            else None) or max(log["validation"], key=lambda v: sum(v[r] or 0.0 for r in REGIONS))
    training = manifest["training"]
    synthetic = training.get("data", "").startswith("synthetic")
    real = best.get("real")
    lines = [
        f"# Model card: {manifest['name']} {manifest['version']}",
        "",
        "**Research use only, not for diagnosis.**",
        "",
        "## What it is",
        f"- {manifest['architecture']['class']} ({params / 1e6:.2f} M parameters, {size_mb:.1f} MB), "
        f"inputs {', '.join(manifest['input']['channels'])} at {manifest['input']['spacing_mm']} mm, outputs "
        f"{', '.join(manifest['output']['channels'])} (sigmoid, threshold {manifest['output']['threshold']}).",
        "- Tumour segmentation of the skull-stripped brain: brain extraction (deepbet) runs first. It needs "
        + (", ".join(manifest["input"].get("required_channels", manifest["input"]["channels"])) or "FLAIR or T2")
        + "; other sequences a study lacks are fed as zeros, as in training (see docs/segmentation.md).",
        f"- Weights sha256 `{manifest['sha256']}`, checked at every load.",
        "",
        "## Training data: " + ("synthetic only" if synthetic else training.get("data", "")),
        f"- {len(log['train_cases'])} training and {len(log['validation_cases'])} validation cases"
        + (" (label maps from `glioma-node synth --nifti-only`: MNI152 2009 heads, random deformation, grown "
           "tumours). No real image or real label was used in training." if synthetic else "."),
        "- Each step draws new images from the labels with random contrasts, confounders and scanner effects "
        "(training/seg/generator.py, training/seg/confounders.py).",
        "- Checkpoint chosen by " + training.get("selection", "mean Dice on held-out synthetic samples")
        + (f" (step {best['step']}: median {real['median']:.3f}, minimum {real['min']:.3f}). This is selection on "
           "real data, not training on it: those cases are no longer unseen, and figures on them flatter the model "
           "by an unknown amount." if real else "; no real image or label was used to choose it."),
        *([f"- The weights are a moving average of the training steps (decay {training['weights_average']['decay']}"
           f", validated from step {training['weights_average']['from_step']} on), not one step's."]
          if "weights_average" in training else []),
        "",
        "## Reproduce",
        f"Last training command: `{training['command']}` ({_steps(training)} in "
        f"{training['seconds'] / 60:.0f} min on {training['device']}, batch 1, 80³ crops). "
        "`make eval` gives the real-case figures below.",
        "",
        "## Synthetic held-out figures" if synthetic else "## Held-out training-data figures",
        (f"Validation Dice on fixed samples of the held-out training-data cases at the kept step ({best['step']}): "
         + ", ".join(f"{k} {best[k]:.3f}" for k in manifest["output"]["channels"] if best.get(k) is not None) + "."
         if any(best.get(k) is not None for k in manifest["output"]["channels"]) else
         "None: every training-data case trained, and the real validation cases alone chose the checkpoint."),
        "",
    ]
    if evaluation:
        lines += ["## Real cases (`make eval`, every case through DICOM and `glioma-node process`)", ""] \
            + dice_table(evaluation) + [
            "",
            "Dice is measured on the grid of the reference label; WT whole tumour, TC tumour core, ET enhancing "
            "tumour. `classical` is inference/segmenters/classical.py (hand-set thresholds after normalisation, "
            "inside the same brain mask); `captk-deepmedic` is CaPTk's DeepMedic model (trained on 587 real "
            "glioblastomas), `ensemble` the mean of it and this model. The TCGA-FG-6692 references are algorithm "
            "output, not expert truth; the TCGA-LGG (kaggle) masks are manual.",
            ""]
        for png in sorted(model_dir.glob("eval-*.png")):
            lines += [f"![{png.stem}]({png.name})", ""]
    notes_file = model_dir / "training-notes.md"
    if notes_file.is_file():  # how the weights were really made, written by whoever trained them
        lines += [notes_file.read_text().strip(), ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["## Limits",
              "- Trained on " + ("synthetic brains only" if synthetic else "the data above")
              + ": real anatomy, pathology and artefacts it has not seen "
              "(post-operative cavities, haemorrhage, calcification, motion) can be missed or over-called.",
              "- Runs at 2 mm; thin enhancing rims are blurred.",
              "- Checked on the real cases above only (`make eval`). Not a medical device. **Research use "
              "only, not for diagnosis.**", ""]
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
