"""Dataset adapters read each public layout, built here from fabricated cases."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from glioma_node.dicom_io.nifti import read_nifti
from glioma_node.training.radiogenomics.adapters import detect_layout, idh_status, load_cases, mgmt_status
from glioma_node.training.radiogenomics.dicom_cohort import ConversionError, convert_case
from glioma_node.training.radiogenomics.features import load_study
from tests import radiogenomic_trees as trees
from tests.helpers import on_grid, shared


def test_status_words_from_the_public_tables():
    assert [mgmt_status(t) for t in ("Methylated", "Unmethylated", "positive", "negative", "1", "0", "indeterminate",
                                     "Not Available", "")] == [1, 0, 1, 0, 1, 0, None, None, None]
    assert [idh_status(t) for t in ("Mutated", "Wildtype", "mutant (NOS)", "IDH1 p.R132H", "wildtype", "NOS/NEC", "")] \
        == [1, 0, 1, 1, 0, None, None]


def test_synthetic_layout(tmp_path: Path):
    trees.write_synthetic(tmp_path, 3)
    assert detect_layout(tmp_path) == "synthetic"
    cases = load_cases(tmp_path)
    assert [c.name for c in cases] == ["tiny-000", "tiny-001", "tiny-002"]
    assert (cases[0].idh, cases[1].idh) == (1, 0)
    first = cases[0]
    assert first.brain is not None and first.images is not None and first.survival_days is not None \
        and first.age_years is not None
    assert first.brain.name == "brainmask.nii.gz" and set(first.images) == {"FLAIR", "T1", "T1c", "T2"}
    assert first.survival_days > 0 and first.event in (0, 1) and 20 < first.age_years < 80


def test_brats2021_with_rsna_mgmt_labels(tmp_path: Path):
    trees.write_brats2021(tmp_path, 3)
    assert detect_layout(tmp_path) == "brats2021"
    cases = load_cases(tmp_path)
    assert [c.name for c in cases] == ["BraTS2021_00000", "BraTS2021_00001", "BraTS2021_00002"]
    assert cases[1].mgmt is None and cases[0].mgmt in (0, 1)
    assert cases[0].images is not None and cases[0].seg is not None
    assert cases[0].images["T1c"].name.endswith("_t1ce.nii.gz") and cases[0].seg.name.endswith("_seg.nii.gz")
    study = load_study(cases[0])
    assert study.grid.spacing == (1.0, 1.0, 1.0) and set(np.unique(study.labels)) <= {0, 1, 2, 4}


def test_rsna_miccai_dicom_folders(tmp_path: Path):
    trees.write_rsna(tmp_path, 2)
    assert detect_layout(tmp_path) == "rsna-miccai"
    cases = load_cases(tmp_path)
    assert [c.name for c in cases] == ["00000", "00001"] and all(c.seg is None and c.dicom_dir for c in cases)
    assert [c.mgmt for c in cases] == [trees._phenotype(i)[1] for i in range(2)]
    with pytest.raises(ValueError, match="after its conversion"):
        load_study(cases[0])
    # The folder names decide the roles: no sequence rules needed.
    converted = convert_case(cases[0], tmp_path / "nifti", None)
    assert converted.images is not None and set(converted.images) == {"FLAIR", "T1", "T1c", "T2"}
    voxels, _ = read_nifti(converted.images["T1c"])
    assert voxels.shape == (48, 48, 48)
    with pytest.raises(ValueError, match="no tumour mask and no segmentation model"):
        load_study(converted)


def test_ucsf_pdgm_ids_match_despite_digit_count(tmp_path: Path):
    trees.write_ucsf(tmp_path, 3)
    assert detect_layout(tmp_path) == "ucsf-pdgm"
    cases = load_cases(tmp_path)
    assert [c.name for c in cases] == ["UCSF-PDGM-0004", "UCSF-PDGM-0005", "UCSF-PDGM-0006"]
    assert cases[0].idh == 1 and cases[1].idh == 0 and cases[2].mgmt is None
    assert cases[0].images is not None
    assert cases[0].images["FLAIR"].name == "UCSF-PDGM-0004_FLAIR.nii.gz"  # not the _bias copy
    assert cases[0].survival_days == trees._phenotype(0)[4] and cases[0].age_years is not None


def test_upenn_gbm_clinical_table(tmp_path: Path):
    trees.write_upenn(tmp_path, 4)
    assert detect_layout(tmp_path) == "upenn-gbm"
    cases = load_cases(tmp_path)
    assert cases[0].images is not None and cases[0].seg is not None
    assert cases[0].name == "UPENN-GBM-00001_11" and cases[0].images["T1c"].name.endswith("_T1GD.nii.gz")
    assert cases[0].seg.name == "UPENN-GBM-00001_11_segm.nii.gz"
    assert cases[0].idh is None and cases[1].mgmt is None and cases[3].survival_days is None
    assert cases[2].event == trees._phenotype(2)[2]


def test_unknown_layout_is_named(tmp_path: Path):
    (tmp_path / "x.txt").write_text("nothing")
    with pytest.raises(ValueError, match="not a known layout"):
        load_cases(tmp_path)


def test_tcga_with_gdc_clinical_and_marker_tables(tmp_path: Path):
    trees.write_tcga(tmp_path, 3)
    assert detect_layout(tmp_path) == "tcga"
    cases = load_cases(tmp_path)
    assert [c.name for c in cases] == [trees.tcga_barcode(i) for i in range(3)]
    assert all(c.images is None and c.seg is None and c.dicom_dir is not None for c in cases)
    for i, case in enumerate(cases):
        idh, mgmt, event, age, days = trees._phenotype(i)
        assert (case.idh, case.egfr, case.survival_days, case.event) == (idh, trees.egfr_amplified(i), days, event)
        assert case.age_years == round(age)
        assert case.mgmt == (mgmt if i != 2 else None)  # "NA" in the marker table


def test_tcga_series_are_recognised_and_the_earliest_complete_study_converted(tmp_path: Path):
    from glioma_node.service.config import load_config

    trees.write_tcga(tmp_path / "cohort", 2)
    cases = load_cases(tmp_path / "cohort")
    rules = load_config(None).sequences
    with pytest.raises(ConversionError, match="need the sequence rules"):
        convert_case(cases[0], tmp_path / "nifti", None)
    for i, case in enumerate(cases):
        converted = convert_case(case, tmp_path / "nifti", rules)
        assert converted.images is not None
        idh, mgmt, *_ = trees._phenotype(i)
        expected, _, _ = trees.tiny_case(np.random.default_rng(i), idh, mgmt)
        for role, path in converted.images.items():
            # The pre-operative study (not patient 0's later one, at twice the intensity), the right
            # series for each role, in the place it was written (uint16 storage: within 1 unit).
            voxels, affine = read_nifti(path)
            assert np.abs(on_grid(voxels, affine, trees.AFFINE, expected[role].shape) - expected[role]).max() <= 1.0, role
        record = json.loads((tmp_path / "nifti" / case.name / "conversion.json").read_text())
        assert record["converter"] == "dicom2nifti"
        assert record["roles"]["T1c"]["description"] == trees.TCGA_DESCRIPTIONS["T1c"]
    # A second run reads what the first wrote.
    before = (tmp_path / "nifti" / cases[0].name / "FLAIR.nii.gz").stat().st_mtime_ns
    convert_case(cases[0], tmp_path / "nifti", rules)
    assert (tmp_path / "nifti" / cases[0].name / "FLAIR.nii.gz").stat().st_mtime_ns == before


def test_a_patient_without_a_complete_study_says_what_it_lacks(tmp_path: Path):
    from glioma_node.service.config import load_config

    trees.write_tcga(tmp_path, 2)
    for series in (tmp_path / "TCGA-GBM" / trees.tcga_barcode(1)).glob("06-08-1997*/*FLAIR*"):
        shutil.rmtree(series)
    case = load_cases(tmp_path)[1]
    with pytest.raises(ConversionError, match=r"lacks FLAIR, T1, T1c\b.*lacks FLAIR"):
        convert_case(case, tmp_path / "nifti", load_config(None).sequences)


@pytest.mark.parametrize("folder", ["dcm_qa_decubitus/siemens_prisma_t1_fl2d_sag_HFS",
                                    "dcm_qa_philips_enh/philips_elition_3dt1_mprage_classic",
                                    "dcm_qa_ge/ge_pioneer_3dt1_mprage_phantom",
                                    "dcm_qa_xa30/siemens_xa30_enhanced_t1w"])
def test_dicom2nifti_agrees_with_our_reader_on_real_series(folder: str, tmp_path: Path):
    """Training converts with dicom2nifti, the live path reads with our own reader: on real
    series of three vendors (2D and 3D, sagittal and oblique, classic and enhanced) both give
    the same voxels in the same place."""
    from glioma_node.dicom_io.scan import scan
    from glioma_node.dicom_io.series_reader import read_series
    from glioma_node.training.radiogenomics.dicom_cohort import RoleSeries, convert_series

    (series,) = [s for study in scan(shared(folder)).studies.values() for s in study.series.values()]
    ours = read_series(series.instances)
    convert_series(RoleSeries("T1", series.series_instance_uid, folder, "test", series.instances), tmp_path / "T1.nii.gz")
    voxels, affine = read_nifti(tmp_path / "T1.nii.gz")
    theirs = on_grid(voxels, affine, ours.affine, ours.shape)
    scale = float(np.abs(ours.voxels).max())
    assert np.abs(theirs - ours.voxels).max() <= 1e-5 * scale


def test_the_feature_cache_converts_dicom_cases_and_says_why_one_is_left_out(tmp_path: Path):
    from glioma_node.inference.radiogenomics import radiomics
    from glioma_node.inference.radiogenomics.encoder import DEFAULT_ENCODER
    from glioma_node.service.config import load_config
    from glioma_node.training.radiogenomics.features import build_cache

    trees.write_tcga(tmp_path / "cohort", 2)
    for series in (tmp_path / "cohort" / "TCGA-GBM" / trees.tcga_barcode(1)).glob("06-08-1997*/*FLAIR*"):
        shutil.rmtree(series)
    cases = load_cases(tmp_path / "cohort")
    errors = build_cache(cases, tmp_path / "cache", radiomics.load_settings(), dict(DEFAULT_ENCODER), progress=False,
                         sequence_rules=load_config(None).sequences)
    first, second = (trees.tcga_barcode(i) for i in range(2))
    assert set(errors) == {first, second}
    assert "no segmentation model" in errors[first] and "lacks FLAIR" in errors[second]
    assert (tmp_path / "cache" / "nifti" / first / "conversion.json").exists()
