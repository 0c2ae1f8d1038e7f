"""The synthetic cohort: brains that look like brains, a known truth, scanner-like DICOM."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioma_node.cli.inspect import inspect_path
from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.series_reader import read_series
from glioma_node.training.synth.tumour import sample_patient, survival

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("synth")]


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_layout_and_labels(synth_cohort):
    labels = _rows(synth_cohort / "labels.csv")
    assert [r["case"] for r in labels] == ["synth-0011-0000", "synth-0011-0001", "synth-0011-0002"]
    assert list(labels[0]) == ["case", "age", "sex", "IDH", "MGMT", "EGFR", "survival_days", "event"]
    for row in labels:
        assert all(row[k] in "01" for k in ("IDH", "MGMT", "EGFR", "event")) and int(row["survival_days"]) > 0
        for name in ("flair", "t1", "t1c", "t2", "seg", "brainmask"):
            assert (synth_cohort / "nifti" / row["case"] / f"{name}.nii.gz").exists()


def test_every_series_gets_its_true_role_and_the_right_one_is_chosen(synth_cohort, config):
    truth = {r["series_instance_uid"]: r for r in _rows(synth_cohort / "series.csv")}
    assert {r["vendor"] for r in truth.values()} == {"siemens", "ge", "philips"}
    report = inspect_path(synth_cohort / "dicom", config)
    assert len(report["studies"]) == 3 and not report["bad_files"]
    for study in report["studies"]:
        assert not study["missing_roles"] and study["shared_frame_of_reference"]
        for series in study["series"]:
            expected = truth[series["series_instance_uid"]]
            assert series["role"] == expected["role"], (expected["series_description"], series["reason"])
            assert series["selected"] == (expected["expected_selected"] == "1")


def test_dicom_geometry_round_trips_exactly(synth_cohort):
    found = scan(synth_cohort / "dicom")
    by_uid = {uid: s for study in found.studies.values() for uid, s in study.series.items()}
    checked = 0
    for path in sorted((synth_cohort / "truth").glob("*.json")):
        for series in json.loads(path.read_text())["series"]:
            volume = read_series(by_uid[series["series_instance_uid"]].instances)
            assert volume.shape == tuple(series["shape"])
            assert np.allclose(volume.affine, np.array(series["affine_lps"]), atol=1e-4)
            checked += 1
    assert checked >= 12


def test_brains_look_like_brains(synth_cohort):
    case = synth_cohort / "nifti" / "synth-0011-0000"
    img = {n: np.asarray(nib.load(str(case / f"{n}.nii.gz")).dataobj) for n in ("t1", "t2", "flair", "seg", "brainmask")}
    brain, seg = img["brainmask"] > 0, img["seg"]
    assert set(np.unique(seg)) <= {0, 1, 2, 4} and (seg > 0).sum() > 1000
    assert brain[seg > 0].mean() > 0.99  # the tumour lies in the brain
    head = img["t1"] > 0.1 * img["t1"].max()
    assert head.sum() > 1.5 * brain.sum()  # a whole head, not a bare brain
    t1, t2, flair = (img[n].astype(float) for n in ("t1", "t2", "flair"))
    healthy = brain & (seg == 0)
    # Intensity order of the ventricles/CSF (dark T1 and FLAIR, bright T2) against white matter.
    wm_like = healthy & (t1 > np.percentile(t1[healthy], 80))
    csf_like = healthy & (t2 > np.percentile(t2[healthy], 95))
    assert t1[wm_like].mean() > 1.5 * t1[csf_like].mean()
    assert flair[csf_like].mean() < 0.5 * flair[wm_like].mean()
    assert flair[seg == 2].mean() > flair[healthy].mean() * 1.3  # edema is bright on FLAIR


def test_latent_status_drives_the_phenotype_and_survival():
    rng = np.random.default_rng(0)
    patients = [sample_patient(rng) for _ in range(3000)]
    idh = np.array([p.idh_mutant for p in patients])
    mgmt = np.array([p.mgmt_methylated for p in patients])
    age = np.array([p.age for p in patients])
    enhancing = np.array([p.enhancing for p in patients])
    assert 0.3 < idh.mean() < 0.4
    assert age[idh].mean() < age[~idh].mean() - 15
    assert enhancing[~idh].mean() > enhancing[idh].mean() + 0.5
    assert mgmt[idh].mean() > mgmt[~idh].mean() + 0.3
    assert any(p.mismatch for p in patients) and not any(p.mismatch and not p.idh_mutant for p in patients)
    egfr = np.array([p.egfr_amplified for p in patients])
    assert egfr[~idh].mean() > 0.35 and egfr[idh].mean() < 0.1  # EGFR amplification belongs to IDH-wildtype
    days: dict[tuple[bool, bool], list[int]] = {}
    for p in patients:
        t, _ = survival(p, core_ml=20.0, necrosis_fraction=0.0, rng=rng)
        days.setdefault((p.idh_mutant, p.egfr_amplified), []).append(t)
    assert np.median(days[True, False]) > np.median(days[False, False]) > np.median(days[False, True])


def test_an_interrupted_cohort_resumes_where_it_stopped(tmp_path, monkeypatch):
    """Rows are appended as cases finish; a second run makes only the missing cases, and a
    case cut off between its series rows and its label row is made again, once."""
    from glioma_node.training.synth import cohort

    made: list[int] = []

    def fake_case(index: int, seed: int, out: Path, dicom: bool = True) -> cohort.CaseResult:
        made.append(index)
        if index == 2 and made.count(2) == 1:
            cohort._append(out / "series.csv", cohort.SERIES_COLUMNS, [{"case": f"synth-{seed:04d}-0002"}])
            raise KeyboardInterrupt  # killed after the series rows, before the label row
        return cohort.CaseResult({"case": f"synth-{seed:04d}-{index:04d}"}, [{"case": f"synth-{seed:04d}-{index:04d}"}])

    monkeypatch.setattr(cohort, "synthesise_case", fake_case)
    with pytest.raises(KeyboardInterrupt):
        cohort.write_cohort(tmp_path, cases=4, seed=8, progress=False)
    cohort.write_cohort(tmp_path, cases=4, seed=8, progress=False)
    assert made == [0, 1, 2, 2, 3]
    assert [r["case"] for r in _rows(tmp_path / "labels.csv")] == [f"synth-0008-{i:04d}" for i in (0, 1, 2, 3)]
    assert [r["case"] for r in _rows(tmp_path / "series.csv")] == [f"synth-0008-{i:04d}" for i in (0, 1, 2, 3)]
    with pytest.raises(ValueError, match="another seed"):
        cohort.write_cohort(tmp_path, cases=5, seed=9, progress=False)


def test_same_seed_same_files(synth_cohort, tmp_path):
    from glioma_node.training.synth.cohort import synthesise_case

    synthesise_case(1, 11, tmp_path)
    ours = sorted((tmp_path / "dicom").rglob("*.dcm"))
    assert ours
    for path in ours[:: max(1, len(ours) // 20)]:
        twin = synth_cohort / path.relative_to(tmp_path)
        assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(twin.read_bytes()).digest(), path.name
