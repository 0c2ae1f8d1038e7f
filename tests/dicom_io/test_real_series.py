"""Every real series in ../shared/data reads into the right volume or is refused with a reason.

Expected shapes and spacings come from ../shared/data/SOURCES.md; the voxel grid and
values are judged independently by dcm2niix.
"""
from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np
import pydicom
import pytest

from glioma_node.dicom_io.errors import SeriesRefused
from glioma_node.dicom_io.nifti import RAS_TO_LPS
from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.series_reader import decode_pixels, read_series
from tests.helpers import dcm2niix, on_grid, require_tool, shared

# folder -> (slices, rows, columns), spacing (column, row, slice) mm, orientation
READABLE = {
    # 4 mm slices, 20 % gap
    "dcm_qa_decubitus/siemens_prisma_t1_fl2d_sag_HFS": ((35, 256, 256), (1.0156, 1.0156, 4.8), "sagittal"),
    "dcm_qa_xa30/siemens_xa30_enhanced_t1w": ((96, 128, 128), (2.0, 2.0, 2.0), "sagittal"),
    "dcm_qa_philips_enh/philips_elition_3dt1_mprage_classic": ((170, 256, 256), (1.0, 1.0, 1.0), "sagittal"),
    "dcm_qa_ge/ge_pioneer_3dt1_mprage_phantom": ((130, 256, 256), (0.9375, 0.9375, 1.2), "oblique"),
    "qin-prostate-001/adc": ((20, 256, 256), (0.7031, 0.7031, 3.0), "axial"),
    "dcmqi/segmentations/ct-3slice": ((3, 512, 512), (0.8105, 0.8105, 1.0), "axial"),
    "dcmqi/segmentations/24x38x3/image": ((3, 38, 24), (0.7, 0.7, 2.5), "axial"),
    "dcmqi/segmentations/24x38x3/multiframe": ((3, 38, 24), (0.7, 0.7, 2.5), "axial"),
}

REFUSED = {
    "dcm_qa_nih/ge_mr750_epi_fmri": "time_series",
    "dcm_qa_philips_enh/philips_elition_enhanced_fieldmap": "mixed_components",
    "dcm_qa/siemens_trio_epi_jpeg_lossless": "mosaic",
    "dcm_qa/siemens_trio_epi_jpeg2000_lossless": "mosaic",
    "qin-prostate-001/seg": "not_image",
    "dcmqi/sr-example": "not_image",
    "highdicom/sr_document.dcm": "not_image",
    "highdicom/seg_image_ct_binary.dcm": "not_image",
    "highdicom/ct_image.dcm": "single_slice",
}


def _single_series(folder):
    found = scan(folder)
    assert not found.bad_files, found.bad_files
    series = [s for study in found.studies.values() for s in study.series.values()]
    assert len(series) == 1, f"{folder}: {len(series)} series"
    return series[0]


@pytest.mark.parametrize("folder", sorted(READABLE))
def test_real_series_reads_with_documented_geometry(folder):
    shape, spacing, orientation = READABLE[folder]
    volume = read_series(_single_series(shared(*folder.split("/"))).instances)
    assert volume.shape == shape
    assert np.allclose(volume.spacing, spacing, atol=1e-3)
    normal = volume.direction[:, 2]
    dominant = ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]
    assert orientation == "oblique" and np.max(np.abs(normal)) < 0.99 or dominant == orientation
    assert len(set(volume.sop_instance_uids)) in (1, shape[0])  # one multi-frame object, or one file per slice
    assert np.isfinite(volume.voxels).all() and volume.voxels.std() > 0


@pytest.mark.integration
@pytest.mark.parametrize("folder", sorted(k for k in READABLE if not k.startswith("dcmqi")))
def test_real_series_matches_dcm2niix(folder, tmp_path):
    """Same voxels at the same patient positions as dcm2niix, an independent converter."""
    volume = read_series(_single_series(shared(*folder.split("/"))).instances)
    outputs = dcm2niix(shared(*folder.split("/")), tmp_path)
    assert len(outputs) == 1, outputs
    img = nib.load(str(outputs[0]))
    theirs = np.asarray(img.get_fdata(), dtype=np.float32).transpose(2, 1, 0)
    mapped = on_grid(theirs, RAS_TO_LPS @ img.affine, volume.affine, volume.shape)
    if folder.startswith("dcm_qa_philips"):
        # dcm2niix applies Philips' private "precise" scaling; ours is the DICOM rescale. Same image, linear map.
        assert np.corrcoef(mapped.ravel(), volume.voxels.ravel())[0, 1] > 0.9999
    else:
        assert np.array_equal(mapped, volume.voxels)


@pytest.mark.parametrize("path", sorted(REFUSED))
def test_real_non_volumes_are_refused_with_reason(path):
    target = shared(*path.split("/"))
    found = scan(target)
    assert not found.bad_files
    series = [s for study in found.studies.values() for s in study.series.values()]
    assert series
    for s in series:
        with pytest.raises(SeriesRefused) as refused:
            read_series(s.instances)
        assert refused.value.code == REFUSED[path]
        assert len(str(refused.value)) > 20  # a sentence, not a code


@pytest.mark.integration
def test_jpeg_lossless_decodes_like_dcmtk(tmp_path):
    """JPEG Lossless (1.2.840.10008.1.2.4.70) decodes to the same pixels as dcmtk's dcmdjpeg."""
    require_tool("dcmdjpeg")
    for name in ("jpg1.dcm", "jpg2.dcm"):
        source = shared("dcm_qa", "siemens_trio_epi_jpeg_lossless", name)
        assert pydicom.dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
        plain = tmp_path / name
        subprocess.run(["dcmdjpeg", str(source), str(plain)], check=True)
        _, ours = decode_pixels(source)
        assert np.array_equal(ours, pydicom.dcmread(plain).pixel_array)


def test_jpeg2000_lossless_decodes():
    source = shared("dcm_qa", "siemens_trio_epi_jpeg2000_lossless", "jp2k1.dcm")
    ds, pixels = decode_pixels(source)
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    assert pixels.shape == (516, 516) and pixels.std() > 0
