"""3D Grad-CAM (Selvaraju et al. 2017) for a scalar output of a CNN.

The map is ReLU(Σ_k α_k A_k) over the channels k of a convolutional layer's activations
A, with α_k the spatial mean of d(output)/dA_k; it is scaled to 0–1 (1 = the voxels that
most raised the output). Values are relative: they say where, not how much.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def grad_cam(model_input: torch.Tensor, layer: nn.Module, output: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Grad-CAM of ``output(model_input)`` (a scalar) at ``layer``: float32 ``(d, h, w)`` in 0–1,
    at the layer's resolution (upsample to the input with :func:`glioma_node.inference.radiogenomics.crop.uncrop`)."""
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, out):
        out.retain_grad()
        store["a"] = out

    handle = layer.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = model_input.detach().requires_grad_(False)
            value = output(x)
            if value.numel() != 1:
                raise ValueError("Grad-CAM needs a scalar output")
            value.backward()
    finally:
        handle.remove()
    a, g = store["a"], store["a"].grad
    if g is None:
        raise ValueError("Grad-CAM: the output does not depend on the chosen layer (no gradient reached it)")
    weights = g.mean(dim=(2, 3, 4), keepdim=True)
    cam = torch.relu((weights * a).sum(dim=1))[0].detach().cpu().numpy().astype(np.float32)
    peak = float(cam.max())
    return cam / peak if peak > 0 else cam
