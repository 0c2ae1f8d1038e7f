"""Segmentation figures on every real case of ../shared/data, for every segmenter.

``make eval`` (``python -m tests.eval_segmentation``) turns each case into DICOM
(nifti2dicom) and runs ``glioma-node process`` (:func:`glioma_node.service.pipeline.process`) on it,
so the path measured is the product's: brain extraction (deepbet), registration,
segmentation, mapping back onto the series. It compares with the reference label and
writes ``bench-results/segmentation-eval/``: ``evaluation.json``, ``table.md`` and an
overlay PNG per case. ``tests/inference/test_segmentation_real.py`` asserts on the same figures.

Segmenters: ``default`` (the shipped glioma-node model), ``captk-deepmedic`` (CaPTk's
DeepMedic, read from ../shared/data/captk-deepmedic), ``ensemble`` (the mean of the
two) and ``classical`` (the threshold baseline). A segmenter that cannot run on a case
(a sequence it needs is missing) is reported as such, never silently skipped.

Cases:

* ``tcga-native``: TCGA-FG-6692 as acquired (Siemens, skull, face and neck, 5.5 mm
  slices, four differently placed series). Reference: the BraTS-space fusion label
  carried into scanner space by an affine mutual-information registration of the
  BraTS-space T1c onto the HD-BET-stripped native T1c (:func:`reference_in_native`).
* ``tcga-brats-space``: the same patient skull-stripped in SRI24; reference
  ``seg/fusion_simple.nii.gz`` (five BraTS-2020 algorithms fused, not expert truth).
* ``brats23-gli-00001``: no label; volumes and a picture.
* ``upenn-gbm-00002``: T2 alone with its label: the missing-sequence run.
* ``kaggle-<patient>``: the eight TCGA-LGG patients of ../shared/data/tcga-lgg-kaggle
  (native slices with skull, FLAIR + T1 + T1c, no T2; manual FLAIR-abnormality masks,
  compared as whole tumour). Evaluation only: never used for training or tuning.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from glioma_node.cli.process import process_folder
from glioma_node.core.findings import Findings
from glioma_node.core.grid import Grid, shape3
from glioma_node.core.resources import DEFAULT_MODELS
from glioma_node.dicom_io.nifti import find_role_files, nifti_case_to_dicom, read_nifti
from glioma_node.inference.analyze import Models
from glioma_node.inference.brain_extraction import BrainExtractor
from glioma_node.inference.preprocess import prepare
from glioma_node.inference.regions import region_dice, volumes_ml
from glioma_node.inference.resample import resample, to_image
from glioma_node.inference.segmenters import Segmenter, load_segmenter
from glioma_node.inference.segmenters.classical import ClassicalSegmenter
from glioma_node.inference.segmenters.ensemble import EnsembleSegmenter
from glioma_node.service.config import Config, load_config
from glioma_node.training.seg.card import dice_table, write_card
from tests.helpers import REPO, SHARED, nifti_volumes

TCGA = "tcga-lgg_fg-6692"
KAGGLE = "tcga-lgg-kaggle"
SEGMENTERS = ("default", "captk-deepmedic", "ensemble", "classical")


@dataclass(frozen=True)
class Case:
    """A real case: its NIfTI folder, what its reference is, and how to read it.

    ``reference()`` gives (BraTS labels, LPS affine) or None; ``whole_tumour_only``:
    the reference is a single abnormality mask, compared as whole tumour.
    """

    name: str
    folder: Path
    reference_kind: str
    reference: Callable[[], tuple[np.ndarray, np.ndarray] | None]
    whole_tumour_only: bool = False


def reference_in_native(root: Path = SHARED) -> tuple[np.ndarray, np.ndarray]:
    """The BraTS-space fusion label of TCGA-FG-6692 on the native T1c grid: (labels, LPS affine)."""
    case = root / TCGA
    fixed_voxels, fixed_affine = read_nifti(case / "native_skullstripped" / "t1c.nii.gz")
    moving_voxels, moving_affine = read_nifti(case / "brats_space" / "t1c.nii.gz")
    label, label_affine = read_nifti(case / "brats_space" / "seg" / "fusion_simple.nii.gz")
    fixed_grid, moving_grid = Grid(fixed_voxels.shape, fixed_affine), Grid(moving_voxels.shape, moving_affine)
    f = sitk.Cast(to_image(fixed_grid, fixed_voxels.astype(np.float32)), sitk.sitkFloat32)
    m = sitk.Cast(to_image(moving_grid, moving_voxels.astype(np.float32)), sitk.sitkFloat32)
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


def _label(path: Path, whole_tumour_only: bool = False) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    def read() -> tuple[np.ndarray, np.ndarray]:
        voxels, affine = read_nifti(path)
        labels = voxels.astype(np.uint8)
        if whole_tumour_only:
            return (labels > 0).astype(np.uint8) * 2, affine
        return np.where(labels == 3, 4, labels).astype(np.uint8), affine  # BraTS 2023: enhancing tumour is 3
    return read


def all_cases(root: Path = SHARED) -> list[Case]:
    """Every real case under ``root``, in report order: the project's named cases where they
    are (see the module doc), then any other folder holding NIfTI images of FLAIR or T2 and a
    label map (``label.nii.gz``, a whole-tumour mask as in the LGG dataset; ``seg`` and the
    BraTS names, labels 1/2/4), named after its folder."""
    from functools import partial

    from glioma_node.training.seg.dataset import is_whole_tumour_mask, label_file
    from glioma_node.training.seg.real_cases import find_real_cases

    if not root.is_dir():
        raise FileNotFoundError(f"no folder of real cases at {root} (make eval DATA=<folder>)")
    cases = []
    named: list[tuple[str, Path, str, Callable[[], tuple[np.ndarray, np.ndarray] | None], Path | None]] = [
        ("tcga-native", root / TCGA / "native", "fusion of 5 BraTS-2020 algorithms, carried to scanner space",
         partial(reference_in_native, root), root / TCGA / "brats_space" / "seg" / "fusion_simple.nii.gz"),
        ("tcga-brats-space", root / TCGA / "brats_space", "fusion of 5 BraTS-2020 algorithms",
         _label(root / TCGA / "brats_space" / "seg" / "fusion_simple.nii.gz"), None),
        ("brats23-gli-00001", root / "brats23-gli-00001-000", "none", lambda: None, None),
        ("upenn-gbm-00002", root / "upenn-gbm-00002", "UPENN-GBM label (T2 only: missing-sequence run)",
         _label(root / "upenn-gbm-00002" / "seg.nii.gz"), None),
    ]
    for name, folder, kind, reference, needs in named:
        if folder.is_dir() and (needs is None or needs.is_file()):
            cases.append(Case(name, folder, kind, reference))
    if (root / KAGGLE).is_dir():
        for folder in sorted((root / KAGGLE).iterdir()):
            if (folder / "label.nii.gz").is_file():
                cases.append(Case(f"kaggle-{folder.name}", folder, "manual FLAIR-abnormality mask (whole tumour)",
                                  _label(folder / "label.nii.gz", True), whole_tumour_only=True))
    taken = {c.folder.resolve() for c in cases} | {(root / TCGA).resolve()}
    for folder in find_real_cases([root]):
        if folder.resolve() in taken or any(p in taken for p in folder.resolve().parents):
            continue
        label = label_file(folder)
        assert label is not None
        whole = is_whole_tumour_mask(label)
        name = folder.name if folder.name not in {c.name for c in cases} else str(folder.relative_to(root))
        cases.append(Case(name, folder, "whole-tumour mask" if whole else "label map (BraTS labels)",
                          _label(label, whole), whole_tumour_only=whole))
    return cases


def load_segmenters(names: tuple[str, ...] = SEGMENTERS, model: Path = DEFAULT_MODELS / "segmentation"
                    ) -> dict[str, Segmenter]:
    """The segmenters by report name (see the module doc)."""
    out: dict[str, Segmenter] = {}
    default = load_segmenter("glioma-node", model)
    needs_deepmedic = {"captk-deepmedic", "ensemble"} & set(names)
    deepmedic = load_segmenter("captk-deepmedic", SHARED / "captk-deepmedic") if needs_deepmedic else default
    for name in names:
        if name == "default":
            out[name] = default
        elif name == "captk-deepmedic":
            out[name] = deepmedic
        elif name == "ensemble":
            out[name] = EnsembleSegmenter([default, deepmedic])
        elif name == "classical":
            out[name] = ClassicalSegmenter()
        else:
            raise ValueError(f"unknown segmenter {name!r}; choose from {', '.join(SEGMENTERS)}")
    return out


def _config_for(roles: list[str]) -> Config:
    """The embedded configuration, requiring only the whole-tumour sequences the case has."""
    config = load_config()
    needed = [r for r in ("FLAIR", "T2") if r in roles][:1]
    return config.model_copy(update={"assembly": config.assembly.model_copy(update={"required_roles": needed})})


def labels_on(findings: Findings, reference_affine: np.ndarray, reference_shape: tuple[int, ...]) -> np.ndarray:
    """The reference-series labels of ``findings`` resampled (nearest) onto another grid."""
    mask = findings.masks[findings.reference_role]
    return resample(mask.labels, Grid(shape3(mask.labels.shape), mask.affine), Grid(shape3(reference_shape), reference_affine),
                    interpolation="nearest")


def overlay_png(path: Path, image: np.ndarray, labels: np.ndarray, title: str, reference: np.ndarray | None = None) -> None:
    """Five axial slices through the tumour, labels in colour (red 1, green 2, yellow 4),
    the reference outline in white when given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wt = (labels > 0) | (reference > 0 if reference is not None else False)
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
        if reference is not None and (reference[z] > 0).any():
            ax.contour(reference[z] > 0, levels=[0.5], colors="white", linewidths=0.7)
        ax.set_title(f"slice {z}", fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def brain_extraction_on_native(root: Path = SHARED) -> dict | None:
    """deepbet on the native TCGA head against the HD-BET mask of BraTS-Toolkit: volume and
    Dice (None when ``root`` does not hold that case)."""
    if not (root / TCGA / "native_skullstripped" / "t1c_brainmask.nii.gz").is_file():
        return None
    prepared = prepare(nifti_volumes(root / TCGA / "native"))
    start = time.perf_counter()
    brain = BrainExtractor().extract(prepared)
    seconds = time.perf_counter() - start
    reference, affine = read_nifti(root / TCGA / "native_skullstripped" / "t1c_brainmask.nii.gz")
    ours = resample(brain.mask.astype(np.uint8), prepared.grid, Grid(reference.shape, affine),
                    interpolation="nearest") > 0
    ref = reference > 0
    return {"series": brain.role, "volume_ml": brain.volume_ml,
            "hd_bet_volume_ml": round(float(ref.sum()) * Grid(reference.shape, affine).voxel_ml, 1),
            "dice_vs_hd_bet": round(float(2 * (ours & ref).sum() / (ours.sum() + ref.sum())), 4),
            "seconds": round(seconds, 1), "problems": brain.problems}


def run_one(case: Case, reference: tuple[np.ndarray, np.ndarray] | None, dicom_dir: Path, out: Path,
            segmenter: Segmenter, roles: list[str]) -> tuple[dict, Findings | None]:
    """``glioma-node process`` of one case's DICOM with one segmenter: (volumes, Dice, time,
    warnings; the findings, None when it could not run)."""
    start = time.perf_counter()
    (outcome,) = process_folder(dicom_dir, out, _config_for(roles), Models(segmenter, brain_extractor=EXTRACTOR))
    seconds = round(time.perf_counter() - start, 1)
    if outcome.findings is None:
        return {"ran": False, "reason": outcome.error, "seconds": seconds}, None
    findings = outcome.findings
    entry = {"ran": True, "volumes_ml": findings.volumes_ml, "seconds": seconds,
             "brain_volume_ml": findings.brain_volume_ml, "warnings": findings.warnings,
             "reference_role": findings.reference_role,
             "quality": None if findings.segmentation_quality is None else findings.segmentation_quality.to_json()}
    if reference is not None:
        labels, affine = reference
        dice = region_dice(labels_on(findings, affine, labels.shape), labels)
        # core and enhancing tumour are not reported without T1c: no Dice for what was not claimed
        wt_only = case.whole_tumour_only or "T1c" not in roles
        entry["dice"] = {"whole_tumour": dice["whole_tumour"]} if wt_only else dice
    return entry, findings


EXTRACTOR = BrainExtractor()  # one deepbet for every run (its networks load once)


def evaluate(out: Path, segmenters: dict[str, Segmenter], cases: list[Case] | None = None,
             pictures: bool = True, only: dict[str, tuple[str, ...]] | None = None) -> dict:
    """Every case through DICOM and ``process`` with every segmenter; returns the figures
    (and writes evaluation.json, table.md and the PNGs into ``out``). ``only``: segmenter
    name → the case names it runs on (the others: all cases)."""
    out.mkdir(parents=True, exist_ok=True)
    cases = cases if cases is not None else all_cases()
    results: dict = {"segmenters": {name: s.describe() for name, s in segmenters.items()}, "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            roles = sorted(find_role_files(case.folder))
            dicom_dir = Path(tmp) / case.name
            nifti_case_to_dicom(case.folder, dicom_dir, patient_id=case.name)
            reference = case.reference()
            entry: dict = {"reference": case.reference_kind, "sequences": roles, "segmenters": {}}
            if reference is not None:
                labels, affine = reference
                ref_volumes = volumes_ml(labels, Grid(labels.shape, affine).voxel_ml)
                entry["reference_volumes_ml"] = ({"whole_tumour": ref_volumes["whole_tumour"]}
                                                 if case.whole_tumour_only else ref_volumes)
            for name, segmenter in segmenters.items():
                if only and name in only and case.name not in only[name]:
                    continue
                result, findings = run_one(case, reference, dicom_dir, Path(tmp) / f"{case.name}-{name}", segmenter,
                                           roles)
                if pictures and findings is not None and name == next(iter(segmenters)):
                    _picture(out / f"{case.name}.png", case, findings, reference, name)
                entry["segmenters"][name] = result
            results["cases"][case.name] = entry
    results["medians"] = kaggle_medians(results)
    results["quality_control"] = quality_control(results)
    (out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text("\n".join(dice_table(results)) + "\n")
    return results


def _picture(path: Path, case: Case, findings: Findings, reference: tuple | None, name: str) -> None:
    files = find_role_files(case.folder)
    image, img_affine = read_nifti(files.get("FLAIR") or files.get("T2") or next(iter(files.values())))
    grid = Grid(image.shape, img_affine)
    mask = findings.masks[findings.reference_role]
    on_image = resample(mask.labels, Grid(mask.labels.shape, mask.affine), grid, interpolation="nearest")
    ref_on_image = None if reference is None else resample(reference[0], Grid(reference[0].shape, reference[1]), grid,
                                                           interpolation="nearest")
    overlay_png(path, image.astype(np.float32), on_image, f"{case.name}: {name} (colour) vs reference (white)",
                ref_on_image)


def quality_control(results: dict) -> dict:
    """Per segmenter, how the quality warning ("segmentation doubtful") met the real Dice:
    warned among cases with whole-tumour Dice < 0.70 and among those ≥ 0.80, and the
    score's AUC for Dice < 0.70 (ties count half; None without both kinds of case)."""
    out = {}
    for name in results["segmenters"]:
        rows = [(c["segmenters"][name]["dice"]["whole_tumour"], c["segmenters"][name]["quality"])
                for c in results["cases"].values()
                if c["segmenters"].get(name, {}).get("ran") and "dice" in c["segmenters"][name]
                and c["segmenters"][name].get("quality")]
        bad = [q for d, q in rows if d < 0.7]
        good = [q for d, q in rows if d >= 0.7]
        auc = (sum(1.0 if b["score"] < g["score"] else 0.5 if b["score"] == g["score"] else 0.0
                   for b in bad for g in good) / (len(bad) * len(good))) if bad and good else None
        out[name] = {"cases": len(rows), "dice_below_0.70": len(bad),
                     "warned_below_0.70": sum(q["doubtful"] for q in bad),
                     "dice_at_least_0.80": sum(d >= 0.8 for d, _ in rows),
                     "warned_at_least_0.80": sum(q["doubtful"] for d, q in rows if d >= 0.8),
                     "auc_for_dice_below_0.70": None if auc is None else round(auc, 3)}
    return out


def kaggle_medians(results: dict) -> dict:
    """Median and minimum whole-tumour Dice over the TCGA-LGG (kaggle) cases, per segmenter."""
    out = {}
    for name in results["segmenters"]:
        scores = [c["segmenters"][name]["dice"]["whole_tumour"] for key, c in results["cases"].items()
                  if key.startswith("kaggle-") and c["segmenters"].get(name, {}).get("ran")]
        ran = sum(1 for key, c in results["cases"].items() if key.startswith("kaggle-"))
        if scores:
            out[name] = {"median_whole_tumour": round(statistics.median(scores), 4),
                         "min_whole_tumour": round(min(scores), 4), "cases": len(scores), "of": ran}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="segmentation figures on real labelled cases")
    parser.add_argument("--data", type=Path, default=SHARED,
                        help="folder of real cases: NIfTI images and a label map per case folder (default: the "
                             "project's test data beside the checkout)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODELS / "segmentation")
    parser.add_argument("--out", type=Path, default=REPO / "bench-results" / "segmentation-eval")
    parser.add_argument("--segmenters", default=",".join(SEGMENTERS), help=f"comma-separated from {SEGMENTERS}")
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--card", action="store_true", help="rewrite the model's MODEL_CARD.md with these figures")
    args = parser.parse_args()
    cases = all_cases(args.data)
    if args.cases:
        wanted = set(args.cases.split(","))
        cases = [c for c in cases if c.name in wanted]
    segmenters = load_segmenters(tuple(args.segmenters.split(",")), args.model)
    results = evaluate(args.out, segmenters, cases)
    results["brain_extraction_native"] = brain_extraction_on_native(args.data)
    (args.out / "evaluation.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(dice_table(results)))
    print(json.dumps({"quality_control": results["quality_control"],
                      "brain_extraction_native": results["brain_extraction_native"]}, indent=1))
    if args.card:
        for png in args.out.glob("*.png"):
            shutil.copyfile(png, args.model / f"eval-{png.name}")
        print(f"wrote {write_card(args.model, results)}")


if __name__ == "__main__":
    main()
