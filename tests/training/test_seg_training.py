"""Label-driven synthesis and `glioma-node train seg` on small data."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from glioma_node.inference.model_dir import read_manifest
from glioma_node.inference.segmenters.native import NativeSegmenter
from glioma_node.training.seg.generator import CORE, EDEMA_CLASS, ENHANCING_CLASS, synthesise
from glioma_node.training.synth.anatomy import TISSUE_LABELS


def _phantom() -> tuple[np.ndarray, np.ndarray]:
    """A 48³ class map: scalp/bone shells around CSF, grey and white matter, a tumour in the white matter."""
    z, y, x = np.meshgrid(*[np.arange(48)] * 3, indexing="ij")
    r = np.sqrt((z - 24) ** 2 + (y - 24) ** 2 + (x - 24) ** 2)
    classes = np.zeros((48, 48, 48), np.uint8)
    classes[r < 23] = TISSUE_LABELS["scalp"]
    classes[r < 21] = TISSUE_LABELS["bone"]
    classes[r < 19] = TISSUE_LABELS["csf"]
    classes[r < 18] = TISSUE_LABELS["gm"]
    classes[r < 15] = TISSUE_LABELS["wm"]
    t = np.sqrt((z - 24) ** 2 + (y - 20) ** 2 + (x - 28) ** 2)
    classes[t < 10] = EDEMA_CLASS
    classes[t < 6] = ENHANCING_CLASS  # thick enough that blur and thick slices keep its contrast
    classes[t < 2] = CORE
    return classes, r < 19


def test_synthesis_keeps_what_defines_each_compartment_and_nothing_else():
    classes, brain = _phantom()
    wm, edema, enh = classes == TISSUE_LABELS["wm"], classes == EDEMA_CLASS, classes == ENHANCING_CLASS
    rng = np.random.default_rng(3)
    wm_flair = []
    dropped = {"FLAIR": 0, "T1": 0, "T1c": 0, "T2": 0}
    for _ in range(40):
        s = synthesise(classes, brain, rng)
        assert s.image.shape == (4, 48, 48, 48) and s.target.shape == (3, 48, 48, 48)
        assert 0 <= s.target.min() and s.target.max() <= 1
        flair, t1, t1c, t2 = s.image
        # skull-stripped: the mask errs by up to 2 voxels, and leaves scalp or marrow up to 5 more in patches
        assert not (s.image[:, ~ndimage.binary_dilation(brain, iterations=7)] != 0).any(), "skull-stripped"
        assert (flair != 0).any() or (t2 != 0).any(), "FLAIR and T2 are never both dropped"
        for name, channel in (("FLAIR", flair), ("T1", t1), ("T1c", t1c), ("T2", t2)):
            dropped[name] += int(not (channel != 0).any())
        visible = (flair != 0).any(axis=(1, 2))
        if s.target[0].sum() == 0 or not (t1c != 0).any() or not (flair != 0).any():  # nothing to compare
            continue
        sl = visible[:, None, None]
        assert flair[edema & sl].mean() > flair[wm & sl].mean(), "edema is brighter than white matter on FLAIR"
        if (s.target[2] > 0.5).any():  # a diffuse non-enhancing draw has no enhancing label (nor enhancement)
            assert t1c[enh & sl].mean() > t1c[wm & sl].mean(), "enhancing tumour is brighter than white matter on T1c"
        wm_flair.append(float(flair[wm & sl].mean()))
    # contrasts are randomised: white matter's normalised FLAIR level varies from draw to draw
    assert np.std(wm_flair) > 0.1
    # sequences are dropped now and then (p = 0.35 x 0.5 each), never always
    assert all(1 <= n <= 20 for n in dropped.values()), dropped


def test_the_weight_average_follows_a_short_run_and_survives_a_resume():
    import torch

    from glioma_node.training.seg.train import WeightAverage

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    average = WeightAverage(net, 0.99)
    with torch.no_grad():
        net.weight.fill_(1.0)
    average.update(net)  # the weights it started from count for nothing
    assert average.weights["weight"].item() == pytest.approx(1.0)
    with torch.no_grad():
        net.weight.fill_(3.0)
    average.update(net)  # then the plain mean of the steps so far
    assert average.weights["weight"].item() == pytest.approx(2.0)
    with torch.no_grad():
        net.weight.fill_(1.0)
    for _ in range(2000):
        average.update(net)
    with torch.no_grad():
        net.weight.fill_(0.0)
    average.update(net)  # late in a run the decay is the one asked for
    assert average.weights["weight"].item() == pytest.approx(0.99, abs=1e-4)
    resumed = WeightAverage(net, 0.99, average.state())
    assert resumed.updates == 2003 and resumed.weights["weight"].item() == pytest.approx(0.99, abs=1e-4)
    assert net.weight.item() == 0.0  # the network's own weights are never touched
    with pytest.raises(ValueError, match="ema_decay"):
        WeightAverage(net, 1.0)
    with pytest.raises(ValueError, match="resume with --ema-decay 0.99"):
        WeightAverage(net, 0.9, average.state())


@pytest.mark.slow
@pytest.mark.xdist_group("synth")
def test_train_seg_writes_a_model_directory_that_loads(synth_cohort, tmp_path):
    import torch

    from glioma_node.training.seg.train import TrainSettings, train_segmentation

    out = tmp_path / "model"
    # a sitting that stops after 2 of 3 steps, then a second one that resumes; a moving average is kept
    first = train_segmentation(synth_cohort / "nifti", out, TrainSettings(iterations=3, patch=32, validate_every=2,
                                                                          stop_after=2, ema_decay=0.9,
                                                                          version="3.1.0"), progress=False)
    assert [v["step"] for v in first["validation"]] == [2] and (out / "checkpoint.pt").is_file()
    assert "(2 of 3 planned steps in" in (out / "MODEL_CARD.md").read_text()  # a sitting's card says what ran
    result = train_segmentation(synth_cohort / "nifti", out, TrainSettings(iterations=3, patch=32, validate_every=2,
                                                                           resume=True, ema_decay=0.9),
                                progress=False)
    assert read_manifest(out).data["version"] == "3.1.0"  # the first sitting's version, carried by the checkpoint
    assert (out / "MODEL_CARD.md").read_text().startswith("# Model card: glioma-node-segresnet-synth 3.1.0")
    assert "(3 steps in" in (out / "MODEL_CARD.md").read_text()
    saved = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
    kept = torch.load(out / "checkpoints" / "step-3.pt", map_location="cpu")
    assert saved["average"]["updates"] == 3  # carried across the sittings
    assert all(torch.equal(kept[k], saved["average"]["weights"][k]) for k in kept)  # the average is what is kept
    assert not all(torch.equal(kept[k], saved["net"][k]) for k in kept)  # while training goes on from the weights
    assert result["validation"][-1]["weights"] == "moving average, decay 0.9"
    assert read_manifest(out).data["training"]["weights_average"] == {"decay": 0.9, "from_step": 2}
    assert "moving average of the training steps (decay 0.9" in (out / "MODEL_CARD.md").read_text()
    with pytest.raises(ValueError, match="resume with the same --ema-decay"):  # the average is never dropped
        train_segmentation(synth_cohort / "nifti", out, TrainSettings(iterations=3, patch=32, resume=True),
                           progress=False)
    with pytest.raises(ValueError, match="resume with --ema-decay 0.9"):
        train_segmentation(synth_cohort / "nifti", out, TrainSettings(iterations=3, patch=32, resume=True,
                                                                      ema_decay=0.99), progress=False)
    assert [row["step"] for row in result["loss"]] == [1, 2, 3]
    assert len(result["train_cases"]) == 2 and len(result["validation_cases"]) == 1
    for name in ("model.pt", "manifest.json", "curves.png", "training-log.json", "MODEL_CARD.md"):
        assert (out / name).is_file(), name
    manifest = read_manifest(out)
    assert manifest.data["input"]["channels"] == ["FLAIR", "T1", "T1c", "T2"]
    assert manifest.data["input"]["required_channels"] == [] and manifest.data["input"]["required_any"] == ["FLAIR", "T2"]
    assert manifest.data["output"]["channels"] == ["whole_tumour", "tumour_core", "enhancing_tumour"]
    assert manifest.data["intended_use"] == "research use only, not for diagnosis"
    log = json.loads((out / "training-log.json").read_text())
    assert [v["step"] for v in log["validation"]] == [2, 3]
    NativeSegmenter(out)  # loads, checksum and architecture agree
    assert "Research use only, not for diagnosis" in (out / "MODEL_CARD.md").read_text()


@pytest.mark.slow
@pytest.mark.xdist_group("synth")
def test_a_site_fine_tunes_on_its_own_cases_and_chooses_by_real_dice(synth_cohort, tmp_path):
    """`train seg --init <model> --data <site folder>` on cases in the LGG segmentation dataset's
    layout (FLAIR, T1, T1c with skull; label.nii.gz a FLAIR-abnormality mask; no T2): they are
    brain-extracted as inference does, train the whole tumour only, and real cases score
    every checkpoint, the best median whole-tumour Dice kept."""
    import nibabel as nib

    from glioma_node.core.resources import DEFAULT_MODELS
    from glioma_node.training.seg.dataset import load_case
    from glioma_node.training.seg.train import TrainSettings, train_segmentation

    site, held_out = tmp_path / "site", tmp_path / "held-out"
    for n, case in enumerate(sorted((synth_cohort / "nifti").iterdir())):
        folder = (held_out if n == 0 else site) / case.name
        folder.mkdir(parents=True)
        for name in ("flair", "t1", "t1c"):
            shutil.copyfile(case / f"{name}.nii.gz", folder / f"{name}.nii.gz")
        seg = nib.load(case / "seg.nii.gz")
        nib.save(nib.Nifti1Image((np.asarray(seg.dataobj) > 0).astype(np.uint8), seg.affine), folder / "label.nii.gz")
    cache = tmp_path / "cache"
    first = load_case(next(site.iterdir()), cache=cache)
    assert first.known == (True, False, False) and first.present == (True, True, True, False)
    assert first.images is not None and not first.images[3].any() and first.soft_regions[0].sum() > 0
    out = tmp_path / "model"
    with pytest.raises(ValueError, match="both training and real validation cases"):
        train_segmentation(site, out, TrainSettings(iterations=2, patch=32, real_validation=(site,), real_cache=cache),
                           progress=False)
    result = train_segmentation(site, out, TrainSettings(iterations=2, patch=32, validate_every=1, init=DEFAULT_MODELS /
                                                         "segmentation", real_validation=(held_out,),
                                                         real_cache=cache), progress=False)
    assert [v["step"] for v in result["validation"]] == [1, 2]
    for entry in result["validation"]:
        assert entry["tumour_core"] is None and entry["enhancing_tumour"] is None  # the labels define WT only
        assert sorted(entry["real"]["cases"]) == sorted(p.name for p in held_out.iterdir())
    chosen = max(result["validation"], key=lambda v: (v["real"]["median"], v["real"]["min"]))
    assert result["chosen_step"] == chosen["step"] and result["selection"].startswith("median real whole-tumour")
    manifest = read_manifest(out)
    assert manifest.data["training"]["data"].startswith("2 image cases of site")
    assert manifest.data["training"]["real_validation"]["cases"] == 1
    assert manifest.data["name"] == "glioma-node-segresnet-finetuned"
    # the kept weights are the chosen step's
    assert (out / "model.pt").read_bytes() == (out / "checkpoints" / f"step-{chosen['step']}.pt").read_bytes()
    # resuming without the real cases it was validated on is refused (one figure chooses, never a mix)
    with pytest.raises(ValueError, match="resume with the same --real-val"):
        train_segmentation(site, out, TrainSettings(iterations=2, patch=32, resume=True, real_cache=cache),
                           progress=False)
    assert (out / "checkpoints" / "step-2.pt").is_file()
    NativeSegmenter(out)
    assert "selection on real data, not training on it" in (out / "MODEL_CARD.md").read_text()


def test_site_folds_hold_each_patient_out_once_and_keep_a_patients_folders_together(tmp_path):
    from glioma_node.training.seg.site_gain import check_sizes, plan_folds

    cases = [tmp_path / f"P{i:02d}" for i in range(11)]
    folds = plan_folds(list(reversed(cases)), folds=3, seed=0)
    assert sorted(c for f in folds for c in f.held_out) == cases  # every patient held out exactly once
    assert sorted(len(f.held_out) for f in folds) == [3, 4, 4]
    for f in folds:
        assert not set(f.held_out) & set(f.others) and len(f.others) == 11 - len(f.held_out)
    assert plan_folds(cases, 3, seed=0)[0].held_out == folds[0].held_out  # the listing order does not matter
    assert plan_folds(cases, 3, seed=1)[0].held_out != folds[0].held_out
    with pytest.raises(ValueError, match="need at least 6"):
        plan_folds(cases[:5], 3, seed=0)
    # two studies of one patient are held out together, never one in training and one scored
    visits = [tmp_path / f"P{i:02d}-{v}" for i in range(6) for v in (1, 2)]
    for f in plan_folds(visits, 3, seed=0, patient_pattern=r"^(P\d+)-"):
        held = {c.name[:3] for c in f.held_out}
        assert len(f.held_out) == 4 and not held & {c.name[:3] for c in f.others}
    with pytest.raises(ValueError, match="finds no patient"):
        plan_folds(visits, 3, seed=0, patient_pattern=r"^(Q\d+)")
    # a size no fold can give is refused before any work, with the largest that fits
    with pytest.raises(ValueError, match="give sizes below 7"):
        check_sizes(folds, (5, 7, None))
    check_sizes(folds, (2, 6, None))


def _fake_site(root: Path, n: int) -> Path:
    """``n`` site case folders with tiny images and 0/1 masks (what the fast site-gain tests read)."""
    import nibabel as nib

    for i in range(n):
        folder = root / f"P{i:02d}"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), folder / "flair.nii.gz")
        nib.save(nib.Nifti1Image((np.arange(64).reshape(4, 4, 4) > 40).astype(np.uint8), np.eye(4)),
                 folder / "label.nii.gz")
    return root


def test_site_gain_never_shows_a_run_its_held_out_patients_and_continues_after_a_crash(tmp_path, monkeypatch):
    """The decisions of `train site-gain` with the network calls replaced (the slow test below
    runs them for real): what each run trains on, the pooled and paired figures, a sitting
    killed in the middle, leftovers of a sitting killed after scoring, changed settings."""
    from glioma_node.core.resources import DEFAULT_MODELS
    from glioma_node.training.seg import site_gain as sg
    from glioma_node.training.seg.real_cases import RealCase

    site = _fake_site(tmp_path / "site", 12)
    init = DEFAULT_MODELS / "segmentation"
    trained: list[tuple[Path, list[str]]] = []
    crash_at = {"call": 3}

    def held_out(fold, cache, settings, progress):
        return [RealCase(c.name, np.zeros((4, 2, 2, 2)), np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool), ("FLAIR",),
                         c) for c in fold.held_out], []

    def fine_tune(cases, init_dir, run_dir, settings, progress, command):
        if len(trained) == crash_at["call"]:
            raise KeyboardInterrupt  # the sitting ends here
        trained.append((run_dir, [c.name for c in cases]))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoint.pt").write_text("resume state")
        return {"train_cases": [c.name for c in cases[:-1]], "validation_cases": [cases[-1].name], "chosen_step": 2,
                "training_seconds": 60.0, "device": "cpu"}

    def score_model(model_dir, cases):  # each fine-tuned run is 0.1 better than the model unchanged
        base = {c.name: 0.5 + int(c.name[1:]) / 100 for c in cases}
        gain = 0.0 if model_dir == init else 0.1
        return {"cases": {k: round(v + gain, 4) for k, v in base.items()}, "device": "cpu"}

    monkeypatch.setattr(sg, "_held_out", held_out)
    monkeypatch.setattr(sg, "_fine_tune", fine_tune)
    monkeypatch.setattr(sg, "_score_model", score_model)
    out = tmp_path / "gain"
    settings = sg.GainSettings(folds=3, sizes=(4, None), cache=tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        sg.site_gain(site, init, out, settings, progress=False)
    done = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert len(done) == 5  # fold 1: unchanged, 4, all; fold 2: unchanged, 4; then the crash
    crash_at["call"] = -1
    summary = sg.site_gain(site, init, out, settings, progress=False)
    assert {p: p.stat().st_mtime_ns for p in done} == done  # what was finished is not run again
    plan = json.loads((out / "plan.json").read_text())
    for run_dir, names in trained:
        fold = int(run_dir.name.split("-")[1])
        assert not set(names) & set(plan["folds"][fold - 1])  # no run saw the patients it is scored on
        assert not (run_dir / "checkpoint.pt").exists()
    assert sorted(len(n) for _, n in trained) == [4, 4, 4, 8, 8, 8]
    rows = {r["site_cases"]: r for r in summary["rows"]}
    assert [r["held_out_patients"] for r in rows.values()] == [12, 12, 12]  # each patient once per size
    assert rows["4"]["gain"]["mean"] == pytest.approx(0.1) and rows["4"]["gain"]["improved"] == 12
    assert rows["all"]["gain"]["worse"] == 0 and "gain" not in rows["0"]
    table = (out / "gain.md").read_text()
    assert "| 0 (the model unchanged) |" in table and "+0.100" in table
    # a sitting killed after scoring but before cleaning: the next one cleans and trains nothing
    leftover = out / "runs" / "fold-1-n4" / "checkpoint.pt"
    leftover.write_text("resume state")
    count = len(trained)
    sg.site_gain(site, init, out, settings, progress=False)
    assert not leftover.exists() and len(trained) == count
    # sizes may be added later; the data, model or schedule may not change under the same folder
    sg.site_gain(site, init, out, sg.GainSettings(folds=3, sizes=(4, 6, None), cache=tmp_path / "cache"),
                 progress=False)
    assert [len(n) for _, n in trained[count:]] == [6, 6, 6]
    with pytest.raises(ValueError, match="other iterations"):
        sg.site_gain(site, init, out, sg.GainSettings(folds=3, sizes=(4,), iterations=7), progress=False)
    label = next(site.iterdir()) / "label.nii.gz"  # a label corrected in place between sittings
    label.write_bytes(label.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="other data_sha256"):
        sg.site_gain(site, init, out, settings, progress=False)
    plan = json.loads((out / "plan.json").read_text())  # a plan written before the digest existed: recorded now
    del plan["data_sha256"]
    (out / "plan.json").write_text(json.dumps(plan))
    sg.site_gain(site, init, out, settings, progress=False)
    assert "data_sha256" in json.loads((out / "plan.json").read_text())
    with pytest.raises(ValueError, match="smallest fold has 8"):
        sg.site_gain(site, init, tmp_path / "other", sg.GainSettings(folds=3, sizes=(8,)), progress=False)
    assert not (tmp_path / "other").exists()  # refused before anything was written


def test_site_gain_counts_patients_not_folders_and_continues_where_the_data_moved(tmp_path, monkeypatch):
    """A patient with two studies: both held out together, never one training while the
    other chooses the checkpoint, and counted once in every figure; the measurement
    continues after the site's folder (and the results) moved to another path."""
    import shutil

    from glioma_node.core.resources import DEFAULT_MODELS
    from glioma_node.training.seg import site_gain as sg
    from glioma_node.training.seg import train as seg_train
    from glioma_node.training.seg.real_cases import RealCase

    site = _fake_site(tmp_path / "site", 8)
    for folder in list(site.iterdir()):  # two studies of each patient
        shutil.copytree(folder, site / f"{folder.name}-2")
        folder.rename(site / f"{folder.name}-1")
    runs: list[tuple[list[str], list[str]]] = []

    def train_segmentation(paths, out, settings, progress, command):
        runs.append(([p.name for p in paths], [p.name for p in settings.real_validation]))
        return {"train_cases": [p.name for p in paths], "real_validation_cases": [p.name for p in settings.real_validation],
                "chosen_step": 1, "seconds": 1.0, "device": "cpu"}

    def held_out(fold, cache, settings, progress):
        return [RealCase(c.name, np.zeros((4, 2, 2, 2)), np.ones((2, 2, 2), bool), np.ones((2, 2, 2), bool), ("FLAIR",),
                         c) for c in fold.held_out], []

    def score_model(model_dir, cases):  # visit 1 gains 0.2, visit 2 nothing: each patient's mean gain is 0.1
        gain = 0.0 if model_dir == init else 0.2
        return {"cases": {c.name: 0.5 + (gain if c.name.endswith("-1") else 0.0) for c in cases}, "device": "cpu"}

    init = DEFAULT_MODELS / "segmentation"
    monkeypatch.setattr(seg_train, "train_segmentation", train_segmentation)
    monkeypatch.setattr(sg, "_held_out", held_out)
    monkeypatch.setattr(sg, "_score_model", score_model)
    settings = sg.GainSettings(folds=2, sizes=(None,), patient_pattern=r"^(P\d+)-", cache=tmp_path / "cache")
    summary = sg.site_gain(site, init, tmp_path / "gain", settings, progress=False)
    patient = lambda names: {n.split("-")[0] for n in names}  # noqa: E731
    assert len(runs) == 2
    for trained, chose in runs:
        assert len(trained) == 6 and len(chose) == 2  # of the 4 other patients 3 train, the last chooses, both visits
        assert not patient(trained) & patient(chose)
    rows = {r["site_cases"]: r for r in summary["rows"]}
    assert rows["all"]["held_out_patients"] == 8 and rows["all"]["gain"]["patients"] == 8
    assert rows["all"]["gain"]["mean"] == pytest.approx(0.1) and rows["all"]["gain"]["improved"] == 8
    # the site's cases and the measurement moved: the next sitting goes on (a new size here)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    site.rename(moved / "site")
    (tmp_path / "gain").rename(moved / "gain")
    sg.site_gain(moved / "site", init, moved / "gain", sg.GainSettings(
        folds=2, sizes=(4, None), patient_pattern=r"^(P\d+)-", cache=tmp_path / "cache"), progress=False)
    assert [len(t) + len(c) for t, c in runs[2:]] == [4, 4]  # only the new size ran, 2 patients each
    with pytest.raises(ValueError, match="other patients, patient_pattern, folds"):  # each study one patient
        sg.site_gain(moved / "site", init, moved / "gain", sg.GainSettings(
            folds=2, sizes=(None,), patient_pattern=r"^(P\d+-\d)", cache=tmp_path / "cache"), progress=False)


