"""What is known about a patient's tumour genome from outside the images: the markers the
survival model can take as inputs, and the words laboratories and datasets write for them.

A status is 1 (MGMT promoter methylated, IDH mutant, EGFR amplified), 0 (unmethylated,
wildtype, not amplified) or unknown (None: empty, "indeterminate", "not available", or a
word not recognised). :class:`Marker` is a ``StrEnum``: a member equals its string.
"""
from __future__ import annotations

import re
from enum import StrEnum


class Marker(StrEnum):
    """A genomic marker a site's laboratory reports."""

    MGMT = "mgmt"
    IDH = "idh"
    EGFR = "egfr"


class CovariateSource(StrEnum):
    """Where the survival model's value for a marker came from, as findings.json and the SR say it."""

    CLINICAL = "clinical source"
    PREDICTED = "predicted from the images"
    IMPUTED = "not known: training median used"


def _status(text: str, positive: tuple[str, ...], negative: tuple[str, ...]) -> int | None:
    t = text.strip().lower()
    if not t:
        return None
    if any(re.search(p, t) for p in negative):
        return 0
    if any(re.search(p, t) for p in positive):
        return 1
    return None


def mgmt_status(text: str) -> int | None:
    """1 methylated, 0 unmethylated, None unknown (indeterminate, not available)."""
    return _status(text, (r"^1(\.0)?$", r"^methylated", r"positive"), (r"^0(\.0)?$", r"unmethylated", r"negative"))


def idh_status(text: str) -> int | None:
    """1 mutant, 0 wildtype, None unknown (NOS/NEC, not available)."""
    return _status(text, (r"^1(\.0)?$", r"mut", r"r132", r"r172", r"positive"), (r"^0(\.0)?$", r"wild", r"negative", r"^wt$"))


def egfr_status(text: str) -> int | None:
    """1 amplified, 0 not amplified, None unknown."""
    return _status(text, (r"^1(\.0)?$", r"^amp", r"gain", r"positive"),
                   (r"^0(\.0)?$", r"not amp", r"no amp", r"^non", r"negative", r"^wt$", r"wild", r"^no$"))


PARSERS = {Marker.MGMT: mgmt_status, Marker.IDH: idh_status, Marker.EGFR: egfr_status}
"""The status reader of each marker."""
