"""The 2D slice encoder of the GBM survival study: axial slices through the tumour → 128 numbers.

Four convolution blocks (3×3 convolution, batch normalisation, ReLU, 2×2 max pooling) of
32, 64, 128 and 256 channels, global average pooling, a fully connected layer of 512
with dropout 0.3, and a linear map to the 128-dimensional embedding. Input: ``(N, 4, H, W)``
z-scored FLAIR, T1, T1c and T2 slices of 224 × 224 mm at 1 mm (the study's input size);
a study's embedding is the mean over its slices
(:func:`glioma_node.inference.radiogenomics.crop.tumour_slices`).
"""
from __future__ import annotations

import torch
from torch import nn

SLICE_WIDTHS = (32, 64, 128, 256)
HIDDEN = 512


def _block(channels_in: int, channels_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, padding=1, bias=False), nn.BatchNorm2d(channels_out),
                         nn.ReLU(inplace=True), nn.MaxPool2d(2))


class SliceEncoder(nn.Module):
    """The survival study's 2D CNN; ``heads`` (optional) maps the embedding to one logit per
    training target, as :class:`glioma_node.inference.radiogenomics.encoder.DeepEncoder` does."""

    def __init__(self, in_channels: int = 4, targets: int = 0, embedding: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        widths = (in_channels, *SLICE_WIDTHS)
        self.blocks = nn.ModuleList(_block(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.project = nn.Sequential(nn.Flatten(), nn.Linear(SLICE_WIDTHS[-1], HIDDEN), nn.ReLU(inplace=True),
                                     nn.Dropout(dropout), nn.Linear(HIDDEN, embedding), nn.LayerNorm(embedding))
        self.heads = nn.Linear(embedding, targets) if targets else None

    @property
    def last_conv(self) -> nn.Module:
        """The last convolution block."""
        return self.blocks[-1]

    @property
    def cam_layers(self) -> list[nn.Module]:
        """The layers Grad-CAM combines: blocks 2–4 (1/4, 1/8 and 1/16 of the slice)."""
        return list(self.blocks[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding ``(N, 128)`` of ``(N, 4, H, W)`` slices."""
        for block in self.blocks:
            x = block(x)
        return self.project(x.mean(dim=(2, 3)))
