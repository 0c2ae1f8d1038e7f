"""Radiomic features per tumour sub-region and sequence, with pyradiomics.

Settings come from ``glioma_node/conf/radiomics.yaml`` (fixed bin width on brain z-scores, 1 mm,
original + LoG + wavelet images, all IBSI feature classes). Feature names are stable:

* ``shape.<region>.<feature>``: shape of the sub-region mask (mm, mm², mm³; once per
  region, as shape does not depend on the image);
* ``<role>.<region>.<image type>_<class>_<feature>``: intensity and texture, with
  pyradiomics' own names for the last part (``T1c.enhancing.wavelet-LLH_glcm_Contrast``).

A sub-region smaller than ``minimumROISize`` voxels (an IDH-mutant tumour often has no
enhancing part) gives NaN for its intensity and texture features and 0 for its
volume: the classifiers impute NaN, and the volume says the region is absent.
``extract(..., only=names)`` computes just those intensity and texture features (and every
shape feature, which is cheap): per sequence and sub-region, one pyradiomics pass per
image type family (original, LoG at the sigmas named, wavelet) with only the feature
classes and features named. Each value is what the full extraction gives: a derived image
and a class's matrix do not depend on what else is enabled. Inference asks for what the
loaded model reads; training extracts everything.
Work is spread over processes (one task per sequence and sub-region, and per shape), because
pyradiomics' C code holds the GIL. Workers are spawned, so a script that calls this
needs the usual ``if __name__ == "__main__":`` guard; when workers cannot start or die,
the features are computed in the calling process instead (slower, same values).
"""
from __future__ import annotations

import atexit
import hashlib
import json
import logging
import multiprocessing
import os
import re
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from glioma_node.core.lifetime import die_with_parent
from glioma_node.core.resources import RADIOMICS_SETTINGS

DEFAULT_SETTINGS = RADIOMICS_SETTINGS
# BraTS labels of each sub-region.
REGION_LABELS: dict[str, tuple[int, ...]] = {
    "necrotic_core": (1,),
    "edema": (2,),
    "enhancing": (4,),
    "whole_tumour": (1, 2, 4),
}
_pools: dict[int, ProcessPoolExecutor] = {}
log = logging.getLogger(__name__)


def load_settings(path: Path = DEFAULT_SETTINGS) -> dict[str, Any]:
    """The pyradiomics parameter mapping (``setting``, ``imageType``, ``featureClass``)."""
    try:
        params = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"radiomics settings {path}: {exc}") from exc
    if not isinstance(params, dict) or not {"setting", "imageType", "featureClass"} <= set(params):
        raise ValueError(f"radiomics settings {path}: needs the keys setting, imageType and featureClass")
    return params


def settings_digest(params: dict[str, Any]) -> str:
    """sha256 of the settings (canonical JSON): stored with a model, checked at load."""
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


def _extractor(params: dict[str, Any], shape: bool):
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    params = json.loads(json.dumps(params))
    classes = params["featureClass"]
    params["featureClass"] = {"shape": classes.get("shape")} if shape else {k: v for k, v in classes.items() if k != "shape"}
    if shape:
        params["imageType"] = {"Original": {}}
    return featureextractor.RadiomicsFeatureExtractor(params)


def _sitk(array: np.ndarray, spacing_zyx: tuple[float, float, float]):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(s) for s in spacing_zyx[::-1]))
    return image


#: A plan: pyradiomics passes, each (imageType mapping, featureClass mapping).
Plan = list[tuple[dict[str, Any], dict[str, Any]]]
_LOG_SIGMA = re.compile(r"^log-sigma-(\d+)-(\d+)-mm-3D$")


def _family(image_type: str) -> tuple[str, float | None]:
    """pyradiomics' image type family of a feature-name prefix, and the LoG sigma (mm) if any."""
    if image_type == "original":
        return "Original", None
    if image_type.startswith("wavelet-"):
        return "Wavelet", None
    found = _LOG_SIGMA.match(image_type)
    if found:
        return "LoG", float(f"{found.group(1)}.{found.group(2)}")
    raise ValueError(f"unknown pyradiomics image type {image_type!r}")


def plan_for(names: Iterable[str], params: dict[str, Any]) -> dict[tuple[str, str], Plan]:
    """(role, region) → the passes that compute the intensity and texture features among
    ``names`` (``<role>.<region>.<image type>_<class>_<feature>``; other names are ignored)."""
    wanted: dict[tuple[str, str], dict[str, dict[str, set[str]]]] = {}
    sigmas: dict[tuple[str, str], set[float]] = {}
    for name in names:
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[1] not in REGION_LABELS or parts[0] in ("shape", "location", "morphology", "deep"):
            continue
        role, region, key = parts
        image_type, cls, feature = key.split("_", 2)
        family, sigma = _family(image_type)
        wanted.setdefault((role, region), {}).setdefault(family, {}).setdefault(cls, set()).add(feature)
        if sigma is not None:
            sigmas.setdefault((role, region), set()).add(sigma)
    plans: dict[tuple[str, str], Plan] = {}
    for where, families in wanted.items():
        plan: Plan = []
        for family, classes in sorted(families.items()):
            options = dict(params["imageType"].get(family) or {})
            if family == "LoG":
                options["sigma"] = sorted(sigmas[where])
            plan.append(({family: options}, {cls: sorted(features) for cls, features in sorted(classes.items())}))
        plans[where] = plan
    return plans


