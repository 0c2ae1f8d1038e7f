"""Training the CNN parts: the deep-feature encoder and the end-to-end EfficientNet.

Both read the cached encoder inputs (float16 ``(N, P, 4, s, s, s)``: P = 1 for the
tumour-centred crop or box, P patches, or ``(N, P, 4, s, s)`` slices) and use the same 3D augmentation:
flips on every axis, a shift of up to 4 voxels, per-channel intensity scale (±10 %) and
offset (±0.1 sd), and Gaussian noise (slices: rotation, flip and zoom, then the same
intensity changes). They train on the device torch sees
(:func:`glioma_node.inference.networks.device`: a CUDA GPU when there is one) and are
returned on it; batches are assembled on the CPU and moved there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import WeightedRandomSampler
from tqdm import tqdm

from glioma_node.inference.networks import device
from glioma_node.inference.radiogenomics.cnn import TumourCNN, load_backbone
from glioma_node.inference.radiogenomics.encoder import (
    CombinedEncoder,
    DeepEncoder,
    EncoderEnsemble,
    build_encoder,
    load_medicalnet,
)
from glioma_node.inference.radiogenomics.model import piece_weights
from glioma_node.inference.radiogenomics.slice_encoder import SliceEncoder


def augment(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """A randomly flipped, shifted, rescaled and noised copy of ``(B, C, D, H, W)``."""
    out = batch.clone()
    for i in range(out.shape[0]):
        dims = [d + 1 for d in range(3) if rng.random() < 0.5]
        x = out[i].flip(dims) if dims else out[i]
        shifts = tuple(int(s) for s in rng.integers(-4, 5, 3))
        x = torch.roll(x, shifts, dims=(1, 2, 3))
        scale = torch.tensor(rng.uniform(0.9, 1.1, x.shape[0]), dtype=x.dtype)[:, None, None, None]
        offset = torch.tensor(rng.uniform(-0.1, 0.1, x.shape[0]), dtype=x.dtype)[:, None, None, None]
        out[i] = x * scale + offset + 0.05 * torch.randn_like(x)
    return out


def augment_slices(batch: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """The survival study's 2D augmentation of ``(B, C, H, W)`` slices: a random rotation (±15°),
    horizontal flip and zoom (0.9–1.1), then the same intensity jitter as in 3D."""
    n = batch.shape[0]
    angle = np.radians(rng.uniform(-15, 15, n))
    zoom = rng.uniform(0.9, 1.1, n)
    flip = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    theta = np.zeros((n, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = np.cos(angle) / zoom * flip, -np.sin(angle) / zoom
    theta[:, 1, 0], theta[:, 1, 1] = np.sin(angle) / zoom * flip, np.cos(angle) / zoom
    grid = nn.functional.affine_grid(torch.tensor(theta, dtype=batch.dtype), list(batch.shape), align_corners=False)
    out = nn.functional.grid_sample(batch, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    scale = torch.tensor(rng.uniform(0.9, 1.1, (n, batch.shape[1])), dtype=batch.dtype)[:, :, None, None]
    offset = torch.tensor(rng.uniform(-0.1, 0.1, (n, batch.shape[1])), dtype=batch.dtype)[:, :, None, None]
    return out * scale + offset + 0.05 * torch.randn_like(out)


def _batch(pieces: np.ndarray, idx: np.ndarray, rng: np.random.Generator | None,
           weights: np.ndarray | None = None) -> torch.Tensor:
    """Training (``rng`` given): one random piece per case (drawn with ``weights``, default
    equal), augmented. Otherwise every piece of every case, in order, ``(len(idx) * P, 4, s, s, s)``."""
    arr = pieces[idx].astype(np.float32)
    if rng is None:
        return torch.from_numpy(arr.reshape(-1, *arr.shape[2:])).to(device())
    chosen = torch.from_numpy(arr[np.arange(len(idx)), rng.choice(arr.shape[1], len(idx), p=weights)])
    return (augment_slices(chosen, rng) if chosen.ndim == 4 else augment(chosen, rng)).to(device())


def _per_case(net: nn.Module, pieces: np.ndarray, batch: int, weights: np.ndarray | None = None) -> np.ndarray:
    """``net``'s output per case, the mean over its pieces weighted by ``weights`` (default equal),
    without gradients."""
    net.eval()
    w = torch.tensor(weights if weights is not None else np.full(pieces.shape[1], 1.0 / pieces.shape[1]),
                     dtype=torch.float32)
    out = []
    with torch.no_grad():
        for start in range(0, len(pieces), batch):
            idx = np.arange(start, min(start + batch, len(pieces)))
            per_piece = net(_batch(pieces, idx, None)).reshape(len(idx), pieces.shape[1], -1).cpu()
            out.append(torch.einsum("p,npk->nk", w, per_piece).numpy())
    return np.concatenate(out)


def _step(opt: torch.optim.Optimizer, loss: torch.Tensor, sched=None) -> None:
    opt.zero_grad()
    loss.backward()
    opt.step()
    if sched is not None:
        sched.step()


@dataclass
class Curve:
    """A network's training record for its curves plot: ``(step, loss)`` per training step
    (``phase`` names the stage: pretraining, training) and ``(step, loss)`` on held-out
    cases every few steps when the caller gave them."""

    name: str
    train: list[tuple[str, int, float]] = field(default_factory=list)
    validation: list[tuple[int, float]] = field(default_factory=list)


def train_encoder(crops: np.ndarray, labels: np.ndarray, config: dict[str, Any], steps: int = 300, batch: int = 8,
                  seed: int = 0, medicalnet: Path | None = None, progress: bool = True, desc: str = "encoder",
                  curve: Curve | None = None) -> DeepEncoder | SliceEncoder | CombinedEncoder:
    """Train the encoder (:func:`glioma_node.inference.radiogenomics.encoder.build_encoder`) with
    one logit per label column (IDH, MGMT; NaN = unknown, ignored), masked binary cross-entropy.

    The 3D encoder: AdamW at 1e-3 with a one-cycle schedule. The 2D slice encoder as the
    survival study trained it: Adam at 1e-4, halved every 10 epochs (an epoch: the cases
    once, ``len(crops) / batch`` steps). Each step's loss goes into ``curve`` when given.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    encoder = build_encoder(config, targets=labels.shape[1])
    if isinstance(encoder, EncoderEnsemble):
        raise ValueError("an encoder ensemble is trained one member at a time (train without 'members' in the config)")
    if medicalnet:
        if isinstance(encoder, SliceEncoder):
            raise ValueError("MedicalNet weights are for the 3D ResNet-18 encoder, not the slices variant")
        load_medicalnet(encoder, medicalnet)
    encoder.to(device())
    sched: torch.optim.lr_scheduler.LRScheduler
    if not isinstance(encoder, SliceEncoder):
        opt: torch.optim.Optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-3, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    else:
        opt = torch.optim.Adam(encoder.parameters(), lr=1e-4)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=10 * max(1, len(crops) // batch), gamma=0.5)
    known = np.isfinite(labels)
    target = torch.tensor(np.nan_to_num(labels), dtype=torch.float32, device=device())
    heads = encoder.heads
    if heads is None:
        raise ValueError("the encoder was built without label heads")
    weights = piece_weights(config, crops.shape[1])
    encoder.train()
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress):
        idx = rng.integers(0, len(crops), batch)
        logits = heads(encoder(_batch(crops, idx, rng, weights)))
        mask = torch.from_numpy(known[idx]).float().to(device())
        per_label = nn.functional.binary_cross_entropy_with_logits(logits, target[idx], reduction="none")
        loss = (per_label * mask).sum() / mask.sum().clamp(min=1)
        _step(opt, loss, sched)
        if curve is not None:
            curve.train.append(("training", len(curve.train), float(loss.item())))
    encoder.eval()
    return encoder


