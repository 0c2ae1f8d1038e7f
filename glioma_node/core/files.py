"""Atomic file replacement: the one temporary-name scheme of the package.

A file is written under a temporary name and renamed into place, so a reader sees the
old file or the new one, never a part. Results may be written by two workers at once (a
job redelivered while its first worker still runs, see docs/deploy.md); each writer
therefore gets its own temporary name, so that the rename publishes one writer's
complete file, never two writers' bytes mixed.

Temporary files live in a hidden :data:`PARTIAL_DIR` folder beside their target (same
file system, so the rename is atomic), removed when the last writer is done: no pattern
the node globs (``dicom/*.dcm`` of the results and outboxes, ``*.json``) ever sees one,
even one a killed writer left.
Their names keep the target's suffix last, so writers keyed on the extension
(``.nii.gz``, ``.png``, ``.npy``) keep their format. :func:`remove_partials` deletes the
leftovers at start. (The receive spool has its own pre-created blanks, see
:mod:`glioma_node.service.spool`.)
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PARTIAL_DIR = ".partial"


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (readers see the old or the new file,
    never a part); not fsynced: for files a restart rewrites anyway."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def partial_path(path: Path) -> Path:
    """The temporary name for ``path`` of this process and thread:
    ``<folder>/.partial/<stem>.<pid>-<thread><suffixes>``, created empty (so the folder,
    which the last writer to finish removes, stays while this writer uses it)."""
    path = Path(path)
    suffix = "".join(path.suffixes)
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    folder = path.parent / PARTIAL_DIR
    tmp = folder / f"{stem}.{os.getpid()}-{threading.get_ident()}{suffix}"
    for _ in range(100):
        try:
            # mkdir(exist_ok) raises FileExistsError when the folder existed at its mkdir and was
            # gone at its check; touch raises FileNotFoundError when it went just before: both
            # mean another writer removed the empty folder in between, so again.
            folder.mkdir(parents=True, exist_ok=True)
            tmp.touch()
            return tmp
        except (FileNotFoundError, FileExistsError):
            continue
    raise OSError(f"could not create a temporary file in {folder} (is {folder.name} there a file?)")


@contextmanager
def atomic_path(path: Path, fsync: bool = False) -> Iterator[Path]:
    """Write the temporary file the block is given, then rename it to ``path``
    (``fsync``: flushed to disk first, for files the node acknowledges or hands on).
    When the block fails the temporary file is removed."""
    tmp = partial_path(path)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        try:
            tmp.parent.rmdir()  # the last writer out leaves no empty folder behind
        except OSError:  # another writer's file is in it, or it is gone already
            pass


def remove_partials(root: Path, older_than_s: float = 0.0) -> int:
    """Delete temporary files under ``root`` that a killed or failed writer left (only those
    last modified more than ``older_than_s`` seconds ago: a writer on another machine may be
    at work); how many."""
    count = 0
    limit = time.time() - older_than_s
    if not root.is_dir():
        return 0
    for folder in [root] if root.name == PARTIAL_DIR else root.rglob(PARTIAL_DIR):
        if not folder.is_dir():
            continue
        for tmp in folder.iterdir():
            try:
                if tmp.is_file() and tmp.stat().st_mtime <= limit:
                    tmp.unlink()
                    count += 1
            except OSError:  # removed meanwhile, or not ours to remove: the next start tries again
                continue
        try:
            folder.rmdir()
        except OSError:  # a writer's file is still in it
            pass
    return count
