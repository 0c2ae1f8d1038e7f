"""Synthetic longitudinal patients (glioma-node synth --longitudinal): four visits with a known
course, and the RANO call each follow-up should get."""
from __future__ import annotations

import csv
import dataclasses
import datetime
import json

import numpy as np
import pytest

from glioma_node.core.longitudinal import Component, ResponseCategory
from glioma_node.dicom_io.nifti import read_nifti
from glioma_node.inference.longitudinal.compare import compare, measure_time_point
from glioma_node.training.synth.longitudinal import (
    EXPECTED,
    KINDS,
    RADIOTHERAPY_END_DAY,
    VISIT_DAYS,
    Course,
    visit_labels,
    write_longitudinal,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_each_course_gets_its_expected_call_from_the_rules_on_the_true_masks(index):
    truth, visits, head, _ = visit_labels(index, seed=7)
    course = Course(truth["course"])
    start = datetime.date(2020, 1, 1)
    measured = []
    for k, ((labels, cavity), kind, day) in enumerate(zip(visits, KINDS, VISIT_DAYS)):
        m = measure_time_point(labels, head.affine, f"1.2.{k}", start + datetime.timedelta(days=day), kind,
                               cavity=cavity)
        if k >= 2:
            weeks = (day - RADIOTHERAPY_END_DAY) / 7
            # Every earlier visit is a prior; the post-operative one must be taken as the baseline.
            result = compare(m, measured, measured[-1].lesion_maps, (1.0, 1.0, 1.0),
                             lambda lesion, k=k: f"2.25.{index}{k}{lesion.label}", weeks_after_radiotherapy=weeks)
            assert result.response.category == EXPECTED[course][k - 2], (course, k, result.response)
            assert result.baseline.kind == "post-operative"
            assert result.component == (Component.ENHANCING if truth["patient"]["enhancing"] else Component.NON_ENHANCING)
            assert result.response.possible_pseudoprogression == (
                k == 2 and result.response.category == ResponseCategory.PROGRESSIVE_DISEASE)
            m = dataclasses.replace(m, lesions={**m.lesions, result.component: list(result.lesions)})
        else:
            m = dataclasses.replace(m, lesions={c: [dataclasses.replace(x, tracking_uid=f"2.25.{index}{k}{x.label}")
                                                    for x in found] for c, found in m.lesions.items()})
        measured.append(m)
    if course == Course.NEW_LESION:
        assert result.new == ()  # the lesion new at t2 is not new again at t3


def test_a_longitudinal_patient_is_written_with_its_truth_moved_between_visits_and_resumes(tmp_path):
    rows = write_longitudinal(tmp_path, 1, seed=7, progress=False, dicom=False)
    assert [r["visit"] for r in rows] == [0, 1, 2, 3] and len({r["patient"] for r in rows}) == 1
    assert len({r["study_instance_uid"] for r in rows}) == 4
    dates = [datetime.date.fromisoformat(r["study_date"]) for r in rows]
    assert dates == sorted(dates) and (dates[2] - dates[1]).days == 84
    with open(tmp_path / "longitudinal.csv", newline="") as f:
        assert [r["kind"] for r in csv.DictReader(f)] == ["baseline", "post-operative", "follow-up", "follow-up"]
    affines = []
    for r in rows:
        folder = tmp_path / "nifti" / r["case"]
        seg, affine = read_nifti(folder / "seg.nii.gz")
        cavity, _ = read_nifti(folder / "cavity.nii.gz")
        assert not np.any((seg > 0) & (cavity > 0)), "a cavity is never labelled as tumour"
        assert float((cavity > 0).sum()) / 1000 == pytest.approx(r["cavity_ml"], abs=1e-3)
        affines.append(affine)
    assert rows[0]["cavity_ml"] == 0 and rows[1]["cavity_ml"] > 1
    # Each visit lies elsewhere in the scanner.
    assert all(np.abs(affines[k][:3, 3] - affines[0][:3, 3]).max() > 1 for k in (1, 2, 3))
    truth = json.loads((tmp_path / "truth" / f"{rows[0]['patient']}.json").read_text())
    assert truth["course"] == rows[0]["course"] and len(truth["visits"]) == 4
    assert write_longitudinal(tmp_path, 1, seed=7, progress=False, dicom=False) == []
