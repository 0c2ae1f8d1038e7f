"""What a site gains from fine-tuning the segmenter on its own labelled cases, cross-validated.

A hospital deciding whether to label its own scans needs one figure: how much better the
whole-tumour mask gets on *its* patients after fine-tuning on 10, 30 or all of the cases
it labelled. :func:`site_gain` measures it as a site would do it and without flattering it:

* the site's patients are split into ``folds`` parts (seeded shuffle; case folders of one
  patient, told by ``patient_pattern``, stay together); each part is held out once, and
  the cases kept out are never seen by the fine-tuning run that is scored on them (not
  for training, not for choosing a checkpoint);
* for each fold and each size ``n``, the model ``init`` is fine-tuned as ``train seg
  --init MODEL --data <n cases> --real-val <their own validation cases>`` would: the first
  ``n`` of the fold's other cases in one seeded order (so 10 are inside 30, inside all), the
  last fifth of their patients (at most three, whole patients) choosing the checkpoint by
  their whole-case Dice, the rest training;
* the held-out cases are scored as checkpoints are (:func:`real_cases.score`: 2 mm
  whole-tumour Dice, mirror averaged; a patient's studies averaged), and so is ``init``
  unchanged (size 0); every patient is held out exactly once, so each size gives one Dice
  per patient, and the gain is the
  per-patient difference from size 0 (median, mean with a bootstrap 95 % interval, how
  many improved and how many got worse).

Every run checkpoints (``train seg --resume``) and each finished run writes its result
file: the measurement continues across sittings where it stopped, and sizes may be added
later. The output folder holds weights fine-tuned on the site's patients: keep it with
the site's data (never in a model that ships). Writes ``OUT/gain.json``, ``OUT/gain.md``
and ``OUT/gain.png`` after every finished run.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import re
import shutil
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glioma_node.core.files import atomic_path
from glioma_node.dicom_io.nifti import read_nifti
from glioma_node.inference.model_dir import Manifest, read_manifest
from glioma_node.training.seg.dataset import (
    WHOLE_TUMOUR_LABEL,
    brats_images,
    find_cases,
    label_file,
    refuse_binary_brats_label,
)
from glioma_node.training.seg.real_cases import RealCase, default_cache, load_real_cases, score

POOR_DICE = 0.70  # the whole-tumour Dice below which a mask is called a failure (the "none < 0.70")
PLAN_KEYS = ("data_sha256", "init_sha256", "patients", "patient_pattern", "folds", "iterations", "learning_rate",
             "validate_every", "patch", "spacing_mm", "seed")
"""What makes two sittings one measurement. Not where the data lies: the same files moved to
another folder or machine (their digest and patients unchanged) continue the measurement."""


@dataclass(frozen=True)
class GainSettings:
    """How the curve is measured. ``sizes``: numbers of site cases per fine-tuning run,
    ``None`` for all of a fold's other cases; ``iterations`` and ``learning_rate`` are those
    of each fine-tuning run (train seg's one-cycle schedule); ``patient_pattern`` a regular
    expression whose first group names a case folder's patient (None: each folder is one
    patient); ``threads`` CPU threads."""

    folds: int = 4
    sizes: tuple[int | None, ...] = (10, 30, None)
    iterations: int = 600
    learning_rate: float = 3e-4
    validate_every: int = 200
    patch: int = 80
    spacing_mm: float = 2.0
    threads: int = 2
    seed: int = 0
    patient_pattern: str | None = None
    cache: Path | None = None  # prepared site cases (default: real_cases.default_cache())


@dataclass
class Fold:
    """One fold: the case folders held out and the others in the order runs take them."""

    index: int
    held_out: list[Path]
    others: list[Path] = field(default_factory=list)

    def train_cases(self, size: int | None) -> list[Path]:
        return self.others if size is None else self.others[:size]


def patient_of(case: Path, pattern: str | None) -> str:
    """The patient a case folder belongs to: the first group of ``pattern`` searched in the
    folder's name, or the name itself."""
    if pattern is None:
        return case.name
    found = re.search(pattern, case.name)
    if found is None or not found.groups():
        raise ValueError(f"patient pattern {pattern!r} finds no patient (its first group) in case folder "
                         f"{case.name!r}; give a pattern every case folder matches, e.g. '^(.+)-\\d+$'")
    return found.group(1)


