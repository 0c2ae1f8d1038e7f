"""Models users already have: MONAI bundles and nnU-Net v2 folders, built here in their layouts.

The networks are given weights whose outputs are known (a 1×1×1 convolution reading
named channels, or a U-Net whose last layer is a constant), so the tests check what a
user relies on: channels fed in the order the model declares, outputs mapped to the
right BraTS regions, the crop and axis order undone.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from glioma_node.core.grid import Grid
from glioma_node.inference.model_dir import ModelError, read_manifest, write_manifest
from glioma_node.inference.preprocess import PreparedStudy, PreprocessingError
from glioma_node.inference.segmentation import compose
from glioma_node.inference.segmenters import load_segmenter

SHAPE = (32, 40, 48)


def _prepared(rng: np.random.Generator) -> tuple[PreparedStudy, np.ndarray, np.ndarray]:
    """A 1 mm study: a head block with a FLAIR-bright box A and a T1c-bright box B inside it."""
    affine = np.eye(4)
    grid = Grid(SHAPE, affine)
    head = np.zeros(SHAPE, bool)
    head[4:28, 5:35, 6:42] = True
    a = np.zeros(SHAPE, bool)
    a[10:20, 12:26, 14:30] = True
    b = np.zeros(SHAPE, bool)
    b[13:17, 16:22, 18:24] = True
    channels = {}
    for role in ("FLAIR", "T1", "T1c", "T2"):
        ch = (100 + rng.normal(0, 2, SHAPE)) * head
        if role == "FLAIR":
            ch[a] = 400
        if role == "T1c":
            ch[b] = 400
        channels[role] = ch.astype(np.float32)
    prepared = PreparedStudy(grid, channels, {r: grid for r in channels}, {r: sitk.Euler3DTransform() for r in channels},
                             {}, "T1c")
    return prepared, a, b


def _bundle(root: Path, inputs: list[str]) -> Path:
    """A MONAI bundle whose network is a 1×1×1 convolution: whole tumour follows FLAIR,
    core and enhancing tumour follow T1c, given the channel order ``inputs``."""
    (root / "configs").mkdir(parents=True)
    (root / "models").mkdir()
    config = {"bundle_root": ".", "network_def": {"_target_": "torch.nn.Conv3d", "in_channels": 4, "out_channels": 3,
                                                  "kernel_size": 1},
              "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [64, 64, 64]}}
    (root / "configs" / "inference.json").write_text(json.dumps(config))
    metadata = {"name": "test_bundle", "version": "0.1.0", "network_data_format": {
        "inputs": {"image": {"channel_def": {str(i): n for i, n in enumerate(inputs)}}},
        "outputs": {"pred": {"channel_def": {"0": "Tumor core", "1": "Whole tumor", "2": "Enhancing tumor"}}}}}
    (root / "configs" / "metadata.json").write_text(json.dumps(metadata))
    weight = torch.zeros(3, 4, 1, 1, 1)
    t1c = inputs.index("T1c")
    weight[0, t1c] = weight[2, t1c] = 4.0
    weight[1, inputs.index("FLAIR")] = 4.0
    torch.save({"weight": weight, "bias": torch.full((3,), -8.0)}, root / "models" / "model.pt")
    return root


@pytest.mark.parametrize("inputs", [["T1c", "T1", "T2", "FLAIR"], ["FLAIR", "T1", "T1c", "T2"]])
def test_monai_bundle_feeds_declared_channels_and_maps_regions(tmp_path, inputs):
    segmenter = load_segmenter("monai-bundle", _bundle(tmp_path / "bundle", inputs))
    prepared, a, b = _prepared(np.random.default_rng(0))
    labels = compose(segmenter.predict(prepared, prepared.channels["T1"] > 0))
    assert (labels[b] == 4).all(), "enhancing tumour must follow the T1c channel"
    assert (labels[a & ~b] == 2).all(), "edema must follow the FLAIR channel"
    assert (labels[~a] == 0).all()
    assert segmenter.describe()["name"] == "test_bundle"


def test_monai_bundle_without_weights_is_refused(tmp_path):
    root = _bundle(tmp_path / "bundle", ["T1c", "T1", "T2", "FLAIR"])
    (root / "models" / "model.pt").unlink()
    with pytest.raises(ModelError, match="model.pt not found"):
        load_segmenter("monai-bundle", root)


def _nnunet(root: Path, labels: dict, bias: list[float]) -> Path:
    """An nnU-Net v2 3d_fullres folder with a small PlainConvUNet whose last layer is constant."""
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    folder = root / "Dataset999_Test" / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    arch_kwargs = {"n_stages": 2, "features_per_stage": [4, 8], "conv_op": "torch.nn.modules.conv.Conv3d",
                   "kernel_sizes": [[3, 3, 3], [3, 3, 3]], "strides": [[1, 1, 1], [2, 2, 2]],
                   "n_conv_per_stage": [1, 1], "n_conv_per_stage_decoder": [1], "conv_bias": True,
                   "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                   "norm_op_kwargs": {"eps": 1e-5, "affine": True}, "dropout_op": None, "dropout_op_kwargs": None,
                   "nonlin": "torch.nn.LeakyReLU", "nonlin_kwargs": {"inplace": True}}
    plans = {"dataset_name": "Dataset999_Test", "plans_name": "nnUNetPlans", "transpose_forward": [0, 1, 2],
             "configurations": {"3d_fullres": {
                 "spacing": [1.0, 1.0, 1.0], "patch_size": [16, 16, 16],
                 "normalization_schemes": ["ZScoreNormalization"] * 4, "use_mask_for_norm": [True] * 4,
                 "architecture": {"network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
                                  "arch_kwargs": arch_kwargs,
                                  "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"]}}}}
    (folder / "plans.json").write_text(json.dumps(plans))
    dataset = {"channel_names": {"0": "FLAIR", "1": "T1", "2": "T1CE", "3": "T2"}, "labels": labels,
               "file_ending": ".nii.gz"}
    (folder / "dataset.json").write_text(json.dumps(dataset))
    kwargs = dict(arch_kwargs, conv_op=torch.nn.Conv3d, norm_op=torch.nn.InstanceNorm3d, nonlin=torch.nn.LeakyReLU)
    net = PlainConvUNet(input_channels=4, num_classes=len(bias), deep_supervision=False, **kwargs)
    seg_layer = net.decoder.seg_layers[-1]
    torch.nn.init.zeros_(seg_layer.weight)
    with torch.no_grad():
        seg_layer.bias.copy_(torch.tensor(bias))
    torch.save({"network_weights": net.state_dict(), "trainer_name": "nnUNetTrainer"}, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def test_nnunet_region_based_folder(tmp_path):
    labels = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
    folder = _nnunet(tmp_path, labels, [8.0, -8.0, -8.0])
    segmenter = load_segmenter("nnunet", folder)
    prepared, _, _ = _prepared(np.random.default_rng(1))
    result = compose(segmenter.predict(prepared, prepared.channels["T1"] > 0))
    head = prepared.channels["T1"] > 0
    # whole tumour everywhere nnU-Net looked (the non-zero crop), nothing outside it
    assert (result[head] == 2).all()
    assert (result[~head] == 0).all()
    assert "Dataset999_Test" in segmenter.describe()["name"]


def test_nnunet_label_based_folder_maps_names_to_brats(tmp_path):
    labels = {"background": 0, "edema": 1, "non-enhancing tumor core": 2, "enhancing tumor": 3}
    folder = _nnunet(tmp_path, labels, [0.0, 0.0, 0.0, 9.0])
    prepared, _, _ = _prepared(np.random.default_rng(2))
    result = compose(load_segmenter("nnunet", folder).predict(prepared, prepared.channels["T1"] > 0))
    head = prepared.channels["T1"] > 0
    assert (result[head] == 4).all()


def test_nnunet_plans_cannot_import_arbitrary_code(tmp_path):
    folder = _nnunet(tmp_path, {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3],
                                "enhancing tumor": 3}, [0.0, 0.0, 0.0])
    plans = json.loads((folder / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["conv_op"] = "os.system"
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="only torch.nn"):
        load_segmenter("nnunet", folder)


def test_manifest_checksum_is_checked(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"weights")
    write_manifest(tmp_path, {"name": "m", "version": "1", "kind": "glioma-node-segmentation", "weights": "model.pt",
                              "input": {}, "output": {}})
    assert read_manifest(tmp_path).sha256
    (tmp_path / "model.pt").write_bytes(b"weightz")
    with pytest.raises(ModelError, match="does not match"):
        read_manifest(tmp_path)
    with pytest.raises(ModelError, match="no manifest.json"):
        read_manifest(tmp_path / "elsewhere")


class _Constant:
    """A segmenter whose probabilities are constants (what an ensemble averages)."""

    def __init__(self, name: str, value: float, required: tuple[str, ...]) -> None:
        self.name, self.value, self.required_roles = name, value, required

    def describe(self) -> dict[str, str]:
        return {"name": self.name, "version": "1", "sha256": self.name * 4, "kind": "test"}

    def predict(self, prepared, brain):
        from glioma_node.inference.segmenters.base import RegionMaps

        full = np.full(prepared.grid.shape, self.value, np.float32)
        return RegionMaps(full, full / 2, full / 4)


def test_ensemble_averages_members_and_leaves_out_one_that_cannot_run():
    from glioma_node.inference.segmenters.ensemble import EnsembleSegmenter

    prepared, _, _ = _prepared(np.random.default_rng(2))
    brain = prepared.channels["T1"] > 0
    ensemble = EnsembleSegmenter([_Constant("a", 0.8, ("FLAIR",)), _Constant("b", 0.2, ("FLAIR", "T2"))])
    assert ensemble.required_roles == ("FLAIR",)
    assert EnsembleSegmenter([_Constant("a", 0.8, ("T1c",)), _Constant("b", 0.2, ("T2",))]).required_roles == ()
    maps = ensemble.predict(prepared, brain)
    assert np.allclose(maps.whole_tumour, 0.5) and np.allclose(maps.enhancing_tumour, 0.125) and not maps.notes
    del prepared.channels["T2"]
    maps = ensemble.predict(prepared, brain)
    assert np.allclose(maps.whole_tumour, 0.8)
    assert maps.notes == ["ensemble without b: it needs FLAIR, T2"]
    assert ensemble.describe()["name"] == "ensemble of a + b"
    del prepared.channels["FLAIR"]
    with pytest.raises(PreprocessingError, match="no member of the ensemble can run"):
        ensemble.predict(prepared, brain)
