"""What a site gains from fine-tuning the segmenter on its own labelled cases, cross-validated.

A hospital deciding whether to label its own scans needs one figure: how much better the
whole-tumour mask gets on *its* patients after fine-tuning on 10, 30 or all of the cases
it labelled. :func:`site_gain` measures it as a site would do it and without flattering it:

* the site's case folders are split into ``folds`` parts (seeded shuffle); each part is
  held out once, and the cases kept out are never seen by the fine-tuning run that is
  scored on them (not for training, not for choosing a checkpoint);
* for each fold and each size ``n``, ``train seg --init MODEL`` runs on the first ``n`` of
  the fold's other cases in one seeded order (so 10 are inside 30, inside all), with
  train seg's own rule: a fifth of them (at most three) validate and choose the checkpoint;
* the held-out cases are scored as checkpoints are (:func:`real_cases.score`: 2 mm
  whole-tumour Dice, mirror averaged), and so is ``MODEL`` unchanged (size 0);
* every patient is held out exactly once, so each size gives one Dice per patient.

Every run checkpoints (``train seg --resume``) and each finished run writes its result
file: the measurement continues across sittings where it stopped. The output folder holds
the fine-tuned weights of the site's patients: keep it with the site's data (never in a
model that ships). Writes ``OUT/gain.json``, ``OUT/gain.md`` and ``OUT/gain.png``.
"""
from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from glioma_node.core.files import atomic_path
from glioma_node.training.seg.dataset import find_cases
from glioma_node.training.seg.real_cases import RealCase, default_cache, load_real_cases, score

POOR_DICE = 0.70  # the whole-tumour Dice below which a mask is called a failure (the "none < 0.70")


@dataclass(frozen=True)
class GainSettings:
    """How the curve is measured. ``sizes``: numbers of site cases per fine-tuning run,
    ``None`` for all of a fold's other cases; ``iterations`` and ``learning_rate`` are those
    of each fine-tuning run (train seg's one-cycle schedule); ``threads`` CPU threads."""

    folds: int = 4
    sizes: tuple[int | None, ...] = (10, 30, None)
    iterations: int = 600
    learning_rate: float = 3e-4
    validate_every: int = 200
    patch: int = 80
    spacing_mm: float = 2.0
    threads: int = 2
    seed: int = 0
    cache: Path | None = None  # prepared site cases (default: real_cases.default_cache())


@dataclass
class Fold:
    """One fold: the cases held out and the others in the order runs take them."""

    index: int
    held_out: list[Path]
    others: list[Path] = field(default_factory=list)

    def train_cases(self, size: int | None) -> list[Path]:
        return self.others if size is None else self.others[:size]


def plan_folds(cases: list[Path], folds: int, seed: int) -> list[Fold]:
    """Split ``cases`` (sorted first, so the split depends on the names, not the listing
    order) into ``folds`` held-out parts of near-equal size."""
    if folds < 2:
        raise ValueError(f"folds: {folds}; cross-validation needs at least 2")
    if len(cases) < 2 * folds:
        raise ValueError(f"{len(cases)} site cases for {folds} folds; need at least {2 * folds}")
    order = sorted(cases)
    rng = np.random.default_rng([seed, 2718])
    order = [order[i] for i in rng.permutation(len(order))]
    parts = [order[k::folds] for k in range(folds)]
    return [Fold(k + 1, sorted(part), [c for c in order if c not in part]) for k, part in enumerate(parts)]


def _run_name(fold: Fold, size: int | None) -> str:
    return f"fold-{fold.index}-" + ("all" if size is None else f"n{size}")


def _score_model(model_dir: Path, held_out: list[RealCase]) -> dict:
    from glioma_node.inference.networks import DEFAULT_ARCHITECTURE, build_network, device
    from glioma_node.training.seg.train import initial_weights

    net = build_network(DEFAULT_ARCHITECTURE)
    initial_weights(net, model_dir)
    dev = device()
    return score(net.to(dev), held_out, dev)


def _fine_tune(fold: Fold, size: int | None, init: Path, run_dir: Path, settings: GainSettings,
               progress: bool) -> dict:
    from glioma_node.training.seg.train import TrainSettings, train_segmentation

    resume = (run_dir / "checkpoint.pt").is_file()
    train = TrainSettings(iterations=settings.iterations, patch=settings.patch, spacing_mm=settings.spacing_mm,
                          learning_rate=settings.learning_rate, validate_every=settings.validate_every,
                          seed=settings.seed, threads=settings.threads, init=init, resume=resume,
                          real_cache=settings.cache)
    started = time.time()
    log = train_segmentation(fold.train_cases(size), run_dir, train, progress=progress,
                             command=f"glioma-node train site-gain (fold {fold.index}, "
                                     f"{'all' if size is None else size} site cases)")
    return {"train_cases": log["train_cases"], "validation_cases": log["validation_cases"],
            "chosen_step": log["chosen_step"], "training_seconds": log["seconds"],
            "sitting_seconds": round(time.time() - started, 1)}


