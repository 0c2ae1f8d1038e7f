"""3D (and 2D) Grad-CAM (Selvaraju et al. 2017) for a scalar output of a CNN, over several layers.

At one convolutional layer the map is ReLU(Σ_k α_k A_k) over its channels k, with A the
layer's activations and α_k the spatial mean of d(output)/dA_k. A deep layer alone is too
coarse to read (the 2³ last stage of a 64³ crop is one blob the size of the crop), so the
maps of several layers are each scaled to 0–1, upsampled smoothly (trilinear) to the
input's voxels and averaged (as multi-layer CAMs do): the deep layers say which
structure, the finer ones where in it. The result is scaled to 0–1 (1 = the voxels that
most raised the output). Values are relative: they say where, not how much.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn


def grad_cam(model_input: torch.Tensor, layers: nn.Module | Sequence[nn.Module],
             output: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """Grad-CAM of ``output(model_input)`` (a scalar) at ``layers``: float32 ``(d, h, w)`` in 0–1 on
    the voxels of ``model_input`` ``(1, C, d, h, w)`` (``(h, w)`` for a 2D network's ``(1, C, h, w)``;
    place it on the study grid with :func:`glioma_node.inference.radiogenomics.crop.uncrop`)."""
    layers = [layers] if isinstance(layers, nn.Module) else list(layers)
    store: dict[int, torch.Tensor] = {}

    def keeper(index: int):
        def keep(_module, _inputs, out):
            out.retain_grad()
            store[index] = out
        return keep

    handles = [layer.register_forward_hook(keeper(i)) for i, layer in enumerate(layers)]
    try:
        with torch.enable_grad():
            x = model_input.detach().requires_grad_(False)
            value = output(x)
            if value.numel() != 1:
                raise ValueError("Grad-CAM needs a scalar output")
            value.backward()
    finally:
        for handle in handles:
            handle.remove()
    spatial = model_input.ndim - 2
    size = tuple(model_input.shape[2:])
    maps = []
    for i in range(len(layers)):
        a = store[i]
        g = a.grad
        if g is None:
            raise ValueError("Grad-CAM: the output does not depend on the chosen layer (no gradient reached it)")
        cam = torch.relu((g.mean(dim=tuple(range(2, 2 + spatial)), keepdim=True) * a).sum(dim=1, keepdim=True)).detach()
        if tuple(cam.shape[2:]) != size:
            cam = nn.functional.interpolate(cam, size=size, mode="trilinear" if spatial == 3 else "bilinear",
                                            align_corners=False)
        peak = float(cam.max())
        maps.append(cam / peak if peak > 0 else cam)
    combined = torch.stack(maps).mean(dim=0)[0, 0].cpu().numpy().astype(np.float32)
    peak = float(combined.max())
    return combined / peak if peak > 0 else combined
