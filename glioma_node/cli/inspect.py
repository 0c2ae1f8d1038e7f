"""`glioma-node inspect`: the studies under a path, their series, roles and refusals."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from glioma_node.dicom_io.scan import ScanResult, scan
from glioma_node.dicom_io.study import StudySurvey, survey
from glioma_node.service.config import Config


def _series_entry(item: Any) -> dict[str, Any]:
    h = item.header
    return {
        "series_instance_uid": item.series_instance_uid,
        "series_number": h.series_number,
        "series_description": h.series_description,
        "modality": h.modality,
        "sop_class_uid": h.sop_class_uid,
        "manufacturer": h.manufacturer,
        "instances": len(item.files.instances),
        "role": item.call.role,
        "confidence": round(item.call.confidence, 2),
        "reason": item.call.reason,
        "selected": item.selected,
        "physics": {
            "repetition_time_ms": h.repetition_time_ms,
            "echo_time_ms": h.echo_time_ms,
            "inversion_time_ms": h.inversion_time_ms,
            "scanning_sequence": h.scanning_sequence,
            "mr_acquisition_type": h.mr_acquisition_type,
            "contrast_agent": h.contrast_agent or None,
        },
        "geometry": item.geometry(),
        "refused": None if item.refusal is None else {"code": item.refusal.code, "reason": item.refusal.reason},
    }


def _study_entry(study: StudySurvey) -> dict[str, Any]:
    return {
        "study_instance_uid": study.study_instance_uid,
        "roles": {role: item.series_instance_uid for role, item in study.roles.items()},
        "missing_roles": study.missing_roles,
        "shared_frame_of_reference": study.shared_frame_of_reference,
        "series": [_series_entry(s) for s in study.series],
    }


def inspect_path(path: str | Path, config: Config, decode: bool = True) -> dict[str, Any]:
    """The report as a JSON-ready dict: ``studies``, ``bad_files``, ``skipped_not_dicom``."""
    limits = config.node.read_limits()
    found: ScanResult = scan(path, limits.max_bytes)
    studies = survey(found, config.sequences, decode=decode, min_confidence=config.thresholds.min_role_confidence,
                     limits=limits)
    return {
        "path": str(path),
        "studies": [_study_entry(s) for s in studies],
        "bad_files": [{"path": str(p), "reason": why} for p, why in found.bad_files],
        "skipped_not_dicom": len(found.skipped_not_dicom),
    }


def _series_number(study: dict, series_uid: str) -> object:
    return next(s["series_number"] for s in study["series"] if s["series_instance_uid"] == series_uid)


def render_text(report: dict[str, Any]) -> str:
    """The report for a terminal: one block per study, one line per series."""
    lines = [f"{report['path']}: {len(report['studies'])} study(ies)"]
    for study in report["studies"]:
        lines.append(f"\nstudy {study['study_instance_uid']}")
        lines.append(
            "  roles: " + (", ".join(f"{r}=series {_series_number(study, uid)}" for r, uid in study["roles"].items())
                           or "none")
            + (f"; missing {', '.join(study['missing_roles'])}" if study["missing_roles"] else "")
            + ("; one frame of reference" if study["shared_frame_of_reference"] else "")
        )
        for s in study["series"]:
            mark = "*" if s["selected"] else " "
            number = s["series_number"] if s["series_number"] is not None else "-"
            head = f" {mark} #{number:<4} {s['series_description'][:34]:34s} {s['role']:5s} {s['confidence']:.2f}"
            if s["refused"]:
                lines.append(f"{head}  REFUSED ({s['refused']['code']}): {s['refused']['reason']}")
            else:
                g = s["geometry"]
                sp = "x".join(f"{v:g}" for v in g["spacing_mm_column_row_slice"])
                shape = "x".join(str(v) for v in reversed(g["shape_slices_rows_columns"]))
                lines.append(f"{head}  {shape} @ {sp} mm, {g['orientation']}")
            lines.append(f"        why: {s['reason']}")
    for bad in report["bad_files"]:
        lines.append(f"\nunreadable: {bad['reason']}")
    if report["skipped_not_dicom"]:
        lines.append(f"\n{report['skipped_not_dicom']} non-DICOM file(s) skipped")
    return "\n".join(lines)
