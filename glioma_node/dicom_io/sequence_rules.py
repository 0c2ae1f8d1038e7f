"""The schema of the sequence-recognition rules (values live in ``glioma_node/conf/glioma-node.yaml``).

Description patterns are case-insensitive Python regular expressions matched against
the series' SeriesDescription, ProtocolName and sequence name, joined by spaces and
normalised: lower case, with ``_ - . , ; : ( ) [ ] /`` turned into spaces, so that
``\\bt1\\b`` finds "t1" in "t1_mprage_sag_p2_iso_KM".
"""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _compile_all(patterns: list[str]) -> list[str]:
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            raise ValueError(f"invalid regular expression {p!r}: {exc}") from exc
    return patterns


class PatternRule(_Strict):
    """``any``: at least one matches (OR); ``all``: every one matches (AND); ``none``: none matches.

    An empty ``any`` list places no OR condition; a rule with no patterns at all never matches.
    """

    any: list[str] = Field(default_factory=list)
    all: list[str] = Field(default_factory=list)
    none: list[str] = Field(default_factory=list)

    _check = field_validator("any", "all", "none")(_compile_all)

    def matches(self, text: str) -> bool:
        if not self.any and not self.all:
            return False
        if self.any and not any(re.search(p, text) for p in self.any):
            return False
        if not all(re.search(p, text) for p in self.all):
            return False
        return not any(re.search(p, text) for p in self.none)

    def first_match(self, text: str) -> str | None:
        """The pattern that made the rule match, for reasons shown to people."""
        for p in self.all + self.any:
            if re.search(p, text):
                return p
        return None


class RolePatterns(_Strict):
    FLAIR: PatternRule
    T1: PatternRule
    T2: PatternRule


class ContrastPatterns(_Strict):
    post: list[str]
    pre: list[str]

    _check = field_validator("post", "pre")(_compile_all)


class PhysicsThresholds(_Strict):
    """Limits that turn TR, TE and TI (milliseconds) into a weighting."""

    flair_min_ti_ms: float = Field(gt=0)
    flair_min_te_ms: float = Field(gt=0)
    t1_inversion_min_ti_ms: float = Field(gt=0)
    t1_max_te_ms: float = Field(gt=0)
    t1_max_tr_ms: float = Field(gt=0)
    t2_min_te_ms: float = Field(gt=0)
    t2_min_tr_ms: float = Field(gt=0)
    gradient_echo_max_tr_ms: float = Field(gt=0)
    gradient_echo_t1_min_flip_deg: float = Field(ge=0)


class SequenceRules(_Strict):
    roles: RolePatterns
    contrast: ContrastPatterns
    exclude: list[str]
    physics: PhysicsThresholds

    _check = field_validator("exclude")(_compile_all)


_SEPARATORS = re.compile(r"[_\-.,;:()\[\]/]+")


def normalise_description(*parts: str) -> str:
    """Lower-case, separators to spaces, whitespace collapsed (see the module doc)."""
    text = " ".join(p for p in parts if p)
    return " ".join(_SEPARATORS.sub(" ", text.lower()).split())
