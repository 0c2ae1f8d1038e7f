"""Dataset adapters read each public layout, built here from fabricated cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from glioma_node.training.radiogenomics.adapters import detect_layout, idh_status, load_cases, mgmt_status
from glioma_node.training.radiogenomics.features import dicom_case_volumes, load_study
from tests import radiogenomic_trees as trees


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
    assert cases[0].dicom_dir is not None
    volumes = dicom_case_volumes(cases[0].dicom_dir)
    assert set(volumes) == {"FLAIR", "T1", "T1c", "T2"} and volumes["T1c"].shape == (48, 48, 48)
    with pytest.raises(ValueError, match="no tumour mask"):
        load_study(cases[0])


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
