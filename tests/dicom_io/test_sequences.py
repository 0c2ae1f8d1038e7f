"""Role recognition from header physics and descriptions, and the choice among candidates."""
from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from glioma_node.dicom_io.header import SeriesHeader
from glioma_node.dicom_io.sequences import Candidate, RoleCall, recognise, select_roles


def header(description: str = "", **physics) -> SeriesHeader:
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "1.2.3", "1.2.3.4", physics.pop("Modality", "MR")
    ds.SeriesDescription = description
    for keyword, value in physics.items():
        setattr(ds, keyword, value)
    return SeriesHeader.from_dataset(ds)


T1_IR_FLAIR = dict(ScanningSequence=["SE", "IR"], RepetitionTime=2200, EchoTime=20, InversionTime=800)
MPRAGE = dict(ScanningSequence=["GR", "IR"], RepetitionTime=2300, EchoTime=2.3, InversionTime=900, MRAcquisitionType="3D")
FLAIR_3D = dict(ScanningSequence=["SE", "IR"], RepetitionTime=6000, EchoTime=120, InversionTime=1800, MRAcquisitionType="3D")
T2_TSE = dict(ScanningSequence=["SE"], RepetitionTime=5000, EchoTime=100)
T1_SE = dict(ScanningSequence=["SE"], RepetitionTime=550, EchoTime=10)


@pytest.mark.parametrize("description, physics, role", [
    # The three that break description regexes elsewhere:
    ("AX T1 POST GD FLAIR", T1_IR_FLAIR, "T1c"),
    ("AX T1 POST GD FLAIR", {}, "T1c"),
    ("t1_mprage_sag_p2_iso_KM", MPRAGE, "T1c"),
    ("t1_mprage_sag_p2_iso_KM", {}, "T1c"),
    ("SAG 3D FLAIR CUBE", FLAIR_3D, "FLAIR"),
    ("SAG 3D FLAIR CUBE", {}, "FLAIR"),
    # Physics decides where the description is silent or misleading:
    ("Series 7", FLAIR_3D, "FLAIR"),
    ("Series 8", T2_TSE, "T2"),
    ("AX T1 FLAIR", T1_IR_FLAIR, "T1"),
    ("t1_mprage_sag_p2_iso", {**MPRAGE, "ContrastBolusAgent": "GADOVIST"}, "T1c"),
    ("T2W_TSE", {**T2_TSE, "ContrastBolusAgent": "GADOVIST"}, "T2"),  # post-contrast T2 stays T2
    ("t2_tirm_tra_dark-fluid", dict(ScanningSequence=["SE", "IR"], RepetitionTime=9000, EchoTime=81, InversionTime=2500),
     "FLAIR"),
    ("3D_T1W_TFE", dict(ScanningSequence=["GR"], RepetitionTime=8.1, EchoTime=3.7, FlipAngle=8), "T1"),
    ("T1W_3D_TFE +C", dict(ScanningSequence=["GR"], RepetitionTime=8.1, EchoTime=3.7, FlipAngle=8), "T1c"),
    ("AX T1 PRE", {**T1_SE, "ContrastBolusAgent": "GADOLINIUM"}, "T1"),  # description says pre: it wins over a stale tag
    ("BRATS-t1n", {}, "T1"),
    # A pre/without marker beside the agent's name is pre-contrast, not a post marker:
    ("AX T1 pre gd", T1_SE, "T1"),
    ("AX T1 PRE-GD", {}, "T1"),
    ("T1 w/o contrast", T1_SE, "T1"),
    ("T1 non contrast", T1_SE, "T1"),
    ("AX T1 pre gd", {**T1_SE, "ContrastBolusAgent": "GADOVIST"}, "T1"),
    ("AX T1 post gd", T1_SE, "T1c"),
    ("T1 pre and post gd", T1_SE, "T1c"),  # a second, un-negated post marker
    # Never one of the four:
    ("ep2d_diff_3scan_trace", dict(ScanningSequence=["EP"], RepetitionTime=5000, EchoTime=90), "other"),
    ("AX SWI", dict(ScanningSequence=["GR"], RepetitionTime=40, EchoTime=25), "other"),
    ("PD_TSE", dict(ScanningSequence=["SE"], RepetitionTime=3000, EchoTime=12), "other"),
    ("3Plane Loc SSFSE", dict(ScanningSequence=["SE"], RepetitionTime=1500, EchoTime=80), "other"),
    ("Head CT", dict(Modality="CT"), "other"),
    ("", {}, "other"),
])
def test_role(description, physics, role, config):
    call = recognise(header(description, **physics), config.sequences)
    assert call.role == role, call.reason
    assert 0 < call.confidence <= 1 and call.reason


def test_physics_beats_a_wrong_description_with_lower_confidence(config):
    call = recognise(header("AX T2", **FLAIR_3D), config.sequences)
    assert call.role == "FLAIR"
    agreeing = recognise(header("AX FLAIR", **FLAIR_3D), config.sequences)
    assert call.confidence < agreeing.confidence
    assert "wins over" in call.reason


def _candidate(uid, role, iso, slices, time, number):
    return Candidate(uid, RoleCall(role, 0.9, ""), iso, slices, "20260101", time, number)


def test_selection_prefers_3d_isotropic_then_slices_then_latest():
    chosen = select_roles([
        _candidate("2d-many", "T1c", False, 200, "090000", 9),
        _candidate("3d", "T1c", True, 160, "080000", 5),
        _candidate("flair-early", "FLAIR", False, 30, "080000", 3),
        _candidate("flair-late", "FLAIR", False, 30, "083000", 4),
        _candidate("flair-thin", "FLAIR", False, 40, "070000", 2),
        _candidate("dwi", "other", False, 300, "090000", 8),
    ])
    assert chosen["T1c"].series_instance_uid == "3d"
    assert chosen["FLAIR"].series_instance_uid == "flair-thin"
    assert set(chosen) == {"T1c", "FLAIR"}
    tie = select_roles([_candidate("a", "T2", False, 30, "080000", 3), _candidate("b", "T2", False, 30, "083000", 4)])
    assert tie["T2"].series_instance_uid == "b"
