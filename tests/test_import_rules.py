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


# Imports whose module name is computed at run time, so no static reading can check them;
# each was reviewed: file → how many there are. nnunet.py imports only `torch.nn.<class>`
# (checked by a regex) and the network classes in its NETWORK_CLASSES allow-list.
REVIEWED_COMPUTED_IMPORTS = {"glioma_node/inference/segmenters/nnunet.py": 2}
COMPUTED = "<computed>"


def _module_name(path: Path) -> tuple[str, bool]:
    """The dotted name of the module at ``path`` and whether it is a package (``__init__.py``)."""
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _absolute(name: str, level: int, module: str, is_package: bool) -> str:
    """``name`` imported with ``level`` leading dots from ``module``, made absolute as Python does."""
    if level == 0:
        return name
    package = module.split(".") if is_package else module.split(".")[:-1]
    if level - 1 > len(package) - 1:
        return f"<relative import above the top package: {'.' * level}{name}>"
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _constant(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _imports_of(source: str, module: str, is_package: bool, filename: str = "<source>") -> list[str]:
    """Every module the source of ``module`` may import, as absolute dotted names.

    Beyond ``import x`` and ``from x import y`` (which yields ``x.y``, since ``y`` may be
    a submodule: ``from glioma_node import inference``), relative imports are
    resolved against the module's own package, and ``importlib.import_module(...)`` and
    ``__import__(...)`` calls are read: a literal name is resolved, anything else yields
    ``COMPUTED`` once per call.
    """
    tree = ast.parse(source, filename=filename)
    names: list[str] = []
    import_module_names = {"import_module"}  # `from importlib import import_module as im` adds "im"
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "importlib" and node.level == 0:
            import_module_names.update(a.asname or a.name for a in node.names if a.name == "import_module")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node.module or "", node.level, module, is_package)
            members = [f"{base}.{a.name}" for a in node.names if a.name != "*" and not base.startswith("<")]
            names.extend(members or [base])
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            keywords = {k.arg: k.value for k in node.keywords if k.arg}
            if called in import_module_names or called == "import_module":
                name = _constant(node.args[0] if node.args else keywords.get("name"))
                package = node.args[1] if len(node.args) > 1 else keywords.get("package")
                if name is None:
                    names.append(COMPUTED)
                elif name.startswith("."):
                    anchor = _constant(package)
                    level = len(name) - len(name.lstrip("."))
                    # import_module resolves against `package` itself, as if from its __init__
                    names.append(COMPUTED if anchor is None else _absolute(name[level:], level, anchor, True))
                else:
                    names.append(name)
            elif called == "__import__":
                name = _constant(node.args[0] if node.args else keywords.get("name"))
                level_node = node.args[4] if len(node.args) > 4 else keywords.get("level")
                if level_node is None:
                    level = 0
                elif isinstance(level_node, ast.Constant) and isinstance(level_node.value, int):
                    level = level_node.value
                else:
                    level = -1
                if name is None or level < 0:
                    names.append(COMPUTED)
                    continue
                base = _absolute(name, level, module, is_package)
                names.append(base)
                fromlist = node.args[3] if len(node.args) > 3 else keywords.get("fromlist")
                if isinstance(fromlist, (ast.List, ast.Tuple)):
                    for item in fromlist.elts:
                        member = _constant(item)
                        names.append(f"{base}.{member}" if member else COMPUTED)
                elif fromlist is not None and not (isinstance(fromlist, ast.Constant) and fromlist.value is None):
                    names.append(COMPUTED)
    return names


def _imports(path: Path) -> list[str]:
    module, is_package = _module_name(path)
    return _imports_of(path.read_text(), module, is_package, str(path))


def test_the_reader_sees_relative_dynamic_and_package_member_imports():
    """Each of these reaches another room; a reader that saw only absolute ``import`` and
    ``from x import`` statements let every one of them through."""
    source = """
from . import sibling
from .. import inference
from ..inference import analyze
from ...glioma_node_outside import nothing
from glioma_node import training
import importlib
import importlib as il
from importlib import import_module as load
importlib.import_module("glioma_node.dicom_io.series_reader")
il.import_module(".scp", package="glioma_node.service")
load("pydicom")
__import__("glioma_node.cli.main")
__import__("glioma_node", fromlist=["service"])
__import__("scan", globals(), None, [], 1)
importlib.import_module(name_from_a_file)
__import__(name_from_a_file)
"""
    found = _imports_of(source, "glioma_node.core.module", False)
    for name in ("glioma_node.core.sibling", "glioma_node.inference", "glioma_node.inference.analyze",
                 "glioma_node.training", "glioma_node.dicom_io.series_reader", "glioma_node.service.scp", "pydicom",
                 "glioma_node.cli.main", "glioma_node.service", "glioma_node.core.scan"):
        assert name in found, (name, found)
    assert "<relative import above the top package: ...glioma_node_outside>" in found
    assert found.count(COMPUTED) == 2
    # a package's __init__ is its own package: `from . import x` there is a submodule of it
    assert _imports_of("from . import base\nfrom .. import core", "glioma_node.inference.segmenters", True) == [
        "glioma_node.inference.segmenters.base", "glioma_node.inference.core"]


def test_the_design_map_names_every_room():
    on_disk = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
    assert set(ROOMS) == on_disk, f"docs/design.md rooms {sorted(ROOMS)} vs packages {sorted(on_disk)}"


@pytest.mark.parametrize("room", sorted(ROOMS))
def test_room_imports_only_what_the_map_allows(room):
    allowed, forbidden = ROOMS[room]
    problems = []
    for path in sorted((PACKAGE / room).rglob("*.py")):
        rel = path.relative_to(REPO)
        imported = _imports(path)
        computed = imported.count(COMPUTED)
        if computed != REVIEWED_COMPUTED_IMPORTS.get(str(rel), 0):
            problems.append(f"{rel} has {computed} import(s) of a computed module name, "
                            f"{REVIEWED_COMPUTED_IMPORTS.get(str(rel), 0)} reviewed: import by a literal name, or "
                            f"review it and update REVIEWED_COMPUTED_IMPORTS in tests/test_import_rules.py")
        for name in sorted(set(imported) - {COMPUTED}):
            if name.startswith("<"):
                problems.append(f"{rel}: {name}")
                continue
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
