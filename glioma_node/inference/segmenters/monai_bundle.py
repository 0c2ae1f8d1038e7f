"""MONAI bundles in the layout of the model zoo's ``brats_mri_segmentation``.

Layout::

    <bundle>/configs/inference.json   (or .yaml) with ``network_def`` and optionally ``inferer``
    <bundle>/configs/metadata.json    optional; ``network_data_format`` names the channels
    <bundle>/models/model.pt          a state_dict, or a dict holding one under ``model``

Input channel order and output regions come from metadata.json (``channel_def``);
without it, brats_mri_segmentation's order is assumed (inputs T1c, T1, T2, FLAIR;
outputs tumour core, whole tumour, enhancing tumour, sigmoid). Preprocessing follows
that bundle: 1 mm, skull-stripped, each channel z-scored over its non-zero voxels
(MONAI ``NormalizeIntensityd(nonzero=True, channel_wise=True)``). Arrays are handed
over in the axis order MONAI's ``LoadImaged`` gives for a BraTS NIfTI stored LPS:
(x toward left, y toward posterior, z toward superior), i.e. our ``[z, y, x]`` transposed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from glioma_node.inference.model_dir import ModelError, sha256_file
from glioma_node.inference.networks import device
from glioma_node.inference.preprocess import PreparedStudy
from glioma_node.inference.segmenters.base import RegionMaps, single_output
from glioma_node.inference.segmenters.channels import region_of, role_of

DEFAULT_INPUTS = ("T1c", "T1", "T2", "FLAIR")
DEFAULT_OUTPUTS = ("tumour_core", "whole_tumour", "enhancing_tumour")


def nonzero_zscore(channel: np.ndarray) -> np.ndarray:
    """MONAI NormalizeIntensity(nonzero=True): z-score over non-zero voxels, zeros kept."""
    out = np.zeros_like(channel, dtype=np.float32)
    mask = channel != 0
    if mask.sum() > 1:
        values = channel[mask]
        out[mask] = (values - values.mean()) / (values.std() or 1.0)
    return out


def _config_file(bundle: Path) -> Path:
    for name in ("inference.json", "inference.yaml", "inference.yml"):
        if (bundle / "configs" / name).is_file():
            return bundle / "configs" / name
    raise ModelError(f"{bundle}: no configs/inference.json (or .yaml); is this a MONAI bundle?")


class MonaiBundleSegmenter:
    """A MONAI bundle predicting BraTS regions (see the module doc).

    The input is masked to the brain first, as BraTS training data were skull-stripped.
    """

    def __init__(self, bundle: Path) -> None:
        from monai.bundle import ConfigParser

        self.bundle = Path(bundle)
        parser = ConfigParser()
        parser.read_config(str(_config_file(self.bundle)))
        parser["bundle_root"] = str(self.bundle)
        metadata_path = self.bundle / "configs" / "metadata.json"
        self.metadata = json.loads(metadata_path.read_text()) if metadata_path.is_file() else {}
        fmt = self.metadata.get("network_data_format", {})
        inputs = fmt.get("inputs", {}).get("image", {}).get("channel_def")
        outputs = fmt.get("outputs", {}).get("pred", {}).get("channel_def")
        self.inputs = [role_of(inputs[k]) for k in sorted(inputs, key=int)] if inputs else list(DEFAULT_INPUTS)
        self.outputs = [region_of(outputs[k]) for k in sorted(outputs, key=int)] if outputs else list(DEFAULT_OUTPUTS)
        self.required_roles = tuple(self.inputs)
        if sorted(set(self.outputs)) != sorted(DEFAULT_OUTPUTS) or len(self.outputs) != 3:
            raise ModelError(f"{self.bundle}: outputs {self.outputs} are not the three BraTS regions")
        try:
            self.net = parser.get_parsed_content("network_def")
        except Exception as exc:  # monai raises many types for a bad config
            raise ModelError(f"{self.bundle}: cannot build network_def ({exc})") from exc
        roi = parser.get("inferer", {}).get("roi_size") if isinstance(parser.get("inferer"), dict) else None
        self.roi_size = tuple(int(v) for v in roi) if roi else (240, 240, 160)
        weights = self.bundle / "models" / "model.pt"
        if not weights.is_file():
            raise ModelError(f"{self.bundle}: models/model.pt not found")
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        try:
            self.net.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(f"{weights}: weights do not fit network_def ({exc})") from exc
        self.device = device()
        self.net.to(self.device).eval()
        self.sha256 = sha256_file(weights)

    def describe(self) -> dict[str, str]:
        name = self.metadata.get("name") or self.bundle.name
        return {"name": str(name), "version": str(self.metadata.get("version", "unknown")), "sha256": self.sha256,
                "kind": "monai-bundle"}

    @torch.no_grad()
    def predict(self, prepared: PreparedStudy, brain: np.ndarray) -> RegionMaps:
        from monai.inferers import sliding_window_inference

        channels = []
        for role in self.inputs:
            ch = prepared.channels[role] * brain
            channels.append(nonzero_zscore(ch).transpose(2, 1, 0))
        x = torch.from_numpy(np.ascontiguousarray(np.stack(channels)))[None].to(self.device)
        roi = tuple(min(r, s) for r, s in zip(self.roi_size, x.shape[2:]))
        logits = single_output(sliding_window_inference(x, roi, 1, self.net, overlap=0.5, mode="gaussian"))
        prob = torch.sigmoid(logits)[0].cpu().numpy().transpose(0, 3, 2, 1)
        get = {region: prob[i] for i, region in enumerate(self.outputs)}
        return RegionMaps(get["whole_tumour"], get["tumour_core"], get["enhancing_tumour"])
