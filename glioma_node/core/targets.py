"""What the radiogenomic models predict: each binary target, its name and the words of its
two outcomes, shared by training, findings.json, the DICOM results and the summary.

:class:`Target` is a ``StrEnum``: a member equals, hashes and prints as its string, so
``predictions["mgmt"]`` and ``predictions[Target.MGMT]`` are the same entry, and
findings.json keeps the plain strings.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Target(StrEnum):
    """A binary prediction target."""

    MGMT = "mgmt"
    IDH = "idh"
    CHEMO_BENEFIT = "chemo-benefit"


#: The chemotherapy-benefit endpoint of the LGG study: overall survival of at least 24
#: months (730 days). Death before it is "no benefit"; a patient censored before it has no
#: label (left out of training and evaluation for this target, and counted).
CHEMO_BENEFIT_DAYS = 730


@dataclass(frozen=True)
class TargetInfo:
    """How a target is named: ``title`` in reports, ``short`` on the summary image, ``code``
    in DICOM code strings (CS: capitals, digits, underscore), ``positive``/``negative`` the
    status words (positive = label 1 = probability ≥ threshold)."""

    title: str
    short: str
    code: str
    positive: str
    negative: str


TARGET_INFO: dict[str, TargetInfo] = {
    Target.MGMT: TargetInfo("MGMT promoter methylation", "MGMT", "MGMT", "methylated", "unmethylated"),
    Target.IDH: TargetInfo("IDH mutation", "IDH", "IDH", "mutant", "wildtype"),
    Target.CHEMO_BENEFIT: TargetInfo("Chemotherapy benefit (overall survival >= 24 months)",
                                     "Chemo benefit", "CHEMO", "benefit", "no benefit"),
}

TARGETS: tuple[str, ...] = tuple(t.value for t in Target)
"""Every target, in the order training fits and reports them; plain strings, as model files
(loaded with ``weights_only``) and findings.json keep them."""


def chemo_benefit_label(survival_days: float | None, event: int | None) -> int | None:
    """1 when overall survival reached :data:`CHEMO_BENEFIT_DAYS` (dead or alive), 0 when
    death came before it, None when follow-up stopped before it alive (or is unknown)."""
    if survival_days is None or event is None:
        return None
    if survival_days >= CHEMO_BENEFIT_DAYS:
        return 1
    return 0 if event == 1 else None
