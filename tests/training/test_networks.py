"""The encoders train on what each variant reads; the 2D slice encoder as the survival study trained it."""
from __future__ import annotations

import numpy as np
import torch

from glioma_node.inference.radiogenomics.slice_encoder import SliceEncoder
from glioma_node.training.radiogenomics.networks import Curve, augment_slices, embed_all, train_encoder


def _slices(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cases of 2 slices of 32² whose bright square is large (label 1) or small (label 0)."""
    pieces = np.zeros((n, 2, 4, 32, 32), np.float16)
    labels = np.zeros((n, 2))
    for i in range(n):
        half = 8 if i % 2 else 3
        pieces[i, :, :, 16 - half:16 + half, 16 - half:16 + half] = 1.0
        pieces[i] += rng.normal(0, 0.05, pieces[i].shape).astype(np.float16)
        labels[i] = [i % 2, np.nan]  # the second target is unknown: ignored by the loss
    return pieces, labels


def test_the_slice_encoder_learns_from_slices():
    pieces, labels = _slices(12, np.random.default_rng(0))
    config = {"variant": "slices", "slice_size": 32, "slice_count": 2}
    curve = Curve("slices")
    encoder = train_encoder(pieces, labels, config, steps=60, batch=4, progress=False, curve=curve)
    assert isinstance(encoder, SliceEncoder)
    losses = [loss for _, _, loss in curve.train]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    emb = embed_all(encoder, pieces, config)
    assert emb.shape == (12, 128) and np.isfinite(emb).all()
    large, small = emb[1::2].mean(0), emb[::2].mean(0)
    assert np.linalg.norm(large - small) > 0.1


def test_slice_augmentation_rotates_flips_and_zooms_but_keeps_the_content():
    batch = torch.zeros(8, 4, 32, 32)
    batch[:, :, 12:20, 12:20] = 1.0
    out = augment_slices(batch, np.random.default_rng(1))
    assert out.shape == batch.shape
    assert not torch.allclose(out, batch, atol=0.2)
    centre = out[:, :, 14:18, 14:18].mean()
    assert 0.7 < float(centre) < 1.3 and float(out[:, :, :4, :4].abs().mean()) < 0.2
