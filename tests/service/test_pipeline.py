"""`glioma-node process PATH --out OUT` on synthetic studies, as a user runs it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from glioma_node.core.grid import Grid
from glioma_node.dicom_io.nifti import read_nifti
from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.study import load_study, survey
from glioma_node.inference.regions import region_dice
from glioma_node.inference.resample import resample
from tests.helpers import REPO, result_kinds

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("synth")]


def _process(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "process", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=900)


def test_every_study_gets_findings_and_labels(processed, synth_cohort, config):
    result, out = processed
    assert result.returncode == 0, result.stderr
    studies = survey(scan(synth_cohort / "dicom"), config.sequences, decode=False)
    assert len(studies) == 3
    for study in studies:
        folder = out / study.study_instance_uid
        findings = json.loads((folder / "findings.json").read_text())
        assert findings["status"] == "done"
        assert findings["notice"] == "Research use only, not for diagnosis."
        seg = findings["segmentation"]
        assert set(seg["volumes_ml"]) >= {"whole_tumour", "tumour_core", "enhancing_tumour", "edema",
                                          "necrotic_core", "enhancing"}
        assert [m["task"] for m in findings["models"]] == ["brain-extraction", "segmentation", "radiogenomics"]
        for model in findings["models"]:
            assert model["name"] and model["version"] and len(model["sha256"]) == 64
        assert {"segmentation_preprocess", "segmentation_inference", "read_series", "radiomics", "deep_features",
                "explanations"} <= set(findings["timings_s"])
        # labels.nii.gz lies exactly on the reference (T1c) series grid
        t1c = load_study(study).volumes["T1c"]
        assert seg["reference_series_instance_uid"] == t1c.metadata.series_instance_uid
        labels, affine = read_nifti(folder / "nifti" / "labels.nii.gz")
        assert labels.shape == t1c.shape
        assert np.allclose(affine, t1c.affine, atol=1e-3)
        assert set(np.unique(labels)) <= {0, 1, 2, 4}


def test_every_study_gets_mgmt_idh_risk_and_explanations(processed, synth_cohort, config):
    _, out = processed
    for study in survey(scan(synth_cohort / "dicom"), config.sequences, decode=False):
        folder = out / study.study_instance_uid
        rg = json.loads((folder / "findings.json").read_text())["radiogenomics"]
        for target, positive, negative in (("mgmt", "methylated", "unmethylated"), ("idh", "mutant", "wildtype")):
            p = rg["predictions"][target]
            assert 0 <= p["probability"] <= 1 and 0 < p["threshold"] < 1
            assert p["status"] == (positive if p["probability"] >= p["threshold"] else negative)
            assert p["top_features"] and all({"feature", "value", "shap"} <= set(f) for f in p["top_features"])
        assert rg["risk"]["group"] in ("high", "low")
        assert (rg["risk"]["group"] == "high") == (rg["risk"]["score"] >= rg["risk"]["cutoff"])
        labels, affine = read_nifti(folder / "nifti" / "labels.nii.gz")
        for target in ("mgmt", "idh"):
            cam, cam_affine = read_nifti(folder / "nifti" / f"gradcam-{target}.nii.gz")
            assert cam.shape == labels.shape and np.allclose(cam_affine, affine)
            assert 0 <= cam.min() and 0 < cam.max() <= 1
            # the heat map looks at the tumour, not at the corners of the field of view
            assert cam[labels > 0].mean() > cam[labels == 0].mean()
        assert (folder / "explanations.png").stat().st_size > 10_000


def test_the_risk_says_where_its_genomic_inputs_came_from(processed, synth_cohort, config):
    """The clinical source (the fixture's lims.csv) knows synth-0011-0000's IDH status only."""
    _, out = processed
    manifest = json.loads((REPO / "glioma_node" / "models" / "radiogenomics" / "manifest.json").read_text())
    takes_known = "survival_known_markers" in manifest["output"]
    for study in survey(scan(synth_cohort / "dicom"), config.sequences, decode=False):
        findings = json.loads((out / study.study_instance_uid / "findings.json").read_text())
        inputs = findings["radiogenomics"]["risk"]["inputs"]
        listed = load_study(study).patient_id == "synth-0011-0000"
        assert inputs["mgmt"] == "predicted from the images"
        if listed and takes_known:
            assert inputs["idh"] == "clinical source"
            assert "PatientID synth-0011-0000" in findings["radiogenomics"]["risk"]["known_from"]
        else:
            assert inputs["idh"] == "predicted from the images"
        # A model whose survival head never saw known status says it left the known IDH unused.
        assert any("was not used" in w for w in findings["warnings"]) == (listed and not takes_known)


def test_tumour_matches_the_synthetic_truth(processed, synth_cohort, config):
    """Held-out synthetic cases (seed 11; training used other seeds): whole tumour found where it is."""
    _, out = processed
    for study in survey(scan(synth_cohort / "dicom"), config.sequences, decode=False):
        case = study.series[0].files.instances[0].header.PatientID  # the cohort writes the case name there
        truth, truth_affine = read_nifti(synth_cohort / "nifti" / case / "seg.nii.gz")
        labels, affine = read_nifti(out / study.study_instance_uid / "nifti" / "labels.nii.gz")
        on_truth = resample(labels, Grid(labels.shape, affine), Grid(truth.shape, truth_affine), interpolation="nearest")
        dice = region_dice(on_truth, truth)
        assert dice["whole_tumour"] >= 0.7, (case, dice)


def test_broken_studies_fail_with_their_reasons_and_the_good_one_is_done(synth_cohort, tmp_path):
    """Three studies in one folder: one without T2, one with a T1c slice whose pixel data
    was cut short, one intact. Each broken one is `failed` with its own reason in its
    findings.json; the intact one is `done` whatever order they come in."""
    import pydicom

    from tests.node_harness import node_config

    cases = sorted(p for p in (synth_cohort / "dicom").iterdir() if p.is_dir())[:3]
    folders = [tmp_path / "in" / case.name for case in cases]
    for case, folder in zip(cases, folders):
        shutil.copytree(case, folder)
    headers = {path: pydicom.dcmread(path, stop_before_pixels=True) for path in folders[0].rglob("*.dcm")}
    truth = [json.loads((synth_cohort / "truth" / f"{case.name}.json").read_text()) for case in cases]
    role_of = [{s["series_instance_uid"]: s["role"] for s in t["series"]} for t in truth]
    for path, ds in headers.items():  # study 0: no T2
        if role_of[0].get(ds.SeriesInstanceUID) == "T2":
            path.unlink()
    t1c = sorted(p for p in folders[1].rglob("*.dcm")
                 if role_of[1].get(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) == "T1c")
    t1c[len(t1c) // 2].write_bytes(t1c[len(t1c) // 2].read_bytes()[:-2000])  # study 1: a truncated slice
    config = node_config(tmp_path / "config", radiogenomics=False)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "--config", str(config), "process",
                             str(tmp_path / "in"),
                             "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=900)
    uids = [next(iter(scan(folder).studies)) for folder in folders]
    findings = [json.loads((out / uid / "findings.json").read_text()) for uid in uids]
    states = [f["status"] for f in findings]
    assert states == ["failed", "failed", "done"], (states, result.stdout, result.stderr[-2000:])
    assert "T2" in findings[0]["error"]
    assert t1c[len(t1c) // 2].name in findings[1]["error"]
    assert result.returncode == 1 and result.stdout.count("FAILED") == 2


def test_a_study_without_t2_is_segmented_when_configured_and_says_what_it_lacked(synth_cohort, tmp_path):
    """assembly.required_roles relaxed to FLAIR: a study without T2 is segmented from what it
    has; findings.json and the SR say T2 was missing, and MGMT, IDH and risk are withheld."""
    import pydicom

    from tests.node_harness import node_config

    case = sorted(p for p in (synth_cohort / "dicom").iterdir() if p.is_dir())[0]
    folder = tmp_path / "in" / case.name
    shutil.copytree(case, folder)
    truth = json.loads((synth_cohort / "truth" / f"{case.name}.json").read_text())
    role_of = {s["series_instance_uid"]: s["role"] for s in truth["series"]}
    for path in list(folder.rglob("*.dcm")):
        if role_of.get(pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID) == "T2":
            path.unlink()
    config = node_config(tmp_path / "config", radiogenomics=True, **{"assembly.required_roles": ["FLAIR"]})
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "glioma_node.cli.main", "--config", str(config), "process",
                             str(tmp_path / "in"),
                             "--out", str(out)], capture_output=True, text=True, cwd=REPO, timeout=900)
    uid = next(iter(scan(folder).studies))
    findings = json.loads((out / uid / "findings.json").read_text())
    assert findings["status"] == "done", (result.stdout, result.stderr[-2000:])
    warnings = " | ".join(findings["warnings"])
    assert "segmented without T2" in warnings and "MGMT, IDH and risk withheld" in warnings, warnings
    assert findings.get("radiogenomics") is None
    assert findings["segmentation"]["volumes_ml"]["whole_tumour"] > 1.0
    sr = next(out.rglob("report.dcm"))
    assert b"segmented without T2" in sr.read_bytes()


def test_every_study_gets_its_dicom_results(processed, synth_cohort, config):
    import pydicom

    _, out = processed
    for study in survey(scan(synth_cohort / "dicom"), config.sequences, decode=False):
        folder = out / study.study_instance_uid
        findings = json.loads((folder / "findings.json").read_text())
        assert sorted(d["kind"] for d in findings["dicom"]) == result_kinds()
        for item in findings["dicom"]:
            ds = pydicom.dcmread(folder / item["file"])
            assert ds.StudyInstanceUID == study.study_instance_uid
            assert (ds.SOPInstanceUID, ds.SeriesInstanceUID) == (item["sop_instance_uid"], item["series_instance_uid"])
        # the SEG's whole-tumour segment is labels.nii.gz > 0, frame by frame on the T1c grid
        seg = pydicom.dcmread(folder / "dicom" / "seg-t1c.dcm")
        labels, _ = read_nifti(folder / "nifti" / "labels.nii.gz")
        t1c = study.roles["T1c"].files.instances
        by_source = {}
        for frame, group in zip(seg.pixel_array, seg.PerFrameFunctionalGroupsSequence):
            if group.SegmentIdentificationSequence[0].ReferencedSegmentNumber == 4:
                source = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
                by_source[source] = frame
        volume = load_study(study).volumes["T1c"]
        whole = np.stack([by_source[uid] for uid in volume.sop_instance_uids])
        assert len(by_source) == len(t1c) and np.array_equal(whole > 0, labels > 0)
        assert (folder / "summary.png").stat().st_size > 10_000
        assert findings["timings_s"]["write_dicom"] > 0
