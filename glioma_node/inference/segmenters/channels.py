"""Names other model families give to input sequences and output regions, mapped to ours."""
from __future__ import annotations

import re

from glioma_node.inference.model_dir import ModelError

_ROLE_PATTERNS = (
    ("T1c", r"t1\s*[-_ ]?(c|ce|gd|post|contrast)|t1c|t1-?gd|t1ce|post"),
    ("FLAIR", r"flair|t2f"),
    ("T2", r"^t2(w)?$|t2\s*w|t2-?weighted|^t2$"),
    ("T1", r"^t1(w|n)?$|t1\s*w|t1n|t1-?weighted|^t1$|native t1|t1 pre"),
)

_REGION_PATTERNS = (
    ("whole_tumour", r"whole|\bwt\b|complete"),
    ("tumour_core", r"core|\btc\b"),
    ("enhancing_tumour", r"enhanc|\bet\b"),
)


def _match(name: str, patterns: tuple[tuple[str, str], ...], what: str) -> str:
    text = name.strip().lower()
    for ours, pattern in patterns:
        if re.search(pattern, text):
            return ours
    raise ModelError(f"{name!r} is not {what}")


def role_of(name: str) -> str:
    """Our role for a channel name such as ``T1c``, ``t1ce``, ``T1Gd``, ``t2f`` or ``FLAIR``."""
    return _match(name, _ROLE_PATTERNS, "an input sequence glioma-node knows (FLAIR, T1, T1c, T2)")


def region_of(name: str) -> str:
    """Our region for an output name such as ``Whole tumor``, ``tumor core`` or ``ET``."""
    return _match(name, _REGION_PATTERNS, "a BraTS region (whole tumour, tumour core, enhancing tumour)")
