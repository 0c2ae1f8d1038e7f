"""Segmenters: glioma-node's own model, MONAI bundles and nnU-Net v2 folders, one interface."""
from __future__ import annotations

from pathlib import Path

from inference.segmenters.base import RegionMaps, Segmenter

KINDS = ("glioma-node", "monai-bundle", "nnunet")


def load_segmenter(kind: str, path: Path, folds: tuple[int, ...] = (0,),
                   checkpoint: str = "checkpoint_final.pth") -> Segmenter:
    """Load the segmenter of ``kind`` from ``path`` (raises ModelError saying what is wrong)."""
    if kind == "glioma-node":
        from inference.segmenters.native import NativeSegmenter

        return NativeSegmenter(path)
    if kind == "monai-bundle":
        from inference.segmenters.monai_bundle import MonaiBundleSegmenter

        return MonaiBundleSegmenter(path)
    if kind == "nnunet":
        from inference.segmenters.nnunet import NnUNetSegmenter

        return NnUNetSegmenter(path, tuple(folds), checkpoint)
    raise ValueError(f"segmenter kind {kind!r} is not one of {', '.join(KINDS)}")


__all__ = ["KINDS", "RegionMaps", "Segmenter", "load_segmenter"]
