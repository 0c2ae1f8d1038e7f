"""The site's clinical source: known MGMT, IDH and EGFR status from the laboratory.

This is where a site plugs its LIMS (or pathology system) export: a CSV file named by
``clinical.path`` in the configuration, one row per patient or per study, with a header
row. Columns (names matched case-insensitively, any order, others ignored):

=================  ==========================================================
``PatientID``      the DICOM PatientID of the studies the row is about
``AccessionNumber``  or the study's AccessionNumber (at least one of the two)
``MGMT``           methylated / unmethylated (or 1 / 0)
``IDH``            mutant / wildtype (IDH1 R132H, ... count as mutant; or 1 / 0)
``EGFR``           amplified / not amplified (or 1 / 0)
=================  ==========================================================

A study takes the rows that match its AccessionNumber; when none do, the rows of its
PatientID without an AccessionNumber (about the patient as a whole), or else all rows of
its PatientID. An empty, unrecognised ("indeterminate") or contradictory value (two
matching rows that disagree) leaves that marker unknown, and the survival model then
uses its own prediction (MGMT, IDH) or the training median (EGFR); findings.json and
the SR say which it used. The file is read again for every study, so an updated export
applies to the next study without a restart.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from glioma_node.core.clinical import PARSERS, Marker

KEYS = ("patientid", "accessionnumber")


@dataclass
class KnownMarkers:
    """What the clinical source says about one study: marker → 1/0 (known ones only),
    ``source`` (file, key column and value matched, for findings.json), and warnings."""

    markers: dict[str, int] = field(default_factory=dict)
    source: str = ""
    warnings: list[str] = field(default_factory=list)


class ClinicalSource:
    """One clinical CSV (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _rows(self) -> list[dict[str, str]]:
        with open(self.path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = {(c or "").strip().lower() for c in reader.fieldnames or []}
            if not columns & set(KEYS):
                raise ValueError("no PatientID or AccessionNumber column")
            return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items() if isinstance(v, str)}
                    for row in reader]

    def lookup(self, patient_id: str, accession_number: str) -> KnownMarkers:
        """The known markers of the study with these identifiers (empty when no row matches)."""
        try:
            rows = self._rows()
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            return KnownMarkers(warnings=[f"clinical source {self.path} unreadable ({exc}): known genomic status "
                                          "not used"])
        matched, key, value = [], "", ""
        if accession_number.strip():
            key, value = "accessionnumber", accession_number.strip()
            matched = [r for r in rows if r.get(key) == value]
        if not matched and patient_id.strip():
            key, value = "patientid", patient_id.strip()
            patient = [r for r in rows if r.get(key) == value]
            # Rows for the patient as a whole first; rows of the patient's other studies only when there are none.
            matched = [r for r in patient if not r.get("accessionnumber")] or patient
        if not matched:
            return KnownMarkers()
        known: dict[str, int] = {}
        warnings = []
        for marker in Marker:
            values = {v for r in matched if (v := PARSERS[marker](r.get(marker.value, ""))) is not None}
            if len(values) > 1:
                warnings.append(f"clinical source {self.path}: rows for {key} {value!r} disagree on {marker.value.upper()}; "
                                "treated as unknown")
            elif values:
                known[marker.value] = values.pop()
        label = {"accessionnumber": "AccessionNumber", "patientid": "PatientID"}[key]
        return KnownMarkers(known, f"{self.path.name} ({label} {value})" if known else "", warnings)
