"""Segmenters: glioma-node's own model, MONAI bundles, nnU-Net v2 folders, CaPTk's DeepMedic
and ensembles of them, one interface (:class:`Segmenter`)."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from glioma_node.inference.segmenters.base import RegionMaps, Segmenter


class SegmenterKind(str, enum.Enum):
    """``models.segmentation.kind`` in the configuration."""

    GLIOMA_NODE = "glioma-node"
    MONAI_BUNDLE = "monai-bundle"
    NNUNET = "nnunet"
    CAPTK_DEEPMEDIC = "captk-deepmedic"
    ENSEMBLE = "ensemble"


KINDS = tuple(k.value for k in SegmenterKind)


@dataclass
class SegmenterSpec:
    """What to load: ``kind`` and ``path`` (a model folder); ``folds`` and ``checkpoint`` for
    nnU-Net; ``members`` (specs) for an ensemble."""

    kind: SegmenterKind
    path: Path | None = None
    folds: tuple[int, ...] = (0,)
    checkpoint: str = "checkpoint_final.pth"
    members: list[SegmenterSpec] = field(default_factory=list)


def load_segmenter(kind: str | SegmenterKind, path: Path | None = None, folds: tuple[int, ...] = (0,),
                   checkpoint: str = "checkpoint_final.pth", members: list[SegmenterSpec] | None = None) -> Segmenter:
    """Load the segmenter of ``kind`` from ``path`` (raises ModelError saying what is wrong)."""
    try:
        kind = SegmenterKind(kind)
    except ValueError:
        raise ValueError(f"segmenter kind {kind!r} is not one of {', '.join(KINDS)}") from None
    if kind is SegmenterKind.ENSEMBLE:
        from glioma_node.inference.segmenters.ensemble import EnsembleSegmenter

        return EnsembleSegmenter([load_segmenter(m.kind, m.path, m.folds, m.checkpoint, m.members)
                                  for m in members or []])
    if path is None:
        raise ValueError(f"segmenter kind {kind.value} needs a path")
    if kind is SegmenterKind.GLIOMA_NODE:
        from glioma_node.inference.segmenters.native import NativeSegmenter

        return NativeSegmenter(path)
    if kind is SegmenterKind.MONAI_BUNDLE:
        from glioma_node.inference.segmenters.monai_bundle import MonaiBundleSegmenter

        return MonaiBundleSegmenter(path)
    if kind is SegmenterKind.NNUNET:
        from glioma_node.inference.segmenters.nnunet import NnUNetSegmenter

        return NnUNetSegmenter(path, tuple(folds), checkpoint)
    from glioma_node.inference.segmenters.deepmedic import CaptkDeepMedicSegmenter

    return CaptkDeepMedicSegmenter(path)


__all__ = ["KINDS", "RegionMaps", "Segmenter", "SegmenterKind", "SegmenterSpec", "load_segmenter"]
