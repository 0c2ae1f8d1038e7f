"""Preprocessing: co-registration, the canonical grid, and the exact way back to each series."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from glioma_node.core.grid import Grid
from glioma_node.dicom_io.nifti import read_nifti
from glioma_node.inference.intensity import head_mask, zscore
from glioma_node.inference.preprocess import PreprocessingError, prepare
from glioma_node.inference.registration import register_rigid
from glioma_node.inference.resample import canonical_grid, resample, to_image
from tests.helpers import nifti_volumes, shared

TCGA = ("tcga-lgg_fg-6692",)


def _moved(voxels: np.ndarray, affine: np.ndarray, angles_deg: tuple, shift_mm: tuple) -> tuple[np.ndarray, sitk.Transform]:
    """``voxels`` as if the head had turned and shifted: returns the image and the true transform."""
    grid = Grid(voxels.shape, affine)
    truth = sitk.Euler3DTransform()
    truth.SetCenter(to_image(grid).TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in voxels.shape[::-1]]))
    truth.SetRotation(*np.radians(angles_deg))
    truth.SetTranslation(shift_mm)
    # the moved image at point p shows what the original had at truth^-1(p)
    return resample(voxels, grid, grid, truth.GetInverse(), "linear"), truth


def test_registration_recovers_a_known_head_movement():
    t1c, affine = read_nifti(shared(*TCGA, "brats_space", "t1c.nii.gz"))
    t2, _ = read_nifti(shared(*TCGA, "brats_space", "t2.nii.gz"))
    moved, truth = _moved(t2.astype(np.float32), affine, (4.0, -3.0, 5.0), (6.0, -4.0, 3.0))
    grid = Grid(t1c.shape, affine)
    reg = register_rigid(t1c, grid, moved, grid)
    assert reg.accepted, reg.reason
    assert reg.metric_after < reg.metric_before
    # every point of the brain lands within 1.5 mm of where the true movement puts it
    points = grid.corners() * 0.5 + grid.corners().mean(axis=0) * 0.5
    errors = [np.linalg.norm(np.array(reg.transform.TransformPoint(p)) - np.array(truth.TransformPoint(p)))
              for p in points]
    assert max(errors) < 1.5, errors


def test_runaway_registration_is_rejected_and_scanner_coordinates_kept():
    t1c, affine = read_nifti(shared(*TCGA, "brats_space", "t1c.nii.gz"))
    t2, _ = read_nifti(shared(*TCGA, "brats_space", "t2.nii.gz"))
    moved, _ = _moved(t2.astype(np.float32), affine, (0.0, 0.0, 0.0), (40.0, 0.0, 0.0))
    grid = Grid(t1c.shape, affine)
    reg = register_rigid(t1c, grid, moved, grid, same_frame=True)
    assert not reg.accepted
    assert "Frame of Reference" in reg.reason
    assert np.allclose(reg.transform.TransformPoint((1.0, 2.0, 3.0)), (1.0, 2.0, 3.0))


def test_prepare_names_missing_sequences():
    volumes = nifti_volumes(shared(*TCGA, "brats_space"))
    with pytest.raises(PreprocessingError, match="FLAIR, T1, T2"):
        prepare({"T1c": volumes["T1c"]}, roles=("FLAIR", "T1", "T1c", "T2"))


def test_prepare_without_t1c_registers_to_t1_and_keeps_only_what_it_has():
    volumes = nifti_volumes(shared(*TCGA, "brats_space"))
    prepared = prepare({"FLAIR": volumes["FLAIR"], "T1": volumes["T1"]})
    assert prepared.reference_role == "T1"
    assert sorted(prepared.channels) == ["FLAIR", "T1"]
    assert sorted(prepared.registrations) == ["FLAIR"]


def test_canonical_grid_is_axis_aligned_whatever_the_acquisition_plane():
    # a sagittal series: columns run anterior-posterior, rows superior-inferior, slices left-right
    affine = np.array([[0, 0, 1.2, -60], [1.0, 0, 0, -100], [0, -1.0, 0, 80], [0, 0, 0, 1]], float)
    grid = canonical_grid(Grid((100, 180, 200), affine).corners(), 1.0, multiple=16)
    assert np.allclose(grid.affine[:3, :3], np.eye(3))
    assert all(n % 16 == 0 for n in grid.shape)
    lo = grid.affine[:3, 3]
    assert lo[0] <= -60 and lo[1] <= -100 and lo[2] <= 80 - 179


def test_masks_map_back_exactly_onto_each_source_series():
    """A box drawn in scanner space must come back on every series' own grid in the same place,
    however differently the series are sampled (the native TCGA series: four matrices)."""
    prepared = prepare(nifti_volumes(shared(*TCGA, "native")))
    centre = prepared.grid.corners().mean(axis=0)
    z, y, x = np.meshgrid(*[np.arange(n) for n in prepared.grid.shape], indexing="ij")
    world = prepared.grid.affine @ np.stack([x, y, z, np.ones_like(x)]).reshape(4, -1)
    box = (np.abs(world[:3].T - centre) < [20, 25, 15]).all(axis=1).reshape(prepared.grid.shape)
    t1c_back = prepared.to_source(box.astype(np.uint8), "T1c", "nearest")
    g = prepared.source_grids["T1c"]
    zz, yy, xx = np.nonzero(t1c_back)
    pts = (g.affine @ np.stack([xx, yy, zz, np.ones_like(xx)]))[:3].T
    assert (np.abs(pts - centre) <= np.array([20, 25, 15]) + 1.0).all()
    expected_ml = 40 * 50 * 30 / 1000
    for role in ("FLAIR", "T1", "T2"):
        back = prepared.to_source(box.astype(np.float32), role, "linear") > 0.5
        ml = back.sum() * prepared.source_grids[role].voxel_ml
        assert abs(ml - expected_ml) < 0.12 * expected_ml, (role, ml)


def test_zscore_inside_the_head_ignores_background_and_outliers():
    rng = np.random.default_rng(0)
    image = np.zeros((40, 40, 40), np.float32)
    image[5:35, 5:35, 5:35] = rng.normal(300, 30, (30, 30, 30))
    image[20, 20, 20] = 50_000  # one hot voxel must not set the scale
    mask = head_mask(image)
    assert mask[5:35, 5:35, 5:35].mean() > 0.97 and not mask[0].any()  # opening trims box edges only
    z = zscore(image, mask)
    assert abs(float(z[mask].mean())) < 0.05 and abs(float(z[mask].std()) - 1) < 0.1
    assert (z[~mask] == 0).all()
