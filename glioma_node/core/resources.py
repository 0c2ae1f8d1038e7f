"""Where the files installed with glioma-node lie: configuration defaults and default models.

They are package data (``glioma_node/conf``, ``glioma_node/models``), found through
:mod:`importlib.resources`, so an installed node (``pip install .``, a wheel, a container)
finds them as a source checkout does. Models are directories that loaders open by path,
so the package must be installed on a file system (not imported from a zip archive).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_path(*parts: str) -> Path:
    """The file system path of ``glioma_node/<parts...>`` (it need not exist yet)."""
    root = resources.files("glioma_node")
    if not isinstance(root, Path):
        raise RuntimeError(f"glioma_node is imported from {root}, not a directory: install it on a file system "
                           "(pip install .), not inside a zip archive")
    return root.joinpath(*parts)


def import_root() -> Path:
    """The directory that holds the ``glioma_node`` package (a checkout or site-packages):
    what a child interpreter needs on ``sys.path`` to import it."""
    return package_path().parent


DEFAULT_CONFIG = package_path("conf", "glioma-node.yaml")
"""The embedded default configuration (``glioma-node`` without ``--config``)."""
RADIOMICS_SETTINGS = package_path("conf", "radiomics.yaml")
"""The pyradiomics settings every radiomic feature is computed with."""
DEFAULT_MODELS = package_path("models")
"""The default models (``segmentation/``, ``radiogenomics/``), each a model directory."""
