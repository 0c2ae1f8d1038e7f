"""Atomic file replacement: the temporary name a writer uses before its rename.

Results may be written by two workers at once (a job redelivered while its first worker
still runs, see docs/deploy.md); each writer therefore gets its own temporary name, so
that the rename publishes one writer's complete file, never two writers' bytes mixed.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (readers see the old or the new file,
    never a part); not fsynced: for files a restart rewrites anyway."""
    tmp = partial_path(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def partial_path(path: Path) -> Path:
    """The temporary name beside ``path`` for this process and thread (same folder, so the
    rename is atomic on one filesystem); the suffix stays last so writers keyed on the
    extension (``.nii.gz``, ``.png``) keep their format."""
    path = Path(path)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    return path.with_name(f"{stem}.partial-{os.getpid()}-{threading.get_ident()}{suffix}")
