"""The DICOM results (SEG, Parametric Maps, TID 1500 SR, summary Secondary Capture), judged
by programs nobody here wrote: dciodvfy (dicom3tools), dsrdump (dcmtk) and dcmqi's
readers, and compared with the reference objects in ../shared/data."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from PIL import Image

from glioma_node.dicom_io.results.codes import PROCESSING_ALGORITHM
from glioma_node.dicom_io.results.seg import SEGMENTS
from glioma_node.dicom_io.results.writer import build_results, write_results
from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.study import survey
from tests.helpers import on_grid, require_tool, shared
from tests.result_fixtures import fabricated_findings, write_enhanced_study

pytestmark = [pytest.mark.xdist_group("synth")]

BIN = Path(sys.executable).parent  # dcmqi's command-line readers come with its wheel
COPIED = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
          "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName")


def _dcmqi(tool: str) -> str:
    path = BIN / tool
    if not path.exists():
        pytest.fail(f"{tool} missing: dcmqi is a test dependency (make install)")
    return str(path)


@pytest.fixture(scope="module")
def studies(synth_cohort, config):
    return survey(scan(synth_cohort / "dicom"), config.sequences, decode=False)


@pytest.fixture(scope="module")
def written(studies, config, tmp_path_factory):
    """Every synthetic study's results written from hand-made findings, and those of a
    small Enhanced MR (multi-frame) study."""
    out = tmp_path_factory.mktemp("results")
    enhanced = survey(scan(write_enhanced_study(tmp_path_factory.mktemp("enhanced"))), config.sequences, decode=False)
    assert not enhanced[0].missing_roles, enhanced[0].missing_roles
    result = []
    for study, size, offset in [*((s, 18.0, 25.0) for s in studies), (enhanced[0], 8.0, 4.0)]:
        findings, sources, reference = fabricated_findings(study, size_mm=size, offset_mm=offset)
        objects = write_results(findings, sources, reference, out / study.study_instance_uid)
        result.append((study, findings, {o.path.stem: o for o in objects}))
    return result


def _itk_affine(image: sitk.Image) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())
    affine[:3, 3] = image.GetOrigin()
    return affine


def test_every_object_is_written_with_the_study_copied_and_a_new_series(written):
    for study, _findings, objects in written:
        assert set(objects) == {"seg-t1c", "seg-flair", "gradcam-mgmt", "gradcam-idh", "gradcam-chemo-benefit",
                                "report", "summary"}
        source = next(iter(study.roles["T1c"].files.instances)).header
        series_numbers = set()
        for stem, obj in objects.items():
            ds = pydicom.dcmread(obj.path)
            for keyword in COPIED:
                assert str(ds.get(keyword, "")) == str(source.get(keyword, "")), (stem, keyword)
            assert ds.SeriesInstanceUID not in study.source_headers()
            assert "glioma-node" in ds.SeriesDescription
            series_numbers.add(int(ds.SeriesNumber))
            purposes = [item.PurposeOfReferenceCodeSequence[0] for item in ds.ContributingEquipmentSequence]
            assert any((p.CodeValue, p.CodingSchemeDesignator) == (PROCESSING_ALGORITHM.value, "99IHE")
                       for p in purposes), stem
        assert len(series_numbers) == len(objects)
        assert (objects["summary"].path.parent.parent / "summary.png").exists()


def test_writing_twice_gives_the_same_bytes(written):
    study, findings, objects = written[-1]
    again, png = build_results(findings, study.source_headers(), fabricated_findings(study, size_mm=8, offset_mm=4)[2])
    for _, stem, ds in again:
        path = objects[stem].path.with_name(f"again-{stem}.dcm")
        ds.save_as(path, enforce_file_format=True)
        assert path.read_bytes() == objects[stem].path.read_bytes(), stem
    assert png == (objects["summary"].path.parent.parent / "summary.png").read_bytes()


@pytest.mark.integration
def test_dciodvfy_finds_no_error_in_any_object(written):
    require_tool("dciodvfy")
    for _, _, objects in written:
        for stem, obj in objects.items():
            result = subprocess.run(["dciodvfy", str(obj.path)], capture_output=True, text=True, timeout=120)
            errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]
            assert not errors, f"{stem}: {errors}"


@pytest.mark.integration
def test_dcmqi_reads_each_seg_back_voxel_for_voxel(written, tmp_path):
    tool = _dcmqi("segimage2itkimage")
    enhanced_seen = False
    for study, findings, objects in written:
        for role, stem in (("T1c", "seg-t1c"), ("FLAIR", "seg-flair")):
            mask = findings.masks[role]
            enhanced_seen |= bool(mask.frame_numbers)
            out = tmp_path / study.study_instance_uid / stem
            out.mkdir(parents=True)
            subprocess.run([tool, "--inputDICOM", str(objects[stem].path), "--outputDirectory", str(out),
                            "--outputType", "nrrd"], check=True, capture_output=True, timeout=300)
            meta = json.loads((out / "meta.json").read_text())
            labels = [attrs[0]["SegmentLabel"] for attrs in meta["segmentAttributes"]]
            assert labels == [spec.label for spec in SEGMENTS]
            for spec in SEGMENTS:
                image = sitk.ReadImage(str(out / f"{spec.number}.nrrd"))
                read = on_grid(sitk.GetArrayFromImage(image), _itk_affine(image), mask.affine, mask.labels.shape)
                expected = np.isin(mask.labels, spec.brats_labels)
                assert expected.any()
                assert np.array_equal(read > 0, expected), (study.study_instance_uid, stem, spec.label)
    assert enhanced_seen, "no enhanced multi-frame source among the synthetic studies"


@pytest.mark.integration
def test_parametric_maps_hold_the_heat_maps_exactly(written, tmp_path):
    """Each frame, placed by its own Image Position (Patient), holds the heat map slice
    there, bit for bit; dcmqi's paramap2itkimage reads every value back.

    dcmqi 1.5.7 fills its output slices in frame order from the lowest position, so with
    highdicom's frame order (descending along the slice normal) its volume comes out
    reversed; its values are compared as a set, the placement from the frame headers."""
    tool = _dcmqi("paramap2itkimage")
    for study, findings, objects in written[:2]:
        for target in ("mgmt", "idh", "chemo-benefit"):
            heat = findings.radiogenomics.heat_maps[target]
            ds = pydicom.dcmread(objects[f"gradcam-{target}"].path)
            assert ds.BitsAllocated == 32 and "FloatPixelData" in ds
            inverse = np.linalg.inv(heat.affine)
            for frame, group in zip(ds.pixel_array, ds.PerFrameFunctionalGroupsSequence):
                position = np.array([*map(float, group.PlanePositionSequence[0].ImagePositionPatient), 1.0])
                k = inverse @ position
                assert np.allclose(k[:2], 0, atol=1e-3) and abs(k[2] - round(k[2])) < 1e-3
                assert np.array_equal(frame, heat.values[int(round(k[2]))].astype(np.float32))
            mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
            unit = mapping.MeasurementUnitsCodeSequence[0]
            assert (unit.CodeValue, unit.CodingSchemeDesignator, unit.CodeMeaning) == ("1", "UCUM", "no units")
            out = tmp_path / study.study_instance_uid / target
            out.mkdir(parents=True)
            subprocess.run([tool, "--inputDICOM", str(objects[f"gradcam-{target}"].path), "--outputDirectory",
                            str(out), "-t", "nrrd"], check=True, capture_output=True, timeout=300)
            read = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "pmap.nrrd")))
            assert np.array_equal(np.sort(read, axis=None), np.sort(heat.values.astype(np.float32), axis=None))


@pytest.mark.integration
def test_dsrdump_renders_the_report_with_volumes_and_predictions(written):
    require_tool("dsrdump")
    _, findings, objects = written[0]
    text = subprocess.run(["dsrdump", str(objects["report"].path)], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    assert "Comprehensive 3D SR" in text and "Imaging Measurement Report" in text
    assert "Device Observer UID" in text and "Procedure reported" in text and "Image Library" in text
    assert f'"{findings.volumes_ml["whole_tumour"]}" (ml,UCUM,"milliliter")' in text
    assert '(C153562,NCIt,"MGMT Gene Promoter Methylation")' in text
    assert '(C62195,NCIt,"Wild Type")' in text and '(15508007,SCT,"High risk")' in text
    assert '"0.63" (1,UCUM,"no units")' in text  # the MGMT probability
    assert 'CODE:(,,"Chemotherapy benefit (overall survival >= 24 months)")=(52101004,SCT,"Present")' in text
    assert '"0.71" (1,UCUM,"no units")' in text  # its probability
    assert 'TEXT:(,,"Risk model input and its source")="IDH: clinical source"' in text
    assert '="MGMT: predicted from the im' in text  # dsrdump cuts long texts
    assert 'CODE:(,,"Segmentation quality")=(GN0012,99GLIOMA,"Segmentation plausible")' in text
    assert '"0.82" (1,UCUM,"no units")' in text  # the quality score


@pytest.mark.integration
def test_dcmqi_reads_the_tid1500_report(written, tmp_path):
    tool = _dcmqi("tid1500reader")
    _, findings, objects = written[0]
    out = tmp_path / "sr.json"
    subprocess.run([tool, "--inputDICOM", str(objects["report"].path), "--outputMetadata", str(out)],
                   check=True, capture_output=True, timeout=120)
    report = json.loads(out.read_text())
    seg = pydicom.dcmread(objects["seg-t1c"].path)
    volumes = {}
    for group in report["Measurements"]:
        if "ReferencedSegment" in group:
            assert group["segmentationSOPInstanceUID"] == seg.SOPInstanceUID
            assert group["SourceSeriesForImageSegmentation"] == findings.masks["T1c"].series_instance_uid
            volumes[group["ReferencedSegment"]] = float(group["measurementItems"][0]["value"])
    assert volumes == {spec.number: pytest.approx(findings.volumes_ml[spec.key], abs=1e-3) for spec in SEGMENTS}


def _concept_paths(ds: pydicom.Dataset) -> set[tuple[str, ...]]:
    paths = set()

    def walk(items, prefix):
        for item in items:
            name = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else "?"
            path = (*prefix, name)
            paths.add(path)
            walk(item.get("ContentSequence", []), path)
    walk([ds], ())
    return paths


def test_structure_matches_the_reference_objects(written):
    _, _, objects = written[0]
    ours_sr = pydicom.dcmread(objects["report"].path)
    ours_seg = pydicom.dcmread(objects["seg-t1c"].path)
    # measurement group → tracking id, tracking UID, finding, referenced segment, source series, volume
    essential = {("126000", "126010", "125007", code) for code in ("112039", "112040", "121071", "121191", "121232")}
    for reference in (shared("dcmqi", "sr-example", "sr.dcm"),):
        assert essential <= _concept_paths(pydicom.dcmread(reference)), reference
    assert essential <= _concept_paths(ours_sr)
    assert ("126000", "126010", "125007", "118565006") in _concept_paths(ours_sr)  # the volume NUM
    assert ours_sr.SOPClassUID == pydicom.dcmread(shared("highdicom", "sr_document.dcm")).SOPClassUID
    assert "CurrentRequestedProcedureEvidenceSequence" in ours_sr
    for reference in (shared("highdicom", "seg_image_ct_binary.dcm"), shared("dcmqi", "sr-example", "seg.dcm")):
        ref = pydicom.dcmread(reference)
        assert ref.SOPClassUID == ours_seg.SOPClassUID
        # every top-level attribute a reference SEG has and that is not about its CT source, ours has too
        about_source = {"ImageComments", "BodyPartExamined", "ClinicalTrialSeriesID", "ClinicalTrialTimePointID",
                        "ClinicalTrialCoordinatingCenterName", "PositionReferenceIndicator", "ContentCreatorName",
                        "SpecificCharacterSet", "ReferringPhysicianName", "StudyID", "AccessionNumber",
                        "PatientBirthDate", "PatientSex", "PatientAge", "PatientWeight", "InstitutionName",
                        "ClinicalTrialSponsorName", "ClinicalTrialProtocolID", "ClinicalTrialProtocolName",
                        "ClinicalTrialSiteID", "ClinicalTrialSiteName", "ClinicalTrialSubjectID",
                        "ClinicalTrialTimePointDescription", "LossyImageCompression", "SeriesDate", "SeriesTime",
                        "ContentQualification", "ImageType", "ReferencedPerformedProcedureStepSequence",
                        "DeidentificationMethod", "PatientIdentityRemoved", "RequestingService"}
        missing = {keyword for keyword in ref.dir() if keyword not in ours_seg and keyword not in about_source}
        assert not missing, f"{reference.name}: {sorted(missing)}"
    assert ours_seg.SegmentationType == "BINARY"
    assert [s.SegmentAlgorithmType for s in ours_seg.SegmentSequence] == ["AUTOMATIC"] * 4
    assert ours_seg.ReferencedSeriesSequence[0].SeriesInstanceUID == written[0][1].masks["T1c"].series_instance_uid
    assert int(ours_seg.NumberOfFrames) == 4 * len(written[0][1].masks["T1c"].sop_instance_uids)  # empty frames kept


def test_summary_image_is_the_png_with_its_banner(written):
    _, _, objects = written[0]
    sc = pydicom.dcmread(objects["summary"].path)
    png = np.asarray(Image.open(objects["summary"].path.parent.parent / "summary.png"))
    assert sc.PhotometricInterpretation == "RGB" and sc.BurnedInAnnotation == "YES"
    assert np.array_equal(sc.pixel_array, png[..., :3])
    banner = png[5:50, 5:200, :3].reshape(-1, 3).mean(axis=0)
    assert banner[0] > 150 and banner[1] < 60  # the red "research use only" band
    assert "not for diagnosis" in sc.ImageComments.lower()
    # a colour legend beside the volumes: each overlay colour appears in the text column as a swatch
    from glioma_node.dicom_io.results.seg import SEGMENTS

    column = png[:, int(0.6 * png.shape[1]):, :3].reshape(-1, 3)
    for spec in SEGMENTS[:3]:
        assert (np.all(column == np.array(spec.rgb), axis=1)).sum() >= 100, spec.label


def test_summary_column_stops_above_the_model_footer():
    """However many warnings and features a study has, the text column ends above the
    models and their checksums, which never overlap each other or the study line."""
    from glioma_node.dicom_io.results.summary import FOOTER_STEP, column_layout

    lines = [("WARNING: something", "warning")] * 4 + [("Head", "head")] + [(f"line {k}", "body") for k in range(40)]
    placed, footer = column_layout(lines, [f"model {k} (sha256 0123456789ab)" for k in range(5)])
    assert placed[-1][1].startswith("… (more in the SR")
    assert min(y - 0.03 for y, _, _ in placed) >= max(y for y, _, _ in footer)
    tops = [y for y, _, _ in footer]
    assert all(a - b >= FOOTER_STEP - 1e-9 for a, b in zip(tops, tops[1:]))
    assert min(tops) - FOOTER_STEP >= 0.012  # the last model line ends above the study line
    short, _ = column_layout(lines[:6], ["model"])
    assert [text for _, text, _ in short] == [text for text, _ in lines[:6]]  # nothing dropped when it fits


def test_missing_source_instances_are_named(studies):
    findings, sources, reference = fabricated_findings(studies[0], radiogenomics=False)
    t1c = findings.masks["T1c"].series_instance_uid
    sources[t1c] = sources[t1c][1:]
    with pytest.raises(ValueError, match="not among the source files"):
        build_results(findings, sources, reference)


def test_a_second_version_is_marked_and_names_the_report_it_replaces(studies, tmp_path):
    """Version 2 of a study's results (new instances after processing): every series gets
    its own SeriesNumber and a description ending "(v2)", so a PACS lists the newest apart
    from the old, and the SR names version 1's SR in its Predecessor Documents Sequence;
    dciodvfy finds no error in it."""
    from glioma_node.dicom_io.results.context import ResultVersion, previous_reports

    findings, sources, reference = fabricated_findings(studies[0])
    first = {o.path.stem: o for o in write_results(findings, sources, reference, tmp_path / "v1")}
    predecessors = previous_reports(tmp_path, 2)
    assert [str(ds.SOPInstanceUID) for ds in predecessors] == [first["report"].sop_instance_uid]
    second = {o.path.stem: o for o in write_results(findings, sources, reference, tmp_path / "v2",
                                                    ResultVersion(2, predecessors))}
    assert first.keys() == second.keys()
    # the same findings and sources (a late series no role uses): new UIDs all the same
    old_uids = {o.sop_instance_uid for o in first.values()} | {o.series_instance_uid for o in first.values()}
    assert old_uids.isdisjoint({o.sop_instance_uid for o in second.values()}
                               | {o.series_instance_uid for o in second.values()})
    old = {stem: pydicom.dcmread(o.path, stop_before_pixels=True) for stem, o in first.items()}
    new = {stem: pydicom.dcmread(o.path, stop_before_pixels=True) for stem, o in second.items()}
    for stem in first:
        assert new[stem].SeriesNumber != old[stem].SeriesNumber, stem
        assert new[stem].SeriesDescription.endswith("(v2)") and not old[stem].SeriesDescription.endswith(")v"), stem
        assert len(new[stem].SeriesDescription) <= 64
    assert {int(ds.SeriesNumber) for ds in new.values()}.isdisjoint({int(ds.SeriesNumber) for ds in old.values()})
    (study_item,) = new["report"].PredecessorDocumentsSequence
    (series_item,) = study_item.ReferencedSeriesSequence
    (instance,) = series_item.ReferencedSOPSequence
    assert instance.ReferencedSOPInstanceUID == first["report"].sop_instance_uid != second["report"].sop_instance_uid
    assert series_item.SeriesInstanceUID == first["report"].series_instance_uid
    assert "PredecessorDocumentsSequence" not in old["report"]
    require_tool("dciodvfy")
    result = subprocess.run(["dciodvfy", str(second["report"].path)], capture_output=True, text=True, timeout=120)
    assert not [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")]


def test_without_radiogenomics_only_segmentation_objects_and_volumes(studies, tmp_path):
    findings, sources, reference = fabricated_findings(studies[0], radiogenomics=False)
    objects = {o.path.stem for o in write_results(findings, sources, reference, tmp_path)}
    assert objects == {"seg-t1c", "seg-flair", "report", "summary"}
    sr = pydicom.dcmread(tmp_path / "dicom" / "report.dcm")
    assert not any(p[-1] == "GN0001" for p in _concept_paths(sr))


@pytest.mark.parametrize("charset, name", [
    (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    (["ISO 2022 IR 6", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう"),
    (["", "ISO 2022 IR 149"], "Hong^Gildong=洪^吉洞=홍^길동"),
    ("ISO_IR 192", "Wang^XiaoDong=王^小東"),
    ("GB18030", "Wang^XiaoDong=王^小東"),
    ("ISO_IR 100", "Müller^Jürgen"),
])
def test_any_character_set_a_scanner_writes_passes_through_unchanged(studies, config, tmp_path, charset, name):
    source = studies[0]
    folder = tmp_path / "in"
    for series in source.series:
        for instance in series.files.instances:
            ds = pydicom.dcmread(instance.path)
            ds.SpecificCharacterSet = charset
            ds.PatientName = name
            target = folder / instance.path.relative_to(instance.path.parents[1])
            target.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(target)
    (study,) = survey(scan(folder), config.sequences, decode=False)
    findings, sources, reference = fabricated_findings(study)
    objects = write_results(findings, sources, reference, tmp_path / "out")
    assert len(objects) == 7  # 2 SEG, 3 parametric maps, the SR, the summary
    for obj in objects:
        ds = pydicom.dcmread(obj.path)
        assert ds.SpecificCharacterSet == charset, obj.kind
        assert str(ds.PatientName) == name, obj.kind
        dump = subprocess.run([require_tool("dcmdump"), "-q", str(obj.path)], capture_output=True)
        assert dump.returncode == 0, dump.stderr
