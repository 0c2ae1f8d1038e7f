"""The rooms of DESIGN.md: which package may import which."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGES = ("node", "inference", "dicom_io", "training")
# Project packages each may import; inference/ may use dicom_io's nothing and pydicom never.
ALLOWED = {
    "inference": set(),
    "dicom_io": {"inference"},
    "node": {"dicom_io", "inference"},
    "training": {"dicom_io", "inference"},
}
FORBIDDEN_THIRD_PARTY = {
    "inference": {"pydicom", "highdicom", "pynetdicom", "socket", "requests", "http", "urllib"},
    "dicom_io": {"pynetdicom", "socket", "requests", "http", "urllib", "torch", "monai"},
    "training": {"pynetdicom"},
    "node": set(),
}
# dicom_io may read inference's data types only (no models).
DICOM_IO_MAY_USE = {"inference.volume", "inference.study", "inference.findings"}
# The CLI is node's one door to training (synth, train), imported lazily.
NODE_TRAINING_DOOR = {"node/cli.py"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_its_room_allows(package):
    problems = []
    for path in sorted((REPO / package).rglob("*.py")):
        rel = str(path.relative_to(REPO))
        for name in _imports(path):
            top = name.split(".")[0]
            if top in PACKAGES and top != package and top not in ALLOWED[package]:
                if not (package == "node" and top == "training" and rel in NODE_TRAINING_DOOR):
                    problems.append(f"{rel} imports {name}")
            if top in FORBIDDEN_THIRD_PARTY[package]:
                problems.append(f"{rel} imports {name}")
            if package == "dicom_io" and top == "inference" and name not in DICOM_IO_MAY_USE:
                problems.append(f"{rel} imports {name} (dicom_io may use inference data types only)")
    assert not problems, "\n".join(problems)
