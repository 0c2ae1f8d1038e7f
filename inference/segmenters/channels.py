"""Names other model families give to input sequences and output regions, mapped to ours."""
from __future__ import annotations

import re

from inference.model_dir import ModelError

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


def role_of(name: str) -> str:
    """Our role for a channel name such as ``T1c``, ``t1ce``, ``T1Gd``, ``t2f`` or ``FLAIR``."""
    text = name.strip().lower()
    for role, pattern in _ROLE_PATTERNS:
        if re.search(pattern, text):
            return role
    raise ModelError(f"input channel {name!r} is not a sequence glioma-node knows (FLAIR, T1, T1c, T2)")


def region_of(name: str) -> str:
    """Our region for an output name such as ``Whole tumor``, ``tumor core`` or ``ET``."""
    text = name.strip().lower()
    for region, pattern in _REGION_PATTERNS:
        if re.search(pattern, text):
            return region
    raise ModelError(f"output {name!r} is not a BraTS region (whole tumour, tumour core, enhancing tumour)")
