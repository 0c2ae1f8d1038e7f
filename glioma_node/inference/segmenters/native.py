"""glioma-node's own segmenter: one network for the tumour regions of a skull-stripped brain.

The network (see :data:`glioma_node.inference.networks.DEFAULT_ARCHITECTURE`) runs at the
manifest's spacing (2 mm) on the channels masked to the brain that
:mod:`glioma_node.inference.brain_extraction` found and z-scored inside it, with sigmoid outputs
whole tumour, tumour core and enhancing tumour, averaged with those of the left-right
mirrored input (manifest ``postprocessing.mirror``). A channel the manifest lists as
optional (``input.required_channels`` leaves it out; the network was trained with it
dropped at random) is fed as zeros when the study lacks it, which is the value a
z-scored channel has on average. Older models with a ``brain`` output keep it unused.

Outputs are interpolated back to the 1 mm grid (trilinear, the exact inverse geometry
of the 2× average pooling used going down).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from glioma_node.inference.intensity import zscore
from glioma_node.inference.model_dir import Manifest, ModelError, read_manifest
from glioma_node.inference.networks import build_network, device
from glioma_node.inference.preprocess import PreparedStudy
from glioma_node.inference.segmenters.base import RegionMaps

KIND = "glioma-node-segmentation"


class NativeSegmenter:
    """A glioma-node model directory (manifest kind ``glioma-node-segmentation``)."""

    def __init__(self, directory: Path) -> None:
        self.manifest: Manifest = read_manifest(directory, KIND)
        spec = self.manifest.data
        self.channels: list[str] = list(spec["input"]["channels"])
        self.required_roles = tuple(spec["input"].get("required_channels", self.channels))
        self.spacing_mm = float(spec["input"]["spacing_mm"])
        self.outputs: list[str] = list(spec["output"]["channels"])
        self.mirror = bool(spec.get("postprocessing", {}).get("mirror", True))
        self.device = device()
        self.net = build_network(spec["architecture"])
        try:
            state = torch.load(self.manifest.weights_path, map_location="cpu", weights_only=True)
            self.net.load_state_dict(state)
        except (RuntimeError, KeyError) as exc:
            raise ModelError(f"{self.manifest.weights_path}: weights do not fit the manifest's architecture ({exc})") from exc
        self.net.to(self.device).eval()

    def describe(self) -> dict[str, str]:
        return self.manifest.describe()

    @torch.no_grad()
    def _run(self, channels: np.ndarray, mirror: bool = False) -> np.ndarray:
        """Sigmoid outputs; with ``mirror`` averaged with the left-right flipped input's
        (the network was trained with such flips, so both views are equally valid)."""
        x = torch.from_numpy(np.ascontiguousarray(channels))[None].to(self.device)
        prob = torch.sigmoid(self.net(x))
        if mirror:
            prob = (prob + torch.sigmoid(self.net(x.flip(-1))).flip(-1)) / 2
        return prob[0].cpu().numpy()

    def _down(self, arrays: np.ndarray, factor: int) -> np.ndarray:
        raw = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32))[None]
        return F.avg_pool3d(raw, factor).numpy()[0] if factor > 1 else raw.numpy()[0]

    @staticmethod
    def _up(maps: np.ndarray, prepared: PreparedStudy, factor: int) -> np.ndarray:
        up = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
        if factor > 1:
            up = F.interpolate(up, size=prepared.grid.shape, mode="trilinear", align_corners=False)
        return up[0].numpy()

    def predict(self, prepared: PreparedStudy, brain: np.ndarray) -> RegionMaps:
        factor = int(round(self.spacing_mm / prepared.grid.spacing[0]))
        zeros = np.zeros(prepared.grid.shape, np.float32)
        stack = [prepared.channels.get(r, zeros) * brain for r in self.channels]
        low = self._down(np.stack([*stack, brain.astype(np.float32)]), factor)
        low_brain = low[-1] > 0.5
        x = np.stack([zscore(c, low_brain) if r in prepared.channels else np.zeros_like(c)
                      for r, c in zip(self.channels, low[:-1])])
        out = self._run(x, mirror=self.mirror)
        out *= ndimage.binary_dilation(low_brain, iterations=2)[None]
        maps = self._up(out, prepared, factor)
        get = {name: maps[i] for i, name in enumerate(self.outputs)}
        return RegionMaps(get["whole_tumour"], get["tumour_core"], get["enhancing_tumour"])
