"""Training cases for segmentation, read from a synthetic cohort or a BraTS-layout folder.

Two kinds of case, told apart by what their folder holds:

* **Label-driven** (``glioma-node synth`` output, ``nifti/<case>/``): ``tissues.nii.gz``,
  ``seg.nii.gz`` and ``brainmask.nii.gz``; the ventricles, dura and sinuses are found once
  (:func:`glioma_node.training.seg.confounders.add_structures`). Images are drawn afresh every time by
  :func:`glioma_node.training.seg.generator.synthesise`; the rendered ``flair/t1/t1c/t2`` are not used.
* **Image** (BraTS 2021/2023, RSNA-MICCAI with labels, UCSF-PDGM, UPENN-GBM, or the
  cohort without tissues): the four sequences (any name :func:`glioma_node.dicom_io.nifti.find_role_files`
  knows) and a label map (``seg``, ``*-seg``, ``*_seg``). Real images get the
  intensity and resolution randomisation of :func:`glioma_node.training.seg.generator.augment`.
* **A site's own cases** in the LGG segmentation dataset's layout (``flair``, ``t1``,
  ``t1c`` with skull, ``label.nii.gz`` a FLAIR-abnormality mask): brain-extracted and
  prepared as inference does (:func:`load_site_case`); the label trains the whole tumour
  only, the sequences a case lacks stay missing.

Every case is brought once onto an axis-aligned LPS grid at the working spacing (the
orientation :func:`glioma_node.inference.resample.canonical_grid` gives at inference).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from glioma_node.core.grid import Grid, shape3
from glioma_node.core.roles import ROLES
from glioma_node.dicom_io.nifti import find_role_files, read_nifti
from glioma_node.inference.regions import regions_from_labels
from glioma_node.inference.resample import canonical_grid, resample
from glioma_node.training.seg.confounders import add_structures
from glioma_node.training.seg.generator import merge_labels

WHOLE_TUMOUR_LABEL = "label.nii*"  # the LGG segmentation dataset's layout: a FLAIR-abnormality mask


@dataclass
class Case:
    """One case on the working grid. ``classes`` (label-driven) or ``images`` (4, z, y, x).

    ``known``: which of WT, TC, ET the label defines (a FLAIR-abnormality mask defines the
    whole tumour only; the loss ignores the others). ``present``: which sequences the case
    has (a missing one stays zeros, as inference feeds it).
    """

    name: str
    brain: np.ndarray
    soft_regions: np.ndarray  # (3, z, y, x) partial-volume fractions of WT, TC, ET
    classes: np.ndarray | None = None
    images: np.ndarray | None = None
    known: tuple[bool, bool, bool] = (True, True, True)
    present: tuple[bool, ...] = (True,) * len(ROLES)


# Where a case folder's label map is, in order: the BraTS names, a segmentation (not a brain
# parenchyma one, as UCSF-PDGM ships beside its tumour label), the LGG dataset's label.nii.gz,
# and a seg/ folder of labels (the fusion of TCGA-FG-6692's first).
LABEL_PATTERNS = ("seg.nii*", "*-seg.nii*", "*_seg.nii*", "*segmentation*.nii*", WHOLE_TUMOUR_LABEL, "seg/*.nii*")


def label_file(case_dir: Path) -> Path | None:
    """The case folder's label map (see LABEL_PATTERNS), or None."""
    for pattern in LABEL_PATTERNS:
        hits = sorted(p for p in case_dir.glob(pattern) if "brain" not in p.name.lower())
        if hits:
            return hits[0]
    return None


def is_whole_tumour_mask(path: Path) -> bool:
    """A ``label.nii*`` that holds only 0 and 1: the LGG dataset's FLAIR-abnormality mask.
    A multi-class label of that name is read as BraTS labels."""
    if not path.match(WHOLE_TUMOUR_LABEL):
        return False
    voxels, _ = read_nifti(path)
    return bool(np.isin(np.unique(voxels), (0, 1)).all())


def refuse_binary_brats_label(path: Path, voxels: np.ndarray) -> None:
    """A 0/1 mask under a BraTS label name would train as necrotic core (BraTS label 1):
    refuse it and say how to name a whole-tumour mask. A label of only 0 (no tumour) is fine."""
    if path.match(WHOLE_TUMOUR_LABEL):
        return
    values = set(np.unique(voxels).tolist())
    if 1 in values and values <= {0, 1}:
        raise ValueError(f"{path}: a 0/1 mask under a BraTS label name would train as necrotic core; name a "
                         "whole-tumour (FLAIR abnormality) mask label.nii.gz")


