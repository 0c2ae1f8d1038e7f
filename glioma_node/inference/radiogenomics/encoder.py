"""The deep-feature encoder: a 3D ResNet-18 on the four-channel tumour crop → 128 numbers.

The backbone is MONAI's ResNet with ResNet-18's layout (basic blocks, [2, 2, 2, 2]) and
MedicalNet's shortcut type A, so MedicalNet's ``resnet_18.pth`` (Chen et al. 2019, trained
on 23 medical datasets) loads into it when a user supplies the file: its one-channel first
convolution is inflated to four channels. Nothing is downloaded. The default widths are a
quarter of ResNet-18's (16–128 instead of 64–512) so the network trains on a CPU; with
MedicalNet weights the full widths are used, and the ``combined`` backbone runs both side by
side (:class:`Backbone`).
"""
from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch
from torch import nn

from glioma_node.inference.radiogenomics.slice_encoder import SliceEncoder

EMBEDDING_SIZE = 128
RESNET18_WIDTHS = (64, 128, 256, 512)
DEFAULT_ENCODER: dict[str, Any] = {"widths": [16, 32, 64, 128], "crop_size": 64, "crop_spacing_mm": 2.0,
                                   "variant": "crop", "patch_size": 32, "patch_count": 8}
SLICE_DEFAULTS: dict[str, Any] = {"slice_size": 224, "slice_count": 8}
"""The slices variant's input: this many axial slices through the tumour, this many 1 mm pixels a side."""


