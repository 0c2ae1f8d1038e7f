"""Real labelled cases for choosing a checkpoint: prepared once, scored at every validation.

Synthetic validation says whether the network learned the generator; only real scans say
whether it learned brains. Each real case folder (NIfTI images any name
:func:`glioma_node.dicom_io.nifti.find_role_files` knows, with skull or without, and a label
map) goes once through what inference does before the network: registration onto the
canonical 1 mm grid (:func:`glioma_node.inference.preprocess.prepare`), brain extraction
(deepbet), then :func:`glioma_node.inference.segmenters.native.network_input`. The result is
cached as ``<cache>/<case>.npz``, so a validation costs one network pass (two with the
mirror) per case.

The score is whole-tumour Dice at the network's spacing (2 mm), against the reference
pooled to that grid (a voxel is tumour when at least half of it is): a selection figure,
close to but not the same as ``make eval``'s Dice on the reference's own grid through the
whole product. Labels count as whole tumour (any non-zero label), the one region every
real dataset here has (the TCGA-LGG masks are FLAIR abnormality only).

Cases used to choose a checkpoint are not held out any more: a model card says which
were used (:func:`glioma_node.training.seg.train.train_segmentation` records them).
"""
from __future__ import annotations

import hashlib
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glioma_node.core.files import atomic_path
from glioma_node.core.grid import Grid, shape3
from glioma_node.core.roles import ROLES
from glioma_node.dicom_io.nifti import find_role_files, read_nifti, read_nifti_volume
from glioma_node.inference.regions import dice
from glioma_node.inference.resample import resample
from glioma_node.inference.segmenters.native import network_input, tumour_probabilities
from glioma_node.training.seg.dataset import label_file

PREPARATION = "v2"  # bump when what prepare_real_case computes changes: cached cases are then made again


@dataclass
class RealCase:
    """One prepared real case: ``x`` (4, z, y, x) network input, ``brain`` and ``reference``
    (whole tumour) boolean at the network's spacing, the sequences it has; ``name`` is
    unique among the cases loaded together, ``folder`` where it came from."""

    name: str
    x: np.ndarray
    brain: np.ndarray
    reference: np.ndarray
    sequences: tuple[str, ...]
    folder: Path | None = None


def find_real_cases(roots: list[Path]) -> list[Path]:
    """Case folders under ``roots`` (themselves included) with a label map and FLAIR or T2."""
    found: set[Path] = set()
    for root in roots:
        if not root.is_dir():
            raise FileNotFoundError(f"real validation folder not found: {root}")
        for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            try:
                roles = find_role_files(folder)
            except ValueError:  # NIfTI files, none of them an image of a role (a folder of labels)
                continue
            if label_file(folder) is not None and ({"FLAIR", "T2"} & set(roles)):
                found.add(folder)
    return sorted(found)


def default_cache() -> Path:
    """Where prepared real cases are kept unless ``--real-cache`` says: the user's cache
    folder, never the model directory (arrays made from a site's images must not travel
    with its weights)."""
    import os

    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "glioma-node" / "real-cases"


def _fingerprint(folder: Path, spacing_mm: float) -> str:
    """Changes when the folder, any of its NIfTI files (size, modification time) or the
    preparation changes."""
    h = hashlib.sha256(f"{PREPARATION} {spacing_mm} {folder.resolve()}".encode())
    for p in sorted(folder.rglob("*.nii*")):
        st = p.stat()
        h.update(f"{p.relative_to(folder)} {st.st_size} {st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def prepare_real_case(folder: Path, spacing_mm: float, extractor: object) -> RealCase:
    """One case folder through registration, brain extraction and the network's input."""
    from glioma_node.inference.preprocess import prepare

    files = find_role_files(folder)
    volumes = {role: read_nifti_volume(path, role) for role, path in files.items() if role in ROLES}
    prepared = prepare(volumes)
    brain = extractor.extract(prepared).mask  # type: ignore[attr-defined]
    x, low_brain, factor = network_input(prepared, brain, list(ROLES), spacing_mm)
    path = label_file(folder)
    assert path is not None
    labels, affine = read_nifti(path)
    label_grid = Grid(shape3(labels.shape), affine)
    # a label drawn on one of the series moves with that series' registration (FLAIR first: it defines WT)
    drawn_on = next((r for r in ("FLAIR", "T2", *ROLES) if r in prepared.source_grids
                     and prepared.source_grids[r].shape == label_grid.shape
                     and np.allclose(prepared.source_grids[r].affine, label_grid.affine, atol=1e-3)), None)
    on_grid = resample((labels > 0).astype(np.float32), label_grid, prepared.grid,
                       prepared.transforms[drawn_on] if drawn_on else None, interpolation="linear")
    pooled = F.avg_pool3d(torch.from_numpy(np.ascontiguousarray(on_grid))[None, None], factor)[0, 0].numpy()
    return RealCase(folder.name, x.astype(np.float32), low_brain, pooled >= 0.5, tuple(sorted(volumes)), folder)


def load_real_cases(roots: list[Path], cache: Path, spacing_mm: float = 2.0, progress: bool = False,
                    only_this_folder: bool = False) -> list[RealCase]:
    """Every real case under ``roots``, prepared once and cached in ``cache`` (see the module
    doc); with ``only_this_folder`` each root is one case folder."""
    from tqdm import tqdm

    from glioma_node.inference.brain_extraction import BrainExtractor

    cache.mkdir(parents=True, exist_ok=True)
    extractor = None
    cases = []
    folders = roots if only_this_folder else find_real_cases(roots)
    for folder in tqdm(folders, desc="real cases", disable=not progress):
        stored = cache / f"{folder.name}-{_fingerprint(folder, spacing_mm)}.npz"
        if stored.is_file():
            with np.load(stored) as z:
                cases.append(RealCase(folder.name, z["x"], z["brain"], z["reference"],
                                      tuple(str(s) for s in z["sequences"]), folder))
            continue
        extractor = extractor or BrainExtractor()
        case = prepare_real_case(folder, spacing_mm, extractor)
        with atomic_path(stored) as tmp:
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, x=case.x, brain=case.brain, reference=case.reference,
                                    sequences=np.array(case.sequences))
        cases.append(case)
    names = [c.name for c in cases]
    for case in cases:  # two folders of one name (under different roots) keep both, told apart
        if names.count(case.name) > 1 and case.folder is not None:
            case.name = f"{case.folder.parent.name}/{case.folder.name}"
    return cases


def score(net: torch.nn.Module, cases: list[RealCase], dev: torch.device) -> dict:
    """Whole-tumour Dice of ``net`` on every case (mirror averaged, threshold 0.5): per case,
    median, minimum and mean."""
    net.eval()
    per_case = {}
    for case in cases:
        prob = tumour_probabilities(net, case.x, case.brain, dev)
        per_case[case.name] = round(dice(prob[0] > 0.5, case.reference), 4)
    values = list(per_case.values())
    return {"cases": per_case, "median": round(statistics.median(values), 4) if values else 0.0,
            "min": round(min(values), 4) if values else 0.0,
            "mean": round(float(np.mean(values)), 4) if values else 0.0}
