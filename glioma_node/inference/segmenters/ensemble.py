"""Ensembles: the region probabilities of several segmenters, averaged voxel by voxel.

As BraTS-Toolkit fuses the candidates of several BraTS algorithms, each member runs
on the same prepared study and brain mask, and the whole-tumour, tumour-core and
enhancing-tumour probabilities are averaged (equal weights; the nesting
ET ⊂ TC ⊂ WT is restored when labels are composed). A member that cannot run on a
study (it needs a sequence the study lacks) is left out of that study's average, and
the result says so.
"""
from __future__ import annotations

import hashlib

import numpy as np

from glioma_node.inference.preprocess import PreparedStudy, PreprocessingError
from glioma_node.inference.regions import dice
from glioma_node.inference.segmenters.base import RegionMaps, Segmenter


class EnsembleSegmenter:
    """The mean of ``members``' region probabilities (see the module doc)."""

    def __init__(self, members: list[Segmenter]) -> None:
        if len(members) < 2:
            raise ValueError("an ensemble needs at least two segmenters")
        self.members = members
        # What every member needs; a study lacking more still runs the members that can (predict).
        self.required_roles = tuple(r for r in members[0].required_roles
                                    if all(r in m.required_roles for m in members[1:]))

    def describe(self) -> dict[str, str]:
        parts = [m.describe() for m in self.members]
        digest = hashlib.sha256("".join(p.get("sha256", "") for p in parts).encode()).hexdigest()
        return {"name": "ensemble of " + " + ".join(p["name"] for p in parts),
                "version": "; ".join(f"{p['name']} {p.get('version', '')}".strip() for p in parts),
                "sha256": digest, "kind": "ensemble"}

    def predict(self, prepared: PreparedStudy, brain: np.ndarray) -> RegionMaps:
        usable = [m for m in self.members if all(r in prepared.channels for r in m.required_roles)]
        left_out = [m for m in self.members if m not in usable]
        if not usable:
            raise PreprocessingError("no member of the ensemble can run on this study: "
                                     + "; ".join(f"{m.describe()['name']} needs {', '.join(m.required_roles)}"
                                                 for m in self.members))
        maps = [m.predict(prepared, brain) for m in usable]
        wt, tc, et = (np.mean([getattr(m, name) for m in maps], axis=0).astype(np.float32)
                      for name in ("whole_tumour", "tumour_core", "enhancing_tumour"))
        notes = [f"ensemble without {m.describe()['name']}: it needs {', '.join(m.required_roles)}"
                 for m in left_out]
        pairs = [dice(a.whole_tumour > 0.5, b.whole_tumour > 0.5) for i, a in enumerate(maps) for b in maps[i + 1:]]
        agreement: float | None
        if pairs:
            agreement, agreement_of = float(np.mean(pairs)), "the ensemble's members"
        else:  # one member ran: its own variants, if it has any
            agreement, agreement_of = maps[0].agreement, maps[0].agreement_of
        return RegionMaps(wt, tc, et, notes=[n for mp in maps for n in mp.notes] + notes, agreement=agreement,
                          agreement_of=agreement_of)
