"""`glioma-node synth --longitudinal`: synthetic patients followed over four studies, with the
true volumes and the RANO call each follow-up should get.

One patient, one head, four visits (one DICOM study each, the same PatientID):

* **t0 pre-operative**: the tumour as :mod:`glioma_node.training.synth.tumour` grows it;
* **t1 post-operative** (2 days later): the core resected into a resection cavity (CSF-like
  fluid), a 2 mm rim of post-operative FLAIR hyperintensity around it, and a residual
  solid nodule of tumour (radius 8–10 mm, measurable; enhancing when the tumour enhanced)
  on the cavity's wall with a little edema;
* **t2, t3 follow-ups** (12 and 24 weeks after t1): the residual scaled about its centre by
  the patient's course (:class:`Course`): growth (×1.45 in each direction, then ×2.1),
  shrinkage (×0.6, then gone), stable (×1.0, then ×1.03), or a new lesion (a nodule of
  radius 7–9 mm far from the first, then grown ×1.2), chosen by ``index % 4``.

The scale factors sit far from RANO's thresholds (×1.45 is +110 % in the sum of products
against +25 %; ×0.6 is −64 % against −50 %), so the expected call is the course's, not a
coin toss at a threshold; ``expected_call`` is checked against the rules on the true masks.
Radiotherapy ends 8 weeks after t1, so a progression at t2 (4 weeks after it) carries
possible pseudoprogression.

Every visit places the head differently in the scanner (a rigid motion of up to 8° and
15 mm) and plans its own slices. Layout of ``DIR`` (beside a cohort's)::

    nifti/<patient>-t<k>/{flair,t1,t1c,t2,seg,brainmask,cavity}.nii.gz
    dicom/<patient>-t<k>/...                one study per visit
    longitudinal.csv                        one row per visit (LONGITUDINAL_COLUMNS)
    truth/<patient>.json                    the patient, course, motions and per-visit truth

``cavity.nii.gz`` is the resection cavity (1) apart from the BraTS labels of ``seg.nii.gz``,
which never count it as tumour. Same seed, same files; a stopped run resumes by patient.
"""
from __future__ import annotations

import csv
import dataclasses
import datetime
import json
from enum import StrEnum
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from glioma_node.core.longitudinal import ResponseCategory, TimePointKind
from glioma_node.dicom_io.mr_writer import StudyInfo
from glioma_node.dicom_io.nifti import write_nifti
from glioma_node.dicom_io.uids import derived_uid
from glioma_node.training.synth.anatomy import Head, smooth_noise
from glioma_node.training.synth.cohort import VENDORS, _append, draw_case, write_images, write_study_dicom
from glioma_node.training.synth.contrast import SEQUENCES, render, tumour_masks
from glioma_node.training.synth.tumour import (
    EDEMA,
    ENHANCING,
    NECROTIC_CORE,
    Patient,
)


class Course(StrEnum):
    """What the residual tumour does after surgery."""

    GROWTH = "growth"
    SHRINKAGE = "shrinkage"
    STABLE = "stable"
    NEW_LESION = "new-lesion"


COURSES: tuple[Course, ...] = tuple(Course)
#: Residual scale at t2 and t3 per course (1: unchanged, 0: gone).
SCALES: dict[Course, tuple[float, float]] = {
    Course.GROWTH: (1.45, 2.1), Course.SHRINKAGE: (0.6, 0.0), Course.STABLE: (1.0, 1.03), Course.NEW_LESION: (1.0, 1.0),
}
#: The call each follow-up should get (t2, t3), against the post-operative baseline.
EXPECTED: dict[Course, tuple[ResponseCategory, ResponseCategory]] = {
    Course.GROWTH: (ResponseCategory.PROGRESSIVE_DISEASE, ResponseCategory.PROGRESSIVE_DISEASE),
    Course.SHRINKAGE: (ResponseCategory.PARTIAL_RESPONSE, ResponseCategory.COMPLETE_RESPONSE),
    Course.STABLE: (ResponseCategory.STABLE_DISEASE, ResponseCategory.STABLE_DISEASE),
    Course.NEW_LESION: (ResponseCategory.PROGRESSIVE_DISEASE, ResponseCategory.PROGRESSIVE_DISEASE),
}
VISIT_DAYS = (0, 2, 2 + 84, 2 + 168)
KINDS = (TimePointKind.BASELINE, TimePointKind.POST_OPERATIVE, TimePointKind.FOLLOW_UP, TimePointKind.FOLLOW_UP)
RADIOTHERAPY_END_DAY = 2 + 56
LONGITUDINAL_COLUMNS = ["patient", "visit", "case", "study_instance_uid", "study_date", "kind", "course",
                        "expected_call", "possible_pseudoprogression", "enhancing_ml", "necrotic_core_ml", "edema_ml",
                        "whole_tumour_ml", "cavity_ml", "radiotherapy_end"]


