"""Text from peers and files, made safe to print on a terminal.

A header value (a SeriesDescription, a UID, a file name) can carry ESC sequences that
drive the terminal, a BEL, a carriage return that overwrites what was printed, or a
newline that splits a table row. Every command that prints such values passes them
through :func:`printable` (``status``, ``inspect``, ``process``).
"""
from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def printable(value: object) -> str:
    """``value`` with control characters (C0 including TAB, CR and LF; DEL; C1) shown as ``\\xNN``."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def printable_tree(value: Any) -> Any:
    """A JSON-like value (dicts, lists, tuples, scalars) with every string, keys included,
    passed through :func:`printable`; other values as they are."""
    if isinstance(value, str):
        return printable(value)
    if isinstance(value, dict):
        return {printable_tree(k): printable_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(printable_tree(v) for v in value)
    return value
