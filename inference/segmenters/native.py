"""glioma-node's own segmenter: one network that finds the brain and the tumour regions.

The network (see :data:`inference.networks.DEFAULT_ARCHITECTURE`) was trained on whole
heads and on skull-stripped brains, at the manifest's spacing (2 mm), with outputs
brain, whole tumour, tumour core and enhancing tumour (sigmoids). It runs twice:

1. on the channels z-scored inside the head: its brain output is the brain mask
   (brain extraction that works on scans that were not skull-stripped);
2. on the channels masked to that brain and z-scored inside it: the tumour outputs,
   averaged with those of the left-right mirrored input (manifest ``postprocessing.mirror``).

Outputs are interpolated back to the 1 mm grid (trilinear, the exact inverse geometry
of the 2× average pooling used going down).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from inference.intensity import head_mask, zscore
from inference.model_dir import Manifest, ModelError, read_manifest
from inference.networks import build_network, device
from inference.preprocess import PreparedStudy
from inference.segmenters.base import RegionMaps

KIND = "glioma-node-segmentation"


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean mask, holes filled."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n > 1:
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, n + 1))
        mask = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(mask)


class NativeSegmenter:
    """A glioma-node model directory (manifest kind ``glioma-node-segmentation``)."""

    def __init__(self, directory: Path) -> None:
        self.manifest: Manifest = read_manifest(directory, KIND)
        spec = self.manifest.data
        self.channels: list[str] = list(spec["input"]["channels"])
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

    def _low(self, prepared: PreparedStudy) -> tuple[np.ndarray, int]:
        """Channels averaged down to the network's spacing, and the pooling factor."""
        factor = int(round(self.spacing_mm / prepared.grid.spacing[0]))
        raw = torch.from_numpy(np.stack([prepared.channels[r] for r in self.channels]))[None]
        return (F.avg_pool3d(raw, factor).numpy()[0] if factor > 1 else raw.numpy()[0]), factor

    def _brain(self, low: np.ndarray) -> np.ndarray:
        first = self._run(np.stack([zscore(c, head_mask(c)) for c in low]))
        return largest_component(first[self.outputs.index("brain")] > 0.5)

    @staticmethod
    def _up(maps: np.ndarray, prepared: PreparedStudy, factor: int) -> np.ndarray:
        up = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]
        if factor > 1:
            up = F.interpolate(up, size=prepared.grid.shape, mode="trilinear", align_corners=False)
        return up[0].numpy()

    def brain_mask(self, prepared: PreparedStudy) -> np.ndarray:
        """Brain extraction alone (pass 1): a boolean mask on the prepared 1 mm grid."""
        low, factor = self._low(prepared)
        return self._up(self._brain(low)[None], prepared, factor)[0] > 0.5

    def predict(self, prepared: PreparedStudy) -> RegionMaps:
        low, factor = self._low(prepared)
        brain = self._brain(low)
        second = self._run(np.stack([zscore(c, head_mask(c)) for c in low * brain]), mirror=self.mirror)
        second[1:] *= ndimage.binary_dilation(brain, iterations=2)[None]
        second[0] = brain
        maps = self._up(second, prepared, factor)
        get = {name: maps[i] for i, name in enumerate(self.outputs)}
        return RegionMaps(get["whole_tumour"], get["tumour_core"], get["enhancing_tumour"], get["brain"] > 0.5)
