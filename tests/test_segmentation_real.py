"""The default segmenter on real patients' scans, through `glioma-node process`.

Thresholds sit a little under what the committed model measured (see its model card
and `make eval`), so a regression fails while run-to-run noise does not; the figures
are not the goals of the issue where the model falls short of them, and the card says so.
"""
from __future__ import annotations

import pytest

from tests.eval_segmentation import evaluate
from tests.helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("real-seg")]

# Measured with the committed model (models/segmentation/MODEL_CARD.md): WT Dice 0.734 on
# the BraTS-space case, 96.7 ml whole tumour on BraTS-GLI-00001. The goals (0.85
# and 0.75) are not reached; these thresholds guard what is reached.
WT_BRATS_SPACE = 0.68
WT_NATIVE = 0.75
BRATS23_WT_ML = (72.0, 121.0)  # ±25 % around the 96.7 ml measured


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    return evaluate(REPO / "models" / "segmentation", tmp_path_factory.mktemp("eval"))["cases"]


def test_tcga_brats_space_against_the_fusion_of_five_brats_algorithms(figures):
    dice = figures["tcga-brats-space"]["network"]["dice"]
    assert dice["whole_tumour"] >= WT_BRATS_SPACE, dice


@pytest.mark.xfail(strict=True, raises=AssertionError, reason="known failure: the brain extraction learned on synthetic heads takes the "
                   "whole head of this unstripped 5.5 mm scan as brain (2811 ml), so tumour is sought in scalp and "
                   "skull base; see the model card")
def test_tcga_native_scanner_space_not_skull_stripped(figures):
    case = figures["tcga-native"]["network"]
    assert case["dice"]["whole_tumour"] >= WT_NATIVE, case["dice"]
    assert 1000 <= case["brain_volume_ml"] <= 1800, "brain extraction on the unstripped head"


def test_tcga_native_case_runs_end_to_end(figures):
    """The xfail above may only fail on its goal (raises=AssertionError): the case itself
    must be read, segmented and measured."""
    case = figures["tcga-native"]["network"]
    assert 0.0 <= case["dice"]["whole_tumour"] <= 1.0 and case["brain_volume_ml"] > 500
    assert set(case["dice"]) >= {"whole_tumour", "tumour_core", "enhancing_tumour"}


def test_network_beats_the_threshold_baseline(figures):
    for region in ("whole_tumour", "tumour_core", "enhancing_tumour"):
        net = figures["tcga-brats-space"]["network"]["dice"][region]
        base = figures["tcga-brats-space"]["baseline"]["dice"][region]
        assert net > base + 0.1, (region, net, base)


def test_brats23_tumour_is_found_with_a_plausible_volume(figures):
    volumes = figures["brats23-gli-00001"]["network"]["volumes_ml"]
    assert BRATS23_WT_ML[0] <= volumes["whole_tumour"] <= BRATS23_WT_ML[1], volumes
    assert volumes["tumour_core"] < volumes["whole_tumour"]
