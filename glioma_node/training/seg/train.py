"""`glioma-node train seg`: train the segmenter with domain randomisation.

Every step draws a fresh sample (:mod:`glioma_node.training.seg.generator`) from a random training
case: a random 3D rotation (±12°) and scaling (±10 %), a left-right flip, a crop biased
towards the tumour, then synthetic contrasts and scanner effects. Validation uses
fixed samples of held-out cases (seeded, so curves compare across steps).

Writes to ``MODEL_DIR``: ``model.pt`` (the chosen checkpoint), ``manifest.json``,
``curves.png``, ``training-log.json`` and ``MODEL_CARD.md``. ``checkpoint.pt`` (weights,
optimiser, schedule, step, logs) is written at every validation, so a run stopped at any
moment resumes from its last validation with ``--resume`` and the same settings; the
weights of every validated step are kept in ``checkpoints/step-<N>.pt``.

**Choosing the checkpoint.** With ``--real-val DIR`` (real labelled cases, see
:mod:`glioma_node.training.seg.real_cases`) every checkpoint is also scored on real scans,
and ``model.pt`` is the step with the best median real whole-tumour Dice (then the best
minimum): selection on real data, never training on it, and the manifest and card say so.
Without real cases, the best mean synthetic validation Dice chooses.
"""
from __future__ import annotations

import json
import math
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from glioma_node.core.files import atomic_path
from glioma_node.core.roles import ROLES
from glioma_node.inference.model_dir import read_manifest, write_manifest
from glioma_node.inference.networks import DEFAULT_ARCHITECTURE, build_network, device
from glioma_node.inference.regions import REGIONS, dice
from glioma_node.training.seg.card import write_card
from glioma_node.training.seg.dataset import Case, find_cases, load_case
from glioma_node.training.seg.generator import Sample, augment, synthesise
from glioma_node.training.seg.real_cases import default_cache

OUTPUTS = REGIONS
SEG_KIND = "glioma-node-segmentation"
FIRST_VERSION = "1.0.0"  # a trained model's version unless --model-version names another


@dataclass
class TrainSettings:
    """Hyper-parameters; sizes in voxels of the working grid (``spacing_mm``)."""

    iterations: int = 3000
    patch: int = 80
    spacing_mm: float = 2.0
    learning_rate: float = 2e-3
    validation_cases: int = 3
    validate_every: int = 200
    seed: int = 0
    threads: int = 2
    init: Path | None = None  # a model directory to start from (fine-tuning) instead of random weights
    resume: bool = False  # continue from MODEL_DIR/checkpoint.pt
    stop_after: int | None = None  # steps to run in this sitting (then checkpoint and stop; resume later)
    real_validation: tuple[Path, ...] = ()  # folders of real labelled cases: score every checkpoint, choose by them
    real_cache: Path | None = None  # where their prepared arrays are kept (default: default_cache())
    ema_decay: float = 0.0  # > 0: validate and keep an exponential moving average of the weights (see WeightAverage)
    version: str | None = None  # the version the manifest and card give the model (None: a resumed run's, else 1.0.0)


class WeightAverage:
    """An exponential moving average of a network's weights, the copy validated and kept.

    At a high learning rate the weights jump between solutions from one validation to the
    next (real-case median Dice 0.71 to 0.80 within 1000 steps); their average is steadier
    and usually better than any one of them (Polyak averaging). Update ``t`` (from 0)
    weighs the old average by ``min(decay, t / (t + 1))``: the plain mean of the steps so
    far until there are ``1 / (1 - decay)`` of them, then the moving average; the weights
    the average starts from count for nothing.
    """

    @staticmethod
    def check(decay: float) -> None:
        """Refuse a decay outside (0, 1), with the setting's name."""
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay: {decay} must lie in (0, 1) (e.g. 0.999), or be 0 for no averaging")

    def __init__(self, net: torch.nn.Module, decay: float, state: dict | None = None) -> None:
        self.check(decay)
        if state is not None and state.get("decay", decay) != decay:
            raise ValueError(f"ema_decay: the run being resumed averaged with decay {state['decay']}; resume with "
                             f"--ema-decay {state['decay']}")
        self.decay = decay
        self.updates = int(state["updates"]) if state else 0
        own = net.state_dict()  # the average lives where the network does (a checkpoint is read onto the CPU)
        source = state["weights"] if state else own
        self.weights = {k: v.detach().to(own[k].device).clone() for k, v in source.items()}

    @torch.no_grad()
    def update(self, net: torch.nn.Module) -> None:
        d = min(self.decay, self.updates / (self.updates + 1))
        for key, value in net.state_dict().items():
            if value.dtype.is_floating_point:
                self.weights[key].mul_(d).add_(value.detach(), alpha=1 - d)
            else:
                self.weights[key].copy_(value)
        self.updates += 1

    def state(self) -> dict:
        return {"weights": self.weights, "updates": self.updates, "decay": self.decay}