class DeepEncoder(nn.Module):
    """ResNet-18 backbone, global pooling and a linear map to a 128-dimensional embedding.

    ``heads`` (optional) maps the embedding to one logit per training target; inference
    uses the embedding only. Input: ``(N, 4, D, H, W)`` z-scored FLAIR, T1, T1c, T2.
    """

    def __init__(self, widths: tuple[int, ...] | list[int] = (16, 32, 64, 128), in_channels: int = 4,
                 targets: int = 0) -> None:
        super().__init__()
        from monai.networks.nets.resnet import ResNet, get_medicalnet_pretrained_resnet_args

        bias_downsample, shortcut = get_medicalnet_pretrained_resnet_args(18)
        self.backbone = ResNet("basic", [2, 2, 2, 2], list(widths), spatial_dims=3, n_input_channels=in_channels,
                               conv1_t_size=7, conv1_t_stride=2, shortcut_type=shortcut,
                               bias_downsample=bias_downsample, feed_forward=False)
        self.project = nn.Sequential(nn.Linear(widths[-1], EMBEDDING_SIZE), nn.LayerNorm(EMBEDDING_SIZE))
        self.heads = nn.Linear(EMBEDDING_SIZE, targets) if targets else None

    @property
    def last_conv(self) -> nn.Module:
        """The last residual stage."""
        return self.backbone.layer4

    @property
    def cam_layers(self) -> list[nn.Module]:
        """The layers Grad-CAM combines: the last three residual stages (1/4, 1/8 and 1/16 of the input)."""
        return [self.backbone.layer2, self.backbone.layer3, self.backbone.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``(N, 128)``."""
        return self.project(self.backbone(x))


def load_medicalnet(encoder: DeepEncoder | CombinedEncoder, path: Path) -> list[str]:
    """Copy MedicalNet ResNet-18 weights (``resnet_18.pth``) into ``encoder``'s backbone.

    The first convolution (one input channel) is repeated over the four channels and
    divided by four, so a constant image gives the same response. Returns the names of
    the backbone parameters the file did not have (a mismatch raises ValueError).
    """
    if isinstance(encoder, CombinedEncoder):
        encoder = encoder.medicalnet
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()
             if not k.removeprefix("module.").startswith(("fc.", "conv_seg"))}
    own = encoder.backbone.state_dict()
    if "conv1.weight" in state and state["conv1.weight"].shape[1] != own["conv1.weight"].shape[1]:
        w = state["conv1.weight"]
        state["conv1.weight"] = w.repeat(1, own["conv1.weight"].shape[1], 1, 1, 1) / own["conv1.weight"].shape[1]
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: shapes do not match a ResNet-18 with widths {RESNET18_WIDTHS} "
                         f"({', '.join(wrong[:3])}); is it MedicalNet's resnet_18.pth?")
    result = encoder.backbone.load_state_dict(state, strict=False)
    if len(result.missing_keys) > len(own) // 2:
        raise ValueError(f"{path}: holds almost none of a ResNet-18's weights; is it MedicalNet's resnet_18.pth?")
    return list(result.missing_keys)


class CombinedEncoder(nn.Module):
    """The lightweight ResNet-18 and the full-width one MedicalNet's weights start, side by
    side on the same input: their two embeddings, concatenated, are mapped to one of 128
    (the chemotherapy-benefit study combined a lightweight 3D CNN with MedicalNet)."""

    def __init__(self, widths: tuple[int, ...] | list[int], in_channels: int = 4, targets: int = 0) -> None:
        super().__init__()
        self.lightweight = DeepEncoder(widths, in_channels)
        self.medicalnet = DeepEncoder(RESNET18_WIDTHS, in_channels)
        self.combine = nn.Sequential(nn.Linear(2 * EMBEDDING_SIZE, EMBEDDING_SIZE), nn.LayerNorm(EMBEDDING_SIZE))
        self.heads = nn.Linear(EMBEDDING_SIZE, targets) if targets else None

    @property
    def cam_layers(self) -> list[nn.Module]:
        """Both networks' Grad-CAM layers (their maps are averaged on the common input)."""
        return self.lightweight.cam_layers + self.medicalnet.cam_layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``(N, 128)``."""
        return self.combine(torch.cat([self.lightweight(x), self.medicalnet(x)], dim=1))


class EncoderEnsemble(nn.Module):
    """The cross-fitting encoders of a model, used together: the embedding is the mean of
    theirs.

    Training gives each training case the embedding of the fold encoder that never saw it,
    so the heads learn from embeddings of every member; a new case is embedded by all of
    them and their embeddings averaged, so training and inference embed the same way (for a
    linear head the averaged embedding gives exactly the average of the members' logits).
    The coordinates of separately trained encoders do not agree, which is why a single
    encoder trained on all cases cannot stand in for them.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an encoder ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.heads = None

    @property
    def cam_layers(self) -> list[nn.Module]:
        """Every member's Grad-CAM layers (their maps are averaged on the common input)."""
        return [layer for m in self.members for layer in m.cam_layers]  # type: ignore[union-attr]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The mean of the members' embeddings ``(N, 128)``."""
        return torch.stack([m(x) for m in self.members]).mean(dim=0)


class Backbone(StrEnum):
    """Which 3D network the encoder is (``encoder.backbone`` of a model; the slices variant has its own)."""

    LIGHTWEIGHT = "lightweight"
    """The quarter-width ResNet-18 (``widths``), trained from scratch on a CPU."""
    MEDICALNET = "medicalnet"
    """The full-width ResNet-18, started from MedicalNet's ``resnet_18.pth``."""
    COMBINED = "combined"
    """Both, their embeddings combined (:class:`CombinedEncoder`)."""


def build_encoder(config: dict[str, Any], targets: int = 0) -> DeepEncoder | SliceEncoder | CombinedEncoder | EncoderEnsemble:
    """The encoder an encoder ``config`` names: the 2D slice CNN for the ``slices`` variant,
    else the ``backbone`` (:class:`Backbone`; a config without one is the ResNet-18 of
    ``widths``); ``members`` of them as an :class:`EncoderEnsemble` when the config says so
    (without label heads: an ensemble is what inference runs, not what trains)."""
    members = int(config.get("members", 1))
    if members > 1:
        single = {k: v for k, v in config.items() if k != "members"}
        return EncoderEnsemble([build_encoder(single) for _ in range(members)])
    if config.get("variant") == "slices":
        return SliceEncoder(targets=targets)
    backbone = Backbone(config.get("backbone", Backbone.LIGHTWEIGHT))
    if backbone == Backbone.COMBINED:
        return CombinedEncoder(config["widths"], targets=targets)
    widths = RESNET18_WIDTHS if backbone == Backbone.MEDICALNET else config["widths"]
    return DeepEncoder(widths, targets=targets)
