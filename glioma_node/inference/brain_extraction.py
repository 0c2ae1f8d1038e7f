"""Brain extraction: the brain mask every segmenter works inside.

The default extractor is deepbet (Fisch et al., Computers in Biology and Medicine 2024;
MIT licence), two small networks trained on several thousand real T1-weighted heads,
whose TorchScript weights ship inside its wheel (nothing is downloaded at run time).
It runs **once per study**, on the best T1-weighted series as resampled onto the
prepared study's canonical grid; since every role lies on that grid through its
registration to the reference series, the one mask is carried to every sequence.

A mask is implausible when its volume lies outside 700-2200 ml or when it reaches the
edge of the field of view on a side where the series should have shown more head. The
next candidate series is then tried (T1, T1c, FLAIR, T2); if none gives a plausible
mask, the most plausible one is kept and a warning says so. ``none`` trusts the input
to be skull-stripped already: the mask is the non-zero part of the reference channel.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from glioma_node.inference.intensity import head_mask
from glioma_node.inference.preprocess import PreparedStudy

PLAUSIBLE_BRAIN_ML = (700.0, 2200.0)
# deepbet was trained on T1-weighted heads; the other contrasts still score 0.94-0.96 Dice.
CANDIDATE_ROLES = ("T1", "T1c", "FLAIR", "T2")


class ExtractorKind(str, enum.Enum):
    """``models.brain_extraction.kind`` in the configuration."""

    DEEPBET = "deepbet"
    NONE = "none"


@dataclass
class BrainMask:
    """A brain mask on the prepared study's canonical grid (boolean ``[z, y, x]``).

    ``role``: the series it was computed on; ``volume_ml`` in millilitres; ``cut_sides``:
    the faces of the field of view the brain reaches (:func:`edge_sides`).
    """

    mask: np.ndarray
    role: str | None
    method: str
    volume_ml: float
    cut_sides: list[str] = field(default_factory=list)

    @classmethod
    def measure(cls, mask: np.ndarray, role: str | None, method: str, voxel_ml: float) -> BrainMask:
        return cls(mask, role, method, round(float(mask.sum()) * voxel_ml, 1), edge_sides(mask))

    @property
    def volume_plausible(self) -> bool:
        return PLAUSIBLE_BRAIN_ML[0] <= self.volume_ml <= PLAUSIBLE_BRAIN_ML[1]

    @property
    def problems(self) -> list[str]:
        """Why the mask is doubtful (empty when plausible)."""
        lo, hi = PLAUSIBLE_BRAIN_ML
        problems = [] if self.volume_plausible else [f"brain volume {self.volume_ml:.0f} ml is outside "
                                                     f"{lo:.0f}-{hi:.0f} ml"]
        if self.cut_sides:
            problems.append(f"the brain reaches the edge of the field of view ({', '.join(self.cut_sides)}): "
                            "the series may not cover the whole brain")
        return problems

    def distance_to_plausible(self) -> float:
        """How far from plausible, for choosing among doubtful masks (a cut-off brain counts most)."""
        lo, hi = PLAUSIBLE_BRAIN_ML
        return max(lo - self.volume_ml, self.volume_ml - hi, 0.0) + 1000.0 * bool(self.cut_sides)

    def warnings(self) -> list[str]:
        """What findings.json, the SR and the summary image should say about this mask."""
        if not self.problems:
            return []
        return [f"brain extraction doubtful ({self.method} on {self.role or 'the input'}): "
                + "; ".join(self.problems) + ". Tumour volumes and predictions may be wrong"]


def _ras(array: np.ndarray) -> np.ndarray:
    """``[z, y, x]`` on an axis-aligned LPS grid → nibabel's RAS-canonical ``[i, j, k]``."""
    return np.ascontiguousarray(array.transpose(2, 1, 0)[::-1, ::-1, :])


def _from_ras(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[::-1, ::-1, :].transpose(2, 1, 0))


