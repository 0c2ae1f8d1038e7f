"""`glioma-node evaluate pointing`: does Grad-CAM point at the tumour?

On synthetic cases the generator knows where the genotype signal is: in the tumour and its
edema (IDH shapes its size, enhancement, necrosis and edema; MGMT narrows the edema), never
in the rest of the brain. A heat map that explains a genotype call should therefore put
most of its positive mass on the tumour. The pointing score of one map is the share of its
positive mass inside the **true** whole tumour plus :data:`POINTING_MARGIN_MM` (the 1 mm
study grid); beside it, the share of the brain that region covers (what a map spread
evenly over the brain would score), and the share inside the true tumour itself (no
margin). Goal: ≥ 0.7. A model whose encoder sees only the tumour's context
(``context_mm``) shows its maps only there, so its pointing mostly measures how well the
segmenter's region matches the true one; the share inside the tumour itself says where
in that region the map goes.

Each case runs as the node runs it: its images inside the segmenter's mask by default
(``masks``), through :meth:`RadiogenomicModel.run`, so the maps are those a user sees; a
case whose mask the node's quality control calls doubtful is withheld, as the node
withholds its map, and listed. The
cases are a model's test split (its ``split.json``) or all of a cohort. Writes
``pointing.json`` (per case and target), ``pointing.md`` (per target: median, minimum,
share ≥ 0.7, chance) and ``pointing-<case>.png`` pictures of the first few cases.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from glioma_node.core.files import atomic_path
from glioma_node.inference.radiogenomics.crop import tumour_region
from glioma_node.inference.radiogenomics.model import RadiogenomicModel
from glioma_node.training.radiogenomics.adapters import LabelledCase, load_cases
from glioma_node.training.radiogenomics.features import (
    MaskSource,
    load_study,
    mask_digest,
    mask_doubtful,
    true_labels,
)

POINTING_MARGIN_MM = 10.0
"""How far around the true whole tumour a map's mass still counts as on the tumour (mm)."""
POINTING_GOAL = 0.7
SPLIT_FILE = "split.json"
"""The case names of a radiogenomic model's train, validation and test splits (written by training)."""


def pointing_score(cam: np.ndarray, labels: np.ndarray, margin_mm: float = POINTING_MARGIN_MM) -> float:
    """Share (0–1) of ``cam``'s positive mass inside the whole tumour (``labels > 0``, 1 mm grid)
    plus ``margin_mm``; NaN for a map with no positive value."""
    positive = np.clip(cam, 0, None)
    total = float(positive.sum())
    if total <= 0:
        return float("nan")
    return float(positive[tumour_region(labels, margin_mm)].sum() / total)


def chance_level(labels: np.ndarray, brain: np.ndarray, margin_mm: float = POINTING_MARGIN_MM) -> float:
    """The pointing score of a map spread evenly over ``brain`` (or any region a map can
    cover): the share of it the tumour region covers."""
    return float((tumour_region(labels, margin_mm) & brain).sum() / max(1, int(brain.sum())))


def split_cases(model_dir: Path, cases: list[LabelledCase], split: str) -> list[LabelledCase]:
    """The cases of ``split`` (``train``, ``validation``, ``test``) of the model's ``split.json``,
    or all of them for ``all``."""
    if split == "all":
        return cases
    path = model_dir / SPLIT_FILE
    if not path.is_file():
        raise ValueError(f"{model_dir} has no {SPLIT_FILE} (a model trained before it was written); "
                         "measure on cases it never saw with --split all and a cohort of its own")
    recorded = json.loads(path.read_text())
    names = recorded.get(split)
    if names is None:
        raise ValueError(f"{path} has no {split!r} split; it has {', '.join(recorded)}")
    chosen = [c for c in cases if c.name in set(names)]
    if not chosen:
        raise ValueError(f"none of the {split} cases of {path} is in this cohort; is it the cohort the model was "
                         "trained on?")
    digests = recorded.get("test_masks_sha256", {}) if split == "test" else {}
    other = [c.name for c in chosen if c.name in digests and mask_digest(c) != digests[c.name]]
    if other:
        raise ValueError(f"{len(other)} of the test cases named in {path} have other masks in this cohort "
                         f"(e.g. {other[0]}): a cohort made again with other files is not the model's test split")
    return chosen


