"""Model directories: weights, a manifest that describes them, and a model card.

Layout of a glioma-node model directory::

    manifest.json   name, version, kind, weights file, its sha256, input spec, outputs
    model.pt        the weights (a torch state_dict)
    MODEL_CARD.md   training data, the command that reproduces it, metrics, intended use

Loading always recomputes the sha256 of the weights and refuses a mismatch, so a
truncated download or a file swapped behind the manifest's back is never run.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
REQUIRED_KEYS = ("name", "version", "kind", "weights", "sha256", "input", "output")


class ModelError(RuntimeError):
    """A model directory that cannot be used; the message says which file and what to fix."""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """The parsed manifest of a model directory (see the module doc)."""

    directory: Path
    data: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def version(self) -> str:
        return str(self.data["version"])

    @property
    def sha256(self) -> str:
        return str(self.data["sha256"])

    @property
    def weights_path(self) -> Path:
        return self.directory / str(self.data["weights"])

    def describe(self) -> dict[str, str]:
        """Name, version and checksum, as findings and reports cite a model."""
        return {"name": self.name, "version": self.version, "sha256": self.sha256, "kind": str(self.data["kind"])}


def read_manifest(directory: Path, kind: str | None = None) -> Manifest:
    """Read and check ``directory/manifest.json``: required keys, ``kind`` and the weights' sha256."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{directory}: no {MANIFEST}; a glioma-node model directory needs one (see docs/models.md)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from exc
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ModelError(f"{path}: missing keys {', '.join(missing)}")
    manifest = Manifest(Path(directory), data)
    if kind is not None and data["kind"] != kind:
        raise ModelError(f"{path}: kind is {data['kind']!r}, expected {kind!r}")
    if not manifest.weights_path.is_file():
        raise ModelError(f"{path}: weights file {manifest.weights_path.name} not found")
    actual = sha256_file(manifest.weights_path)
    if actual != manifest.sha256:
        raise ModelError(f"{manifest.weights_path}: sha256 {actual} does not match the manifest's {manifest.sha256}; "
                         "the weights are damaged or were replaced")
    return manifest


def write_manifest(directory: Path, data: dict[str, Any]) -> Manifest:
    """Write ``manifest.json`` with the sha256 of ``data['weights']`` filled in."""
    directory = Path(directory)
    data = dict(data)
    data["sha256"] = sha256_file(directory / data["weights"])
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"manifest lacks {', '.join(missing)}")
    (directory / MANIFEST).write_text(json.dumps(data, indent=2) + "\n")
    return Manifest(directory, data)