def plan_folds(cases: list[Path], folds: int, seed: int, patient_pattern: str | None = None) -> list[Fold]:
    """Split ``cases`` into ``folds`` held-out parts of near-equal numbers of patients (the
    split depends on the patients' names, not the listing order); a patient's folders are
    held out together and follow each other in the training order."""
    if folds < 2:
        raise ValueError(f"folds: {folds}; cross-validation needs at least 2")
    groups: dict[str, list[Path]] = {}
    for case in sorted(cases):
        groups.setdefault(patient_of(case, patient_pattern), []).append(case)
    if len(groups) < 2 * folds:
        raise ValueError(f"{len(groups)} site patients for {folds} folds; need at least {2 * folds}")
    names = sorted(groups)
    rng = np.random.default_rng([seed, 2718])
    names = [names[i] for i in rng.permutation(len(names))]
    parts = [names[k::folds] for k in range(folds)]
    return [Fold(k + 1, sorted(c for n in part for c in groups[n]),
                 [c for n in names if n not in part for c in groups[n]]) for k, part in enumerate(parts)]


def check_sizes(folds: list[Fold], sizes: tuple[int | None, ...]) -> None:
    """Refuse, before any work, a size no fold can give (and one that is "all" for some fold)."""
    smallest = min(len(f.others) for f in folds)
    for size in sizes:
        if size is not None and size < 2:
            raise ValueError(f"sizes: {size}; a fine-tuning run needs at least 2 site cases")
        if size is not None and size >= smallest:
            raise ValueError(f"sizes: {size} site cases asked for, but with {len(folds)} folds the smallest fold has "
                             f"{smallest} cases outside its held-out part; give sizes below {smallest} and 'all'")


def _run_name(fold: Fold, size: int | None) -> str:
    return f"fold-{fold.index}-" + ("all" if size is None else f"n{size}")


