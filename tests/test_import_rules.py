"""The rooms of docs/design.md: which package may import which.

The table under "Rooms and who may enter" in docs/design.md is the reference; this
test reads it, so the map and the code cannot drift apart.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

PACKAGE = REPO / "glioma_node"
DESIGN = REPO / "docs" / "design.md"


def _rooms() -> dict[str, tuple[set[str], set[str]]]:
    """room → (rooms of ours it may import, third-party modules it may not), from the table."""
    text = DESIGN.read_text()
    section = text.split("## Rooms and who may enter", 1)[1].split("\n## ", 1)[0]
    rooms = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`glioma_node/"):
            continue
        room = cells[0].strip("`").removeprefix("glioma_node/").strip("/")
        allowed = set(re.findall(r"`([a-z_]+)/`", cells[2]))
        forbidden = set(re.findall(r"`([A-Za-z_]+)`", cells[3]))
        rooms[room] = (allowed, forbidden)
    return rooms


ROOMS = _rooms()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_design_map_names_every_room():
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert set(ROOMS) == on_disk, f"docs/design.md rooms {sorted(ROOMS)} vs packages {sorted(on_disk)}"


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_room_imports_only_what_the_map_allows(room):
    allowed, forbidden = ROOMS[room]
    problems = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        rel = path.relative_to(REPO)
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "glioma_node" and len(parts) > 1:
                other = parts[1]
                if other != room and other not in allowed:
                    problems.append(f"{rel} imports {name}")
            elif parts[0] in ("node", "inference", "dicom_io", "training", "tests", "tools", "bench"):
                problems.append(f"{rel} imports {name} (outside the package)")
            if parts[0] in forbidden:
                problems.append(f"{rel} imports {name}")
    assert not problems, "\n".join(problems)


def test_the_package_has_no_loose_modules():
    """Every module lives in a room, so the map covers all the code."""
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside a room: {loose}"


@pytest.mark.parametrize("module", ["glioma_node.service.serve", "glioma_node.cli.main", "glioma_node.service.engines",
                                    "glioma_node.service.celery_app", "glioma_node.service.celery_worker"])
def test_the_serving_process_and_the_command_line_load_no_model_code(module):
    """Receiving starts in seconds and stays small: the models load in the worker process
    (and in the commands that run them), never on import of the node or the CLI."""
    import subprocess
    import sys

    heavy = ("torch", "monai", "radiomics", "shap", "glioma_node.inference.analyze")
    code = f"import sys, {module}; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO).stdout
    assert loaded.strip() == "", f"importing {module} loads {loaded.strip()}"
