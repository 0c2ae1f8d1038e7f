"""nnU-Net v2 results folders, run without the nnunetv2 package.

Point ``models.segmentation.path`` at a trained configuration folder::

    Dataset137_BraTS2021/nnUNetTrainer__nnUNetPlans__3d_fullres/
        dataset.json  plans.json  fold_0/checkpoint_final.pth  [fold_1/ ...]

What is reproduced of nnU-Net's predictor: the network from ``plans.json``
(``dynamic_network_architectures``, only its U-Nets and ``torch.nn`` building blocks,
so a plans file cannot import arbitrary code), ``transpose_forward``, cropping to the
non-zero region, per-channel ``ZScoreNormalization`` (with ``use_mask_for_norm``),
resampling to the configuration's spacing (trilinear here, third-order spline in
nnU-Net), Gaussian-weighted sliding windows with half-patch overlap, averaging over the
chosen folds. Not reproduced: test-time mirroring (off here for speed).

Outputs map to BraTS regions by name: region-based training (``labels`` with lists,
e.g. ``"whole tumor": [1, 2, 3]``) uses sigmoids; label-based training uses a softmax
whose classes are named edema, necrosis / non-enhancing, enhancing.

Images are in SimpleITK's axis order ``[z, y, x]``, as nnU-Net reads NIfTI, on the
axis-aligned LPS grid of the prepared study.
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glioma_node.inference.model_dir import ModelError, sha256_file
from glioma_node.inference.networks import device
from glioma_node.inference.preprocess import PreparedStudy
from glioma_node.inference.segmenters.base import RegionMaps, single_output
from glioma_node.inference.segmenters.channels import region_of, role_of

NETWORK_CLASSES = {
    "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "dynamic_network_architectures.architectures.unet.ResidualEncoderUNet",
}


def _import_torch_nn(path: str) -> type:
    if not re.fullmatch(r"torch\.nn(\.\w+)+", path):
        raise ModelError(f"plans.json asks to import {path!r}; only torch.nn classes are allowed")
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _label_brats(name: str) -> int:
    """BraTS label of a label-based nnU-Net class name (0 for background)."""
    text = name.lower()
    if "background" in text:
        return 0
    if "edema" in text or "oedema" in text or "snfh" in text:
        return 2
    if "non" in text or "necro" in text or "ncr" in text:
        return 1
    if "enhanc" in text or text in ("et",):
        return 4
    raise ModelError(f"nnU-Net label {name!r} is not a BraTS compartment (edema, necrosis, enhancing)")


class NnUNetSegmenter:
    """A trained nnU-Net v2 configuration folder (see the module doc)."""

    def __init__(self, folder: Path, folds: tuple[int, ...] = (0,), checkpoint: str = "checkpoint_final.pth") -> None:
        self.folder = Path(folder)
        for name in ("plans.json", "dataset.json"):
            if not (self.folder / name).is_file():
                raise ModelError(f"{self.folder}: no {name}; point the path at an nnU-Net v2 "
                                 "<Trainer>__<Plans>__<configuration> folder")
        plans = json.loads((self.folder / "plans.json").read_text())
        dataset = json.loads((self.folder / "dataset.json").read_text())
        configuration = self.folder.name.split("__")[-1]
        configs = plans.get("configurations", {})
        if configuration not in configs:
            configuration = "3d_fullres"
        if configuration not in configs:
            raise ModelError(f"{self.folder}/plans.json has no configuration {configuration!r}")
        config = dict(configs[configuration])
        while "inherits_from" in config:
            parent = dict(configs[config.pop("inherits_from")])
            parent.update(config)
            config = parent
        self.plans_name = str(plans.get("plans_name", "nnUNetPlans"))
        self.dataset_name = str(plans.get("dataset_name", self.folder.parent.name))
        self.transpose = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
        self.spacing = [float(s) for s in config["spacing"]]
        self.patch = [int(p) for p in config["patch_size"]]
        self.schemes = list(config.get("normalization_schemes", ["ZScoreNormalization"]))
        self.use_mask = list(config.get("use_mask_for_norm", [True] * len(self.schemes)))
        names = dataset["channel_names"] if "channel_names" in dataset else dataset["modality"]
        self.inputs = [role_of(names[k]) for k in sorted(names, key=int)]
        self.required_roles = tuple(self.inputs)
        labels = dataset["labels"]
        self.region_based = any(isinstance(v, list) for v in labels.values())
        if self.region_based:
            order = [n for n in labels if n != "background"]
            self.outputs: list[str | int] = [region_of(n) for n in order]
        else:
            by_value = sorted(labels.items(), key=lambda kv: int(kv[1]))
            self.outputs = [_label_brats(n) for n, _ in by_value]
        self.nets = [self._load(config["architecture"], self.folder / f"fold_{f}" / checkpoint) for f in folds]
        self.sha256 = sha256_file(self.folder / f"fold_{folds[0]}" / checkpoint)
        self.folds = folds

    def _load(self, arch: dict, path: Path) -> torch.nn.Module:
        cls_path = arch.get("network_class_name", "")
        if cls_path not in NETWORK_CLASSES:
            raise ModelError(f"{self.folder}/plans.json: network {cls_path!r} is not supported "
                             f"(supported: {', '.join(sorted(NETWORK_CLASSES))})")
        module, _, name = cls_path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        kwargs = dict(arch["arch_kwargs"])
        for key in arch.get("_kw_requires_import", []):
            if kwargs.get(key) is not None:
                kwargs[key] = _import_torch_nn(kwargs[key])
        n_out = len(self.outputs)
        net = cls(input_channels=len(self.inputs), num_classes=n_out, deep_supervision=False, **kwargs)
        if not path.is_file():
            raise ModelError(f"{path}: checkpoint not found")
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling refused: objects beyond tensors and plain containers
            raise ModelError(f"{path}: checkpoint holds objects that cannot be loaded safely ({exc})") from exc
        state = ckpt.get("network_weights", ckpt)
        state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"{path}: weights do not fit plans.json's network ({exc})") from exc
        return net.to(device()).eval()

    def describe(self) -> dict[str, str]:
        return {"name": f"nnU-Net {self.dataset_name} {self.folder.name}", "version": f"folds {list(self.folds)}",
                "sha256": self.sha256, "kind": "nnunet-v2"}

    def _normalise(self, data: np.ndarray) -> np.ndarray:
        nonzero = (data != 0).any(axis=0)
        out = np.zeros_like(data, dtype=np.float32)
        for c, (scheme, use_mask) in enumerate(zip(self.schemes, self.use_mask)):
            if scheme != "ZScoreNormalization":
                raise ModelError(f"normalization {scheme!r} is not supported for MR (ZScoreNormalization is)")
            mask = nonzero if use_mask else np.ones_like(nonzero)
            values = data[c][mask]
            out[c][mask] = (values - values.mean()) / max(float(values.std()), 1e-8)
        return out

    @torch.no_grad()
    def predict(self, prepared: PreparedStudy, brain: np.ndarray) -> RegionMaps:
        from monai.inferers import sliding_window_inference

        data = np.stack([prepared.channels[r] * brain for r in self.inputs]).transpose([0, *[a + 1 for a in self.transpose]])
        nonzero = np.argwhere((data != 0).any(axis=0))
        lo, hi = nonzero.min(axis=0), nonzero.max(axis=0) + 1
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        cropped = self._normalise(data[(slice(None), *box)])
        grid_spacing = np.array(prepared.grid.spacing[::-1])[self.transpose]  # [z, y, x] spacing, transposed
        shape = cropped.shape[1:]
        target = [max(1, int(round(n * s / t))) for n, s, t in zip(shape, grid_spacing, self.spacing)]
        x = torch.from_numpy(cropped)[None].to(device())
        if list(target) != list(shape):
            x = F.interpolate(x, size=target, mode="trilinear", align_corners=False)
        roi = tuple(self.patch)
        total = torch.zeros(())
        for net in self.nets:
            logits = single_output(sliding_window_inference(x, roi, 1, net, overlap=0.5, mode="gaussian",
                                                      padding_mode="constant"))
            total = total + (torch.sigmoid(logits) if self.region_based else torch.softmax(logits, 1))
        mean = total / len(self.nets)
        if list(target) != list(shape):
            mean = F.interpolate(mean, size=list(shape), mode="trilinear", align_corners=False)
        prob = mean[0].cpu().numpy()
        full = np.zeros((prob.shape[0], *data.shape[1:]), np.float32)
        full[(slice(None), *box)] = prob
        back = np.argsort(self.transpose)
        full = full.transpose([0, *[a + 1 for a in back]])
        if self.region_based:
            get = {str(region): full[i] for i, region in enumerate(self.outputs)}
            return RegionMaps(get["whole_tumour"], get["tumour_core"], get["enhancing_tumour"])
        by_label = {lab: np.zeros(full.shape[1:], np.float32) for lab in (0, 1, 2, 4)}
        for i, lab in enumerate(self.outputs):
            by_label[int(lab)] += full[i]
        return RegionMaps(by_label[1] + by_label[2] + by_label[4], by_label[1] + by_label[4], by_label[4])
