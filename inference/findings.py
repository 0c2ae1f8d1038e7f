"""Findings: everything the node concludes about one study (data only).

``dicom_io`` writes DICOM objects from Findings, so this module imports nothing but
numpy and the standard library.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

RESEARCH_USE = "Research use only, not for diagnosis."


@dataclass
class LabelMask:
    """BraTS labels (uint8 ``[z, y, x]``) on the grid of one source series.

    ``affine`` maps (column, row, slice) to LPS mm as in :mod:`inference.volume`;
    ``series_instance_uid`` and ``sop_instance_uids`` (one per slice) name the source.
    """

    role: str
    series_instance_uid: str
    labels: np.ndarray
    affine: np.ndarray
    sop_instance_uids: list[str]
    frame_numbers: list[int] | None = None


@dataclass
class Findings:
    """The results for one study; see DESIGN.md, "Key types".

    ``volumes_ml``: millilitres per label (necrotic_core, edema, enhancing) and region
    (whole_tumour, tumour_core, enhancing_tumour). ``masks``: role → LabelMask on that
    role's source series; ``reference_role`` names the one reports point at.
    ``timings_s``: seconds per stage.
    """

    study_instance_uid: str
    reference_role: str
    masks: dict[str, LabelMask]
    volumes_ml: dict[str, float]
    brain_volume_ml: float | None
    models: list[dict[str, str]]
    timings_s: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    registration: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (no voxel arrays): what findings.json holds."""
        return {
            "study_instance_uid": self.study_instance_uid,
            "notice": RESEARCH_USE,
            "segmentation": {
                "labels": {"1": "necrotic / non-enhancing tumour core", "2": "edema", "4": "enhancing tumour"},
                "volumes_ml": self.volumes_ml,
                "brain_volume_ml": self.brain_volume_ml,
                "reference_role": self.reference_role,
                "reference_series_instance_uid": self.masks[self.reference_role].series_instance_uid,
                "series": {role: m.series_instance_uid for role, m in self.masks.items()},
            },
            "registration": self.registration,
            "models": self.models,
            "timings_s": self.timings_s,
            "warnings": self.warnings,
        }
