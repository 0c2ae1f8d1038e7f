"""`glioma-node evaluate repeatability`: one real case sent twice, as two studies of one patient.

The second study is the first re-acquired: every sequence re-sliced on a grid moved by a
rigid motion (up to ``MAX_ROTATION_DEG`` about each axis and ``MAX_SHIFT_MM``, the slices
placed a random fraction of a voxel elsewhere) with new Rician noise (2 % of the brain's
90th percentile). Nothing in the tumour changed, so the right call is stable disease and
every volume change is the node's own repeatability: segmentation, brain extraction and
registration together, as AutoRANO measured it on scan-rescan pairs (Chang et al., Neuro
Oncol 2019). Each repeat draws a new motion and noise; the report gives each repeat's
changes and their mean and spread, against the goals |whole-tumour change| ≤ 5 % and
|enhancing change| ≤ 10 %.
"""
from __future__ import annotations

import datetime
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from glioma_node.core.files import write_text_atomic
from glioma_node.core.grid import Grid
from glioma_node.core.longitudinal import TimePointKind
from glioma_node.core.volume import Volume
from glioma_node.dicom_io.nifti import find_role_files, read_nifti_volume
from glioma_node.dicom_io.uids import derived_uid
from glioma_node.inference.analyze import Models
from glioma_node.inference.longitudinal.follow_up import TimePointImages, follow_up
from glioma_node.inference.resample import resample
from glioma_node.inference.segmentation import Segmentation, segment

MAX_ROTATION_DEG = 8.0
MAX_SHIFT_MM = 15.0
NOISE = 0.02
GOALS = {"whole_tumour": 0.05, "enhancing": 0.10}


def motion(rng: np.random.Generator, centre_lps: np.ndarray) -> np.ndarray:
    """A rigid motion (4×4, LPS mm) about ``centre_lps`` within the module's limits."""
    angles = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3))
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(*[float(a) for a in angles])
    matrix = np.asarray(rotation.GetMatrix()).reshape(3, 3)
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = centre_lps - matrix @ centre_lps + rng.uniform(-MAX_SHIFT_MM, MAX_SHIFT_MM, 3)
    return out


def reacquire(volumes: dict[str, Volume], rng: np.random.Generator) -> dict[str, Volume]:
    """The same head moved by one rigid motion, re-sliced (slices shifted by a random fraction of
    a voxel) with new Rician noise; each role keeps its voxel size and matrix."""
    first = next(iter(volumes.values()))
    grid = Grid(first.shape, first.affine)
    centre = grid.corners().mean(axis=0)
    moved = motion(rng, centre)
    pull = sitk.AffineTransform(3)  # a point of the new scan -> where that tissue was in the first
    inverse = np.linalg.inv(moved)
    pull.SetMatrix([float(v) for v in inverse[:3, :3].ravel()])
    pull.SetTranslation([float(v) for v in inverse[:3, 3]])
    offset = rng.uniform(0, 1, 3)
    out = {}
    for role, volume in volumes.items():
        source = Grid(volume.shape, volume.affine)
        affine = volume.affine.copy()
        affine[:3, 3] = volume.affine[:3, 3] + volume.affine[:3, :3] @ offset
        target = Grid(volume.shape, affine)
        voxels = resample(volume.voxels, source, target, pull, "linear")
        reference = float(np.percentile(volume.voxels[volume.voxels > 0], 90)) if np.any(volume.voxels > 0) else 1.0
        sigma = NOISE * reference
        noisy = np.sqrt((voxels + rng.normal(0, sigma, voxels.shape)) ** 2 + rng.normal(0, sigma, voxels.shape) ** 2)
        noisy[voxels <= 0] = 0  # outside the field of view stays empty
        out[role] = Volume(voxels=noisy.astype(np.float32), affine=affine,
                           sop_instance_uids=[derived_uid("reacquired", u) for u in volume.sop_instance_uids],
                           metadata=volume.metadata)
    return out


def _time_point(seg: Segmentation, study_uid: str, date: datetime.date, kind: TimePointKind) -> TimePointImages:
    role = seg.prepared.reference_role
    grid = seg.prepared.source_grids[role]
    # The acquisition's spacing along the patient's z (its slices need not be axial).
    axis = int(np.argmax(np.abs(grid.direction[2])))
    thickness = float(grid.spacing[axis])
    return TimePointImages(study_uid, date, kind, seg.grid, seg.prepared.channels[role], seg.brain, seg.labels,
                           thickness)


