"""Feature tables for training: each case read once, its features and crop cached on disk.

A case becomes a :class:`glioma_node.inference.radiogenomics.tumour_study.TumourStudy` exactly as at
inference: four sequences z-scored inside the brain on a 1 mm axis-aligned grid, with
its BraTS labels. Cases with a mask file use it (ground truth, as published radiogenomic
work does); DICOM cases without one (RSNA-MICCAI, TCGA) are converted to NIfTI first
(:mod:`glioma_node.training.radiogenomics.dicom_cohort`, into ``<cache>/nifti/``) and
segmented by the segmentation model.
The cache (``<cache>/<case>.npz``, the name through
:func:`glioma_node.dicom_io.uids.safe_file_name`) holds the named image features and the encoder's
input pieces, keyed by the radiomics settings' digest, so re-training (other
heads, other splits) costs seconds, and an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from glioma_node.core.files import atomic_path
from glioma_node.core.grid import Grid, shape3
from glioma_node.core.roles import ROLES
from glioma_node.dicom_io.nifti import read_nifti, read_nifti_volume
from glioma_node.dicom_io.sequence_rules import SequenceRules
from glioma_node.dicom_io.uids import safe_file_name
from glioma_node.inference.model_dir import sha256_file
from glioma_node.inference.radiogenomics import radiomics
from glioma_node.inference.radiogenomics.encoder import SLICE_DEFAULTS
from glioma_node.inference.radiogenomics.model import encoder_input, image_features
from glioma_node.inference.radiogenomics.tumour_study import TumourStudy, tumour_study
from glioma_node.inference.resample import canonical_grid, resample
from glioma_node.training.radiogenomics.adapters import LabelledCase
from glioma_node.training.radiogenomics.dicom_cohort import convert_case, convert_cases

log = logging.getLogger(__name__)


class MaskSource(StrEnum):
    """Inside which tumour mask a case's features are extracted (``--masks`` of training)."""

    TRUE = "true"
    """The case's own mask file (the ground truth, as published radiogenomic work uses)."""
    SEGMENTER = "segmenter"
    """The segmentation model's mask, drawn as the node draws it at inference (a case
    without a mask file is always segmented)."""


def true_labels(case: LabelledCase, grid: Grid | None = None) -> tuple[np.ndarray, Grid]:
    """The case's mask file as BraTS labels 1/2/4 (BraTS 2023's 3 read as 4), resampled
    (nearest) onto ``grid`` (default: the 1 mm axis-aligned grid around the mask)."""
    if case.seg is None:
        raise ValueError(f"{case.name}: no tumour mask file")
    seg, seg_affine = read_nifti(case.seg)
    seg = np.where(np.isin(seg, (1, 2, 4)), seg, np.where(seg == 3, 4, 0)).astype(np.uint8)
    source = Grid(shape3(seg.shape), seg_affine)
    grid = grid or canonical_grid(source.corners(), 1.0)
    return resample(seg, source, grid, interpolation="nearest").astype(np.uint8), grid


def _nifti_study(case: LabelledCase) -> TumourStudy:
    if case.seg is None or case.images is None:
        raise ValueError(f"{case.name}: a NIfTI case needs its images and a tumour mask")
    labels, grid = true_labels(case)
    channels = {}
    for role in ROLES:
        voxels, affine = read_nifti(case.images[role])
        channels[role] = resample(voxels.astype(np.float32), Grid(shape3(voxels.shape), affine), grid, interpolation="linear")
    if case.brain is not None and case.brain.exists():
        mask, affine = read_nifti(case.brain)
        brain = resample(mask.astype(np.uint8), Grid(shape3(mask.shape), affine), grid, interpolation="nearest") > 0
    else:  # public datasets are skull-stripped: the brain is what is not zero
        brain = np.stack([channels[r] for r in ROLES]).max(axis=0) > 0
    return tumour_study(grid, channels, labels, brain, case.age_years)


def _images_digest(images: dict[str, Path]) -> str:
    """One digest of a case's image files (role and sha256 of each): a kept mask belongs to these."""
    return hashlib.sha256("".join(f"{role}:{sha256_file(images[role])}" for role in sorted(images)).encode()).hexdigest()