def _read_result(path: Path) -> dict | None:
    """A finished run's result, or None when there is none or it did not survive (a crash
    while it was written): then the run is scored again."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _clean(run_dir: Path) -> None:
    """A scored run needs neither its resume state nor per-step weights."""
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    (run_dir / "checkpoint.pt").unlink(missing_ok=True)


@contextmanager
def _only_sitting(out: Path) -> Iterator[None]:
    """One sitting per output folder: a second one would resume the same checkpoints."""
    with open(out / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ValueError(f"{out}: another site-gain sitting is working in this folder; wait for it to end") from None
        yield


def _score_model(model_dir: Path, held_out: list[RealCase]) -> dict:
    from glioma_node.inference.networks import DEFAULT_ARCHITECTURE, build_network, device
    from glioma_node.training.seg.train import initial_weights

    net = build_network(DEFAULT_ARCHITECTURE)
    initial_weights(net, model_dir)
    dev = device()
    return {**score(net.to(dev), held_out, dev), "device": str(dev)}


def _fine_tune(cases: list[Path], init: Path, run_dir: Path, settings: GainSettings, progress: bool,
               command: str) -> dict:
    """``train seg --init`` on ``cases``: the last fifth of their patients (at most three,
    whole patients, so no patient both trains and chooses) choose the checkpoint by
    whole-case Dice, the others train."""
    from glioma_node.training.seg.train import TrainSettings, train_segmentation

    patients = list(dict.fromkeys(patient_of(c, settings.patient_pattern) for c in cases))
    chooser = set(patients[-min(3, max(1, len(patients) // 5)):])
    validation = [c for c in cases if patient_of(c, settings.patient_pattern) in chooser]
    resumed = (run_dir / "checkpoint.pt").is_file()
    train = TrainSettings(iterations=settings.iterations, patch=settings.patch, spacing_mm=settings.spacing_mm,
                          learning_rate=settings.learning_rate, validate_every=settings.validate_every,
                          seed=settings.seed, threads=settings.threads, init=init, resume=resumed,
                          validation_cases=0, real_validation=tuple(validation), real_cache=settings.cache)
    log = train_segmentation([c for c in cases if c not in validation], run_dir, train, progress=progress,
                             command=command)
    return {"train_cases": log["train_cases"], "validation_cases": log["real_validation_cases"],
            "chosen_step": log["chosen_step"], "training_seconds": log["seconds"], "device": log["device"],
            "resumed": resumed}


def _check_cases(cases: list[Path]) -> None:
    """Refuse before any work what training would refuse later: a 0/1 mask under a BraTS
    label name (see :func:`refuse_binary_brats_label`), a BraTS-labelled case without all
    four sequences. Only labels not named as whole-tumour masks are read."""
    for case in cases:
        label = label_file(case)
        if label is not None and not label.match(WHOLE_TUMOUR_LABEL):
            refuse_binary_brats_label(label, read_nifti(label)[0])
            brats_images(case)


def _content_sha256(cases: list[Path]) -> str:
    """One digest of every case's NIfTI files (images and label), so a label corrected in
    place between sittings is seen: runs scored against the old one would not compare."""
    digest = hashlib.sha256()
    for case in cases:
        for path in sorted(case.rglob("*.nii*")):
            digest.update(f"{case.name}/{path.relative_to(case)}".encode())
            with open(path, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def init_warning(manifest: Manifest) -> str | None:
    """What a starting model's own history says about the curve: a model fine-tuned on real
    cases, or one whose checkpoint was chosen on real cases, may have seen the site's; its
    "0 cases" figures (and the held-out ones after) then flatter it."""
    training = manifest.data.get("training", {})
    if manifest.name.endswith("-finetuned"):
        return (f"is itself a fine-tuned model ({training.get('data', '')}); if it saw any of these cases, their "
                "held-out figures flatter it")
    if "real_validation" in training:
        return (f"had its checkpoint chosen on {training['real_validation'].get('cases', 'some')} real cases; if "
                "these were among them, the figures without fine-tuning flatter it")
    return None


def site_gain(data: Path, init: Path, out: Path, settings: GainSettings | None = None,
              progress: bool = True, command: str = "") -> dict:
    """Measure the curve (see the module doc) for the site's case folders under ``data``
    and the model directory ``init``; results go to ``out``. Returns the summary written to
    ``OUT/gain.json``. ``command``: the command line, recorded with each run."""
    settings = settings or GainSettings()
    torch.set_num_threads(settings.threads)
    cache = settings.cache or default_cache()
    cases = find_cases(Path(data))
    folds = plan_folds(cases, settings.folds, settings.seed, settings.patient_pattern)
    check_sizes(folds, settings.sizes)
    _check_cases(cases)
    manifest = read_manifest(init)
    warning = init_warning(manifest)
    if warning:
        print(f"site-gain: {init} {warning}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    plan = {"data": str(Path(data).resolve()), "data_sha256": _content_sha256(cases),
            "init": str(Path(init).resolve()), "init_sha256": manifest.sha256,
            "patients": sorted({patient_of(c, settings.patient_pattern) for c in cases}),
            "patient_pattern": settings.patient_pattern,
            "folds": [[c.name for c in f.held_out] for f in folds], "iterations": settings.iterations,
            "learning_rate": settings.learning_rate, "validate_every": settings.validate_every,
            "patch": settings.patch, "spacing_mm": settings.spacing_mm, "seed": settings.seed,
            "init_name": f"{manifest.name} {manifest.version}"}
    with _only_sitting(out):
        plan_file = out / "plan.json"
        before = _read_result(plan_file)
        if before is not None:
            older = [k for k in PLAN_KEYS if k not in before]  # a plan written before the key existed
            if older:
                print(f"site-gain: {plan_file} predates {', '.join(older)}; not compared, recorded from now on",
                      file=sys.stderr)
            differ = [k for k in PLAN_KEYS if k in before and before[k] != plan[k]]
            if differ:
                raise ValueError(f"{out} holds a measurement with other {', '.join(differ)} ({plan_file}); use another "
                                 "--out, or the same data, model and settings (only --sizes may change)")
        with atomic_path(plan_file, fsync=True) as tmp:
            tmp.write_text(json.dumps(plan, indent=1))
        for fold in folds:
            held_out: list[RealCase] | None = None
            for size in (0, *settings.sizes):
                name = f"fold-{fold.index}-n0" if size == 0 else _run_name(fold, size)
                run_dir = out / "runs" / name
                if _read_result(run_dir / "result.json") is not None:
                    _clean(run_dir)  # a sitting that ended between scoring and cleaning
                    continue
                if held_out is None:
                    held_out, empty = _held_out(fold, cache, settings, progress)
                if size == 0:
                    result: dict = {"fine_tuned": False, "training_seconds": 0.0, "train_cases": [],
                                    "validation_cases": []}
                    scores = _score_model(init, held_out)
                else:
                    result = {"fine_tuned": True, **_fine_tune(
                        fold.train_cases(size), init, run_dir, settings, progress,
                        command + f"  # fold {fold.index}, {'all' if size is None else size} site cases")}
                    scores = _score_model(run_dir, held_out)
                result.update({"fold": fold.index, "size": 0 if size == 0 else len(fold.train_cases(size)),
                               "asked": "all" if size is None else size, "held_out": scores["cases"],
                               "left_out_empty": empty, "scored_on": scores["device"], "threads": settings.threads})
                run_dir.mkdir(parents=True, exist_ok=True)
                with atomic_path(run_dir / "result.json", fsync=True) as tmp:
                    tmp.write_text(json.dumps(result, indent=1))
                _clean(run_dir)
                summarise(out, settings)
        return summarise(out, settings)


def _held_out(fold: Fold, cache: Path, settings: GainSettings, progress: bool) -> tuple[list[RealCase], list[str]]:
    """The fold's held-out cases, prepared, and the names of those left out: one whose label
    is empty on the 2 mm grid (a Dice of two empty masks is 1 and would flatter every run);
    said, and recorded in each run's result."""
    cases = load_real_cases(fold.held_out, cache, settings.spacing_mm, progress=progress, only_this_folder=True)
    empty = [c.name for c in cases if not c.reference.any()]
    if empty:
        print(f"site-gain: fold {fold.index}: {', '.join(empty)} left out (no tumour left on the "
              f"{settings.spacing_mm} mm grid)", file=sys.stderr)
    return [c for c in cases if c.reference.any()], empty


