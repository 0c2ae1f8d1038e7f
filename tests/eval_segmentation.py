"""Segmentation figures on the real cases of ../shared/data, for the model card and tests.

``make eval`` (``python -m tests.eval_segmentation``) turns each case into DICOM
(nifti2dicom), runs ``glioma-node process`` (:func:`node.process.process`) on it,
compares with the reference label and writes ``bench-results/segmentation-eval/``:
``evaluation.json`` and an overlay PNG per case. The tests in
``tests/test_segmentation_real.py`` assert on the same figures.

Cases:

* ``tcga-lgg_fg-6692/brats_space``: skull-stripped, 1 mm, SRI24; reference is
  ``seg/fusion_simple.nii.gz`` (a fusion of five BraTS-2020 algorithms, not expert truth).
* ``tcga-lgg_fg-6692/native``: the same patient as acquired (not skull-stripped, 5.5 mm
  slices, four differently placed series). The reference is the fusion label carried
  into scanner space by an affine mutual-information registration of the BraTS-space
  T1c onto the HD-BET-stripped native T1c (:func:`reference_in_native`).
* ``brats23-gli-00001-000``: no label; the tumour must be found and its volume be plausible.

Each case is also run through the classical threshold baseline
(:class:`inference.segmenters.classical.ClassicalSegmenter`) so the network's figures
read against what thresholds get.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from dicom_io.nifti import find_role_files, nifti_case_to_dicom, read_nifti
from inference.analyze import Models
from inference.findings import Findings
from inference.grid import Grid, resample
from inference.regions import region_dice, volumes_ml
from inference.segmenters.base import Segmenter
from inference.segmenters.classical import ClassicalSegmenter
from inference.segmenters.native import NativeSegmenter
from node.config import load_config
from node.process import process
from tests.helpers import REPO, SHARED
from training.seg.card import write_card

TCGA = "tcga-lgg_fg-6692"


def reference_in_native() -> tuple[np.ndarray, np.ndarray]:
    """The BraTS-space fusion label of TCGA-FG-6692 on the native T1c grid: (labels, LPS affine)."""
    case = SHARED / TCGA
    fixed_voxels, fixed_affine = read_nifti(case / "native_skullstripped" / "t1c.nii.gz")
    moving_voxels, moving_affine = read_nifti(case / "brats_space" / "t1c.nii.gz")
    label, label_affine = read_nifti(case / "brats_space" / "seg" / "fusion_simple.nii.gz")
    fixed_grid, moving_grid = Grid(fixed_voxels.shape, fixed_affine), Grid(moving_voxels.shape, moving_affine)
    f = sitk.Cast(fixed_grid.image(fixed_voxels.astype(np.float32)), sitk.sitkFloat32)
    m = sitk.Cast(moving_grid.image(moving_voxels.astype(np.float32)), sitk.sitkFloat32)
    init = sitk.CenteredTransformInitializer(f, m, sitk.AffineTransform(3), sitk.CenteredTransformInitializerFilter.MOMENTS)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(48)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(0.3, seed=1)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(1.0, 1e-4, 400, relaxationFactor=0.6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([4, 2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 1.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(init, inPlace=False)
    transform = method.Execute(f, m)
    mapped = resample(label.astype(np.uint8), Grid(label.shape, label_affine), fixed_grid, transform, "nearest")
    return mapped, fixed_affine


def run_case(dicom_dir: Path, out: Path, segmenter: Segmenter) -> Findings:
    """``glioma-node process`` on one DICOM study folder, with ``segmenter``."""
    (outcome,) = process(dicom_dir, out, load_config(), Models(segmenter))
    if outcome.findings is None:
        raise RuntimeError(f"{dicom_dir}: {outcome.error}")
    return outcome.findings


def labels_on(findings: Findings, reference_affine: np.ndarray, reference_shape: tuple[int, ...]) -> np.ndarray:
    """The reference-series labels of ``findings`` resampled (nearest) onto another grid."""
    mask = findings.masks[findings.reference_role]
    return resample(mask.labels, Grid(mask.labels.shape, mask.affine), Grid(reference_shape, reference_affine),
                    interpolation="nearest")


def overlay_png(path: Path, image: np.ndarray, labels: np.ndarray, title: str, reference: np.ndarray | None = None) -> None:
    """Five axial slices through the tumour, labels in colour (red 1, green 2, yellow 4),
    the reference outline in white when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wt = labels > 0
    zs = np.nonzero(wt.any(axis=(1, 2)))[0]
    if len(zs) == 0:
        zs = np.array([image.shape[0] // 2])
    picks = np.unique(np.linspace(zs[0], zs[-1], 5).round().astype(int))
    fig, axes = plt.subplots(1, len(picks), figsize=(3.2 * len(picks), 3.6))
    colours = {1: (1, 0.1, 0.1), 2: (0.1, 0.9, 0.1), 4: (1, 0.9, 0.1)}
    for ax, z in zip(np.atleast_1d(axes), picks):
        sl = image[z] / (np.percentile(image, 99.5) + 1e-6)
        rgb = np.dstack([sl, sl, sl]).clip(0, 1)
        for lab, colour in colours.items():
            m = labels[z] == lab
            rgb[m] = 0.55 * rgb[m] + 0.45 * np.array(colour)
        ax.imshow(rgb, origin="upper")
        if reference is not None:
            ax.contour(reference[z] > 0, levels=[0.5], colors="white", linewidths=0.7)
        ax.set_title(f"slice {z}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def evaluate(model: Path, out: Path, cases: tuple[str, ...] = ("tcga-brats-space", "tcga-native",
                                                                  "brats23-gli-00001")) -> dict:
    """Run each case with the model and with the classical baseline; returns the figures."""
    out.mkdir(parents=True, exist_ok=True)
    network = NativeSegmenter(model)
    baseline = ClassicalSegmenter()
    results: dict = {"model": network.describe(), "cases": {}}
    fusion, fusion_affine = read_nifti(SHARED / TCGA / "brats_space" / "seg" / "fusion_simple.nii.gz")
    native = reference_in_native() if "tcga-native" in cases else (None, None)
    known = {
        "tcga-brats-space": (SHARED / TCGA / "brats_space", fusion, fusion_affine),
        "tcga-native": (SHARED / TCGA / "native", *native),
        "brats23-gli-00001": (SHARED / "brats23-gli-00001-000", None, None),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in cases:
            nifti_dir, reference, ref_affine = known[name]
            dicom_dir = Path(tmp) / name
            nifti_case_to_dicom(nifti_dir, dicom_dir, patient_id=name)
            entry: dict = {}
            for label, segmenter in (("network", network), ("baseline", baseline)):
                start = time.perf_counter()
                findings = run_case(dicom_dir, Path(tmp) / f"{name}-{label}", segmenter)
                entry[label] = {"volumes_ml": findings.volumes_ml, "seconds": round(time.perf_counter() - start, 1),
                                "warnings": findings.warnings, "brain_volume_ml": findings.brain_volume_ml}
                if reference is not None:
                    pred = labels_on(findings, ref_affine, reference.shape)
                    entry[label]["dice"] = region_dice(pred, reference)
                if label == "network":
                    mask = findings.masks[findings.reference_role]
                    image, img_affine = read_nifti(find_role_files(nifti_dir)["FLAIR"])
                    on_image = resample(mask.labels, Grid(mask.labels.shape, mask.affine),
                                        Grid(image.shape, img_affine), interpolation="nearest")
                    ref_on_image = None if reference is None else resample(
                        reference.astype(np.uint8), Grid(reference.shape, ref_affine), Grid(image.shape, img_affine),
                        interpolation="nearest")
                    overlay_png(out / f"{name}.png", image.astype(np.float32), on_image,
                                f"{name}: network (colour) vs reference (white), FLAIR", ref_on_image)
            if reference is not None:
                entry["reference_volumes_ml"] = volumes_ml(reference, Grid(reference.shape, ref_affine).voxel_ml)
            results["cases"][name] = entry
    (out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description="segmentation figures on the real cases of ../shared/data")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "segmentation")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "segmentation-eval")
    parser.add_argument("--card", action="store_true", help="rewrite the model's MODEL_CARD.md with these figures")
    args = parser.parse_args()
    results = evaluate(args.model, args.out)
    print(json.dumps(results, indent=2))
    if args.card:
        for png in args.out.glob("*.png"):
            shutil.copyfile(png, args.model / f"eval-{png.name}")
        print(f"wrote {write_card(args.model, results)}")


if __name__ == "__main__":
    main()
