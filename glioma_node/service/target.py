"""Where a result set is sent: a :class:`Target` names the kind of destination and which one.

The text form ``<kind>:<name>`` (``dicom:pacs``, ``stow:archive``, ``caller:MR_SCANNER``,
``orthanc:self``) is what the state stores with each send job and what the logs show.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TargetKind(StrEnum):
    """How results reach a target."""

    DICOM = "dicom"  # C-STORE to a configured destination
    STOW = "stow"  # STOW-RS to a configured DICOMweb endpoint
    CALLER = "caller"  # C-STORE back to the allowed peer that sent the study
    ORTHANC = "orthanc"  # stored into the Orthanc the node runs in (plugin mode)


@dataclass(frozen=True)
class Target:
    """One send target: its kind and the name the configuration gives it."""

    kind: TargetKind
    name: str

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> Target:
        """The target a ``<kind>:<name>`` string names; ValueError if the kind is unknown or the name empty."""
        kind, sep, name = text.partition(":")
        if not sep or not name:
            raise ValueError(f"a send target is <kind>:<name>, got {text!r}")
        try:
            return cls(TargetKind(kind), name)
        except ValueError:
            raise ValueError(f"unknown send target kind {kind!r} in {text!r}; kinds are "
                             f"{', '.join(k.value for k in TargetKind)}") from None


ORTHANC_SELF = Target(TargetKind.ORTHANC, "self")