def _region_task(image: np.ndarray | None, labels: np.ndarray, spacing: tuple[float, float, float],
                 params: dict[str, Any], prefix: str, regions: tuple[str, ...] = tuple(REGION_LABELS),
                 plan: Plan | None = None) -> dict[str, float]:
    """Features of the present sub-regions among ``regions``, for one image (or shape when
    ``image`` is None); with ``plan``, only the passes it names (see :func:`plan_for`)."""
    if image is None or plan is None:
        extractors = [_extractor(params, shape=image is None)]
    else:
        extractors = [_extractor({**params, "imageType": types, "featureClass": classes}, shape=False)
                      for types, classes in plan]
    min_voxels = int(params["setting"].get("minimumROISize", 1))
    out: dict[str, float] = {}
    sitk_image = _sitk((image if image is not None else (labels > 0)).astype(np.float32), spacing)
    for region in regions:
        mask = np.isin(labels, REGION_LABELS[region])
        if int(mask.sum()) < min_voxels:
            continue
        sitk_mask = _sitk(mask.astype(np.uint8), spacing)
        for extractor in extractors:
            result = extractor.execute(sitk_image, sitk_mask, label=1)
            for key, value in result.items():
                if key.startswith("diagnostics_"):
                    continue
                name = f"shape.{region}.{key.split('_', 2)[2]}" if image is None else f"{prefix}.{region}.{key}"
                out[name] = float(np.real(value))  # a few texture features come back complex (0j)
    return out


def _init_worker() -> None:
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    die_with_parent()  # a node worker stopped or killed must not leave its radiomics workers running


def _pool(workers: int) -> ProcessPoolExecutor:
    # Spawned (not forked) workers: the parent holds torch and ITK thread pools, which
    # are not fork-safe. The pool lives as long as the process, so only the first study
    # pays the start-up.
    if workers not in _pools:
        _pools[workers] = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                              initializer=_init_worker)
        atexit.register(_pools[workers].shutdown, cancel_futures=True)
    return _pools[workers]


def shutdown_workers() -> None:
    """Stop the worker processes (they start again at the next extraction)."""
    while _pools:
        _pools.popitem()[1].shutdown()


def default_workers() -> int:
    """Worker processes for one study: the CPUs this process may use, at most 4."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def crop_box(labels: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The bounding box of the tumour (labels > 0) grown by ``margin`` voxels, clipped to the array."""
    nz = np.nonzero(labels)
    if not nz[0].size:
        raise ValueError("no tumour voxels: radiomic features need a segmented tumour")
    return tuple(slice(max(0, int(a.min()) - margin), min(n, int(a.max()) + margin + 1))
                 for a, n in zip(nz, labels.shape))


def extract(images: dict[str, np.ndarray], labels: np.ndarray, spacing_zyx: tuple[float, float, float],
            params: dict[str, Any], workers: int = 1, only: Iterable[str] | None = None) -> dict[str, float]:
    """The radiomic features of one study (see the module doc for the names): all of them,
    or with ``only`` every shape feature and just the intensity and texture features named.

    ``images``: role → z-scored float32 ``[z, y, x]``; ``labels``: BraTS labels on the same
    grid; ``spacing_zyx`` in mm. ``workers`` > 1 runs the sequences in parallel processes.
    Returns name → value, sorted by name.
    """
    only = list(only) if only is not None else None
    plans = plan_for(only, params) if only is not None else None
    pad = int(params["setting"].get("padDistance", 5)) + 2
    box = crop_box(labels, pad)
    labels = np.ascontiguousarray(labels[box])
    crops = {role: np.ascontiguousarray(images[role][box], dtype=np.float32) for role in sorted(images)}
    parts = None
    if workers > 1:
        # One task per (sequence, sub-region) and per sub-region's shape, largest first, so
        # that two or four workers finish together.
        tasks: list[tuple[np.ndarray | None, str, tuple[str, ...]]] = [
            (crops[role], role, (region,)) for role in crops for region in REGION_LABELS
            if plans is None or (role, region) in plans]
        tasks += [(None, "shape", (region,)) for region in REGION_LABELS]
        size = {r: int(np.isin(labels, v).sum()) for r, v in REGION_LABELS.items()}
        tasks.sort(key=lambda t: -size[t[2][0]])
        try:
            pool = _pool(workers)
            futures = [pool.submit(_region_task, image, labels, spacing_zyx, params, prefix, regions,
                                   None if plans is None or image is None else plans[(prefix, regions[0])])
                       for image, prefix, regions in tasks]
            parts = [f.result() for f in futures]
        except (BrokenProcessPool, RuntimeError, OSError) as exc:
            # A worker died (memory) or could not start (a script without a main guard,
            # an embedding interpreter): drop the pool and do the work here instead.
            log.warning("radiomics workers unavailable (%s); extracting in this process", exc)
            _pools.pop(workers, None)
    if parts is None:
        parts = [_region_task(None, labels, spacing_zyx, params, "shape")]
        if plans is None:
            parts += [_region_task(crop, labels, spacing_zyx, params, role) for role, crop in crops.items()]
        else:
            parts += [_region_task(crops[role], labels, spacing_zyx, params, role, (region,), plan)
                      for (role, region), plan in plans.items() if role in crops]
    features: dict[str, float] = {}
    for part in parts:
        features.update(part)
    if only is not None:
        # A pass computes its classes' named features on every image of its family (all 8
        # wavelet sub-bands, say): keep what was asked for, and the shape.
        keep = set(only)
        features = {k: v for k, v in features.items() if k.startswith("shape.") or k in keep}
    return dict(sorted(features.items()))
