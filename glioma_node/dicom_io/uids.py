"""UIDs: the ones glioma-node makes (derived from their inputs, so a retry never makes a
duplicate) and the check of the ones it receives (:func:`check_uid`)."""
from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass

from pydicom.uid import UID

IMPLEMENTATION_CLASS_UID = UID("1.2.826.0.1.3680043.10.1418.1")  # glioma-node (under a Medical Connections org root)
IMPLEMENTATION_VERSION = "GLIOMA_NODE_01"

_UID_NAMESPACE = uuid.UUID("5d0c8a51-3f5e-4a8e-9a55-6b1d3f0e2c47")  # glioma-node's UUID v5 namespace


def derived_uid(*parts: object) -> str:
    """A UID that depends only on ``parts``: same inputs, same UID.

    A name-based UUID (RFC 4122 version 5) in the 2.25 form of DICOM PS3.5 B.2.
    pydicom's ``generate_uid(prefix=None, ...)`` would ignore the inputs and return a
    random UUID4, which breaks idempotent retries.
    """
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


class InvalidUid(ValueError):
    """A value that is not a DICOM UID (PS3.5 §9.1); the message says which rule it breaks."""


_UID_CHARS = re.compile(r"^[0-9.]+$")


@dataclass(frozen=True)
class CheckedUid:
    """A UID that passed :func:`check_uid`: ``value`` as it is to be used (padding
    removed) and ``tolerated``, the harmless violations it carries (for a log line)."""

    value: str
    tolerated: tuple[str, ...] = ()


def check_uid(value: object, keyword: str = "UID") -> CheckedUid:
    """``value`` as a UID, or :class:`InvalidUid`.

    PS3.5 §9.1: components of digits separated by dots, at most 64 characters, no
    empty component, no leading zero in a component of more than one digit. Older
    equipment pads with a trailing space or NUL and writes leading zeros; those are
    tolerated (padding removed, the violation named in ``tolerated``) because they are
    unambiguous and cannot form a path. Anything else (letters, slashes, ``..``, empty
    components, over 64 characters) is refused.
    """
    if value is None:
        raise InvalidUid(f"{keyword} is missing")
    raw = str(value)
    text = raw.rstrip(" \0")
    tolerated = []
    if text != raw:
        tolerated.append("trailing padding (space or NUL)")
    if not text:
        raise InvalidUid(f"{keyword} is empty")
    if len(text) > 64:
        raise InvalidUid(f"{keyword} has {len(text)} characters; a UID has at most 64")
    if not _UID_CHARS.match(text):
        shown = text[:40].encode("ascii", "backslashreplace").decode()
        raise InvalidUid(f"{keyword} {shown!r} is not a UID: only digits and dots are allowed")
    components = text.split(".")
    if any(c == "" for c in components):
        raise InvalidUid(f"{keyword} {text!r} has an empty component (leading, trailing or double dot)")
    if any(len(c) > 1 and c[0] == "0" for c in components):
        tolerated.append("a component with a leading zero")
    return CheckedUid(text, tuple(tolerated))


def safe_part(uid: object) -> str:
    """The one way a UID (or any received value) becomes a file or folder name.

    A valid UID (see :func:`check_uid`, padding removed) is its own name; anything else
    becomes ``x`` + a SHA-256 prefix of it, so no tag value can ever climb out of the
    folder it is placed in (no ``..``, no slashes, no NUL) or collide with a UID."""
    try:
        return check_uid(uid).value
    except InvalidUid:
        return _hashed(uid)


def _hashed(value: object) -> str:
    """``x`` + a SHA-256 prefix: the name of anything that may not name itself."""
    return "x" + hashlib.sha256(str(value or "").encode("utf-8", "replace")).hexdigest()[:40]


_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def safe_file_name(name: object) -> str:
    """A case or dataset name (from a folder or a label CSV) as a file name: itself when
    it is a plain name (letters, digits, ``._-``, not starting with a dot), else a hash
    as :func:`safe_part` makes, so a label file cannot point a cache outside its folder."""
    text = str(name or "")
    return text if _PLAIN_NAME.match(text) and ".." not in text else _hashed(text)
