"""`make eval DATA=<folder>` finds the real cases where a user put them."""
from __future__ import annotations

import numpy as np
import pytest

from glioma_node.dicom_io.nifti import write_nifti
from tools.eval_segmentation import all_cases, quality_control


def _case(folder, names, label_name, label_values=(1,)):
    folder.mkdir(parents=True)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    for name in names:
        write_nifti(folder / f"{name}.nii.gz", np.ones((4, 5, 6), np.float32), affine)
    label = np.zeros((4, 5, 6), np.uint8)
    label[1:3, 1:3, 1:3] = label_values[0]
    write_nifti(folder / label_name, label, affine)


def test_a_users_folder_of_cases_is_found_with_the_right_kind_of_reference(tmp_path):
    _case(tmp_path / "site" / "patient-1", ["flair", "t1", "t1c"], "label.nii.gz")
    _case(tmp_path / "site" / "patient-2", ["flair", "t1", "t1c", "t2"], "seg.nii.gz", (4,))
    _case(tmp_path / "site" / "no-label", ["flair"], "notes.nii.gz")  # an image folder without a label map
    cases = {c.name: c for c in all_cases(tmp_path / "site")}
    assert sorted(cases) == ["patient-1", "patient-2"]
    assert cases["patient-1"].whole_tumour_only and not cases["patient-2"].whole_tumour_only
    labels, _ = cases["patient-1"].reference()
    assert set(np.unique(labels)) == {0, 2}  # a whole-tumour mask is compared as whole tumour
    labels, _ = cases["patient-2"].reference()
    assert set(np.unique(labels)) == {0, 4}


def test_no_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="make eval DATA="):
        all_cases(tmp_path / "missing")


def test_quality_control_counts_warnings_against_dice():
    def run(dice, score, doubtful):
        return {"ran": True, "dice": {"whole_tumour": dice}, "quality": {"score": score, "doubtful": doubtful}}
    results = {"segmenters": {"default": {}}, "cases": {
        "a": {"segmenters": {"default": run(0.4, 0.2, True)}},
        "b": {"segmenters": {"default": run(0.65, 0.6, False)}},
        "c": {"segmenters": {"default": run(0.85, 0.9, False)}},
        "d": {"segmenters": {"default": run(0.9, 0.3, True)}}}}
    qc = quality_control(results)["default"]
    assert (qc["dice_below_0.70"], qc["warned_below_0.70"]) == (2, 1)
    assert (qc["dice_at_least_0.80"], qc["warned_at_least_0.80"]) == (2, 1)
    assert qc["auc_for_dice_below_0.70"] == 0.75  # 3 of the 4 bad-good pairs ranked right
