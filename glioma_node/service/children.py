"""Starting the node's child processes (the local worker, extra receivers).

A child is a plain ``python -m <module> --config <file> --parent-pid <pid>`` process,
not multiprocessing's spawn: inside Orthanc the parent is an embedded interpreter whose
``sys.path`` (Debian's standard library) must not be handed to the environment's
Python. Each child reads the node's configuration from
:attr:`glioma_node.service.paths.Paths.child_config` and ends when the node does
(:func:`glioma_node.core.lifetime.die_with_parent`, and its own parent-pid check).
"""
from __future__ import annotations

import argparse
import multiprocessing.spawn
import os
import subprocess
from collections.abc import Callable

import yaml

from glioma_node.core.files import write_text_atomic
from glioma_node.core.resources import import_root
from glioma_node.service.config import Config, load_config
from glioma_node.service.paths import Paths


def start_child(module: str, config: Config, paths: Paths, *arguments: str) -> subprocess.Popen:
    """Start ``python -m module --config <child config> --parent-pid <this pid> *arguments``."""
    path = paths.child_config
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    python = os.fsdecode(multiprocessing.spawn.get_executable())  # the plugin script sets it to the environment
    return subprocess.Popen([str(python), "-m", module, "--config", str(path), "--parent-pid", str(os.getpid()),
                             *arguments], cwd=import_root())


def child_main(module: str, run: Callable[[Config, int | None], None]) -> None:
    """A child's command line, ``python -m module --config FILE [--parent-pid PID]``: run(config, parent pid)."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}")
    parser.add_argument("--config", required=True)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args()
    run(load_config(args.config), args.parent_pid)