def site_gain(data: Path, init: Path, out: Path, settings: GainSettings | None = None,
              progress: bool = True) -> dict:
    """Measure the curve (see the module doc) for the site's case folders under ``data``
    and the model directory ``init``; results go to ``out``. Returns the summary written to
    ``OUT/gain.json``."""
    settings = settings or GainSettings()
    torch.set_num_threads(settings.threads)
    cache = settings.cache or default_cache()
    cases = find_cases(Path(data))
    folds = plan_folds(cases, settings.folds, settings.seed)
    out.mkdir(parents=True, exist_ok=True)
    plan = {"data": str(data), "init": str(init), "cases": [c.name for c in sorted(cases)],
            "folds": [[c.name for c in f.held_out] for f in folds],
            "settings": {k: str(v) if isinstance(v, Path) else v for k, v in settings.__dict__.items()}}
    plan_file = out / "plan.json"
    if plan_file.is_file() and json.loads(plan_file.read_text()) != json.loads(json.dumps(plan)):
        raise ValueError(f"{out} holds a measurement of other cases or settings ({plan_file}); "
                         "use another --out or the same --data, --init and settings")
    with atomic_path(plan_file) as tmp:
        tmp.write_text(json.dumps(plan, indent=1))

    for fold in folds:
        held_out = load_real_cases(fold.held_out, cache, settings.spacing_mm, progress=progress,
                                   only_this_folder=True)
        runs: list[tuple[str, int | None]] = [(f"fold-{fold.index}-n0", 0),
                                              *((_run_name(fold, s), s) for s in settings.sizes)]
        for name, size in runs:
            result_file = out / "runs" / name / "result.json"
            if result_file.is_file():
                continue
            if size == 0:
                result = {"fine_tuned": False, "training_seconds": 0.0, "train_cases": [], "validation_cases": []}
                model_dir = init
            else:
                if size is not None and size > len(fold.others):
                    raise ValueError(f"sizes: {size} site cases asked for, fold {fold.index} has {len(fold.others)} "
                                     "outside its held-out part")
                result = {"fine_tuned": True, **_fine_tune(fold, size, init, out / "runs" / name, settings, progress)}
                model_dir = out / "runs" / name
            scores = _score_model(model_dir, held_out)
            result.update({"fold": fold.index, "size": len(fold.train_cases(size)) if size != 0 else 0,
                           "asked": "all" if size is None else size, "held_out": scores["cases"]})
            result_file.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(result_file) as tmp:
                tmp.write_text(json.dumps(result, indent=1))
            if size != 0:  # scored: the resume state and per-step weights are not needed any more
                shutil.rmtree(model_dir / "checkpoints", ignore_errors=True)
                (model_dir / "checkpoint.pt").unlink(missing_ok=True)
    return summarise(out, settings)


def summarise(out: Path, settings: GainSettings) -> dict:
    """Pool the finished runs of ``out`` per size (each patient held out once) into
    ``gain.json``, ``gain.md`` and ``gain.png``."""
    results = [json.loads(p.read_text()) for p in sorted((out / "runs").glob("*/result.json"))]
    by_size: dict[str, list[dict]] = {}
    for r in results:
        by_size.setdefault(str(r["asked"]), []).append(r)
    rows = []
    for asked, group in sorted(by_size.items(), key=lambda kv: -1 if kv[0] == "0" else
                               (10**6 if kv[0] == "all" else int(kv[0]))):
        dice = [d for r in group for d in r["held_out"].values()]
        rows.append({"site_cases": asked, "cases_per_run": sorted({r["size"] for r in group}),
                     "folds_done": len(group), "held_out_patients": len(dice),
                     "median": round(statistics.median(dice), 3), "mean": round(float(np.mean(dice)), 3),
                     "min": round(min(dice), 3), "below_0_70": sum(d < POOR_DICE for d in dice),
                     "training_seconds_per_run": round(float(np.mean([r["training_seconds"] for r in group])))})
    summary = {"folds": settings.folds, "iterations": settings.iterations, "learning_rate": settings.learning_rate,
               "threads": settings.threads, "rows": rows}
    with atomic_path(out / "gain.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    lines = ["| site cases used | cases per run (train + choose) | folds | held-out patients | median Dice | mean | "
             "min | Dice < 0.70 | training per run |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per_run = "/".join(str(n) for n in r["cases_per_run"])
        time_words = "none (the model as shipped)" if r["site_cases"] == "0" else \
            f"{r['training_seconds_per_run'] / 60:.0f} min on {settings.threads} threads"
        lines.append(f"| {'0 (default)' if r['site_cases'] == '0' else r['site_cases']} | {per_run} | "
                     f"{r['folds_done']} | {r['held_out_patients']} | {r['median']:.3f} | {r['mean']:.3f} | "
                     f"{r['min']:.3f} | {r['below_0_70']} | {time_words} |")
    with atomic_path(out / "gain.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    _plot(results, out / "gain.png")
    return summary


def _plot(results: list[dict], path: Path) -> None:
    """Held-out whole-tumour Dice per patient against the site cases used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    sizes = sorted({r["size"] for r in results})
    for x in sizes:
        dice = [d for r in results if r["size"] == x for d in r["held_out"].values()]
        ax.scatter(np.full(len(dice), x) + np.random.default_rng(x).uniform(-0.8, 0.8, len(dice)), dice,
                   s=8, alpha=0.4, color="tab:blue")
        ax.plot([x - 2, x + 2], [statistics.median(dice)] * 2, color="black")
    medians = [statistics.median([d for r in results if r["size"] == x for d in r["held_out"].values()])
               for x in sizes]
    ax.plot(sizes, medians, color="black", marker="o", label="median over held-out patients")
    ax.axhline(POOR_DICE, color="tab:red", ls="--", lw=1, label=f"Dice {POOR_DICE}")
    ax.set_xlabel("site cases used for fine-tuning (0: the default as shipped)")
    ax.set_ylabel("whole-tumour Dice, held-out patients")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