def mask_digest(case: LabelledCase) -> str | None:
    """A short digest of the case's mask file (None without one): tells a cohort made again."""
    return sha256_file(case.seg)[:16] if case.seg is not None else None


@functools.lru_cache(maxsize=8)
def _model_digest(directory: Path, mtime_ns: int) -> str:
    from glioma_node.inference.model_dir import read_manifest

    return read_manifest(directory).sha256


def mask_folder(cache: Path, segmentation_model: Path) -> Path:
    """Where the masks ``segmentation_model`` drew are kept: ``<cache>/masks-<model digest>/``
    (a new model, new masks). The model's weights are hashed once per process (per case
    they would be read again for every case)."""
    manifest = segmentation_model / "manifest.json"
    return cache / f"masks-{_model_digest(segmentation_model.resolve(), manifest.stat().st_mtime_ns)[:12]}"


def _segmented_study(case: LabelledCase, segmentation_model: Path, masks: Path | None = None) -> TumourStudy:
    """The case inside ``segmentation_model``'s mask, drawn as inference draws it (brain
    extraction, segmentation, post-processing). With ``masks`` (a folder), the mask, the
    brain and the grid are kept there, and a later extraction (other radiomics settings,
    another crop) prepares the images again but does not segment again."""
    from glioma_node.inference.preprocess import prepare
    from glioma_node.inference.segmentation import segment
    from glioma_node.inference.segmenters import load_segmenter

    assert case.images is not None
    volumes = {role: read_nifti_volume(path, f"{case.name} {role}") for role, path in case.images.items()}
    kept = masks / f"{safe_file_name(case.name)}.npz" if masks is not None else None
    source = _images_digest(case.images)
    if kept is not None and kept.exists():
        with np.load(kept) as data:
            same = "source" in data.files and str(data["source"]) == source
            labels, brain, affine = data["labels"], data["brain"], data["affine"]
        prepared = prepare(volumes, same_frame=True) if same else None
        if prepared is not None and prepared.grid.shape == labels.shape and np.allclose(prepared.grid.affine, affine,
                                                                                        atol=1e-4):
            return tumour_study(prepared.grid, prepared.channels, labels, brain, case.age_years)
        log.warning("case %s: its kept mask %s was drawn on other images; segmenting again", case.name, kept)
    seg = segment(volumes, load_segmenter("glioma-node", segmentation_model))
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        quality = seg.quality
        with atomic_path(kept) as tmp:
            np.savez_compressed(tmp, labels=seg.labels.astype(np.uint8), brain=seg.brain.astype(bool),
                                affine=np.asarray(seg.grid.affine, np.float64), source=source,
                                doubtful=bool(quality is not None and quality.doubtful),
                                quality=float(quality.score) if quality is not None else np.nan)
    return tumour_study(seg.grid, seg.prepared.channels, seg.labels, seg.brain, case.age_years)


def load_study(case: LabelledCase, segmentation_model: Path | None = None,
               masks: MaskSource = MaskSource.TRUE, mask_cache: Path | None = None) -> TumourStudy:
    """The TumourStudy of one case (see the module doc): inside its own mask, or with
    ``masks`` SEGMENTER (and for a case without one) inside ``segmentation_model``'s, kept
    under ``mask_cache`` when given (:func:`mask_folder`)."""
    if case.images is None:
        raise ValueError(f"{case.name}: a DICOM case is read after its conversion to NIfTI "
                         "(training.radiogenomics.dicom_cohort.convert_case)")
    if case.seg is not None and masks == MaskSource.TRUE:
        return _nifti_study(case)
    if segmentation_model is None:
        raise ValueError(f"{case.name}: no tumour mask and no segmentation model to draw one")
    return _segmented_study(case, segmentation_model,
                            mask_folder(mask_cache, segmentation_model) if mask_cache is not None else None)


def case_inputs(study: TumourStudy, params: dict[str, Any], encoder_config: dict[str, Any]) -> dict[str, Any]:
    """Named image features and the encoder input pieces ``(P, 4, s, s, s)`` of one study,
    made by the functions inference uses."""
    pieces, _ = encoder_input(study.stack(), study.labels, encoder_config)
    return {"features": image_features(study, params), "crop": pieces.astype(np.float16)}


