"""The radiogenomic model file (``model.pt``): one format, written and read here only.

A :class:`RadiogenomicBundle` is what training produces and inference loads: the
feature names (the column order of every head), the pyradiomics settings and their
digest, the deep encoder, the fusion heads per target and variant, the optional
end-to-end CNNs, the Cox model, and the SHAP backgrounds. It is stored with
:func:`torch.save` as plain containers and tensors, so :func:`torch.load` reads it with
``weights_only=True`` (no code runs on load). ``format`` names the layout; a file of
another format is refused with what to do about it.
"""
from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from glioma_node.core.files import atomic_path

FORMAT = 1
"""The layout this version writes and reads; raise it (and read the old one) when a field changes."""


class BundleError(ValueError):
    """A model file that is not a radiogenomic bundle this version can read; the message says why."""


@dataclass
class RadiogenomicBundle:
    """The content of a radiogenomic ``model.pt`` (see the module doc).

    ``encoder``: ``{"config": {...}, "state": state_dict}``; ``heads``: target → variant →
    ``{"config", "state"}``; ``cnn``: target → ``{"config", "state"}``; ``cox``: the Cox
    model as a dict or None; ``background``: ``{"columns": LongTensor, "values": FloatTensor}``
    (SHAP background rows, only the columns a head reads); ``cox_background``: rows of
    Cox covariates or None; ``default_variants``: target → variant. ``cox_known`` and
    ``cox_known_background``: the Cox model that takes laboratory-known MGMT, IDH and
    EGFR status (with its SHAP rows), when the training cohort had them; None otherwise.
    """

    feature_names: list[str]
    radiomics_settings: dict[str, Any]
    radiomics_sha256: str
    encoder: dict[str, Any]
    heads: dict[str, dict[str, dict[str, Any]]]
    background: dict[str, torch.Tensor]
    default_variants: dict[str, str]
    cnn: dict[str, dict[str, Any]] = field(default_factory=dict)
    cox: dict[str, Any] | None = None
    cox_background: torch.Tensor | None = None
    cox_known: dict[str, Any] | None = None
    cox_known_background: torch.Tensor | None = None
    format: int = FORMAT

    def to_file(self, path: Path) -> None:
        """Write the bundle to ``path`` atomically (a temporary name, then a rename)."""
        with atomic_path(path) as tmp:
            torch.save(asdict(self), tmp)

    @classmethod
    def from_file(cls, path: Path) -> RadiogenomicBundle:
        """Read a bundle; :class:`BundleError` when the file is unreadable, of another format or incomplete."""
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
            raise BundleError(f"{path}: cannot be read as a glioma-node radiogenomic model ({exc})") from exc
        if not isinstance(blob, dict):
            raise BundleError(f"{path}: not a glioma-node radiogenomic model (a {type(blob).__name__}, not a mapping)")
        found = blob.get("format")
        if found != FORMAT:
            raise BundleError(f"{path}: model file format {found!r}; this glioma-node reads format {FORMAT}. "
                              "Use the glioma-node version that trained it, or retrain with this one")
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls)
                   if f.name not in blob and f.default is MISSING and f.default_factory is MISSING]
        if missing:
            raise BundleError(f"{path}: format {FORMAT} model lacks {', '.join(missing)}")
        return cls(**{k: v for k, v in blob.items() if k in names})
