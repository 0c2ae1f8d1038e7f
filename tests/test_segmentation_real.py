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


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    return evaluate(REPO / "models" / "segmentation", tmp_path_factory.mktemp("eval"))["cases"]


def test_tcga_brats_space_against_the_fusion_of_five_brats_algorithms(figures):
    dice = figures["tcga-brats-space"]["network"]["dice"]
    assert dice["whole_tumour"] >= WT_BRATS_SPACE, dice


def test_tcga_native_scanner_space_not_skull_stripped(figures):
    case = figures["tcga-native"]["network"]
    assert case["dice"]["whole_tumour"] >= WT_NATIVE, case["dice"]
    assert 1000 <= case["brain_volume_ml"] <= 1800, "brain extraction on the unstripped head"


def test_network_beats_the_threshold_baseline(figures):
    for name in ("tcga-brats-space", "tcga-native"):
        net = figures[name]["network"]["dice"]["whole_tumour"]
        base = figures[name]["baseline"]["dice"]["whole_tumour"]
        assert net > base, (name, net, base)


def test_brats23_tumour_is_found_with_a_plausible_volume(figures):
    volumes = figures["brats23-gli-00001"]["network"]["volumes_ml"]
    assert BRATS23_WT_ML[0] <= volumes["whole_tumour"] <= BRATS23_WT_ML[1], volumes
    assert volumes["tumour_core"] < volumes["whole_tumour"]