class _Serial:
    """The in-process stand-in for a process pool (one worker, or one case)."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @staticmethod
    def map(fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        return map(fn, items)


def _pool(workers: int, tasks: int) -> ProcessPoolExecutor | _Serial:
    return ProcessPoolExecutor(workers) if workers > 1 and tasks > 1 else _Serial()


@dataclass(frozen=True)
class MaskChoice:
    """Which masks a cache holds features in: ``source``, and the model that draws them
    (for SEGMENTER, and for cases without a mask file) with the folder its masks are kept in."""

    source: MaskSource = MaskSource.TRUE
    segmentation_model: Path | None = None
    cache: Path | None = None

    def key(self) -> dict[str, str]:
        """What the feature cache's digest adds for these masks (nothing for true masks, so
        caches made before the choice existed stay valid)."""
        if self.source == MaskSource.TRUE:
            return {}
        if self.segmentation_model is None:
            raise ValueError("features inside the segmenter's masks need a segmentation model")
        return {"masks": mask_folder(Path("."), self.segmentation_model).name}


def mask_doubtful(case: LabelledCase, cache: Path, segmentation_model: Path) -> bool | None:
    """Whether the mask ``segmentation_model`` drew for ``case`` (kept under ``cache``) was
    doubtful by the node's quality control (then the node withholds MGMT, IDH and risk);
    None when no mask of it is kept."""
    kept = mask_folder(cache, segmentation_model) / f"{safe_file_name(case.name)}.npz"
    if not kept.exists():
        return None
    with np.load(kept) as data:
        return bool(data["doubtful"]) if "doubtful" in data.files else None


def _one(args: tuple[LabelledCase, Path, dict | None, dict, MaskChoice]) -> tuple[str, str | None]:
    """One case into the cache at ``path``: its features and encoder pieces (``.npz``), or
    with ``params`` None only the pieces of ``encoder_config`` (``.npy``); atomically."""
    case, path, params, encoder_config, masks = args
    try:
        study = load_study(case, masks.segmentation_model, masks.source, masks.cache)
        if params is None:
            pieces, _ = encoder_input(study.stack(), study.labels, encoder_config)
        else:
            inputs = case_inputs(study, params, encoder_config)
    except (ValueError, OSError, RuntimeError) as exc:
        return case.name, str(exc)
    with atomic_path(path) as tmp:
        if params is None:
            np.save(tmp, pieces.astype(np.float16))
        else:
            np.savez(tmp, crop=inputs["crop"], features=json.dumps(inputs["features"]))
    return case.name, None


def _run(todo: list[tuple], desc: str, workers: int, progress: bool) -> dict[str, str]:
    """:func:`_one` over ``todo`` (in ``workers`` processes), with a progress bar; case name → error."""
    errors: dict[str, str] = {}
    bar = tqdm(total=len(todo), desc=desc, unit="case", disable=not progress)
    with _pool(workers, len(todo)) as pool:
        for name, error in pool.map(_one, todo):
            bar.update()
            if error:
                errors[name] = error
    bar.close()
    return errors


def cache_key(params: dict[str, Any], encoder_config: dict[str, Any], masks: MaskChoice | None = None) -> str:
    """The feature cache's folder name: a digest of what the cached values depend on."""
    crop = {k: encoder_config[k] for k in ("variant", "crop_size", "crop_spacing_mm", "patch_size", "patch_count")}
    if encoder_config.get("variant") == "slices":  # only then: the digests of the other variants stay as they were
        crop.update({k: encoder_config.get(k, v) for k, v in SLICE_DEFAULTS.items()})
    if encoder_config.get("context_mm") is not None:  # likewise: only a masked input has a new digest
        crop["context_mm"] = float(encoder_config["context_mm"])
    # format 2: the encoder input is stored as pieces (P, 4, s, s, s), P = 1 for a crop.
    return radiomics.settings_digest({"radiomics": params, "crop": crop, "format": 2,
                                      **(masks.key() if masks is not None else {})})[:12]