def embed_all(encoder: nn.Module, pieces: np.ndarray, config: dict[str, Any], batch: int = 8) -> np.ndarray:
    """``(N, 128)`` embeddings (each case's pieces weighted as the encoder ``config`` says, as at inference)."""
    return _per_case(encoder, pieces, batch, piece_weights(config, pieces.shape[1]))


def focal_loss(logit: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017): cross-entropy down-weighted on easy cases."""
    bce = nn.functional.binary_cross_entropy_with_logits(logit, target, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


def train_cnn(crops: np.ndarray, y: np.ndarray, descriptors: np.ndarray, config: dict[str, Any], pretrain_steps: int = 200,
              steps: int = 300, batch: int = 4, seed: int = 0, weights: Path | None = None,
              progress: bool = True, curve: Curve | None = None,
              validation: tuple[np.ndarray, np.ndarray] | None = None) -> TumourCNN:
    """The end-to-end EfficientNet for one target.

    With ``weights`` (user-supplied) the backbone loads them; otherwise it is pretrained for
    ``pretrain_steps`` on segmentation-derived descriptors of each crop (log sub-region
    volumes and position, ``descriptors`` ``(N, K)``, standardised), which needs no
    molecular label. Then the stem and the first stages are frozen (``frozen_blocks`` of the
    7 after glioma-node's own pretraining; with supplied weights all but the last two, as
    the IDH study trained only the last two blocks and the head) and the rest trained with
    focal loss, class-balanced sampling (WeightedRandomSampler), AdamW and a one-cycle
    learning rate. Each step's loss goes into ``curve``, and with ``validation`` (crops,
    labels) the focal loss on those cases every tenth of the run.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = TumourCNN(config["model_name"], outputs=descriptors.shape[1] if not weights else 1)
    if weights:
        load_backbone(net, weights)
    net.to(device())
    if not weights:
        d = (descriptors - descriptors.mean(0)) / np.maximum(descriptors.std(0), 1e-6)
        target = torch.tensor(d, dtype=torch.float32, device=device())
        opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
        net.train()
        for _ in tqdm(range(pretrain_steps), desc="cnn pretrain", unit="step", disable=not progress):
            idx = rng.integers(0, len(crops), batch)
            loss = nn.functional.mse_loss(net(_batch(crops, idx, rng)), target[idx])
            _step(opt, loss)
            if curve is not None:
                curve.train.append(("pretraining", len(curve.train), float(loss.item())))
        net.replace_output(1)
        net.to(device())
    net.freeze_early(len(net.net._blocks) - 2 if weights else int(config["frozen_blocks"]))
    counts = np.bincount(y.astype(int), minlength=2).astype(float)
    sampler = list(WeightedRandomSampler((1.0 / np.maximum(counts, 1))[y.astype(int)], num_samples=steps * batch,
                                         replacement=True, generator=torch.Generator().manual_seed(seed)))
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=steps)
    target = torch.tensor(y, dtype=torch.float32, device=device())
    net.train()
    for step in tqdm(range(steps), desc="cnn", unit="step", disable=not progress):
        idx = np.asarray(sampler[step * batch:(step + 1) * batch])
        loss = focal_loss(net(_batch(crops, idx, rng))[:, 0], target[idx])
        _step(opt, loss, sched)
        if curve is not None:
            curve.train.append(("training", len(curve.train), float(loss.item())))
            if validation is not None and (step + 1) % max(1, steps // 10) == 0:
                logits = torch.tensor(cnn_logits(net, validation[0]))
                curve.validation.append((len(curve.train) - 1, float(focal_loss(logits, torch.tensor(
                    validation[1], dtype=torch.float32)))))
                net.train()
    net.eval()
    return net


def cnn_logits(net: TumourCNN, pieces: np.ndarray, batch: int = 4) -> np.ndarray:
    """The CNN's logit per case (``(N,)``)."""
    return _per_case(net, pieces, batch)[:, 0]
