"""The four MR sequences a study is analysed from, by the role each plays.

A role is what a series *is for* in the analysis, whatever its SeriesDescription says:
``FLAIR`` (T2-weighted fluid-attenuated inversion recovery), ``T1`` (native T1-weighted),
``T1c`` (T1-weighted after gadolinium) and ``T2``. ``dicom_io`` recognises them,
``inference`` takes ``role → Volume``, the configuration and training name them with these
strings. :class:`Role` is a ``StrEnum``: a member equals, hashes and prints as its string,
so ``volumes["T1c"]`` and ``volumes[Role.T1C]`` are the same entry.
"""
from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """One of the four analysed MR sequences."""

    FLAIR = "FLAIR"
    T1 = "T1"
    T1C = "T1c"
    T2 = "T2"


ROLES: tuple[str, ...] = tuple(Role)  # typed as plain strings: role-keyed dicts take either
"""All roles, in the channel order every network of glioma-node uses (FLAIR, T1, T1c, T2)."""
