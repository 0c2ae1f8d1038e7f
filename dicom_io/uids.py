"""UIDs glioma-node makes: derived from their inputs, so a retry never makes a duplicate."""
from __future__ import annotations

import uuid

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