def _picture(path: Path, study_flair: np.ndarray, truth: np.ndarray, cams: dict[str, np.ndarray],
             scores: dict[str, float]) -> None:
    """One axial slice through the true tumour's centre: FLAIR, the true tumour and the
    counted region outlined, each target's map over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = int(round(ndimage.center_of_mass(truth > 0)[0]))
    region = tumour_region(truth, POINTING_MARGIN_MM)
    fig, axes = plt.subplots(1, len(cams), figsize=(3.2 * len(cams), 3.4), squeeze=False)
    for ax, (target, cam) in zip(axes[0], sorted(cams.items())):
        ax.imshow(study_flair[z], cmap="gray", origin="lower")
        ax.imshow(np.ma.masked_less_equal(cam[z], 0.05), cmap="hot", alpha=0.55, vmin=0, vmax=1, origin="lower")
        ax.contour(truth[z] > 0, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.contour(region[z], levels=[0.5], colors="lime", linewidths=0.6, linestyles="dashed")
        ax.set_title(f"{target}: pointing {scores[target]:.2f}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def measure_pointing(model_dir: Path, data: Path, out: Path, masks: MaskSource = MaskSource.SEGMENTER,
                     segmentation_model: Path | None = None, split: str = "test", limit: int | None = None,
                     pictures: int = 3, layout: str = "auto", progress: bool = True,
                     mask_cache: Path | None = None) -> dict[str, Any]:
    """Pointing scores of ``model_dir``'s heat maps on the cases of ``data`` (see the module
    doc); figures into ``out``. Returns what ``pointing.json`` holds. ``mask_cache``: a
    training feature cache whose kept segmenter masks are read instead of drawn again
    (the same masks, :func:`~glioma_node.training.radiogenomics.features.mask_folder`)."""
    model = RadiogenomicModel(model_dir)
    cases = [c for c in split_cases(model_dir, load_cases(data, layout), split) if c.seg is not None]
    cases = cases[:limit] if limit else cases
    if not cases:
        raise ValueError(f"{data}: no case with a true tumour mask to measure pointing against")
    if masks == MaskSource.SEGMENTER and segmentation_model is None:
        raise ValueError("pointing inside the segmenter's masks needs a segmentation model")
    out.mkdir(parents=True, exist_ok=True)
    context = model.encoder_config.get("context_mm")
    # The segmenter's masks are kept (in the training cache, else beside the figures), which
    # also tells which of them the node's quality control calls doubtful.
    kept = (mask_cache or out) if masks == MaskSource.SEGMENTER else None
    per_case: dict[str, dict[str, Any]] = {}
    left_out: dict[str, str] = {}
    withheld: list[str] = []
    for case in tqdm(cases, desc="pointing", unit="case", disable=not progress):
        try:
            study = load_study(case, segmentation_model, masks, kept)
            if kept is not None and segmentation_model is not None and mask_doubtful(case, kept, segmentation_model):
                withheld.append(case.name)  # the node shows no map (nor MGMT, IDH, risk) for it
                continue
            truth, _ = true_labels(case, study.grid)
            if not (truth > 0).any():
                raise ValueError("its true mask has no tumour on the study grid")
            result = model.run(study)
        except (ValueError, OSError, RuntimeError) as exc:
            left_out[case.name] = str(exc)
            continue
        scores = {t: round(pointing_score(cam, truth), 4) for t, cam in result.cams.items()}
        # Chance: a map spread evenly over what the network saw (the brain, or the tumour's context in it).
        seen = {t: model.seen_region(t, study) for t in result.cams}
        per_case[case.name] = {"pointing": scores,
                               "chance": {t: round(chance_level(truth, r), 4) for t, r in seen.items()},
                               "on_tumour": {t: round(pointing_score(cam, truth, 0.0), 4)
                                             for t, cam in result.cams.items()},
                               "chance_on_tumour": {t: round(chance_level(truth, r, 0.0), 4)
                                                    for t, r in seen.items()}}
        if len(per_case) <= pictures:
            _picture(out / f"pointing-{case.name}.png", study.images["FLAIR"], truth, result.cams, scores)
    targets = sorted({t for r in per_case.values() for t in r["pointing"]})
    summary: dict[str, Any] = {"model": f"{model.manifest.name} {model.manifest.version}", "data": str(data),
                               "split": split, "masks": str(masks), "margin_mm": POINTING_MARGIN_MM,
                               "context_mm": context,
                               "goal": POINTING_GOAL, "cases": per_case, "left_out": left_out,
                               "withheld_doubtful": withheld, "targets": {}}
    for target in targets:
        values = [r["pointing"][target] for r in per_case.values() if np.isfinite(r["pointing"].get(target, np.nan))]
        chance = [r["chance"][target] for r in per_case.values() if target in r["chance"]]
        tumour = [r["on_tumour"][target] for r in per_case.values() if np.isfinite(r["on_tumour"].get(target, np.nan))]
        tumour_chance = [r["chance_on_tumour"][target] for r in per_case.values() if target in r["chance_on_tumour"]]
        if values:
            summary["targets"][target] = {
                "cases": len(values), "median": round(statistics.median(values), 3), "min": round(min(values), 3),
                "share_meeting_goal": round(sum(v >= POINTING_GOAL for v in values) / len(values), 3),
                "chance_median": round(statistics.median(chance), 3),
                "on_tumour_median": round(statistics.median(tumour), 3),
                "chance_on_tumour_median": round(statistics.median(tumour_chance), 3)}
    with atomic_path(out / "pointing.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    lines = [f"Grad-CAM pointing of {summary['model']} on {len(per_case)} cases ({split} split of `{data.name}`, "
             f"{masks} masks): share of each map's positive mass inside the true whole tumour + "
             f"{POINTING_MARGIN_MM:g} mm (goal ≥ {POINTING_GOAL}).", "",
             "| target | cases | median | minimum | share ≥ 0.7 | chance (median) | inside the tumour itself (median) "
             "| its chance (median) |",
             "|---|---|---|---|---|---|---|---|"]
    for target, r in summary["targets"].items():
        lines.append(f"| {target} | {r['cases']} | {r['median']:.2f} | {r['min']:.2f} | {r['share_meeting_goal']:.2f} | "
                     f"{r['chance_median']:.2f} | {r['on_tumour_median']:.2f} | {r['chance_on_tumour_median']:.2f} |")
    if context is not None:
        lines += ["", f"This model's encoder sees only the tumour and {context:g} mm around it (the mask it runs in), "
                  "and its maps are kept there: the pointing score then says how well that region matches the true "
                  "tumour + margin" + (" (inside the true masks it is 1 by construction)" if masks == MaskSource.TRUE
                                       and float(context) <= POINTING_MARGIN_MM else "")
                  + "; with a context narrower than the margin it stays high wherever the segmenter's region "
                  "overlaps the true tumour. Chance is a map spread evenly over what the network saw; the last two "
                  "columns say where inside that region the map goes: the share inside the true tumour itself "
                  "against what an even map would put there."]
    if withheld:
        lines += ["", f"Withheld ({len(withheld)}): the node's quality control calls the segmenter's mask doubtful, so "
                  f"the node shows no map for {', '.join(sorted(withheld))}."]
    if left_out:
        lines += ["", f"Left out: {', '.join(f'{k} ({v})' for k, v in sorted(left_out.items()))}."]
    with atomic_path(out / "pointing.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return summary