def initial_weights(net: torch.nn.Module, init: Path) -> None:
    """Load ``init``'s weights into ``net``; an older model whose outputs were brain, WT,
    TC, ET gives its WT, TC, ET rows to the three-output head (its brain row is dropped)."""
    manifest = read_manifest(init, SEG_KIND)
    state = torch.load(manifest.weights_path, map_location="cpu", weights_only=True)
    old_outputs = list(manifest.data["output"]["channels"])
    if old_outputs != list(OUTPUTS):
        rows = [old_outputs.index(r) for r in OUTPUTS]
        own = net.state_dict()
        for key, value in state.items():
            if key in own and own[key].shape != value.shape and value.shape[0] == len(old_outputs):
                state[key] = value[rows]
    net.load_state_dict(state)


def _random_spatial(case: Case, rng: np.random.Generator, patch: int) -> tuple[np.ndarray | None, np.ndarray | None,
                                                                               np.ndarray, np.ndarray]:
    """Rotate, scale, flip and crop a case to ``patch``³ (centre biased to the tumour)."""
    tumour = np.argwhere(case.soft_regions[0] > 0.5)
    if len(tumour) and rng.random() < 0.7:
        centre = tumour[rng.integers(len(tumour))].astype(float) + rng.uniform(-patch / 4, patch / 4, 3)
    else:
        centre = np.argwhere(case.brain).mean(axis=0) + rng.uniform(-8, 8, 3)
    angles = np.radians(rng.uniform(-12, 12, 3))
    rot = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = math.cos(a), math.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    matrix = rot @ np.diag(rng.uniform(0.9, 1.1, 3))
    offset = centre - matrix @ np.full(3, (patch - 1) / 2)
    out = (patch,) * 3

    def warp(a: np.ndarray, order: int) -> np.ndarray:
        return ndimage.affine_transform(a, matrix, offset, output_shape=out, order=order, mode="constant", cval=0)

    brain = warp(case.brain.astype(np.float32), 1) > 0.5
    soft = np.stack([warp(r, 1) for r in case.soft_regions])
    classes = warp(case.classes, 0) if case.classes is not None else None
    images = np.stack([warp(im, 1) for im in case.images]) if case.images is not None else None
    if rng.random() < 0.5:  # left-right: x is the last axis
        brain, soft = brain[..., ::-1], soft[..., ::-1]
        classes = classes[..., ::-1] if classes is not None else None
        images = images[..., ::-1] if images is not None else None
    return (None if classes is None else np.ascontiguousarray(classes),
            None if images is None else np.ascontiguousarray(images),
            np.ascontiguousarray(brain), np.ascontiguousarray(soft))


def draw(case: Case, rng: np.random.Generator, patch: int) -> Sample:
    """One randomised training sample of ``case``."""
    classes, images, brain, soft = _random_spatial(case, rng, patch)
    if classes is not None:
        return synthesise(classes, brain, rng, soft)
    if images is None:
        raise ValueError(f"{case.name}: neither tissue classes nor images to train on")
    return augment(images, brain, soft, rng, case.present, case.known)


class _Stream(torch.utils.data.IterableDataset):
    def __init__(self, cases: list[Case], patch: int, seed: int) -> None:
        self.cases, self.patch, self.seed = cases, patch, seed

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, info.id if info else 0])
        while True:
            sample = draw(self.cases[rng.integers(len(self.cases))], rng, self.patch)
            yield torch.from_numpy(sample.image), torch.from_numpy(sample.target), torch.tensor(sample.known)