def _bootstrap_mean(values: list[float], seed: int = 0, draws: int = 2000) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``values`` (resampled with replacement)."""
    rng = np.random.default_rng(seed)
    data = np.asarray(values)
    means = data[rng.integers(0, len(data), (draws, len(data)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _order(asked: str) -> int:
    return -1 if asked == "0" else 10**6 if asked == "all" else int(asked)


def _per_patient(results: list[dict], pattern: str | None) -> dict[str, float]:
    """Held-out Dice per patient (the mean of a patient's case folders), so a patient with
    several studies counts once in every statistic."""
    folders: dict[str, list[float]] = {}
    for r in results:
        for case, d in r["held_out"].items():
            folders.setdefault(patient_of(Path(case), pattern), []).append(d)
    return {p: float(np.mean(v)) for p, v in folders.items()}


def summarise(out: Path, settings: GainSettings) -> dict:
    """Pool the finished runs of ``out`` per asked size (each patient held out once) into
    ``gain.json``, ``gain.md`` and ``gain.png``; the gain of a size is the per-patient
    difference from the unchanged model on the same folds."""
    results = [r for p in sorted((out / "runs").glob("*/result.json")) if (r := _read_result(p)) is not None]
    by_size: dict[str, list[dict]] = {}
    for r in results:
        by_size.setdefault(str(r["asked"]), []).append(r)
    pattern = settings.patient_pattern
    baseline = _per_patient(by_size.get("0", []), pattern)
    rows: list[dict[str, Any]] = []
    for asked in sorted(by_size, key=_order):
        group = by_size[asked]
        dice = _per_patient(group, pattern)
        values = list(dice.values())
        if not values:  # every held-out case of these folds was left out
            continue
        row: dict[str, Any] = {"site_cases": asked, "cases_per_run": sorted({r["size"] for r in group}),
               "folds_done": len(group), "held_out_patients": len(values),
               "left_out_empty": sorted(c for r in group for c in r.get("left_out_empty", [])),
               "median": round(statistics.median(values), 3), "mean": round(float(np.mean(values)), 3),
               "min": round(min(values), 3), "below_0_70": sum(d < POOR_DICE for d in values),
               "wall_seconds_per_run": round(float(np.mean([r["training_seconds"] for r in group]))),
               "threads": sorted({int(r.get("threads", settings.threads)) for r in group}),
               "device": sorted({r.get("device", r.get("scored_on", "cpu")) for r in group})}
        paired = [dice[c] - baseline[c] for c in dice if c in baseline]
        if asked != "0" and paired:
            low, high = _bootstrap_mean(paired)
            row["gain"] = {"patients": len(paired), "median": round(statistics.median(paired), 3),
                           "mean": round(float(np.mean(paired)), 3), "mean_95ci": [round(low, 3), round(high, 3)],
                           "improved": sum(d > 0.01 for d in paired), "worse": sum(d < -0.01 for d in paired)}
        rows.append(row)
    summary = {"folds": settings.folds, "iterations": settings.iterations, "learning_rate": settings.learning_rate,
               "threads": settings.threads, "rows": rows}
    with atomic_path(out / "gain.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=1))
    lines = ["| site cases used | cases per run | folds done | held-out patients | median Dice | mean | min | "
             "Dice < 0.70 | gain per patient: median, mean (95 % CI) | better / worse by > 0.01 | "
             "fine-tuning per run (wall clock) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        gain = r.get("gain")
        gain_words = (f"{gain['median']:+.3f}, {gain['mean']:+.3f} ({gain['mean_95ci'][0]:+.3f} to "
                      f"{gain['mean_95ci'][1]:+.3f})" if gain else "")
        time_words = "none (as shipped)" if r["site_cases"] == "0" else \
            f"{r['wall_seconds_per_run'] / 60:.0f} min, {'/'.join(map(str, r['threads']))} threads, " \
            f"{'/'.join(r['device'])}"
        lines.append(f"| {'0 (the model unchanged)' if r['site_cases'] == '0' else r['site_cases']} | "
                     f"{'/'.join(str(n) for n in r['cases_per_run'])} | {r['folds_done']} | {r['held_out_patients']} | "
                     f"{r['median']:.3f} | {r['mean']:.3f} | {r['min']:.3f} | {r['below_0_70']} | {gain_words} | "
                     + (f"{gain['improved']} / {gain['worse']}" if gain else "") + f" | {time_words} |")
    if len({r["folds_done"] for r in rows}) > 1 or any(r["folds_done"] < settings.folds for r in rows):
        lines.append(f"\nPartial: rows cover {'/'.join(str(r['folds_done']) for r in rows)} of {settings.folds} "
                     "folds, so their patients differ; read each gain column (paired on the same patients), do not "
                     "compare medians across rows.")
    with atomic_path(out / "gain.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    _plot(by_size, pattern, out / "gain.png")
    return summary


def _plot(by_size: dict[str, list[dict]], pattern: str | None, path: Path) -> None:
    """Held-out whole-tumour Dice per patient (``pattern`` tells a folder's patient) against
    the site cases used (the mean number a size gave across folds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not by_size:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    xs: list[float] = []
    medians: list[float] = []
    for asked in sorted(by_size, key=_order):
        group = by_size[asked]
        x = float(np.mean([r["size"] for r in group]))
        dice = list(_per_patient(group, pattern).values())
        if not dice:
            continue
        ax.scatter(x + np.random.default_rng(len(xs)).uniform(-0.8, 0.8, len(dice)), dice, s=8, alpha=0.4,
                   color="tab:blue")
        xs.append(x)
        medians.append(statistics.median(dice))
    ax.plot(xs, medians, color="black", marker="o", label="median over held-out patients")
    ax.axhline(POOR_DICE, color="tab:red", ls="--", lw=1, label=f"Dice {POOR_DICE}")
    ax.set_xlabel("site cases used for fine-tuning (0: the model unchanged)")
    ax.set_ylabel("whole-tumour Dice, held-out patients")
    ax.set_ylim(0, 1)
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