def evaluate_repeatability(case: Path, models: Models, out: Path, repeats: int = 3, seed: int = 0) -> dict:
    """Run the evaluation of the module doc on the case folder ``case`` (four NIfTI sequences)
    with the node's segmenter and brain extractor (``models``), and write ``repeatability.json``
    and ``repeatability.md`` under ``out``."""

    def segmented(volumes: dict[str, Volume]) -> Segmentation:
        return segment(volumes, models.segmenter, models.brain_extractor, min_component_ml=models.min_component_ml,
                       quality_threshold=models.quality_threshold)

    if repeats < 1:
        raise ValueError("--repeats must be at least 1")
    files = find_role_files(case)
    volumes = {role: read_nifti_volume(path, f"{case.name} {role}") for role, path in files.items()}
    t0 = time.perf_counter()
    first = segmented(volumes)
    seconds = [time.perf_counter() - t0]
    day = datetime.date(2026, 1, 1)
    prior = _time_point(first, derived_uid("repeatability", case.name, "first"), day, TimePointKind.BASELINE)
    rows: list[dict[str, Any]] = []
    for k in range(repeats):
        rng = np.random.default_rng([seed, k])
        t0 = time.perf_counter()
        again = segmented(reacquire(volumes, rng))
        seconds.append(time.perf_counter() - t0)
        current = _time_point(again, derived_uid("repeatability", case.name, seed, k), day + datetime.timedelta(days=7),
                              TimePointKind.FOLLOW_UP)
        t0 = time.perf_counter()
        result = follow_up(current, [prior], lambda study, lesion: derived_uid("repeatability", study, lesion.label))
        compare_s = time.perf_counter() - t0
        change = {region: result.volume_change[region] for region in ("whole_tumour", "enhancing", "necrotic_core",
                                                                       "edema")}
        rows.append({"repeat": k, "call": str(result.response.category), "component": str(result.component),
                     "reasons": list(result.response.reasons), "warnings": list(result.warnings),
                     "alignment": result.alignment, "compare_s": round(compare_s, 2),
                     "volume_ml": {r: result.current.volumes_ml[r] for r in change},
                     "first_volume_ml": {r: result.latest.volumes_ml[r] for r in change},
                     "change_ml": {r: c[0] for r, c in change.items()},
                     "change_fraction": {r: c[1] for r, c in change.items()},
                     "sum_of_products_change": result.response.change_sum_of_products})
    summary = {}
    for region, goal in GOALS.items():
        values = np.array([r["change_fraction"][region] for r in rows if r["change_fraction"][region] is not None])
        summary[region] = {"mean": round(float(values.mean()), 4) if len(values) else None,
                           "sd": round(float(values.std(ddof=1)), 4) if len(values) > 1 else None,
                           "max_abs": round(float(np.abs(values).max()), 4) if len(values) else None,
                           "goal_abs": goal, "met": bool(len(values) and np.abs(values).max() <= goal)}
    stable = sum(r["call"] == "stable disease" for r in rows)
    report = {"case": case.name, "repeats": repeats, "seed": seed, "stable_calls": stable, "summary": summary,
              "rows": rows, "segment_s": [round(s, 1) for s in seconds],
              "method": {"max_rotation_deg": MAX_ROTATION_DEG, "max_shift_mm": MAX_SHIFT_MM, "noise": NOISE},
              "segmenter": models.segmenter.describe()}
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "repeatability.json", json.dumps(report, indent=1))
    lines = [f"# Repeatability of the follow-up comparison: {case.name}", "",
             f"{repeats} re-acquisitions (rigid motion up to {MAX_ROTATION_DEG:g}° and {MAX_SHIFT_MM:g} mm, slices "
             f"re-placed, {NOISE:.0%} Rician noise), each compared with the first study. Stable calls: "
             f"{stable} of {repeats}.", "",
             "| repeat | call | whole tumour (ml, %) | enhancing (ml, %) | sum of products | brain Dice |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        def cell(region: str, row: dict = r) -> str:
            f = row["change_fraction"][region]
            return f"{row['change_ml'][region]:+.2f}, {'n/a' if f is None else f'{f:+.1%}'}"
        spd = r["sum_of_products_change"]
        lines.append(f"| {r['repeat']} | {r['call']} | {cell('whole_tumour')} | {cell('enhancing')} | "
                     f"{'n/a' if spd is None else f'{spd:+.1%}'} | {r['alignment'].get('brain_dice', float('nan')):.3f} |")
    lines += ["", "| region | mean change | SD | max abs | goal | met |", "| --- | --- | --- | --- | --- | --- |"]
    for region, s in summary.items():
        lines.append(f"| {region} | {s['mean']} | {s['sd']} | {s['max_abs']} | ≤ {s['goal_abs']:.0%} | "
                     f"{'yes' if s['met'] else 'no'} |")
    write_text_atomic(out / "repeatability.md", "\n".join(lines) + "\n")
    return report
