"""MODEL_CARD.md of a segmentation model directory, from its manifest, log and evaluation."""
from __future__ import annotations

import json
from pathlib import Path

from inference.networks import build_network
from inference.regions import REGIONS


def _real_table(evaluation: dict) -> list[str]:
    lines = ["| case | reference | segmenter | Dice WT | Dice TC | Dice ET | WT ml | TC ml | ET ml | brain ml |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    references = {"tcga-brats-space": "fusion of 5 BraTS-2020 algorithms",
                  "tcga-native": "same fusion, carried to scanner space", "brats23-gli-00001": "none"}
    for name, entry in evaluation["cases"].items():
        ref = entry.get("reference_volumes_ml")
        if ref:
            lines.append(f"| {name} | {references.get(name, '')} | reference | | | | {ref['whole_tumour']:.1f} | "
                         f"{ref['tumour_core']:.1f} | {ref['enhancing_tumour']:.1f} | |")
        for who in ("network", "baseline"):
            r = entry[who]
            d = r.get("dice", {})
            dice = " | ".join(f"{d[k]:.3f}" if k in d else "–" for k in REGIONS)
            v = r["volumes_ml"]
            brain = f"{r['brain_volume_ml']:.0f}" if r.get("brain_volume_ml") else "–"
            lines.append(f"| {name} | {references.get(name, '')} | {who} | {dice} | {v['whole_tumour']:.1f} | "
                         f"{v['tumour_core']:.1f} | {v['enhancing_tumour']:.1f} | {brain} |")
    return lines


def write_card(model_dir: Path, evaluation: dict | None = None, notes: str = "") -> Path:
    """Write ``model_dir/MODEL_CARD.md``; ``evaluation`` is tests/eval_segmentation.py's result."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    log = json.loads((model_dir / "training-log.json").read_text())
    net = build_network(manifest["architecture"])
    params = sum(p.numel() for p in net.parameters())
    size_mb = (model_dir / manifest["weights"]).stat().st_size / 1e6
    best = max(log["validation"], key=lambda v: sum(v[r] for r in REGIONS))
    training = manifest["training"]
    lines = [
        f"# Model card: {manifest['name']} {manifest['version']}",
        "",
        "**Research use only, not for diagnosis.**",
        "",
        "## What it is",
        f"- {manifest['architecture']['class']} ({params / 1e6:.2f} M parameters, {size_mb:.1f} MB), "
        f"inputs {', '.join(manifest['input']['channels'])} at {manifest['input']['spacing_mm']} mm, outputs "
        f"{', '.join(manifest['output']['channels'])} (sigmoid, threshold {manifest['output']['threshold']}).",
        "- Tumour segmentation of the skull-stripped brain: brain extraction (deepbet) runs first, and "
        f"{', '.join(manifest['input'].get('required_channels', manifest['input']['channels']))} is all it "
        "needs (missing sequences are fed as zeros, as in training); see docs/segmentation.md.",
        f"- Weights sha256 `{manifest['sha256']}`, checked at every load.",
        "",
        "## Training data: synthetic only",
        f"- {len(log['train_cases'])} training and {len(log['validation_cases'])} validation label maps from "
        "`glioma-node synth --nifti-only` (MNI152 2009 heads, random deformation, grown tumours). No real image "
        "or real label was used in training or in choosing the checkpoint (see the disclosure below, if any).",
        "- Each step draws new images from the labels with random contrasts and scanner effects "
        "(training/seg/generator.py).",
        "",
        "## Reproduce",
        f"Last training command: `{training['command']}` ({training['iterations']} steps in "
        f"{training['seconds'] / 60:.0f} min on {training['device']}, batch 1, 80³ crops). "
        "`make eval` gives the real-case figures below.",
        "",
        "## Synthetic held-out figures",
        f"Validation Dice on fixed samples of the held-out synthetic cases at the kept step ({best['step']}): "
        + ", ".join(f"{k} {best[k]:.3f}" for k in manifest["output"]["channels"] if k in best) + ".",
        "",
    ]
    if evaluation:
        lines += ["## Real cases (`make eval`)", ""] + _real_table(evaluation) + [
            "",
            "Dice is measured on the grid of the reference label; WT whole tumour, TC tumour core, ET enhancing "
            "tumour. The baseline is inference/segmenters/classical.py (hand-set thresholds after normalisation, "
            "inside the same brain mask). The TCGA references are algorithm output, not expert truth.",
            ""]
        for png in sorted(model_dir.glob("eval-*.png")):
            lines += [f"![{png.stem}]({png.name})", ""]
    notes_file = model_dir / "training-notes.md"
    if notes_file.is_file():  # how the weights were really made, written by whoever trained them
        lines += [notes_file.read_text().strip(), ""]
    if notes:
        lines += [notes.strip(), ""]
    lines += ["## Limits",
              "- Trained on synthetic brains only: real anatomy, pathology and artefacts it has not seen "
              "(post-operative cavities, haemorrhage, calcification, motion) can be missed or over-called.",
              "- Runs at 2 mm; thin enhancing rims are blurred.",
              "- Validated on three real cases only. Not a medical device. **Research use only, not for "
              "diagnosis.**", ""]
    path = model_dir / "MODEL_CARD.md"
    path.write_text("\n".join(lines))
    return path
