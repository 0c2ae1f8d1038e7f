"""Patient facts from DICOM headers: age in years and sex."""
from __future__ import annotations

import re
from datetime import date

from pydicom.dataset import Dataset

_AGE = re.compile(r"^(\d{1,3})([DWMY])$")
_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def _date(value: str) -> date | None:
    value = (value or "").strip()
    if not re.fullmatch(r"\d{8}", value):
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def age_years(ds: Dataset) -> float | None:
    """PatientAge (e.g. ``045Y``) if valid, else StudyDate − PatientBirthDate; None if neither."""
    match = _AGE.match(str(ds.get("PatientAge", "") or "").strip().upper())
    if match:
        return round(int(match.group(1)) * _UNIT_YEARS[match.group(2)], 2)
    born, studied = _date(str(ds.get("PatientBirthDate", ""))), _date(str(ds.get("StudyDate", "")))
    if born and studied and studied >= born:
        return round((studied - born).days / 365.25, 2)
    return None


def sex(ds: Dataset) -> str | None:
    """PatientSex as M, F or O; None when absent or not one of those."""
    value = str(ds.get("PatientSex", "") or "").strip().upper()
    return value if value in ("M", "F", "O") else None