def edge_sides(mask: np.ndarray, min_fraction: float = 0.02) -> list[str]:
    """The faces of the grid the mask touches with more than ``min_fraction`` of its
    largest cross-section (a brain cut off by the field of view), as anatomical names."""
    names = (("inferior", "superior"), ("anterior", "posterior"), ("right", "left"))
    sides = []
    for axis, (low, high) in enumerate(names):
        moved = np.moveaxis(mask, axis, 0)
        largest = max(int(moved.reshape(moved.shape[0], -1).sum(1).max()), 1)
        for index, name in ((0, low), (-1, high)):
            if moved[index].sum() > min_fraction * largest:
                sides.append(name)
    return sides


class DeepBet:
    """deepbet's two networks (bounding box at 128³, then the mask at 256³ inside it).

    ``device``: ``cpu`` or ``cuda`` (a string or ``torch.device``); the weights are read
    from the installed wheel.
    """

    name = "deepbet"

    def __init__(self, device: object = "cpu") -> None:
        self.device = str(device).split(":")[0]

    @cached_property
    def _bet(self):  # noqa: ANN202 - deepbet's own class
        try:
            from deepbet import BrainExtraction
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise RuntimeError("deepbet is not installed; run `make install` (it is a dependency)") from exc
        return BrainExtraction(no_gpu=self.device == "cpu")

    def version(self) -> str:
        from importlib.metadata import version

        return version("deepbet")

    @cached_property
    def sha256(self) -> str:
        """sha256 of the mask network's weights in the installed wheel (bbox network's follows)."""
        from deepbet.utils import DATA_PATH

        from glioma_node.inference.model_dir import sha256_file

        return sha256_file(Path(DATA_PATH) / "models" / "model.pt")

    def mask(self, image: np.ndarray) -> np.ndarray:
        """Brain mask (boolean) of ``image``, float ``[z, y, x]`` on an axis-aligned LPS grid."""
        bet = self._bet
        probability = bet.run_model(_ras(np.nan_to_num(image.astype(np.float32))))
        return _from_ras(bet.postprocess(probability > 0.5).astype(bool))


class BrainExtractor:
    """Brain extraction of one prepared study, with fallback across series (module doc)."""

    def __init__(self, kind: ExtractorKind = ExtractorKind.DEEPBET, device: object = "cpu") -> None:
        self.kind = ExtractorKind(kind)
        self.model = DeepBet(device) if self.kind is ExtractorKind.DEEPBET else None

    def describe(self) -> dict[str, str]:
        if self.model is None:
            return {"task": "brain-extraction", "name": "none (input already skull-stripped)", "version": "",
                    "sha256": "", "kind": "none"}
        return {"task": "brain-extraction", "name": self.model.name, "version": self.model.version(),
                "sha256": self.model.sha256, "kind": self.kind.value}

    def extract(self, prepared: PreparedStudy) -> BrainMask:
        """The brain mask of ``prepared`` on its canonical grid."""
        voxel_ml = prepared.grid.voxel_ml
        if self.model is None:
            role = prepared.reference_role
            return BrainMask.measure(head_mask(prepared.channels[role]), role, "none", voxel_ml)
        tried: list[BrainMask] = []
        for role in candidate_order(prepared):
            candidate = BrainMask.measure(self.model.mask(prepared.channels[role]), role, self.model.name, voxel_ml)
            if not candidate.problems:
                if tried:
                    candidate.method = f"{self.model.name} (after {', '.join(str(t.role) for t in tried)} failed)"
                return candidate
            tried.append(candidate)
            if candidate.volume_plausible:
                break  # only cut off by the field of view, which the other series share
        return min(tried, key=BrainMask.distance_to_plausible)


def candidate_order(prepared: PreparedStudy) -> list[str]:
    """Roles to try, best first: T1-weighted series before FLAIR and T2, and among the
    T1-weighted ones the series with the finest source voxels (thin slices carry the
    most anatomy), T1 before T1c on a tie (enhancing dura and vessels confuse it less)."""
    present = [r for r in CANDIDATE_ROLES if r in prepared.channels]
    t1w = sorted((r for r in present if r in ("T1", "T1c")),
                 key=lambda r: (round(prepared.source_grids[r].voxel_ml, 4), CANDIDATE_ROLES.index(r)))
    return t1w + [r for r in present if r not in t1w]
