"""Test helpers: where the shared data is, and exact geometry comparison of two grids."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def shared(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        # in CI the data is always laid beside the checkout: a missing file is a failure there,
        # never a quiet skip that lets a third of the suite through untested
        if os.environ.get("CI"):
            pytest.fail(f"shared test data missing in CI: {path}")
        pytest.skip(f"shared test data missing: {path}")
    return path


def result_kinds(radiogenomics: bool = True) -> list[str]:
    """The result objects a study gets from the default models, sorted: a SEG on T1c and on
    FLAIR, the summary image (sc) and the SR, and with radiogenomics one Parametric Map
    (Grad-CAM) per prediction target of the default radiogenomic model."""
    import json

    manifest = json.loads((REPO / "glioma_node" / "models" / "radiogenomics" / "manifest.json").read_text())
    maps = list(manifest["output"]["default_variants"]) if radiogenomics else []
    return sorted(["seg", "seg", "sc", "sr"] + ["pmap"] * len(maps))


MODALITY = {"seg": "SEG", "pmap": "OT", "sc": "OT", "sr": "SR"}
"""The Modality each result kind has (Orthanc lists Parametric Maps and the summary as OT)."""


def require_tool(name: str) -> str:
    found = shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed; run `make system-deps`")
    return found


def index_map(affine_from: np.ndarray, affine_to: np.ndarray, atol: float = 1e-3) -> np.ndarray:
    """The integer map from voxel indices (i, j, k) of one grid to the other.

    Two grids describe the same voxels exactly when this map is a signed permutation
    plus an integer shift; anything else (different spacing, rotation, half-voxel
    shift) fails the assertion with the matrix shown.
    """
    m = np.linalg.inv(affine_to) @ affine_from
    r = np.round(m)
    assert np.allclose(m, r, atol=atol), f"grids differ: index map\n{np.round(m, 4)}"
    assert sorted(np.abs(r[:3, :3]).sum(axis=0)) == [1, 1, 1], f"not a permutation:\n{r}"
    return r


def on_grid(voxels_to: np.ndarray, affine_to: np.ndarray, affine_from: np.ndarray, shape_from: tuple) -> np.ndarray:
    """``voxels_to`` rearranged onto the grid of ``affine_from`` (exact; no interpolation)."""
    r = index_map(affine_from, affine_to)
    k, j, i = np.indices(shape_from)
    a = np.stack([i.ravel(), j.ravel(), k.ravel()])
    b = (r[:3, :3] @ a + r[:3, 3:]).astype(int)
    return voxels_to[b[2], b[1], b[0]].reshape(shape_from)


def dcm2niix(folder: Path, out: Path) -> list[Path]:
    """Convert a DICOM folder with dcm2niix (uncompressed NIfTI); returns the files written."""
    require_tool("dcm2niix")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dcm2niix", "-z", "n", "-b", "n", "-f", "%s_%e_%p", "-o", str(out), str(folder)],
                   check=True, capture_output=True, text=True)
    return sorted(out.glob("*.nii"))


def nifti_volumes(case_dir: Path) -> dict:
    """Role → Volume of a NIfTI case (names as dicom_io.nifti.find_role_files knows them),
    with made-up UIDs: for tests and benchmarks of inference/ that need no DICOM."""
    from glioma_node.core.volume import SeriesMetadata, Volume
    from glioma_node.dicom_io.nifti import find_role_files, read_nifti

    volumes = {}
    for role, path in find_role_files(case_dir).items():
        voxels, affine = read_nifti(path)
        volumes[role] = Volume(voxels.astype(np.float32), affine, [f"2.25.{k}" for k in range(voxels.shape[0])],
                               SeriesMetadata("2.25.1", f"2.25.{role}"))
    return volumes
