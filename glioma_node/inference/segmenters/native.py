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
from glioma_node.inference.regions import dice
from glioma_node.inference.segmenters.base import RegionMaps

KIND = "glioma-node-segmentation"


def _down(arrays: np.ndarray, factor: int) -> np.ndarray:
    raw = torch.from_numpy(np.ascontiguousarray(arrays, dtype=np.float32))[None]
    return F.avg_pool3d(raw, factor).numpy()[0] if factor > 1 else raw.numpy()[0]


def network_input(prepared: PreparedStudy, brain: np.ndarray, channels: list[str], spacing_mm: float
                  ) -> tuple[np.ndarray, np.ndarray, int]:
    """What the network sees of a prepared study: (channels (C, z, y, x) at ``spacing_mm``,
    masked to the brain and z-scored inside it, a missing channel zeros; the brain mask at
    that spacing; the pooling factor from the 1 mm grid). Training's real-case validation
    uses it too, so a checkpoint is scored on exactly what inference feeds it."""
    factor = int(round(spacing_mm / prepared.grid.spacing[0]))
    zeros = np.zeros(prepared.grid.shape, np.float32)
    stack = [prepared.channels.get(r, zeros) * brain for r in channels]
    low = _down(np.stack([*stack, brain.astype(np.float32)]), factor)
    low_brain = low[-1] > 0.5
    x = np.stack([zscore(c, low_brain) if r in prepared.channels else np.zeros_like(c)
                  for r, c in zip(channels, low[:-1])])
    return x, low_brain, factor


def view_probabilities(net: torch.nn.Module, x: np.ndarray, low_brain: np.ndarray, dev: torch.device
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid outputs at the network's spacing for the input and for its left-right mirror
    image (flipped back), each zeroed more than 2 voxels outside the brain."""
    inside = ndimage.binary_dilation(low_brain, iterations=2)[None]
    with torch.no_grad():
        t = torch.from_numpy(np.ascontiguousarray(x))[None].to(dev)
        plain = torch.sigmoid(net(t))[0].cpu().numpy()
        flipped = torch.sigmoid(net(t.flip(-1))).flip(-1)[0].cpu().numpy()
    return plain * inside, flipped * inside


def tumour_probabilities(net: torch.nn.Module, x: np.ndarray, low_brain: np.ndarray, dev: torch.device,
                         mirror: bool = True) -> np.ndarray:
    """Sigmoid outputs at the network's spacing, averaged with those of the left-right
    mirrored input when ``mirror`` (the network was trained with such flips, so both views
    are equally valid), zeroed more than 2 voxels outside the brain."""
    if mirror:
        plain, flipped = view_probabilities(net, x, low_brain, dev)
        return (plain + flipped) / 2
    with torch.no_grad():
        out = torch.sigmoid(net(torch.from_numpy(np.ascontiguousarray(x))[None].to(dev)))[0].cpu().numpy()
    return out * ndimage.binary_dilation(low_brain, iterations=2)[None]


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

    @staticmethod
    def _up(maps: np.ndarray, prepared: PreparedStudy, factor: int) -> np.ndarray:
        up = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
        if factor > 1:
            up = F.interpolate(up, size=prepared.grid.shape, mode="trilinear", align_corners=False)
        return up[0].numpy()

    def predict(self, prepared: PreparedStudy, brain: np.ndarray) -> RegionMaps:
        x, low_brain, factor = network_input(prepared, brain, self.channels, self.spacing_mm)
        agreement = None
        if self.mirror:
            plain, flipped = view_probabilities(self.net, x, low_brain, self.device)
            wt = self.outputs.index("whole_tumour")
            agreement = dice(plain[wt] > 0.5, flipped[wt] > 0.5)
            low = (plain + flipped) / 2
        else:
            low = tumour_probabilities(self.net, x, low_brain, self.device, mirror=False)
        maps = self._up(low, prepared, factor)
        get = {name: maps[i] for i, name in enumerate(self.outputs)}
        return RegionMaps(get["whole_tumour"], get["tumour_core"], get["enhancing_tumour"], agreement=agreement,
                          agreement_of="the input and its mirror image")
