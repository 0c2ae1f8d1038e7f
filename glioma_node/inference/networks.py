"""Network architectures a manifest may name, built from their keyword arguments.

Only MONAI classes listed here are accepted: a manifest is data, and naming an
arbitrary import path in it must not run arbitrary code.
"""
from __future__ import annotations

from typing import Any

import torch

ARCHITECTURES = ("SegResNet", "DynUNet", "UNet", "SwinUNETR")

# glioma-node's own segmenter: SegResNet (Myronenko 2018, the BraTS 2018 winner and the
# network of MONAI's brats_mri_segmentation bundle) with 8 initial filters: residual
# blocks with group norm hold up under strong intensity randomisation, and the model
# stays ~1.2 M parameters (about 5 MB) so it trains on a CPU and runs in seconds.
DEFAULT_ARCHITECTURE: dict[str, Any] = {
    "class": "SegResNet",
    "kwargs": {"spatial_dims": 3, "in_channels": 4, "out_channels": 3, "init_filters": 8,
               "blocks_down": [1, 2, 2, 4], "blocks_up": [1, 1, 1], "dropout_prob": 0.1},
}


def build_network(spec: dict[str, Any]) -> torch.nn.Module:
    """The untrained network ``spec`` describes (``{"class": name, "kwargs": {...}}``)."""
    import monai.networks.nets as nets

    name = spec.get("class")
    if name not in ARCHITECTURES:
        raise ValueError(f"architecture {name!r} is not supported; use one of {', '.join(ARCHITECTURES)}")
    return getattr(nets, name)(**spec.get("kwargs", {}))


def device() -> torch.device:
    """A CUDA GPU when torch sees one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
