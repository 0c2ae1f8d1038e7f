"""`glioma-node synth`: write a synthetic glioma cohort with a known truth.

Layout of ``DIR``::

    dicom/<case>/<NN>_<description>/*.dcm   one study per case, as a scanner writes it
    nifti/<case>/{flair,t1,t1c,t2}.nii.gz   the same contrasts, 1 mm, co-registered, whole head
    nifti/<case>/seg.nii.gz                 BraTS labels (1 necrotic/non-enhancing core, 2 edema, 4 enhancing)
    nifti/<case>/brainmask.nii.gz           brain-extraction truth
    nifti/<case>/tissues.nii.gz             the generative tissue map (TISSUE_LABELS), for label-driven training
    labels.csv                              case, age, sex, IDH, MGMT, EGFR, survival_days, event
    series.csv                              every DICOM series with its true role
    truth/<case>.json                       the latent phenotype, volumes and series grids

IDH is 1 for mutant, MGMT 1 for methylated, EGFR 1 for amplified, event 1 for death
observed (0: censored). Everything follows from ``seed``: the same seed writes the same
files. A run that stops (killed, out of time) resumes where it stopped when started again
with the same ``--out`` and ``--seed``: rows are appended as cases finish.
See docs/synthetic-cohort.md for the generative model.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from glioma_node.dicom_io.mr_writer import SeriesInfo, StudyInfo, write_mr_series
from glioma_node.dicom_io.nifti import write_nifti
from glioma_node.dicom_io.uids import derived_uid
from glioma_node.training.synth.anatomy import Head, build_head, load_template, random_deformation, tissue_map
from glioma_node.training.synth.contrast import SEQUENCES, render, tumour_masks
from glioma_node.training.synth.scanner import (
    VENDOR_HEADER,
    VENDORS,
    Acquisition,
    acquire,
    plan_grid,
    plan_protocol,
    plane_axes,
    sample,
)
from glioma_node.training.synth.tumour import (
    ENHANCING,
    NECROTIC_CORE,
    Patient,
    choose_centre,
    grow_tumour,
    sample_patient,
    survival,
)

LABEL_COLUMNS = ["case", "age", "sex", "IDH", "MGMT", "EGFR", "survival_days", "event"]
SERIES_COLUMNS = ["case", "series_instance_uid", "series_number", "series_description", "vendor", "role",
                  "expected_selected", "mode", "plane", "enhanced", "transfer_syntax"]


@dataclass
class CaseResult:
    label_row: dict
    series_rows: list[dict]


def _to_voxel(affine: np.ndarray, point_lps: np.ndarray) -> np.ndarray:
    """(z, y, x) voxel coordinates of an LPS point."""
    return (np.linalg.inv(affine) @ np.append(point_lps, 1.0))[:3][::-1]


def _deformed_position(coords: np.ndarray, target_zyx: np.ndarray) -> np.ndarray:
    """The output voxel whose pull-back lands nearest ``target_zyx`` in template space."""
    sub = coords[:, ::2, ::2, ::2]
    d2 = sum((sub[a] - target_zyx[a]) ** 2 for a in range(3))
    return np.array(np.unravel_index(int(np.argmin(d2)), d2.shape), float) * 2


def draw_case(rng: np.random.Generator) -> tuple[Patient, Head, np.ndarray, np.ndarray]:
    """A patient, its deformed head, the tumour's centre (voxel z, y, x of the head's grid) and
    the BraTS labels of the tumour grown there; the random draws in a fixed order, so a seed
    gives the same case."""
    patient = sample_patient(rng)
    template = load_template()
    template_brain = (template.gm + template.wm + template.csf) >= 0.5
    centre_template = choose_centre(template.wm, template_brain, template.affine, patient, rng)
    deformation = random_deformation(template.gm.shape, rng, centre_template, patient.core_radius_mm,
                                     mass_strength=float(rng.uniform(0.15, 0.35)))
    head = build_head(template, deformation, rng)
    centre = _deformed_position(deformation.coords, centre_template)
    labels = grow_tumour(centre, head.maps["wm"], head.brain, head.maps["csf"], patient, rng)
    return patient, head, centre, labels


def write_images(folder: Path, images: dict[str, np.ndarray], affine: np.ndarray, rng: np.random.Generator) -> None:
    """The rendered sequences as NIfTI (``<role>.nii.gz``, int16, ×1000) with mild noise."""
    for seq, image in images.items():
        noisy = image + rng.normal(0, 0.01, image.shape).astype(np.float32)
        write_nifti(folder / f"{seq.lower()}.nii.gz", np.clip(noisy * 1000, 0, 32767).astype(np.int16), affine)


def synthesise_case(index: int, seed: int, out: Path, dicom: bool = True) -> CaseResult:
    """Generate, acquire and write case ``index`` of the cohort of ``seed``.

    With ``dicom=False`` only the NIfTI files, labels and truth are written (training
    needs no DICOM, and acquisition is most of the time a case takes).
    """
    rng = np.random.default_rng([seed, index])
    case = f"synth-{seed:04d}-{index:04d}"
    vendor = VENDORS[index % len(VENDORS)]
    patient, head, centre, labels = draw_case(rng)
    brain = head.brain
    core_ml = float(np.isin(labels, (NECROTIC_CORE, ENHANCING)).sum()) / 1000.0
    necrosis_fraction = float((labels == NECROTIC_CORE).sum()) / max(1.0, core_ml * 1000) if patient.necrotic else 0.0
    days, event = survival(patient, core_ml, necrosis_fraction, rng)

    soft = tumour_masks(labels, patient)
    images = {seq: render(head, soft, labels, patient, seq, rng) for seq in SEQUENCES}
    nifti_dir = out / "nifti" / case
    write_images(nifti_dir, images, head.affine, rng)
    write_nifti(nifti_dir / "seg.nii.gz", labels, head.affine)
    write_nifti(nifti_dir / "brainmask.nii.gz", brain.astype(np.uint8), head.affine)
    write_nifti(nifti_dir / "tissues.nii.gz", tissue_map(head), head.affine)

    study_date = f"{2015 + int(rng.integers(0, 10))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    birth_year = int(study_date[:4]) - int(patient.age)
    study = StudyInfo(
        study_instance_uid=derived_uid("synth", seed, index, "study"),
        frame_of_reference_uid=derived_uid("synth", seed, index, "frame-of-reference"),
        patient_name=f"SYNTH^{seed:04d}^{index:04d}",
        patient_id=case,
        patient_birth_date=f"{birth_year}{study_date[4:]}",
        patient_sex=patient.sex,
        patient_age=f"{int(patient.age):03d}Y",
        study_date=study_date,
        study_time="080000",
        accession_number=f"S{seed:04d}{index:06d}",
        institution_name="glioma-node synthetic cohort",
    )
    series_rows, plans = write_study_dicom(case, seed, index, vendor, study, images, head, rng, out, dicom)
    label_row = {"case": case, "age": patient.age, "sex": patient.sex, "IDH": int(patient.idh_mutant),
                 "MGMT": int(patient.mgmt_methylated), "EGFR": int(patient.egfr_amplified), "survival_days": days,
                 "event": int(event)}
    truth = {"case": case, "vendor": vendor, "patient": patient.to_dict(), "core_ml": core_ml,
             "necrosis_fraction": necrosis_fraction, "tumour_centre_voxel_zyx": centre.tolist(),
             "series": [{**row, "affine_lps": acq.affine.tolist(), "shape": list(acq.shape)}
                        for row, acq in zip(series_rows[1:], plans)]}
    (out / "truth").mkdir(parents=True, exist_ok=True)
    (out / "truth" / f"{case}.json").write_text(json.dumps(truth, indent=1))
    return CaseResult(label_row, series_rows)


def write_study_dicom(case: str, seed: int, index: int, vendor: str, study: StudyInfo, images: dict[str, np.ndarray],
                      head: Head, rng: np.random.Generator, out: Path, dicom: bool = True,
                      tag: object = None) -> tuple[list[dict], list[Acquisition]]:
    """Acquire ``images`` (on ``head``'s grid, placed by ``head.affine``) as a scanner of
    ``vendor`` does, into ``out/dicom/<case>/``: the localizer and the protocol's series.
    Returns the series rows and the acquisitions (none with ``dicom`` False). ``tag``
    tells the series UIDs of several studies of one case apart."""
    uid_parts: tuple = (seed, index) if tag is None else (seed, index, tag)
    header = VENDOR_HEADER[vendor]
    model = str(rng.choice(header["models"]))
    head_mask = np.argwhere(sum(head.maps.values()) > 0.5)[::50][:, ::-1]
    head_points = (head.affine[:3, :3] @ head_mask.T).T + head.affine[:3, 3]
    centre_lps = head_points.mean(axis=0) + rng.uniform(-5, 5, 3)
    compressed = bool(rng.random() < 0.3)
    plans = plan_protocol(vendor, rng, compressed) if dicom else []
    series_rows = [] if not dicom else [_write_localizer(case, uid_parts, vendor, study, header, model, images["T1"],
                                                         head.affine, centre_lps, out)]
    for number, acq in enumerate(plans, start=2):
        plan_grid(acq, centre_lps, head_points)
        pixels = acquire(images[acq.role], head.affine, acq, rng)
        series = SeriesInfo(
            series_instance_uid=derived_uid("synth", *uid_parts, "series", number),
            series_number=number,
            series_description=acq.description,
            series_time=f"08{number * 4:02d}00",
            manufacturer=str(header["manufacturer"]),
            model_name=model,
            software_versions=str(header["software"]),
            field_strength_t=1.5 if model in ("Avanto_fit", "Achieva dStream") else 3.0,
            slice_thickness_mm=acq.thickness_mm,
            enhanced=acq.enhanced,
            acquisition_contrast={"FLAIR": "FLUID_ATTENUATED", "T2": "T2"}.get(acq.role, "T1"),
            transfer_syntax=acq.transfer_syntax,
            attributes=acq.attributes,
        )
        write_mr_series(pixels, acq.affine, study, series, out / "dicom" / case / f"{number:02d}_{_folder_name(acq.description)}")
        series_rows.append(_series_row(case, series, vendor, acq))
    return series_rows, plans


def _folder_name(description: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in description)[:40]


def _series_row(case: str, series: SeriesInfo, vendor: str, acq: Acquisition | None) -> dict:
    return {"case": case, "series_instance_uid": series.series_instance_uid, "series_number": series.series_number,
            "series_description": series.series_description, "vendor": vendor,
            "role": acq.role if acq else "other", "expected_selected": int(acq is not None and not acq.extra),
            "mode": acq.mode if acq else "2D", "plane": acq.plane if acq else "3-plane",
            "enhanced": int(series.enhanced), "transfer_syntax": series.transfer_syntax}


def _write_localizer(case: str, uid_parts: tuple, vendor: str, study: StudyInfo, header: dict, model: str,
                     image: np.ndarray, image_affine: np.ndarray, centre_lps: np.ndarray, out: Path) -> dict:
    """A three-plane localizer (one axial, sagittal and coronal slice), as every exam starts."""
    series = SeriesInfo(
        series_instance_uid=derived_uid("synth", *uid_parts, "series", 1), series_number=1,
        series_description=header["localizer"], series_time="080100", manufacturer=header["manufacturer"],
        model_name=model, software_versions=header["software"], slice_thickness_mm=8.0,
        attributes={"ScanningSequence": ["GR"], "SequenceVariant": ["SP"], "RepetitionTime": 8.6, "EchoTime": 4.0,
                    "FlipAngle": 20, "MRAcquisitionType": "2D", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )
    folder = out / "dicom" / case / f"01_{_folder_name(header['localizer'])}"
    for k, plane in enumerate(("axial", "sagittal", "coronal")):
        row, col, normal = plane_axes(plane, 0.0)
        affine = np.eye(4)
        affine[:3, 0], affine[:3, 1], affine[:3, 2] = row * 1.2, col * 1.2, normal * 8.0
        affine[:3, 3] = centre_lps - affine[:3, :3] @ np.array([95.5, 95.5, 0.0])
        pixels = np.clip(sample(image, image_affine, affine, (1, 192, 192)) * 1500, 0, 4095).astype(np.uint16)
        write_mr_series(pixels, affine, study, series, folder, first_instance=k)
    return _series_row(case, series, vendor, None)


def _finished(out: Path, seed: int) -> set[str]:
    """Cases of ``seed`` already in ``labels.csv`` (a case's label row is written last);
    ``series.csv`` is cut back to their rows, dropping those of a case cut off half-way."""
    labels, series = out / "labels.csv", out / "series.csv"
    if not labels.exists():
        return set()
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    if rows and list(rows[0]) != LABEL_COLUMNS:
        raise ValueError(f"{labels} has columns {list(rows[0])}, not {LABEL_COLUMNS}: write this cohort to a new folder")
    prefix = f"synth-{seed:04d}-"
    done = {r["case"] for r in rows}
    if any(not c.startswith(prefix) for c in done):
        raise ValueError(f"{labels} holds cases of another seed: resume with that seed or write to a new folder")
    if series.exists():
        with open(series, newline="") as f:
            kept = [r for r in csv.DictReader(f) if r["case"] in done]
        with open(series, "w", newline="") as f:
            writer = csv.DictWriter(f, SERIES_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
    return done


def _append(path: Path, columns: list[str], rows: list[dict]) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, columns)
        if new:
            writer.writeheader()
        writer.writerows(rows)
        f.flush()
        os.fsync(f.fileno())


def write_cohort(out: Path, cases: int, seed: int = 0, progress: bool = True, dicom: bool = True) -> list[CaseResult]:
    """Write cases ``0 .. cases-1`` of ``seed`` under ``out`` (see the module doc for the
    layout) and return those written by this call; cases already in ``labels.csv`` are kept.

    ``dicom=False`` skips the DICOM studies (and series.csv rows): a training cohort.
    """
    if cases < 1:
        raise ValueError("--cases must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    done = _finished(out, seed)
    todo = [i for i in range(cases) if f"synth-{seed:04d}-{i:04d}" not in done]
    results = []
    # Series rows first, the label row last: a case is finished once its label row is on disk.
    for i in tqdm(todo, desc="synthesising", unit="case", disable=not progress):
        result = synthesise_case(i, seed, out, dicom)
        _append(out / "series.csv", SERIES_COLUMNS, result.series_rows)
        _append(out / "labels.csv", LABEL_COLUMNS, [result.label_row])
        results.append(result)
    return results
