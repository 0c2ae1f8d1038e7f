"""The end-to-end alternative: a 3D EfficientNet on the tumour-centred crop → one probability.

MONAI's EfficientNetBN (Tan & Le 2019) with ``spatial_dims=3``, four input channels and one
output logit, on a 128³ crop at 1 mm (see :mod:`glioma_node.inference.radiogenomics.crop`). Training
freezes the stem and the early blocks and trains the last blocks and the head; freezing
only helps on pretrained weights, so the backbone either loads weights a user supplies
(:func:`load_backbone`, e.g. an inflated ImageNet or MedicalNet-style checkpoint) or is first
pretrained by glioma-node on the synthetic cohort (training.radiogenomics.cnn).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

DEFAULT_CNN: dict[str, Any] = {"model_name": "efficientnet-b0", "crop_size": 128, "crop_spacing_mm": 1.0,
                               "frozen_blocks": 4}


class TumourCNN(nn.Module):
    """EfficientNetBN-3D with one output logit; ``outputs`` > 1 for pretraining tasks."""

    def __init__(self, model_name: str = "efficientnet-b0", in_channels: int = 4, outputs: int = 1) -> None:
        super().__init__()
        from monai.networks.nets import EfficientNetBN

        self.net = EfficientNetBN(model_name, pretrained=False, progress=False, spatial_dims=3,
                                  in_channels=in_channels, num_classes=outputs)

    @property
    def last_conv(self) -> nn.Module:
        """The 1×1×1 head convolution."""
        return self.net._conv_head

    @property
    def cam_layers(self) -> list[nn.Module]:
        """The layers Grad-CAM combines: MBConv stages 3 and 5 (1/8 and 1/16 of the input) and the head (1/32)."""
        return [self.net._blocks[2], self.net._blocks[4], self.net._conv_head]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def freeze_early(self, blocks: int) -> int:
        """Freeze the stem and the first ``blocks`` of the 7 MBConv stages; returns trainable parameters."""
        for module in [self.net._conv_stem, self.net._bn0, *list(self.net._blocks)[:blocks]]:
            for p in module.parameters():
                p.requires_grad_(False)
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def replace_output(self, outputs: int) -> None:
        """A fresh final layer with ``outputs`` logits (after pretraining on another task)."""
        self.net._fc = nn.Linear(self.net._fc.in_features, outputs)


def load_backbone(model: TumourCNN, path: Path) -> list[str]:
    """Load user-supplied weights for the EfficientNet (the final layer is left out).

    Accepts a state_dict (or ``{"state_dict": ...}``) with MONAI EfficientNetBN-3D names,
    optionally prefixed ``net.`` or ``module.``; a stem with another number of input
    channels is inflated (averaged, repeated). Returns the names not found in the file.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module.").removeprefix("net."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("_fc.")}
    own = model.net.state_dict()
    stem = "_conv_stem.weight"
    if stem in state and stem in own and state[stem].shape[1] != own[stem].shape[1]:
        w = state[stem].mean(dim=1, keepdim=True)
        state[stem] = w.repeat(1, own[stem].shape[1], *([1] * (w.ndim - 2)))
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: shapes do not match {', '.join(wrong[:3])}; the file must hold a 3D "
                         "EfficientNetBN of the same model_name (inflate 2D ImageNet weights first)")
    result = model.net.load_state_dict(state, strict=False)
    if len(result.missing_keys) > len(own) // 2:
        raise ValueError(f"{path}: holds almost none of the EfficientNet's weights")
    return [k for k in result.missing_keys if not k.startswith("_fc.")]
