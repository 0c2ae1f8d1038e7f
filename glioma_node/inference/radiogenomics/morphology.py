"""VASARI-like morphology descriptors derived from the sub-region volumes.

Radiomic shape features give each sub-region's volume; the descriptors radiologists use
(how thick the edema rim is, what share of the core enhances or is necrotic) are
non-linear combinations a linear classifier cannot form, so they are computed here.
Volumes in ml, thickness in mm (difference of the volume-equivalent sphere radii).
"""
from __future__ import annotations

import math


def _ml(features: dict[str, float], region: str) -> float:
    value = features.get(f"shape.{region}.VoxelVolume", 0.0)
    return max(0.0, float(value)) / 1000.0 if value == value else 0.0


def _radius_mm(ml: float) -> float:
    return (3.0 * ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)


def morphology_features(features: dict[str, float]) -> dict[str, float]:
    """``morphology.*`` from the ``shape.<region>.VoxelVolume`` radiomic features (mm³)."""
    whole, necrotic, edema, enhancing = (_ml(features, r) for r in ("whole_tumour", "necrotic_core", "edema", "enhancing"))
    core = necrotic + enhancing
    return {
        "morphology.log_whole_tumour_ml": math.log1p(whole),
        "morphology.log_core_ml": math.log1p(core),
        "morphology.edema_thickness_mm": _radius_mm(whole) - _radius_mm(core),
        "morphology.edema_fraction": edema / whole if whole > 0 else 0.0,
        "morphology.enhancing_fraction": enhancing / core if core > 0 else 0.0,
        "morphology.necrosis_fraction": necrotic / core if core > 0 else 0.0,
    }