def build_cache(cases: list[LabelledCase], cache: Path, params: dict[str, Any], encoder_config: dict[str, Any],
                workers: int = 1, segmentation_model: Path | None = None, progress: bool = True,
                sequence_rules: SequenceRules | None = None, masks: MaskSource = MaskSource.TRUE) -> dict[str, str]:
    """Extract every case not yet in ``cache``; returns case name → error for those that failed.

    DICOM cases are converted first (``sequence_rules``: how TCIA series are recognised,
    see :func:`glioma_node.training.radiogenomics.dicom_cohort.role_series`). ``masks``:
    inside which masks (:class:`MaskSource`); the segmenter's are kept under ``cache``."""
    choice = MaskChoice(masks, segmentation_model, cache)
    folder = cache / cache_key(params, encoder_config, choice)
    folder.mkdir(parents=True, exist_ok=True)
    missing = [c for c in cases if not (folder / f"{safe_file_name(c.name)}.npz").exists()]
    missing, errors = convert_cases(missing, cache / "nifti", sequence_rules)
    todo = [(c, folder / f"{safe_file_name(c.name)}.npz", params, encoder_config, choice) for c in missing]
    errors.update(_run(todo, "features", workers, progress))
    for name, error in errors.items():
        log.warning("case %s left out: %s", name, error)
    return errors


def reads_encoder_crops(cnn_config: dict[str, Any], encoder_config: dict[str, Any]) -> bool:
    """Whether a CNN's input (``crop_size``, ``crop_spacing_mm``) is the encoder's cached crop."""
    return (encoder_config.get("variant", "crop") == "crop"
            and (int(cnn_config["crop_size"]), float(cnn_config["crop_spacing_mm"]), cnn_config.get("context_mm"))
            == (int(encoder_config["crop_size"]), float(encoder_config["crop_spacing_mm"]),
                encoder_config.get("context_mm")))


def build_crops(cases: list[LabelledCase], cache: Path, size: int, spacing_mm: float, workers: int = 1,
                segmentation_model: Path | None = None, progress: bool = True,
                context_mm: float | None = None, masks: MaskSource = MaskSource.TRUE) -> np.ndarray:
    """Tumour-centred crops ``(N, 1, 4, size, size, size)`` float16 of ``cases`` (already in the
    feature cache, so converted and readable), for a CNN whose input differs from the
    encoder's (``context_mm``: see :func:`glioma_node.inference.radiogenomics.crop.keep_tumour_context`);
    cached in ``<cache>/crops-<key>/`` like the features."""
    config: dict[str, Any] = {"variant": "crop", "crop_size": size, "crop_spacing_mm": spacing_mm}
    if context_mm is not None:
        config["context_mm"] = float(context_mm)
    choice = MaskChoice(masks, segmentation_model, cache)
    folder = cache / f"crops-{radiomics.settings_digest({'crop': config, 'format': 2, **choice.key()})[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{safe_file_name(c.name)}.npy" for c in cases]
    # DICOM cases were converted when their features were extracted: read those files.
    todo = [(convert_case(c, cache / "nifti", None), p, None, config, choice)
            for c, p in zip(cases, paths) if not p.exists()]
    for name, error in _run(todo, f"crops {size} at {spacing_mm:g} mm", workers, progress).items():
        raise ValueError(f"{name}: its features were extracted but its CNN crop failed: {error}")
    return np.stack([np.load(p) for p in paths])


def read_cache(cases: list[LabelledCase], cache: Path, params: dict[str, Any], encoder_config: dict[str, Any],
               masks: MaskSource = MaskSource.TRUE, segmentation_model: Path | None = None,
               ) -> tuple[list[LabelledCase], list[dict[str, float]], np.ndarray]:
    """(cases found, their feature dicts, their encoder inputs ``(N, P, 4, s, s, s)`` float16) from the cache."""
    folder = cache / cache_key(params, encoder_config, MaskChoice(masks, segmentation_model, cache))
    kept, feats, crops = [], [], []
    for case in cases:
        path = folder / f"{safe_file_name(case.name)}.npz"
        if not path.exists():
            continue
        with np.load(path) as data:
            features = json.loads(str(data["features"]))
            crops.append(data["crop"])
        feats.append(features)
        kept.append(case)
    return kept, feats, np.stack(crops) if crops else np.zeros((0,))
