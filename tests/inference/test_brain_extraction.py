"""Brain extraction (deepbet) on the real native TCGA head, its checks and its fallback."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from glioma_node.core.grid import Grid
from glioma_node.dicom_io.nifti import read_nifti
from glioma_node.inference.brain_extraction import BrainExtractor, ExtractorKind, _from_ras, _ras, candidate_order, edge_sides
from glioma_node.inference.preprocess import PreparedStudy, prepare
from glioma_node.inference.resample import resample
from tests.helpers import REPO, nifti_volumes, shared

TCGA = ("tcga-lgg_fg-6692",)


@pytest.fixture(scope="module")
def native() -> PreparedStudy:
    return prepare(nifti_volumes(shared(*TCGA, "native")))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_ras_conversion_puts_the_left_of_the_patient_on_the_left_of_ras():
    # canonical grid: x (last axis) runs toward the patient's left, y toward posterior
    lps = np.zeros((4, 5, 6), np.float32)
    lps[1, 0, 5] = 1  # left, anterior
    ras = _ras(lps)
    assert ras.shape == (6, 5, 4)
    assert ras[0, 4, 1] == 1, "RAS i grows toward the right, so the patient's left is i = 0; anterior is j max"
    assert np.array_equal(_from_ras(ras), lps)


@pytest.mark.slow
def test_deepbet_on_the_native_head_matches_hd_bet(native):
    extractor = BrainExtractor()
    brain = extractor.extract(native)
    assert brain.role == "T1" and brain.problems == [] and brain.warnings() == []
    assert 1200 <= brain.volume_ml <= 1800, brain.volume_ml
    reference, affine = read_nifti(shared(*TCGA, "native_skullstripped", "t1c_brainmask.nii.gz"))
    on_reference = resample(brain.mask.astype(np.uint8), native.grid, Grid(reference.shape, affine),
                            interpolation="nearest") > 0
    assert _dice(on_reference, reference > 0) >= 0.92
    described = extractor.describe()
    assert described["name"] == "deepbet" and len(described["sha256"]) == 64


@pytest.mark.slow
def test_an_unusable_t1_falls_back_to_the_next_series_and_says_so(native):
    broken = PreparedStudy(native.grid, {**native.channels, "T1": np.zeros(native.grid.shape, np.float32)},
                           native.source_grids, native.transforms, native.registrations, native.reference_role)
    broken.channels["T1"][::4, ::4, ::4] = 1000.0  # a grid of bright dots, no head
    brain = BrainExtractor().extract(broken)
    assert brain.role == "T1c" and brain.problems == []
    assert "after T1 failed" in brain.method
    assert 1200 <= brain.volume_ml <= 1800


def test_a_brain_cut_by_the_field_of_view_is_reported():
    mask = np.zeros((40, 60, 50), bool)
    mask[0:30, 10:50, 10:40] = True  # touches the inferior face (z = 0)
    assert edge_sides(mask) == ["inferior"]
    mask[:] = False
    mask[5:30, 10:50, 10:40] = True
    assert edge_sides(mask) == []


def test_candidates_prefer_the_finer_t1_weighted_series(native):
    assert candidate_order(native)[:2] == ["T1", "T1c"]  # both 0.9 x 0.9 x 5.5 mm: T1 first
    finer = dict(native.source_grids)
    finer["T1c"] = Grid(finer["T1c"].shape, finer["T1c"].affine @ np.diag([0.5, 0.5, 0.5, 1]))
    study = PreparedStudy(native.grid, native.channels, finer, native.transforms, native.registrations, "T1c")
    assert candidate_order(study) == ["T1c", "T1", "FLAIR", "T2"]


def test_none_trusts_a_skull_stripped_input():
    prepared = prepare(nifti_volumes(shared(*TCGA, "brats_space")))
    brain = BrainExtractor(ExtractorKind.NONE).extract(prepared)
    assert brain.method == "none" and 1200 <= brain.volume_ml <= 1800


def test_deepbets_data_folder_cannot_shadow_a_module_of_ours():
    """deepbet's wheel installs a top-level ``data/`` folder (its weights); no package,
    module or folder of ours may be called ``data``, or one of the two would hide the other."""
    import importlib.util

    ours = {p.name for p in REPO.iterdir() if p.is_dir() or p.suffix == ".py"}
    assert "data" not in ours and "data.py" not in ours
    spec = importlib.util.find_spec("data")
    if spec is not None:  # deepbet's namespace folder, nothing importable of ours
        locations = [Path(p) for p in spec.submodule_search_locations or []]
        assert all("site-packages" in str(p) for p in locations), locations
    assert not any(name == "data" or name.startswith("data.") for name in sys.modules)