def _scaled(labels: np.ndarray, centre: np.ndarray, factor: float) -> np.ndarray:
    """``labels`` scaled by ``factor`` about ``centre`` (z, y, x voxels), nearest neighbour."""
    if factor <= 0:
        return np.zeros_like(labels)
    matrix = np.eye(3) / factor
    offset = centre - matrix @ centre
    return ndimage.affine_transform(labels, matrix, offset, order=0, mode="constant", cval=0)


def _motion(rng: np.random.Generator, centre_lps: np.ndarray) -> np.ndarray:
    """A rigid motion (4×4, LPS mm) of up to 8° about each axis and 15 mm, about ``centre_lps``."""
    ax, ay, az = np.deg2rad(rng.uniform(-8, 8, 3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    motion = np.eye(4)
    motion[:3, :3] = rz @ ry @ rx
    motion[:3, 3] = centre_lps - motion[:3, :3] @ centre_lps + rng.uniform(-15, 15, 3)
    return motion


def _far_centre(wm: np.ndarray, brain: np.ndarray, away_from: np.ndarray, radius: float,
                rng: np.random.Generator) -> np.ndarray:
    """A white-matter voxel at least 45 mm from ``away_from`` and ``radius`` + 4 mm inside the brain."""
    depth = ndimage.distance_transform_edt(brain)
    idx = np.argwhere((wm > 0.6) & (depth > radius + 4))
    far = idx[np.linalg.norm(idx - away_from, axis=1) > 45]
    pool = far if len(far) else idx
    return pool[rng.integers(len(pool))].astype(float)


def _nodule(centre: np.ndarray, radius_mm: float, edema_mm: float, enhancing: bool, wm: np.ndarray,
            brain: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A solid, mildly lobulated nodule (label 4 when ``enhancing``, else 1) of ``radius_mm``
    with edema around it (label 2, longer along white matter), inside the brain; 1 mm grid."""
    r0 = int(radius_mm * 1.2 + edema_mm * 1.6 + 6)
    lo = np.maximum(centre.astype(int) - r0, 0)
    hi = np.minimum(centre.astype(int) + r0 + 1, brain.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    sub = tuple(b - a for a, b in zip(lo, hi))
    lobes = 1.0 + 0.1 * np.clip(smooth_noise(sub, rng, 6.0, coarse=2), -2, 2)
    core = (dist < radius_mm * lobes) & brain[box]
    edema = (dist < radius_mm * lobes + edema_mm * (0.5 + 0.8 * wm[box])) & brain[box] & ~core
    labels = np.zeros(brain.shape, np.uint8)
    labels[box][edema] = EDEMA
    labels[box][core] = ENHANCING if enhancing else NECROTIC_CORE
    return labels


def _volumes(labels: np.ndarray, cavity: np.ndarray) -> dict[str, float]:
    ml = {"enhancing_ml": labels == ENHANCING, "necrotic_core_ml": labels == NECROTIC_CORE, "edema_ml": labels == EDEMA,
          "whole_tumour_ml": labels > 0, "cavity_ml": cavity}
    return {k: round(float(v.sum()) / 1000.0, 3) for k, v in ml.items()}


def visit_labels(index: int, seed: int) -> tuple[dict, list[tuple[np.ndarray, np.ndarray]], Head, np.random.Generator]:
    """The patient of ``index`` and the true (labels, cavity) of its four visits on the head's
    1 mm working grid; also the head and the generator, for rendering."""
    rng = np.random.default_rng([seed, index, 28])
    course = COURSES[index % len(COURSES)]
    patient, head, centre, pre = draw_case(rng)
    brain, wm = head.brain, head.maps["wm"]
    core = np.isin(pre, (NECROTIC_CORE, ENHANCING))
    # The residual nodule sits on the cavity's wall, on the side away from the brain's surface.
    edge = np.argwhere(core & ~ndimage.binary_erosion(core))
    depth = ndimage.distance_transform_edt(brain)
    deep = edge[np.argsort(-depth[tuple(edge.T)])[: max(1, len(edge) // 4)]]
    nodule_centre = deep[rng.integers(len(deep))].astype(float)
    residual_radius = float(rng.uniform(8, 10))
    residual = _nodule(nodule_centre, residual_radius, patient.edema_margin_mm * 0.5, patient.enhancing, wm, brain, rng)
    residual_core = np.isin(residual, (NECROTIC_CORE, ENHANCING))
    cavity = ndimage.binary_dilation(core, iterations=1) & brain & ~ndimage.binary_dilation(residual_core, iterations=1)
    # Post-operative FLAIR hyperintensity around the cavity; not drawn for a non-enhancing
    # tumour, whose response is read on the FLAIR component, where an automatic reading
    # cannot tell gliosis from tumour (docs/rano.md, limits).
    rim = (ndimage.binary_dilation(cavity, iterations=2) & ~cavity & brain) if patient.enhancing else np.zeros_like(cavity)
    new_lesion = None
    if course == Course.NEW_LESION:
        radius = float(rng.uniform(7, 9))
        far = _far_centre(wm, brain & ~ndimage.binary_dilation(core | cavity, iterations=10), centre, radius, rng)
        new_lesion = (_nodule(far, radius, patient.edema_margin_mm * 0.5, patient.enhancing, wm, brain, rng), far)
    visits = [(pre, np.zeros_like(cavity))]
    for k, factor in enumerate((1.0, *SCALES[course])):
        labels = _scaled(residual, nodule_centre, factor)
        if course == Course.NEW_LESION and k >= 1 and new_lesion is not None:
            extra = _scaled(new_lesion[0], new_lesion[1], 1.0 if k == 1 else 1.2)
            labels = np.where(labels > 0, labels, extra)
        labels = labels * brain
        labels[cavity & (labels == EDEMA)] = 0  # fluid, not edema, fills the cavity; tumour may grow into it
        hole = cavity & (labels == 0)
        post_change = rim & ~hole & (labels == 0)
        labels = np.where(post_change, EDEMA, labels).astype(np.uint8)  # FLAIR-bright post-operative change
        visits.append((labels, hole))
    truth = {"patient": patient.to_dict(), "course": str(course), "nodule_centre_voxel_zyx": nodule_centre.tolist(),
             "residual_radius_mm": residual_radius}
    return truth, visits, head, rng


def synthesise_patient(index: int, seed: int, out: Path, dicom: bool = True) -> list[dict]:
    """Write the four visits of patient ``index`` of ``seed``; returns their longitudinal.csv rows."""
    truth, visits, head, rng = visit_labels(index, seed)
    course = Course(truth["course"])
    patient = f"synth-long-{seed:04d}-{index:04d}"
    vendor = VENDORS[index % len(VENDORS)]
    first = datetime.date(2016 + int(rng.integers(0, 9)), int(rng.integers(1, 13)), int(rng.integers(1, 29)))
    radiotherapy_end = first + datetime.timedelta(days=RADIOTHERAPY_END_DAY)
    age = float(truth["patient"]["age"])
    head_points = np.argwhere(head.brain)[::200][:, ::-1]
    centre_lps = ((head.affine[:3, :3] @ head_points.T).T + head.affine[:3, 3]).mean(axis=0)
    rows, visit_truth = [], []
    for k, ((labels, cavity), kind, day) in enumerate(zip(visits, KINDS, VISIT_DAYS)):
        case = f"{patient}-t{k}"
        date = first + datetime.timedelta(days=day)
        motion = _motion(rng, centre_lps)
        maps = {name: np.where(cavity, 1.0 if name == "csf" else 0.0, m).astype(np.float32) for name, m in head.maps.items()}
        moved = Head(maps, motion @ head.affine)
        p = _visit_patient(truth["patient"], k)
        soft = tumour_masks(labels, p)
        images = {seq: render(moved, soft, labels, p, seq, rng) for seq in SEQUENCES}
        nifti_dir = out / "nifti" / case
        write_images(nifti_dir, images, moved.affine, rng)
        write_nifti(nifti_dir / "seg.nii.gz", labels, moved.affine)
        write_nifti(nifti_dir / "brainmask.nii.gz", moved.brain.astype(np.uint8), moved.affine)
        write_nifti(nifti_dir / "cavity.nii.gz", cavity.astype(np.uint8), moved.affine)
        study = StudyInfo(
            study_instance_uid=derived_uid("synth-long", seed, index, k, "study"),
            frame_of_reference_uid=derived_uid("synth-long", seed, index, k, "frame-of-reference"),
            patient_name=f"SYNTH^LONG^{seed:04d}^{index:04d}", patient_id=patient,
            patient_birth_date=f"{date.year - int(age)}0101", patient_sex=truth["patient"]["sex"],
            patient_age=f"{int(age + day / 365.25):03d}Y", study_date=date.strftime("%Y%m%d"), study_time="080000",
            accession_number=f"L{seed:04d}{index:05d}{k}", institution_name="glioma-node synthetic cohort")
        write_study_dicom(case, seed, index, vendor, study, images, moved, rng, out, dicom, tag=("long", k))
        expected = "" if k < 2 else str(EXPECTED[course][k - 2])
        pseudo = k == 2 and expected == ResponseCategory.PROGRESSIVE_DISEASE
        row = {"patient": patient, "visit": k, "case": case, "study_instance_uid": study.study_instance_uid,
               "study_date": date.isoformat(), "kind": str(kind), "course": str(course), "expected_call": expected,
               "possible_pseudoprogression": int(pseudo), **_volumes(labels, cavity),
               "radiotherapy_end": radiotherapy_end.isoformat()}
        rows.append(row)
        visit_truth.append({**row, "motion_lps": motion.tolist()})
    (out / "truth").mkdir(parents=True, exist_ok=True)
    (out / "truth" / f"{patient}.json").write_text(json.dumps({**truth, "visits": visit_truth}, indent=1))
    return rows


def _visit_patient(patient: dict, visit: int) -> Patient:
    """The phenotype a visit renders with: after surgery the tumour that is left is solid."""
    p = Patient(**patient)
    return p if visit == 0 else dataclasses.replace(p, necrotic=False, mismatch=False)


def write_longitudinal(out: Path, patients: int, seed: int = 0, progress: bool = True, dicom: bool = True) -> list[dict]:
    """Write patients ``0 .. patients-1`` of ``seed`` (four visits each) under ``out``; patients
    whose four rows are already in longitudinal.csv are kept. Returns the rows written."""
    if patients < 1:
        raise ValueError("--cases must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    table = out / "longitudinal.csv"
    done: set[str] = set()
    if table.exists():
        with open(table, newline="") as f:
            rows = list(csv.DictReader(f))
        counts: dict[str, int] = {}
        for r in rows:
            counts[r["patient"]] = counts.get(r["patient"], 0) + 1
        done = {p for p, n in counts.items() if n == len(KINDS)}
        with open(table, "w", newline="") as f:  # drop a patient cut off half-way
            writer = csv.DictWriter(f, LONGITUDINAL_COLUMNS)
            writer.writeheader()
            writer.writerows(r for r in rows if r["patient"] in done)
    written = []
    for i in tqdm(range(patients), desc="synthesising patients", unit="patient", disable=not progress):
        if f"synth-long-{seed:04d}-{i:04d}" in done:
            continue
        rows = synthesise_patient(i, seed, out, dicom)
        _append(table, LONGITUDINAL_COLUMNS, rows)
        written += rows
    return written
