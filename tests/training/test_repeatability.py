"""The follow-up comparison's repeatability on a real case sent twice (issue 28's anchor:
AutoRANO's scan-rescan repeatability): the re-acquired study must be called stable, with
small volume changes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from glioma_node.dicom_io.nifti import find_role_files, read_nifti_volume
from glioma_node.training.longitudinal.repeatability import evaluate_repeatability, reacquire
from tests.helpers import shared


def test_a_reacquisition_is_the_same_head_moved_resliced_and_noisier():
    case = shared("brats23-gli-00001-000")
    flair = read_nifti_volume(find_role_files(case)["FLAIR"])
    again = reacquire({"FLAIR": flair}, np.random.default_rng(3))["FLAIR"]
    assert again.shape == flair.shape and not np.allclose(again.affine, flair.affine)
    assert np.corrcoef(again.voxels.ravel(), flair.voxels.ravel())[0, 1] < 0.9  # moved: voxels no longer line up
    assert np.all(again.voxels >= 0)


@pytest.mark.slow
def test_a_real_case_sent_twice_is_called_stable_with_small_changes(tmp_path):
    from glioma_node.service.config import load_config
    from glioma_node.service.pipeline import load_models

    report = evaluate_repeatability(shared("brats23-gli-00001-000"), load_models(load_config()), tmp_path, repeats=1)
    row = report["rows"][0]
    assert row["alignment"]["accepted"], row["alignment"]
    assert row["call"] == "stable disease", row
    assert abs(row["change_fraction"]["whole_tumour"]) <= 0.05, row
    assert abs(row["change_fraction"]["enhancing"]) <= 0.10, row
    assert json.loads((tmp_path / "repeatability.json").read_text())["stable_calls"] == 1
    assert "| 0 | stable disease |" in (tmp_path / "repeatability.md").read_text()
