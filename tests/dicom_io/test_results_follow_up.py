"""The follow-up part of the TID 1500 report (a study compared with the patient's earlier one),
judged by dciodvfy and dsrdump, and findings.json's follow_up."""
from __future__ import annotations

import dataclasses
import datetime
import subprocess

import numpy as np
import pydicom
import pytest

from glioma_node.core.longitudinal import TimePointKind
from glioma_node.dicom_io.results.writer import write_results
from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.study import survey
from glioma_node.inference.longitudinal.compare import compare, measure_time_point
from tests.helpers import require_tool
from tests.result_fixtures import fabricated_findings

pytestmark = [pytest.mark.xdist_group("synth")]


def _labels(*balls: tuple[tuple[int, int, int], float]) -> np.ndarray:
    z, y, x = np.mgrid[:40, :80, :80].astype(float)
    out = np.zeros((40, 80, 80), np.uint8)
    for (cz, cy, cx), r in balls:
        ball = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r ** 2
        edema = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= (r + 5) ** 2
        out[edema & (out == 0)] = 2
        out[ball] = 4
    return out


def _follow_up(study_uid: str):
    """A prior with one enhancing lesion and a current study where it grew and a second appeared."""
    eye = np.eye(4)
    prior = measure_time_point(_labels(((20, 30, 30), 8)), eye, "1.2.826.0.1.3680043.10.1418.99.1",
                               datetime.date(2026, 1, 5), TimePointKind.POST_OPERATIVE)
    prior = dataclasses.replace(prior, lesions={c: [dataclasses.replace(x, tracking_uid=f"2.25.77{x.label}")
                                                    for x in found] for c, found in prior.lesions.items()})
    current = measure_time_point(_labels(((20, 30, 30), 11), ((20, 62, 60), 7)), eye, study_uid,
                                 datetime.date(2026, 4, 1), TimePointKind.FOLLOW_UP)
    return compare(current, [prior], prior.lesion_maps, (1.0, 1.0, 1.0), lambda lesion: f"2.25.88{lesion.label}",
                   weeks_after_radiotherapy=30.0, alignment={"accepted": True, "brain_dice": 0.97})


@pytest.fixture(scope="module")
def report(synth_cohort, config, tmp_path_factory):
    study = survey(scan(synth_cohort / "dicom"), config.sequences, decode=False)[0]
    findings, sources, reference = fabricated_findings(study, size_mm=18.0, offset_mm=25.0)
    findings.follow_up = _follow_up(findings.study_instance_uid)
    objects = write_results(findings, sources, reference, tmp_path_factory.mktemp("follow-up"))
    return findings, {o.path.stem: o for o in objects}["report"].path


def test_findings_json_carries_the_call_the_lesions_and_the_changes():
    follow_up = _follow_up("1.2.3")
    data = follow_up.to_json()
    assert data["response"]["category"] == "progressive disease" and data["response"]["status"] == "preliminary"
    assert data["response"]["new_lesions"] == 1
    kept = [x for x in data["lesions"] if not x["new"]]
    assert [x["tracking_uid"] for x in kept] == ["2.25.771"]  # the grown lesion keeps the prior's UID
    assert data["latest_prior"]["kind"] == "post-operative" and data["latest_prior"]["date"] == "2026-01-05"
    assert data["volume_change"]["enhancing"]["ml"] > 0 and data["volume_change"]["enhancing"]["fraction"] > 1
    assert data["current"]["burdens"]["enhancing"]["targets"][0].startswith("2.25.")


def test_the_report_tracks_each_lesion_over_both_time_points(report):
    findings, path = report
    ds = pydicom.dcmread(path)
    uids: dict[str, list[str]] = {}

    def walk(items, time_point=None):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeMeaning
            if name == "Measurement Group":
                tp = next((c.TextValue for c in item.ContentSequence
                           if c.ConceptNameCodeSequence[0].CodeMeaning == "Time Point"), None)
                uid = next((c.UID for c in item.ContentSequence
                            if c.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Unique Identifier"), None)
                if tp:
                    uids.setdefault(uid, []).append(tp)
            if "ContentSequence" in item:
                walk(item.ContentSequence, time_point)

    walk(ds.ContentSequence)
    assert uids["2.25.771"] == ["follow-up 2026-04-01", "post-operative 2026-01-05"]
    assert any(uid.startswith("2.25.88") and tps == ["follow-up 2026-04-01"] for uid, tps in uids.items())


@pytest.mark.integration
def test_dciodvfy_finds_no_error_and_dsrdump_shows_the_rano_call(report):
    findings, path = report
    require_tool("dciodvfy")
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
    assert not errors, errors
    require_tool("dsrdump")
    text = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
    assert 'CODE:(,,"Response Evaluation")=(112043,DCM,"Target Lesion Progressive Disease")' in text
    assert '(C114879,NCIt,"RANO")' in text
    assert '=(GN0018,99GLIOMA,"Preliminary (awaiting a confirming scan)")' in text
    assert 'TEXT:(,,"Reason for the response call")="1 new measurable lesion"' in text
    # The grown lesion is the baseline's target at both time points; the other one is new.
    assert text.count('(GN0026,99GLIOMA,"Target lesion")') == 2 and '(GN0028,99GLIOMA,"New lesion")' in text
    assert 'UIDREF:(,,"Prior study compared with")="1.2.826.0.1.3680043.10.1418.99.1"' in text
    assert '(126074,DCM,"Posttreatment")' in text and '(262061000,SCT,"Post-operative")' in text
    assert 'NUM:(,,"Perpendicular Axis")="23.5" (mm,UCUM,"mm")' in text  # the grown lesion's