def _plot(log: list[dict], val: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in log]
    losses = np.array([r["loss"] for r in log])
    k = max(1, len(losses) // 50)
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    a.plot(steps, losses, alpha=0.3, label="loss")
    a.plot(steps[k - 1:], smooth, label=f"mean of {k}")
    a.set_xlabel("step")
    a.set_ylabel("Dice + BCE loss")
    a.legend()
    for name in OUTPUTS:
        known = [r for r in val if r.get(name) is not None]
        if known:
            b.plot([r["step"] for r in known], [r[name] for r in known], marker="o", label=name)
    real = [r for r in val if "real" in r]
    if real:
        b.plot([r["step"] for r in real], [r["real"]["median"] for r in real], marker="s", color="black",
               label=f"real WT median ({len(real[-1]['real']['cases'])} cases)")
        b.plot([r["step"] for r in real], [r["real"]["min"] for r in real], ls="--", color="grey", label="real WT min")
    b.set_xlabel("step")
    b.set_ylabel("validation Dice")
    b.set_ylim(0, 1)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def train_segmentation(data: Path | list[Path], out: Path, settings: TrainSettings | None = None,
                       progress: bool = True, command: str = "") -> dict:
    """Train on the cases under ``data`` (a folder searched for case folders, or the case
    folders themselves, as a cross-validation fold names them) and write the model
    directory ``out``; returns the log.

    ``command`` is the command line that ran this training, recorded in the manifest so
    the model card can say how to reproduce it.
    """
    from monai.losses import DiceLoss

    settings = settings or TrainSettings()
    if settings.ema_decay:  # before minutes of loading
        WeightAverage.check(settings.ema_decay)
    torch.manual_seed(settings.seed)
    torch.set_num_threads(settings.threads)
    paths = find_cases(Path(data)) if isinstance(data, (str, Path)) else sorted(Path(p) for p in data)
    data_name = Path(data).name if isinstance(data, (str, Path)) else f"{len(paths)} named case folders"
    if settings.validation_cases < 1 and not settings.real_validation:
        raise ValueError("validation_cases: 0 leaves nothing to choose a checkpoint by; give real validation cases")
    least = 2 if settings.validation_cases >= 1 else 1
    if len(paths) < least:
        raise ValueError(f"{data_name}: {len(paths)} labelled case(s) found; training needs at least {least}"
                         + (" (one is held out for validation)" if least == 2 else ""))
    n_val = min(settings.validation_cases, max(1, len(paths) // 5))
    cache = settings.real_cache or default_cache()
    cases = [load_case(p, settings.spacing_mm, cache) for p in tqdm(paths, desc="loading cases", disable=not progress)]
    # validation_cases 0: real cases alone choose the checkpoint, every --data case trains
    train_cases, val_cases = (cases[:-n_val], cases[-n_val:]) if n_val else (cases, [])
    val_rng = np.random.default_rng([settings.seed, 999])
    val_samples = [draw(c, val_rng, settings.patch) for c in val_cases for _ in range(2)]

    real_cases = []
    if settings.real_validation:
        from glioma_node.training.seg.real_cases import load_real_cases

        real_cases = load_real_cases(list(settings.real_validation), cache, settings.spacing_mm, progress=progress)
        empty = [c.name for c in real_cases if not c.reference.any()]
        if empty:  # an empty mask predicted on an empty label scores 1: it would reward under-segmenting
            print(f"train seg: real validation cases without tumour on the {settings.spacing_mm} mm grid left out: "
                  f"{', '.join(empty)}", file=sys.stderr)
            real_cases = [c for c in real_cases if c.reference.any()]
        if not real_cases:
            raise ValueError(f"no real case with a label and FLAIR or T2 under {', '.join(map(str, settings.real_validation))}")
        both = {p.resolve() for p in paths} & {c.folder.resolve() for c in real_cases if c.folder is not None}
        if both:
            raise ValueError(f"{len(both)} case(s) are both training and real validation cases (e.g. {min(both)}): "
                             "a checkpoint chosen on cases it trained on says nothing; keep --real-val apart from --data")

    dev = device()
    net = build_network(DEFAULT_ARCHITECTURE)
    if settings.init is not None:
        initial_weights(net, settings.init)
    net = net.to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=settings.learning_rate, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=settings.learning_rate, total_steps=settings.iterations,
                                                pct_start=0.05)
    dice_loss = DiceLoss(sigmoid=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=True)
    bce = torch.nn.BCEWithLogitsLoss()
    out.mkdir(parents=True, exist_ok=True)
    log: list[dict] = []
    val_log: list[dict] = []
    best: tuple[float, float, float] = (-1.0, -1.0, -1.0)
    first = 1
    elapsed = 0.0
    checkpoint = out / "checkpoint.pt"
    average_state = None
    version = settings.version or FIRST_VERSION
    if settings.resume:
        if not checkpoint.is_file():
            raise ValueError(f"{checkpoint}: no checkpoint to resume from (start without --resume)")
        saved = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if saved["iterations"] != settings.iterations:
            raise ValueError(f"{checkpoint} belongs to a {saved['iterations']}-step run; resume with "
                             f"--iterations {saved['iterations']}")
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        log, val_log, elapsed = saved["log"], saved["val_log"], saved["elapsed"]
        average_state = saved.get("average")
        version = settings.version or saved.get("version", FIRST_VERSION)  # carried across sittings
        _check_same_selection(checkpoint, val_log, real_cases)
        best = max((_merit(v) for v in val_log), default=best)
        first = saved["step"] + 1
    if average_state is not None and not settings.ema_decay:
        raise ValueError(f"{checkpoint} keeps a moving average of the weights (decay {average_state.get('decay')}); "
                         "resume with the same --ema-decay, or the average it validates would be dropped")
    # a run that had no average may start one when resumed: from then on the average is validated
    average = WeightAverage(net, settings.ema_decay, average_state) if settings.ema_decay else None
    # The sample stream is seeded by the step it starts at, so a resumed run draws new samples.
    loader = torch.utils.data.DataLoader(_Stream(train_cases, settings.patch, settings.seed + 7919 * (first - 1)),
                                         batch_size=1, num_workers=1, prefetch_factor=4, persistent_workers=True)
    start = time.time() - elapsed
    bar = tqdm(total=settings.iterations, initial=first - 1, desc="training", unit="step", disable=not progress)
    last = settings.iterations if settings.stop_after is None else min(settings.iterations,
                                                                       first - 1 + settings.stop_after)
    for step, (image, target, known) in enumerate(loader, start=first):
        if step > last:
            break
        net.train()
        image, target = image.to(dev), target.to(dev)
        logits = net(image)
        rows = known[0].nonzero().flatten().tolist()  # the regions this sample's label defines
        loss = dice_loss(logits[:, rows], target[:, rows]) + bce(logits[:, rows], target[:, rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if average is not None:
            average.update(net)
        log.append({"step": step, "loss": loss.item(), "seconds": round(time.time() - start, 1)})
        bar.update(1)
        bar.set_postfix(loss=f"{log[-1]['loss']:.3f}")
        if step % settings.validate_every == 0 or step == last:
            trained = None
            if average is not None:  # the average is what is validated and kept; training goes on from the weights
                trained = {k: v.detach().clone() for k, v in net.state_dict().items()}
                net.load_state_dict(average.weights)
            scores = _validate(net, val_samples, dev)
            entry: dict = {"step": step, **scores, "seconds": round(time.time() - start, 1),
                           **({"weights": f"moving average, decay {settings.ema_decay}"} if average else {})}
            if real_cases:
                from glioma_node.training.seg.real_cases import score

                entry["real"] = score(net, real_cases, dev)
            val_log.append(entry)
            (out / "checkpoints").mkdir(exist_ok=True)
            with atomic_path(out / "checkpoints" / f"step-{step}.pt") as tmp:
                torch.save(net.state_dict(), tmp)
            merit = _merit(entry)
            if merit > best:
                best = merit
                with atomic_path(out / "model.pt") as tmp:
                    torch.save(net.state_dict(), tmp)
            if trained is not None:
                net.load_state_dict(trained)
            _plot(log, val_log, out / "curves.png")
            with atomic_path(checkpoint, fsync=True) as tmp:  # a power cut leaves the last one whole
                torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                            "step": step, "iterations": settings.iterations, "log": log, "val_log": val_log,
                            "best": best, "elapsed": time.time() - start, "version": version,
                            **({"average": average.state()} if average else {})}, tmp)
            bar.write(f"step {step}: validation " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items() if v is not None)
                      + (f"; real whole tumour median {entry['real']['median']:.3f}, min {entry['real']['min']:.3f}"
                         if real_cases else ""))
        if step >= last:
            break
    bar.close()
    seconds = time.time() - start
    chosen = max(val_log, key=_merit) if val_log else {"step": 0, **{r: 0.0 for r in REGIONS}}
    kept = out / "checkpoints" / f"step-{chosen['step']}.pt"
    if kept.is_file():  # model.pt is the chosen step's weights, whatever happened between sittings
        with atomic_path(out / "model.pt") as tmp:
            tmp.write_bytes(kept.read_bytes())
    chosen_synthetic = [chosen[r] for r in REGIONS if chosen[r] is not None]
    synthetic_mean = round(float(np.mean(chosen_synthetic)), 4) if chosen_synthetic else None
    selection = (f"median real whole-tumour Dice on {len(chosen['real']['cases'])} real cases" if "real" in chosen
                 else "mean Dice on held-out synthetic samples")
    synthetic = all(c.classes is not None for c in cases)
    data_words = ("synthetic only (glioma-node synth), label-driven domain randomisation" if synthetic else
                  f"{sum(c.classes is None for c in cases)} image cases of {data_name} "
                  f"and {sum(c.classes is not None for c in cases)} label-driven synthetic cases")
    result = {"settings": {k: str(v) if isinstance(v, Path) else
                           [str(p) for p in v] if isinstance(v, tuple) else v for k, v in settings.__dict__.items()},
              "train_cases": [c.name for c in train_cases],
              "validation_cases": [c.name for c in val_cases], "seconds": round(seconds, 1),
              "device": str(dev), "host": platform.node(), "best_validation_mean_dice": synthetic_mean,
              "chosen_step": chosen["step"], "selection": selection, "chosen_real": chosen.get("real"),
              "real_validation_cases": [c.name for c in real_cases], "validation": val_log, "loss": log}
    (out / "training-log.json").write_text(json.dumps(result, indent=1))
    write_manifest(out, {
        "name": "glioma-node-segresnet-synth" if synthetic else "glioma-node-segresnet-finetuned",
        "version": version,
        "kind": SEG_KIND,
        "weights": "model.pt",
        "architecture": DEFAULT_ARCHITECTURE,
        "input": {"channels": list(ROLES), "spacing_mm": settings.spacing_mm,
                  # the generator drops sequences at random, never FLAIR and T2 together
                  "required_channels": [], "required_any": ["FLAIR", "T2"],
                  "orientation": "axis-aligned LPS (inference.grid.canonical_grid)",
                  "normalisation": "skull-stripped (inference.brain_extraction), inference.intensity.zscore inside "
                                   "the brain, per channel; a missing channel is zeros",
                  "size_multiple": 8},
        "output": {"channels": list(OUTPUTS), "activation": "sigmoid", "threshold": 0.5},
        "postprocessing": {"min_component_ml": 0.3},
        "training": {"data": data_words,
                     "selection": selection, "chosen_step": chosen["step"],
                     "command": command or f"train_segmentation({data_name!r}, {str(out)!r})",
                     "iterations": settings.iterations, "steps_done": last, "seconds": round(seconds),
                     "device": str(dev),
                     "best_validation_mean_dice": synthetic_mean,
                     **({"weights_average": {"decay": settings.ema_decay, "from_step": _average_start(val_log)}}
                        if settings.ema_decay else {}),
                     **({"real_validation": {"cases": len(real_cases), "median_whole_tumour": chosen["real"]["median"],
                                             "min_whole_tumour": chosen["real"]["min"]}} if "real" in chosen else {})},
        "intended_use": "research use only, not for diagnosis",
    })
    write_card(out)
    return result


def _average_start(val_log: list[dict]) -> int:
    """The first validated step whose weights were a moving average (a run may start one
    when resumed)."""
    return next((v["step"] for v in val_log if "weights" in v), 0)


def _merit(entry: dict) -> tuple[float, float, float]:
    """What chooses the kept checkpoint, compared as a tuple: real-scored steps before any
    synthetic-only one; then the real cases' median whole-tumour Dice, then their minimum;
    else the mean synthetic Dice."""
    if "real" in entry:
        return (1.0, entry["real"]["median"], entry["real"]["min"])
    return (0.0, float(np.mean([entry[r] for r in REGIONS if entry[r] is not None])), 0.0)


def _check_same_selection(checkpoint: Path, val_log: list[dict], real_cases: list) -> None:
    """A run is resumed with the real cases it was validated on (or none, if none): the
    kept step is chosen by one figure over one set of cases, never a mix."""
    before = next((sorted(v["real"]["cases"]) for v in reversed(val_log) if "real" in v), None)
    now = sorted(c.name for c in real_cases) if real_cases else None
    if val_log and before != now:
        said = "no real cases" if before is None else f"{len(before)} real cases"
        raise ValueError(f"{checkpoint} was validated on {said}; resume with the same --real-val folders "
                         f"(now: {'none' if now is None else len(now)})")


@torch.no_grad()
def _validate(net: torch.nn.Module, samples: list[Sample], dev: torch.device) -> dict[str, float | None]:
    """Mean Dice per region over the samples whose label defines that region (None when none does)."""
    net.eval()
    scores: dict[str, list[float]] = {name: [] for name in OUTPUTS}
    for s in samples:
        prob = torch.sigmoid(net(torch.from_numpy(s.image)[None].to(dev)))[0].cpu().numpy()
        for k, (name, p, t) in enumerate(zip(OUTPUTS, prob, s.target)):
            if s.known[k]:
                scores[name].append(dice(p > 0.5, t > 0.5))
    return {name: round(float(np.mean(v)), 4) if v else None for name, v in scores.items()}
