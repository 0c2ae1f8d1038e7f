"""Radiogenomics: the fusion heads, the explanations, and a whole training run on tiny cases
(the statistics: tests/training/test_statistics.py)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from glioma_node.core.grid import Grid
from glioma_node.inference.model_dir import ModelError
from glioma_node.inference.radiogenomics.cnn import DEFAULT_CNN
from glioma_node.inference.radiogenomics.crop import tumour_box, tumour_crop, tumour_patches, uncrop
from glioma_node.inference.radiogenomics.encoder import RESNET18_WIDTHS, DeepEncoder, load_medicalnet
from glioma_node.inference.radiogenomics.explain import head_attributions
from glioma_node.inference.radiogenomics.gradcam import grad_cam
from glioma_node.inference.radiogenomics.model import RadiogenomicModel, encoder_input, piece_weights
from glioma_node.inference.radiogenomics.tumour_study import tumour_study
from glioma_node.training.radiogenomics.fit import calibrate, fit_early
from tests import radiogenomic_trees as trees

LIGHT = Path(__file__).parents[1] / "radiomics-light.yaml"
# One worker trains the tiny model once for every test that reads it.
pytestmark = pytest.mark.xdist_group("radiogenomics")


def test_early_fusion_calibrates_and_its_shap_values_add_up():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((200, 5))
    y = (x[:, 0] + 0.5 * rng.standard_normal(200) > 0).astype(int)
    names = [f"T1c.whole_tumour.f{i}" for i in range(5)]
    head = fit_early(x[:150], y[:150], list(range(5)), names)
    calibrate(head, x[150:], y[150:])
    p = head.probability(x[150:])
    assert ((p >= float(head.threshold)) == y[150:]).mean() > 0.8
    attributions = head_attributions(head, x[0], x[:100], top=5)
    assert attributions[0].feature == names[0]
    with torch.no_grad():
        logit = float(head.logit_standardised(head.standardise(x[:1]))[0])
        base = float(head.logit_standardised(head.standardise(x[:100])).mean())
    assert sum(a.shap for a in attributions) == pytest.approx(logit - base, abs=1e-3)


def test_crop_round_trip_and_patches_cover_the_tumour():
    labels = np.zeros((60, 60, 60), np.uint8)
    labels[20:30, 25:35, 30:40] = 2
    stack = np.stack([labels.astype(np.float32)] * 4)
    crop, where = tumour_crop(stack, labels, 16, 2.0)
    assert crop.shape == (4, 16, 16, 16) and crop[0].sum() == pytest.approx(labels.sum() / 8, rel=0.05)
    back = uncrop(crop[0], where, labels.shape)
    assert back.shape == labels.shape and back[labels > 0].mean() > 0.5 and back[:10].max() == 0
    patches, crops = tumour_patches(stack, labels, 8, 4)
    assert patches.shape == (4, 4, 8, 8, 8) and all(p[0].sum() > 0 for p in patches)


def test_the_box_crop_stretches_any_tumour_to_fill_the_cube_and_maps_back():
    for box in ((slice(20, 30), slice(25, 35), slice(30, 40)), (slice(10, 50), slice(5, 25), slice(20, 56))):
        labels = np.zeros((60, 60, 60), np.uint8)
        labels[box] = 2
        stack = np.stack([(labels > 0).astype(np.float32)] * 4)
        cube, where = tumour_box(stack, labels, 32, margin_mm=4)
        assert cube.shape == (4, 32, 32, 32) and where.extent is not None
        # The box is the tumour plus 4 mm a side: small or large, the tumour fills the cube but
        # for the margin, in proportion.
        sides = [s.stop - s.start for s in box]
        assert where.extent == tuple(n + 8 for n in sides)
        assert (cube[0] > 0.5).mean() == pytest.approx(np.prod([n / (n + 8) for n in sides]), rel=0.1)
        assert cube[0][16, 16, 16] == pytest.approx(1.0) and cube[0][0, 0, 0] == 0
        back = uncrop(cube[0], where, labels.shape)
        assert back.shape == labels.shape
        assert back[labels > 0].mean() > 0.9 and back[labels == 0].mean() < 0.05


def test_the_box_and_patches_variant_weighs_the_box_as_all_patches_together():
    labels = np.zeros((60, 60, 60), np.uint8)
    labels[20:36, 25:41, 30:46] = 2
    stack = np.stack([labels.astype(np.float32)] * 4)
    config = {"variant": "box+patch", "crop_size": 64, "crop_spacing_mm": 2.0, "patch_size": 16, "patch_count": 4}
    pieces, where = encoder_input(stack, labels, config)
    assert pieces.shape == (5, 4, 16, 16, 16) and where[0].extent is not None and where[1].extent is None
    assert list(piece_weights(config, 5)) == [0.5, 0.125, 0.125, 0.125, 0.125]
    assert list(piece_weights({**config, "variant": "patch"}, 4)) == [0.25] * 4
    with pytest.raises(ValueError):
        encoder_input(stack, labels, {**config, "variant": "bounding-box"})


def test_the_slices_variant_reads_axial_slices_through_the_tumour_and_explains_on_them():
    from glioma_node.inference.radiogenomics.slice_encoder import SliceEncoder

    labels = np.zeros((60, 60, 60), np.uint8)
    labels[20:36, 25:41, 30:46] = 2
    stack = np.stack([(labels > 0).astype(np.float32)] * 4)
    config = {"variant": "slices", "slice_size": 64, "slice_count": 4}
    pieces, where = encoder_input(stack, labels, config)
    assert pieces.shape == (4, 4, 64, 64)
    levels = [c.corner[0] for c in where]
    assert levels == sorted(levels) and 20 <= levels[0] and levels[-1] < 36 and len(set(levels)) == 4
    assert all(p[0].sum() == 16 * 16 for p in pieces)  # each slice holds the tumour's full cross-section
    torch.manual_seed(0)
    encoder = SliceEncoder()
    assert encoder(torch.from_numpy(pieces)).shape == (4, 128)
    cam = grad_cam(torch.from_numpy(pieces[:1]), encoder.cam_layers, lambda t: encoder(t)[0, 0])
    assert cam.shape == (64, 64) and 0 <= cam.min() and cam.max() == pytest.approx(1.0)
    back = uncrop(cam, where[0], labels.shape)
    _, y, x = where[0].corner  # the slice is centred on the tumour, so part of it lies outside the image
    inside = cam[max(0, -y): labels.shape[1] - y, max(0, -x): labels.shape[2] - x]
    np.testing.assert_allclose(back[levels[0], max(0, y): max(0, y) + inside.shape[0], max(0, x): max(0, x) + inside.shape[1]],
                               inside, atol=1e-6)
    assert np.delete(back, levels[0], axis=0).max() == 0


def test_grad_cam_points_at_the_voxels_that_matter():
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.ReLU())
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0, 1, 1, 1] = 1.0
        net[0].bias.zero_()
    x = torch.zeros(1, 1, 16, 16, 16)
    x[0, 0, 10:13, 3:5, 7:9] = 1.0
    cam = grad_cam(x, net[1], lambda t: net(t)[0, 0].sum())
    assert cam.max() == 1.0 and cam[10:13, 3:5, 7:9].min() == 1.0 and cam[:8].max() == 0.0


def test_medicalnet_weights_load_into_the_encoder(tmp_path: Path):
    source = DeepEncoder(RESNET18_WIDTHS, in_channels=1)
    state = {f"module.{k}": v for k, v in source.backbone.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "resnet_18.pth")
    encoder = DeepEncoder(RESNET18_WIDTHS)
    assert load_medicalnet(encoder, tmp_path / "resnet_18.pth") == []
    w = encoder.backbone.conv1.weight
    assert w.shape[1] == 4 and torch.allclose(w.sum(dim=1, keepdim=True), source.backbone.conv1.weight)
    with pytest.raises(ValueError, match="resnet_18"):
        load_medicalnet(DeepEncoder((16, 32, 64, 128)), tmp_path / "resnet_18.pth")


def test_the_combined_encoder_joins_the_lightweight_network_and_medicalnet(tmp_path: Path):
    from glioma_node.inference.radiogenomics.encoder import CombinedEncoder, build_encoder
    from glioma_node.training.radiogenomics.networks import embed_all, train_encoder

    source = DeepEncoder(RESNET18_WIDTHS, in_channels=1)
    torch.save(source.backbone.state_dict(), tmp_path / "resnet_18.pth")
    config = {"variant": "crop", "backbone": "combined", "widths": [4, 8, 8, 8], "crop_size": 16, "crop_spacing_mm": 2.0}
    encoder = build_encoder(config)
    assert isinstance(encoder, CombinedEncoder) and len(encoder.cam_layers) == 6
    assert load_medicalnet(encoder, tmp_path / "resnet_18.pth") == []
    loaded, original = encoder.medicalnet.backbone.state_dict(), source.backbone.state_dict()
    assert torch.allclose(loaded["layer4.0.conv1.weight"], original["layer4.0.conv1.weight"])
    pieces = np.random.default_rng(0).normal(size=(6, 1, 4, 16, 16, 16)).astype(np.float16)
    labels = np.array([[0, 1], [1, 0]] * 3, float)
    trained = train_encoder(pieces, labels, config, steps=2, batch=2, medicalnet=tmp_path / "resnet_18.pth", progress=False)
    assert isinstance(trained, CombinedEncoder) and embed_all(trained, pieces, config).shape == (6, 128)
    cam = grad_cam(torch.from_numpy(pieces[0].astype(np.float32)), trained.cam_layers, lambda t: trained(t)[0, 0])
    assert cam.shape == (16, 16, 16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    from glioma_node.training.radiogenomics.train import RadiogenomicSettings, train_radiogenomics

    root = tmp_path_factory.mktemp("tiny-cohort")
    trees.write_synthetic(root / "data", 60)
    trees.write_ucsf(root / "external", 30, first=200)  # other cases, another layout, no EGFR column
    settings = RadiogenomicSettings(external=root / "external", augment=1.0,
        encoder_steps=4, cross_fit_folds=2, cv_folds=3, cnn_targets=("idh",), cnn_steps=3, cnn_pretrain_steps=2,
        cnn={**DEFAULT_CNN, "crop_size": 32, "crop_spacing_mm": 2.0},
        encoder={"widths": [4, 8, 8, 8], "crop_size": 32, "crop_spacing_mm": 2.0, "variant": "crop",
                 "patch_size": 8, "patch_count": 2},
        radiomics_settings=LIGHT, workers=2)
    result = train_radiogenomics(root / "data", root / "model", settings, progress=False, command="test")
    return root, result


@pytest.mark.slow
def test_training_compares_variants_and_learns_what_the_cases_hide(trained):
    root, result = trained
    idh = result["targets"]["idh"]
    assert set(idh["variants"]) == {"radiomics", "deep", "early", "attention", "cnn", "dictionary"}
    assert idh["variants"]["radiomics"]["test"]["auc"] >= 0.8  # IDH-wildtype tumours are larger here
    assert idh["default_variant"] in ("early", "attention")
    # Chemotherapy benefit is overall survival >= 24 months: longer in IDH-mutant cases here.
    labels = list(csv.DictReader(open(root / "data" / "labels.csv")))
    censored_early = sum(1 for r in labels if r["event"] == "0" and float(r["survival_days"]) < 730)
    chemo = result["targets"]["chemo-benefit"]
    assert censored_early > 0 and chemo["censored_before_endpoint"] == chemo["cases_without_label"] == censored_early
    assert chemo["variants"]["radiomics"]["test"]["auc"] >= 0.6
    surv = result["survival"]
    assert surv["train_cv_c_index"] > 0.6 and surv["test"]["c_index_ci95"][0] <= surv["test"]["c_index"]
    # Known status (MGMT, IDH, EGFR from labels.csv): EGFR shortens survival and only this model sees it.
    known = result["survival_known"]
    assert known["markers"] == ["mgmt", "idh", "egfr"] and known["covariates"]["egfr_amplified"] > 0.1
    one_year = surv["horizons_test"]["365d"]
    assert one_year["n"] + one_year["censored_before"] == surv["test"]["n"]
    assert sum(map(sum, one_year["confusion_matrix"])) == one_year["n"]
    for name in ("model.pt", "manifest.json", "MODEL_CARD.md", "metrics.json", "roc-idh.png", "roc-chemo-benefit.png",
                 "km-risk-groups.png", "km-risk-groups-known-status.png", "curves-encoder.png", "curves-cnn-idh.png"):
        assert (root / "model" / name).exists(), name
    card = (root / "model" / "MODEL_CARD.md").read_text()
    assert "Research use only" in card and "0.56-0.62" in card and "| early |" in card
    assert "## Chemotherapy benefit" in card and f"{censored_early} of them censored alive before 24 months" in card
    assert "| 730d |" in card and "## Survival with laboratory-known status" in card
    # The studies' baselines and analyses: dictionary learning, survival from each feature family,
    # PCA-GMM augmentation beside the real-only fit, variance analysis of the feature groups.
    assert idh["variants"]["dictionary"]["test"]["auc"] >= 0.7
    assert set(result["survival_variants"]) == {"radiomics", "deep", "dictionary"}
    assert all("c_index" in v["test"] for v in result["survival_variants"].values())
    aug = idh["augmentation"]
    assert aug["augmented"]["training_rows"] == 2 * aug["real_only"]["training_rows"]
    assert aug["augmented"]["n"] == aug["real_only"]["n"] == idh["variants"]["early"]["test"]["n"]
    assert idh["variance_analysis"]["shape"]["significant_share"] > 0  # IDH-wildtype tumours are larger
    assert "overstate" in card and "## Survival: baselines beside the fusion model" in card
    # External validation (train --external): the model unchanged on the UCSF-PDGM-layout cohort.
    external = json.loads((root / "model" / "external" / "metrics.json").read_text())
    assert external["cases"] == 30 and external["layout"] == "auto"
    assert external["targets"]["idh"]["variants"]["early"]["test"]["auc"] >= 0.8
    assert external["targets"]["idh"]["variants"]["early"]["test"]["n"] == 30
    assert external["targets"]["mgmt"]["cases_without_label"] == 1  # "indeterminate"
    assert "c_index" in external["survival"]["test"] and external["survival_known"]["markers"] == ["mgmt", "idh"]
    assert result["external"]["auc"]["idh"] == external["targets"]["idh"]["variants"][
        result["targets"]["idh"]["default_variant"]]["test"]["auc"]
    assert "## External validation" in card and (root / "model" / "external" / "EXTERNAL_VALIDATION.md").exists()
    assert (root / "model" / "external" / "roc-idh.png").exists()
    assert json.loads((root / "model" / "manifest.json").read_text())["kind"] == "glioma-node-radiogenomics"


@pytest.mark.slow
def test_trained_model_predicts_and_explains_a_new_case(trained):
    root, _ = trained
    images, labels, brain = trees.tiny_case(np.random.default_rng(999), idh=0, mgmt=1)
    study = tumour_study(Grid(labels.shape, np.eye(4)), images, labels, brain, age_years=None)
    for variants in ({}, {"mgmt": "attention", "idh": "cnn"}):
        model = RadiogenomicModel(root / "model", variants)
        result = model.run(study, workers=1)
        assert set(result.probabilities) == {"mgmt", "idh", "chemo-benefit"}
        assert all(0 <= p <= 1 for p in result.probabilities.values())
        assert result.risk is not None and result.risk[2] in ("high", "low")
        assert any("age unknown" in w for w in result.warnings)
        assert set(result.cams) == set(result.probabilities)  # a heat map per prediction, never an empty dict
        for cam in result.cams.values():
            assert cam.shape == labels.shape and 0 <= cam.min() and 0 < cam.max() <= 1.0
        if variants.get("mgmt") == "attention":
            assert abs(sum(result.attention["mgmt"].values()) - 1) < 1e-3
        assert result.attributions["mgmt"] and "shap" in result.attributions["mgmt"][0]


@pytest.mark.slow
def test_the_risk_says_which_genomic_inputs_were_known_and_which_predicted(trained):
    root, _ = trained
    images, labels, brain = trees.tiny_case(np.random.default_rng(998), idh=0, mgmt=0)
    model = RadiogenomicModel(root / "model")

    def run(known: dict[str, int]):
        study = tumour_study(Grid(labels.shape, np.eye(4)), images, labels, brain, 60.0, known)
        return model.run(study, workers=1)

    alone = run({})
    assert alone.risk_inputs == {"mgmt": "predicted from the images", "idh": "predicted from the images"}
    amplified, not_amplified = run({"idh": 0, "egfr": 1}), run({"idh": 0, "egfr": 0})
    assert amplified.risk_inputs == {"mgmt": "predicted from the images", "idh": "clinical source",
                                     "egfr": "clinical source"}
    assert amplified.risk[0] > not_amplified.risk[0]  # EGFR amplification raises the hazard it learnt
    partial = run({"mgmt": 1})
    assert partial.risk_inputs["egfr"] == "not known: training median used"


@pytest.mark.slow
def test_a_tampered_model_is_refused(trained, tmp_path: Path):
    import shutil

    root, _ = trained
    copy = tmp_path / "model"
    shutil.copytree(root / "model", copy, ignore=shutil.ignore_patterns("cache"))
    with open(copy / "model.pt", "ab") as f:
        f.write(b"x")
    with pytest.raises(ModelError, match="sha256"):
        RadiogenomicModel(copy)
    with pytest.raises(ModelError, match="no 'cnn' model for mgmt"):
        RadiogenomicModel(root / "model", {"mgmt": "cnn"})


def test_the_model_file_round_trips_and_another_format_is_refused(tmp_path):
    from glioma_node.core.resources import DEFAULT_MODELS
    from glioma_node.inference.radiogenomics.bundle import FORMAT, BundleError, RadiogenomicBundle

    bundle = RadiogenomicBundle.from_file(DEFAULT_MODELS / "radiogenomics" / "model.pt")
    bundle.to_file(tmp_path / "model.pt")
    again = RadiogenomicBundle.from_file(tmp_path / "model.pt")
    assert again.feature_names == bundle.feature_names and again.default_variants == bundle.default_variants
    assert again.format == FORMAT and not list(tmp_path.glob("*.partial"))
    blob = torch.load(tmp_path / "model.pt", weights_only=True)
    torch.save({**blob, "format": FORMAT + 1}, tmp_path / "newer.pt")
    with pytest.raises(BundleError, match=f"format {FORMAT + 1}.*reads format {FORMAT}"):
        RadiogenomicBundle.from_file(tmp_path / "newer.pt")
    del blob["heads"]
    torch.save(blob, tmp_path / "partial.pt")
    with pytest.raises(BundleError, match="lacks heads"):
        RadiogenomicBundle.from_file(tmp_path / "partial.pt")


def test_extracting_only_what_a_model_reads_gives_the_full_extraction_values():
    """Inference computes only the features its heads and Cox models read: the same values
    as the full extraction (default settings: original, LoG, wavelet; all classes)."""
    from glioma_node.inference.radiogenomics import radiomics

    images, labels, brain = trees.tiny_case(np.random.default_rng(4), idh=0, mgmt=1)
    study = tumour_study(Grid(labels.shape, np.eye(4)), images, labels, brain)
    params = radiomics.load_settings()
    full = radiomics.extract(study.images, study.labels, (1.0, 1.0, 1.0), params)
    texture = sorted(n for n in full if not n.startswith("shape."))
    rng = np.random.default_rng(0)
    wanted = [n for n in texture if "log-sigma-3-0" in n][:3] + [n for n in texture if "wavelet-HLH_glszm" in n][:2]
    wanted += list(rng.choice([n for n in texture if n.startswith("T2.")], 5, replace=False))
    for workers in (1, 2):
        some = radiomics.extract(study.images, study.labels, (1.0, 1.0, 1.0), params, workers, only=wanted)
        assert {n: some[n] for n in wanted} == {n: full[n] for n in wanted}
        assert {n for n in some if not n.startswith("shape.")} == set(wanted)
        assert {n: v for n, v in some.items() if n.startswith("shape.")} == {
            n: v for n, v in full.items() if n.startswith("shape.")}
    plans = radiomics.plan_for(wanted[:3], params)  # LoG features at 3 mm only: no 1 mm LoG image is made
    log_passes = [types for plan in plans.values() for types, _ in plan if "LoG" in types]
    assert log_passes and all(types["LoG"]["sigma"] == [3.0] for types in log_passes)


@pytest.mark.slow
def test_evaluate_applies_a_trained_model_to_another_cohort(trained, tmp_path):
    """`glioma-node evaluate radiogenomics --model DIR --data DIR --out DIR` as a user runs it."""
    from glioma_node.cli.main import main

    root, _ = trained
    trees.write_upenn(tmp_path / "upenn", 12)
    assert main(["evaluate", "radiogenomics", "--model", str(root / "model"), "--data", str(tmp_path / "upenn"),
                 "--out", str(tmp_path / "out"), "--masks", "true", "--quiet"]) == 0
    figures = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert figures["cases"] == 12 and figures["model"] == str(root / "model") and figures["masks"] == "true"
    text = (tmp_path / "out" / "EXTERNAL_VALIDATION.md").read_text()
    assert "# External validation of glioma-node-radiogenomics" in text and "external AUC" in text
    assert "Research use only" in text


@pytest.mark.slow
def test_heat_maps_are_smooth_inside_the_brain_and_pass_the_randomisation_check(trained):
    """Grad-CAM a radiologist can read: smooth (no step between neighbouring voxels, as the
    blocks of a coarse layer or the crop's faces made), nothing outside the brain; and the
    sanity check of Adebayo et al. (2018): with the network's weights randomised the map
    must change, else it explains nothing."""
    root, _ = trained
    images, labels, brain = trees.tiny_case(np.random.default_rng(999), idh=0, mgmt=1)
    study = tumour_study(Grid(labels.shape, np.eye(4)), images, labels, brain, 60.0)
    for variants in ({"mgmt": "early"}, {"idh": "cnn"}):
        model = RadiogenomicModel(root / "model", variants)
        target = next(iter(variants))
        cam = model.run(study, workers=1).cams[target]
        inside = study.brain
        assert cam[~inside].max() == 0.0 and cam.max() == pytest.approx(1.0)
        for axis in range(3):
            both = np.moveaxis(inside, axis, 0)
            steps = np.abs(np.diff(np.moveaxis(cam, axis, 0), axis=0))[both[1:] & both[:-1]]
            assert steps.max() < 0.1, (variants, axis, steps.max())
        net = model.encoder if variants[target] == "early" else model.cnns[target][0]
        torch.manual_seed(123)
        for module in net.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        randomised = model.run(study, workers=1).cams[target]
        assert np.corrcoef(cam[inside], randomised[inside])[0, 1] < 0.8
        assert np.abs(cam[inside] - randomised[inside]).mean() > 0.05


@pytest.mark.slow
def test_a_model_on_the_slice_encoder_predicts_and_explains_on_its_slices(trained):
    """The survival study's 2D slice encoder through training and inference, on the tiny cohort;
    beside it an end-to-end CNN on an input of its own (the encoder reads slices, not a crop)."""
    from glioma_node.training.radiogenomics.train import RadiogenomicSettings, train_radiogenomics

    root, _ = trained
    settings = RadiogenomicSettings(targets=("mgmt", "idh"), encoder_steps=6, cross_fit_folds=2, cv_folds=3,
                                    cnn_targets=("idh",), cnn_steps=3, cnn_pretrain_steps=2,
                                    cnn={**DEFAULT_CNN, "crop_size": 40, "crop_spacing_mm": 2.0},
                                    encoder={"variant": "slices", "slice_size": 48, "slice_count": 3, "widths": [],
                                             "crop_size": 32, "crop_spacing_mm": 2.0, "patch_size": 8, "patch_count": 2},
                                    radiomics_settings=LIGHT, workers=2)
    result = train_radiogenomics(root / "data", root / "model-slices", settings, progress=False, command="test")
    assert result["targets"]["idh"]["variants"]["radiomics"]["test"]["auc"] >= 0.8
    model = RadiogenomicModel(root / "model-slices", {"idh": "early"})
    images, labels, brain = trees.tiny_case(np.random.default_rng(997), idh=0, mgmt=1)
    run = model.run(tumour_study(Grid(labels.shape, np.eye(4)), images, labels, brain, age_years=60.0), workers=1)
    cam = run.cams["idh"]
    assert cam.shape == labels.shape and cam.max() == pytest.approx(1.0)
    lit = np.flatnonzero(cam.max(axis=(1, 2)) > 0)  # the maps lie on the slices the encoder read
    assert 1 <= len(lit) <= 3 and all(labels[z].any() for z in lit)
    model = RadiogenomicModel(root / "model-slices", {"idh": "cnn"})
    assert (model.cnns["idh"][1]["crop_size"], model.cnns["idh"][1]["crop_spacing_mm"]) == (40, 2.0)
    assert 0 <= model.run(tumour_study(Grid(labels.shape, np.eye(4)), images, labels, brain, 60.0)).probabilities["idh"] <= 1
    assert len(list((root / "model-slices").glob("cache/crops-*/*.npy"))) == 60  # cut once per case, kept