def test_site_gain_refuses_a_binary_mask_under_a_brats_label_name(tmp_path):
    import nibabel as nib

    from glioma_node.core.resources import DEFAULT_MODELS
    from glioma_node.training.seg.site_gain import GainSettings, site_gain

    site = _fake_site(tmp_path / "site", 8)
    (site / "P03" / "label.nii.gz").rename(site / "P03" / "seg.nii.gz")
    with pytest.raises(ValueError, match="name a whole-tumour .* label.nii.gz"):
        site_gain(site, DEFAULT_MODELS / "segmentation", tmp_path / "out", GainSettings(folds=2, sizes=(2,)))
    # an empty BraTS-named label is no 0/1 mask, but its case lacks what training a BraTS case needs
    img = nib.load(site / "P03" / "seg.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), site / "P03" / "seg.nii.gz")
    with pytest.raises(FileNotFoundError, match="missing T1, T1c, T2 images"):
        site_gain(site, DEFAULT_MODELS / "segmentation", tmp_path / "out", GainSettings(folds=2, sizes=(2,)))


def test_train_seg_refuses_a_binary_mask_under_a_brats_label_name_but_not_an_empty_label(tmp_path):
    import nibabel as nib

    from glioma_node.training.seg.dataset import load_case

    site = _fake_site(tmp_path / "site", 1)
    case = next(site.iterdir())
    (case / "label.nii.gz").rename(case / "seg.nii.gz")
    with pytest.raises(ValueError, match="would train as necrotic core"):
        load_case(case)
    img = nib.load(case / "seg.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), case / "seg.nii.gz")
    with pytest.raises(FileNotFoundError, match="missing"):  # the label passes; this fake case has no T2
        load_case(case)


def test_a_brats_labelled_case_needs_all_four_sequences_and_a_label_driven_one_none(tmp_path):
    """What training reads of a case's images: all four for BraTS labels (missing ones named),
    none for a synthetic label-driven case, whose images are drawn from its tissues."""
    import nibabel as nib

    from glioma_node.training.seg.dataset import brats_images

    case = tmp_path / "BraTS-X"
    case.mkdir()
    blank = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    for name in ("BraTS-X-t2f.nii.gz", "BraTS-X-t1n.nii.gz", "BraTS-X-seg.nii.gz"):
        nib.save(blank, case / name)
    with pytest.raises(FileNotFoundError, match="missing T1c, T2 images"):
        brats_images(case)
    for name in ("BraTS-X-t1c.nii.gz", "BraTS-X-t2w.nii.gz"):
        nib.save(blank, case / name)
    assert {r: p.name for r, p in brats_images(case).items()} == {
        "FLAIR": "BraTS-X-t2f.nii.gz", "T1": "BraTS-X-t1n.nii.gz", "T1c": "BraTS-X-t1c.nii.gz",
        "T2": "BraTS-X-t2w.nii.gz"}
    drawn = tmp_path / "synth-001"
    drawn.mkdir()
    nib.save(blank, drawn / "tissues.nii.gz")
    assert brats_images(drawn) == {}


@pytest.mark.slow
@pytest.mark.xdist_group("synth")
def test_site_gain_scores_each_size_on_patients_its_fine_tuning_never_saw(synth_cohort, tmp_path, capsys):
    """`train site-gain` for real: per fold, the default unchanged and fine-tuned on the fold's
    other cases (one trains, one chooses the checkpoint by whole-case Dice), both scored on
    the held-out ones. The fourth case folder is a mirrored copy of the first, a stand-in
    fourth patient: this tests the mechanics, not the figures."""
    import nibabel as nib

    from glioma_node.cli.main import main
    from glioma_node.core.resources import DEFAULT_MODELS

    site = tmp_path / "site"
    sources = sorted((synth_cohort / "nifti").iterdir())
    for n, (case, flip) in enumerate([(c, False) for c in sources] + [(sources[0], True)]):
        folder = site / f"site-{n}"
        folder.mkdir(parents=True)
        for name, out_name in (("flair", "flair"), ("t1", "t1"), ("t1c", "t1c"), ("seg", "label")):
            img = nib.load(case / f"{name}.nii.gz")
            data = np.asarray(img.dataobj)
            data = (data > 0).astype(np.uint8) if name == "seg" else data
            nib.save(nib.Nifti1Image(np.ascontiguousarray(data[::-1] if flip else data), img.affine),
                     folder / f"{out_name}.nii.gz")
    out, cache = tmp_path / "gain", tmp_path / "cache"
    args = ["train", "site-gain", "--data", str(site), "--init", str(DEFAULT_MODELS / "segmentation"), "--out",
            str(out), "--folds", "2", "--sizes", "all", "--iterations", "2", "--validate-every", "1",
            "--real-cache", str(cache), "--quiet"]
    assert main(args) == 0
    plan = json.loads((out / "plan.json").read_text())
    rows = {r["site_cases"]: r for r in json.loads((out / "gain.json").read_text())["rows"]}
    assert set(rows) == {"0", "all"}
    for row in rows.values():
        assert row["held_out_patients"] == 4 and row["folds_done"] == 2  # one Dice per patient per size
        assert 0.0 <= row["min"] <= row["median"] <= 1.0
    assert rows["all"]["cases_per_run"] == [2] and rows["all"]["gain"]["patients"] == 4
    for k, held_out in enumerate(plan["folds"], start=1):
        run_dir = out / "runs" / f"fold-{k}-all"
        run = json.loads((run_dir / "result.json").read_text())
        assert sorted(run["held_out"]) == sorted(held_out)
        assert len(run["train_cases"]) == 1 and len(run["validation_cases"]) == 1
        assert not set(run["train_cases"] + run["validation_cases"]) & set(held_out)  # never saw them
        assert run["training_seconds"] > 0 and run["fine_tuned"]
        log = json.loads((run_dir / "training-log.json").read_text())
        assert log["selection"].startswith("median real whole-tumour Dice on 1 real cases")
        assert not (run_dir / "checkpoint.pt").exists()  # scored: resume state gone
        NativeSegmenter(run_dir)
    assert "| 0 (the model unchanged) |" in (out / "gain.md").read_text() and (out / "gain.png").stat().st_size > 1000
    # a second sitting finds every run done and changes nothing
    done = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/*/result.json")} == done
    capsys.readouterr()
    assert main([*args[:-7], "--iterations", "3", *args[-5:]]) == 2  # other settings into the same folder
    assert "other iterations" in capsys.readouterr().err
    assert main([*args[:10], "--sizes", "1", *args[12:]]) == 2
    assert "at least 2 site cases" in capsys.readouterr().err


def test_site_gain_warns_when_the_starting_model_may_have_seen_the_site():
    """The shipped default was chosen on real cases (the site cohort among them): its figures
    without fine-tuning are not a clean baseline, and site-gain says so."""
    from glioma_node.core.resources import DEFAULT_MODELS
    from glioma_node.inference.model_dir import Manifest
    from glioma_node.training.seg.site_gain import init_warning

    default = read_manifest(DEFAULT_MODELS / "segmentation")
    assert "chosen on 90 real cases" in (init_warning(default) or "")
    fine_tuned = Manifest(default.directory, {**default.data, "name": "glioma-node-segresnet-finetuned"})
    assert "is itself a fine-tuned model" in (init_warning(fine_tuned) or "")
    synthetic_only = dict(default.data, training={k: v for k, v in default.data["training"].items()
                                                  if k != "real_validation"})
    assert init_warning(Manifest(default.directory, synthetic_only)) is None
