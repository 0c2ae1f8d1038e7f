"""Radiogenomics trained and measured as the node runs: features inside the segmenter's
masks, both masks compared, mask-fragile features screened out, the encoder ensemble, the
tumour-context input and the Grad-CAM pointing score."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from glioma_node.core.grid import Grid
from glioma_node.inference.radiogenomics.crop import keep_tumour_context, tumour_region
from glioma_node.inference.radiogenomics.encoder import DeepEncoder, EncoderEnsemble, build_encoder
from glioma_node.inference.radiogenomics.model import RadiogenomicModel, encoder_input
from glioma_node.inference.radiogenomics.tumour_study import tumour_study
from glioma_node.training.radiogenomics.pointing import chance_level, pointing_score
from glioma_node.training.radiogenomics.train import concordance, mask_robustness
from tests import radiogenomic_trees as trees

LIGHT = Path(__file__).parents[1] / "radiomics-light.yaml"
TINY_ENCODER = {"widths": [4, 8, 8, 8], "crop_size": 32, "crop_spacing_mm": 2.0, "variant": "crop",
                "patch_size": 8, "patch_count": 2}


def _tumour(shape=(60, 60, 60)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    labels[25:35, 25:35, 25:35] = 2
    labels[28:32, 28:32, 28:32] = 4
    return labels


def test_the_tumour_region_reaches_its_margin_in_mm_and_no_further():
    labels = _tumour()
    region = tumour_region(labels, 10.0)
    assert region[labels > 0].all()
    assert region[30, 30, 34 + 10] and not region[30, 30, 34 + 11]  # 10 mm beyond the last tumour voxel along x
    assert not region[34 + 8, 30, 34 + 8] and region[34 + 7, 30, 34 + 7]  # diagonals 11.3 and 9.9 mm away
    stack = np.ones((4, *labels.shape), np.float32)
    masked = keep_tumour_context(stack, labels, 10.0)
    assert (masked[:, region] == 1).all() and (masked[:, ~region] == 0).all()
    assert keep_tumour_context(stack, labels, None) is stack
    pieces, _ = encoder_input(stack, labels, {**TINY_ENCODER, "context_mm": 5.0})
    assert 0 < pieces.mean() < 0.5  # the crop holds the tumour's neighbourhood, blank elsewhere
    with pytest.raises(ValueError, match="no tumour"):
        tumour_region(np.zeros_like(labels), 10.0)


def test_the_pointing_score_is_one_on_the_tumour_and_chance_when_spread():
    labels = _tumour()
    brain = np.zeros(labels.shape, bool)
    brain[5:55, 5:55, 5:55] = True
    on_tumour = (labels > 0).astype(np.float32)
    assert pointing_score(on_tumour, labels) == pytest.approx(1.0)
    spread = brain.astype(np.float32)
    assert pointing_score(spread, labels) == pytest.approx(chance_level(labels, brain), abs=1e-6)
    assert chance_level(labels, brain) < 0.2
    far = np.zeros_like(spread)
    far[5:10, 5:10, 5:10] = 1
    assert pointing_score(far, labels) == 0.0
    assert np.isnan(pointing_score(np.zeros_like(spread), labels))


def test_an_encoder_ensemble_embeds_as_the_mean_of_its_members_and_loads_from_its_config():
    torch.manual_seed(0)
    members = [DeepEncoder([4, 8, 8, 8]) for _ in range(3)]
    ensemble = EncoderEnsemble(members).eval()
    x = torch.randn(2, 4, 32, 32, 32)
    with torch.no_grad():
        expected = torch.stack([m.eval()(x) for m in members]).mean(0)
        assert torch.allclose(ensemble(x), expected, atol=1e-6)
    assert len(ensemble.cam_layers) == 3 * len(members[0].cam_layers)
    rebuilt = build_encoder({**TINY_ENCODER, "members": 3})
    assert isinstance(rebuilt, EncoderEnsemble)
    rebuilt.load_state_dict(ensemble.state_dict())  # strict: the stored keys are the config's
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(x), expected, atol=1e-6)


def test_features_that_follow_the_mask_not_the_tumour_are_screened_out():
    rng = np.random.default_rng(0)
    volume = rng.uniform(5, 60, 200)
    assert concordance(volume, volume) == pytest.approx(1.0)
    assert concordance(volume, volume * 1.05) > 0.95
    assert concordance(volume, volume + 30) < 0.6  # a constant bias is disagreement too
    ragged = rng.uniform(0.5, 1.5, 200)
    names = ["shape.whole_tumour.VoxelVolume", "shape.necrosis.SurfaceVolumeRatio", "T1c.whole_tumour.firstorder.Mean"]
    true = np.column_stack([volume, ragged, rng.normal(0, 1, 200)])
    segmenter = np.column_stack([volume * rng.normal(1, 0.05, 200), rng.uniform(0.5, 1.5, 200), true[:, 2] + 0.05])
    screen = mask_robustness(true, segmenter, names, 0.75)
    assert screen["excluded"] == ["shape.necrosis.SurfaceVolumeRatio"]
    assert set(screen["shape_agreement"]) == set(names[:2])
    assert mask_robustness(true, segmenter, names, None)["excluded"] == []


def _ragged(labels: np.ndarray) -> np.ndarray:
    """A segmenter's mask of a tiny case: the whole tumour one voxel too wide, the core's
    surface frayed (every other voxel of its outer shell dropped)."""
    out = labels.copy()
    out[ndimage.binary_dilation(labels > 0) & (labels == 0)] = 2
    core = np.isin(labels, (1, 4))
    shell = core & ~ndimage.binary_erosion(core)
    fray = shell & (np.indices(labels.shape).sum(0) % 2 == 0)
    out[fray] = 2
    return out


@pytest.mark.slow
def test_training_on_segmenter_masks_reports_both_masks_and_screens_fragile_features(tmp_path, monkeypatch):
    """A training run on the tiny cohort with every case's features inside a stand-in
    segmenter's masks (wider and frayed; the real segmenter's path runs in
    test_pointing_runs_as_the_node_runs): the test figures on both masks, the screen, the
    split file, and a model that loads and runs with its encoder ensemble and a blanked
    context."""
    from glioma_node.core.resources import DEFAULT_MODELS
    from glioma_node.training.radiogenomics import features, train
    from glioma_node.training.radiogenomics.train import RadiogenomicSettings, train_radiogenomics

    def segmented(case, segmentation_model, masks=None):
        study = features._nifti_study(case)
        return tumour_study(study.grid, study.images, _ragged(study.labels), study.brain, study.age_years)

    def doubtful(case, cache, segmentation_model):  # the node's quality control, standing in: every third case
        return int(case.name[-1]) % 3 == 0

    monkeypatch.setattr(features, "_segmented_study", segmented)
    monkeypatch.setattr(train, "mask_doubtful", doubtful)
    trees.write_synthetic(tmp_path / "data", 40)
    settings = RadiogenomicSettings(targets=("idh", "mgmt", "survival"), encoder_steps=2, cross_fit_folds=2,
                                    cv_folds=3, encoder={**TINY_ENCODER, "context_mm": 6.0}, radiomics_settings=LIGHT,
                                    workers=1, segmentation_model=DEFAULT_MODELS / "segmentation",
                                    masks=features.MaskSource.SEGMENTER, compare_masks=True, robust_ccc=0.9)
    result = train_radiogenomics(tmp_path / "data", tmp_path / "model", settings, progress=False, command="test")
    assert result["masks"] == "segmenter"
    idh = result["targets"]["idh"]["variants"]["early"]
    assert 0.0 <= idh["test"]["auc"] <= 1.0 and 0.0 <= idh["test_true_masks"]["auc"] <= 1.0
    split = json.loads((tmp_path / "model" / "split.json").read_text())
    withheld = [c for c in split["test"] if int(c[-1]) % 3 == 0]
    assert result["withheld_test_cases"] == len(withheld) > 0  # as the node reports: doubtful masks withheld
    assert idh["test_as_node"]["withheld"] == len(withheld)
    assert "test_true_masks" in result["survival"] and "c_index" in result["survival"]["test_true_masks"]
    assert result["survival"]["test_as_node"]["withheld"] == len(withheld)  # risk is withheld too
    assert result["survival"]["test_as_node"]["n"] == result["survival"]["test"]["n"] - len(withheld)
    assert -1.0 <= result["encoder_agreement"]["correlation"] <= 1.0 and result["encoder_agreement"]["members"] == 2
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text()
    assert "## Masks" in card and f"{len(withheld)} withheld" in card and "Robustness screen" in card
    screen = result["mask_robustness"]
    assert screen["training_cases"] == result["split"]["train"]  # every tiny case has its mask file
    assert any("necrosis" in n or "enhancing" in n for n in screen["excluded"])  # the frayed core's surface
    assert "shape.whole_tumour.VoxelVolume" not in screen["excluded"]  # a volume one voxel wider still agrees
    model = RadiogenomicModel(tmp_path / "model")
    read = {model.feature_names[c] for t in model.heads for h in model.heads[t].values() for c in h.columns}
    assert not read & set(screen["excluded"])
    assert isinstance(model.encoder, EncoderEnsemble) and len(model.encoder.members) == 2
    assert len(split["test"]) == result["split"]["test"] and not set(split["test"]) & set(split["train"])
    assert set(split["test_masks_sha256"]) == set(split["test"])
    images, labels, brain = trees.tiny_case(np.random.default_rng(7), idh=1, mgmt=0)
    study = tumour_study(Grid(labels.shape, np.eye(4)), images, labels, brain, 50.0)
    out = model.run(study)
    region = tumour_region(labels, 6.0)
    for cam in out.cams.values():  # the encoder saw only the tumour and 6 mm around it: the map stays there
        assert cam[~region].max() == 0.0 and cam.max() == pytest.approx(1.0)
        assert cam[region & brain].std() > 0.01  # and says where inside it, not one flat value


@pytest.mark.slow
def test_pointing_runs_as_the_node_runs(synth_cohort, tmp_path, capsys):
    """`glioma-node evaluate pointing` with the shipped models: the real segmenter draws the
    mask, the radiogenomic model runs on it, each map is scored against the true tumour."""
    from glioma_node.cli.main import main
    from glioma_node.core.resources import DEFAULT_MODELS

    out = tmp_path / "pointing"
    model = DEFAULT_MODELS / "radiogenomics"
    cache = tmp_path / "cache"
    assert main(["evaluate", "pointing", "--model", str(model), "--data", str(synth_cohort), "--split", "all",
                 "--limit", "1", "--out", str(out), "--cache", str(cache), "--quiet"]) == 0
    result = json.loads((out / "pointing.json").read_text())
    assert result["masks"] == "segmenter" and len(result["cases"]) == 1 and not result["left_out"]
    (case, scores), = result["cases"].items()
    assert set(scores["pointing"]) == {"mgmt", "idh", "chemo-benefit"}
    assert all(0.0 <= v <= 1.0 for v in scores["pointing"].values())
    assert all(0.0 < scores["chance_on_tumour"][t] < scores["chance"][t] < 0.5 for t in scores["pointing"])
    assert result["withheld_doubtful"] == []
    assert (out / f"pointing-{case}.png").stat().st_size > 5000 and "| mgmt | 1 |" in (out / "pointing.md").read_text()
    assert all(0.0 <= scores["on_tumour"][t] <= scores["pointing"][t] for t in scores["pointing"])
    assert "pointing median" in capsys.readouterr().out
    # the segmenter's mask is kept in the cache, and a second measurement reads it instead of drawing it again
    kept, = cache.glob(f"masks-*/{case}.npz")
    drawn = kept.stat().st_mtime_ns
    assert main(["evaluate", "pointing", "--model", str(model), "--data", str(synth_cohort), "--split", "all",
                 "--limit", "1", "--out", str(tmp_path / "again"), "--cache", str(cache), "--quiet"]) == 0
    assert kept.stat().st_mtime_ns == drawn
    assert json.loads((tmp_path / "again" / "pointing.json").read_text())["cases"] == result["cases"]
    # a model without its split file cannot be measured on "its test split"
    assert main(["evaluate", "pointing", "--model", str(model), "--data", str(synth_cohort), "--out",
                 str(out), "--quiet"]) == 2
    assert "no split.json" in capsys.readouterr().err


def test_a_cohort_made_again_is_not_taken_for_the_models_test_split(tmp_path):
    from glioma_node.training.radiogenomics.adapters import LabelledCase
    from glioma_node.training.radiogenomics.pointing import split_cases

    cases = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "seg.nii.gz").write_bytes(name.encode())
        cases.append(LabelledCase(name, {}, tmp_path / name / "seg.nii.gz"))
    model = tmp_path / "model"
    model.mkdir()
    digest = {c.name: hashlib.sha256(c.seg.read_bytes()).hexdigest()[:16] for c in cases[1:]}
    (model / "split.json").write_text(json.dumps({"train": ["a"], "test": ["b", "c"], "test_masks_sha256": digest}))
    assert [c.name for c in split_cases(model, cases, "test")] == ["b", "c"]
    assert len(split_cases(model, cases, "all")) == 3
    (tmp_path / "c" / "seg.nii.gz").write_bytes(b"another seed's case")
    with pytest.raises(ValueError, match="1 of the test cases"):
        split_cases(model, cases, "test")
    (model / "split.json").unlink()
    with pytest.raises(ValueError, match="no split.json"):
        split_cases(model, cases, "test")


def test_encoder_agreement_is_one_for_interchangeable_members_and_near_zero_for_unrelated_ones():
    from glioma_node.training.radiogenomics.train import encoder_agreement

    rng = np.random.default_rng(3)
    a = rng.normal(size=(200, 8))
    a[:, 0] = 1.0  # a dimension that never varies says nothing and is skipped
    assert encoder_agreement([a, 2 * a + 1, a]) == pytest.approx(1.0)  # the same coordinates, rescaled
    assert abs(encoder_agreement([a, rng.normal(size=(200, 8))])) < 0.15
    assert encoder_agreement([a, -a]) == pytest.approx(-1.0)