def brats_images(case_dir: Path) -> dict[str, Path]:
    """Role → image file of a BraTS-labelled case, which trains on all four sequences;
    empty for a label-driven case (``tissues.nii.gz``: its images are drawn).

    Raises FileNotFoundError naming the sequences the case lacks.
    """
    if (case_dir / "tissues.nii.gz").exists():
        return {}
    files = find_role_files(case_dir)
    missing = [r for r in ROLES if r not in files]
    if missing:
        raise FileNotFoundError(f"{case_dir}: missing {', '.join(missing)} images (a case with BraTS labels trains "
                                "on all four sequences; a site's FLAIR-abnormality mask is label.nii.gz)")
    return files


def find_cases(root: Path) -> list[Path]:
    """Case folders under ``root`` that hold a label map (recursively, sorted)."""
    if not root.is_dir():
        raise FileNotFoundError(f"training data folder not found: {root}")
    folders = {p.parent for p in root.rglob("*.nii*")}
    return sorted(f for f in folders if label_file(f) is not None)


def _to_grid(voxels: np.ndarray, source: Grid, target: Grid, soft: bool) -> np.ndarray:
    if soft:  # average over the coarser voxel before sampling (partial volume)
        sigma = max(0.0, (target.spacing[0] / source.spacing[0] - 1.0) * 0.85)
        voxels = ndimage.gaussian_filter(voxels.astype(np.float32), sigma) if sigma > 0 else voxels.astype(np.float32)
        return resample(voxels, source, target, interpolation="linear")
    return resample(voxels, source, target, interpolation="nearest")


def load_site_case(case_dir: Path, spacing_mm: float, cache: Path) -> Case:
    """A site's own case in the LGG segmentation dataset's layout (``flair``, ``t1``,
    ``t1c`` where it exists, with skull; ``label.nii.gz``, a manual FLAIR-abnormality mask):
    prepared as inference prepares a study (registration, deepbet, the 2 mm grid; cached
    with the real validation cases, :mod:`glioma_node.training.seg.real_cases`), its label
    taken as whole tumour only."""
    from glioma_node.training.seg.real_cases import load_real_cases

    (real,) = load_real_cases([case_dir], cache, spacing_mm, only_this_folder=True)
    present = tuple(role in real.sequences for role in ROLES)
    # positive intensities inside the brain (the scanner effects multiply and clip), zeros elsewhere
    if real.brain.sum() < 10:
        raise ValueError(f"{case_dir}: brain extraction found no brain (deepbet's mask is empty)")
    images = np.stack([np.where(real.brain, ch - ch[real.brain].min() + 0.1, 0.0) if has else np.zeros_like(ch)
                       for ch, has in zip(real.x, present)]).astype(np.float32)
    wt = real.reference.astype(np.float32)
    return Case(case_dir.name, real.brain, np.stack([wt, np.zeros_like(wt), np.zeros_like(wt)]), images=images,
                known=(True, False, False), present=present)


def load_case(case_dir: Path, spacing_mm: float = 2.0, cache: Path | None = None) -> Case:
    """Read one case folder onto the working grid (see the module doc). ``cache``: where a
    site case's prepared arrays are kept (:func:`load_site_case`)."""
    label_path = label_file(case_dir)
    if label_path is not None and is_whole_tumour_mask(label_path):
        from glioma_node.training.seg.real_cases import default_cache

        return load_site_case(case_dir, spacing_mm, cache or default_cache())
    if label_path is None:
        raise FileNotFoundError(f"{case_dir}: no label map (seg.nii.gz, *-seg.nii.gz or *_seg.nii.gz)")
    seg, affine = read_nifti(label_path)
    refuse_binary_brats_label(label_path, seg)
    seg = np.where(np.isin(seg, (1, 2, 4)), seg, np.where(seg == 3, 4, 0)).astype(np.uint8)  # BraTS 2023: ET is 3
    source = Grid(shape3(seg.shape), affine)
    grid = canonical_grid(source.corners(), spacing_mm, multiple=16)
    soft = np.stack([_to_grid(r, source, grid, True) for r in regions_from_labels(seg)])
    tissues = case_dir / "tissues.nii.gz"
    if tissues.exists():
        tissue_map, _ = read_nifti(tissues)
        brain_mask, _ = read_nifti(case_dir / "brainmask.nii.gz")
        classes = _to_grid(merge_labels(tissue_map, seg), source, grid, False)
        brain = _to_grid(brain_mask, source, grid, True) > 0.5
        return Case(case_dir.name, brain, soft, classes=add_structures(classes, brain, spacing_mm))
    files = brats_images(case_dir)
    images = []
    for role in ROLES:
        voxels, img_affine = read_nifti(files[role])
        images.append(resample(voxels.astype(np.float32), Grid(shape3(voxels.shape), img_affine), grid,
                               interpolation="linear"))
    stack = np.stack(images)
    brain = np.asarray(ndimage.binary_fill_holes((stack > 0).any(axis=0)), bool)  # public datasets are skull-stripped
    return Case(case_dir.name, brain, soft, images=stack)
