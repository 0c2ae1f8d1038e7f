"""CaPTk's DeepMedic model, read from its TensorFlow checkpoint and rebuilt in PyTorch.

The model files are read where they lie (../shared/data/captk-deepmedic) and never
copied. A wrong port shows as a bad Dice on the real case; that is the main test.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from glioma_node.core.grid import Grid
from glioma_node.dicom_io.nifti import read_nifti
from glioma_node.inference.brain_extraction import BrainExtractor, ExtractorKind
from glioma_node.inference.model_dir import ModelError
from glioma_node.inference.regions import region_dice
from glioma_node.inference.resample import resample
from glioma_node.inference.segmentation import segment
from glioma_node.inference.segmenters import load_segmenter
from glioma_node.inference.segmenters.deepmedic import Architecture, read_model_config, subsampled_segment, tile_starts
from glioma_node.inference.segmenters.tf_checkpoint import read_checkpoint
from tests.helpers import nifti_volumes, shared

MODEL = ("captk-deepmedic",)


def test_checkpoint_reader_finds_every_variable_of_the_network():
    tensors = read_checkpoint(shared(*MODEL) / "model.ckpt")
    assert tensors["net/W"].shape == (10, 4, 3, 3, 3)  # first normal-pathway convolution: [out, in, r, c, z]
    assert tensors["net/W_26"].shape == (5, 80, 1, 1, 1)  # classification layer
    assert tensors["net/varBnsForRollingAverage_23"].shape == (60, 80)
    assert (tensors["net/varBnsForRollingAverage_23"] > 0).all()
    assert all(np.isfinite(t).all() for t in tensors.values())


def test_a_damaged_checkpoint_is_refused_with_its_name(tmp_path):
    shutil.copy(shared(*MODEL, "model.ckpt.index"), tmp_path / "model.ckpt.index")
    with pytest.raises(ModelError, match="data shard not found"):
        read_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "model.ckpt.index").write_bytes(b"\0" * 100)
    with pytest.raises(ModelError, match="bad table magic"):
        read_checkpoint(tmp_path / "model.ckpt")


def test_architecture_follows_model_config():
    arch = Architecture.from_config(read_model_config(shared(*MODEL, "modelConfig.txt")))
    assert arch.receptive_field == 17 and arch.factors == ((3, 3, 3), (5, 5, 5))
    assert arch.residual_normal == (3, 5, 7) and arch.residual_fc == (1,)
    assert arch.fc == (60, 80) and arch.fc_first_kernel == (3, 3, 3) and arch.segment_inference == (45, 45, 45)


def test_tiles_cover_the_image_and_low_resolution_segments_pad_with_the_border_value():
    assert tile_starts(100, 45, 29) == [0, 29, 55]
    image = np.arange(40 ** 3, dtype=np.float32).reshape(1, 40, 40, 40)
    border = np.array([-7.0], np.float32)
    low = subsampled_segment(image, (0, 0, 0), (29, 29, 29), (3, 3, 3), 17, border)
    assert low.shape == (1, 26, 26, 26)
    # the segment starts 16 voxels before the image: as DeepMedic places it, the first
    # 16 // 3 = 5 rows are border and row 5 is the image's first, then every third
    assert (low[0, :5] == -7).all()
    assert low[0, 5, 5, 5] == image[0, 0, 0, 0] and low[0, 6, 6, 6] == image[0, 3, 3, 3]


@pytest.mark.slow
def test_the_port_segments_the_real_tcga_case_like_the_brats_algorithms():
    segmenter = load_segmenter("captk-deepmedic", shared(*MODEL))
    case = shared("tcga-lgg_fg-6692", "brats_space")
    result = segment(nifti_volumes(case), segmenter, BrainExtractor(ExtractorKind.NONE))
    reference, affine = read_nifti(case / "seg" / "fusion_simple.nii.gz")
    dice = region_dice(resample(result.labels, result.grid, Grid(reference.shape, affine), interpolation="nearest"),
                       reference)
    # measured 0.919 / 0.877 / 0.895: a wrong channel order, normalisation or layer order falls far below
    assert dice["whole_tumour"] >= 0.85 and dice["tumour_core"] >= 0.8 and dice["enhancing_tumour"] >= 0.8, dice
    assert segmenter.describe()["kind"] == "captk-deepmedic"
    assert segmenter.required_roles == ("T1", "T1c", "T2", "FLAIR")
