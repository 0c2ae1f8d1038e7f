"""Small fabricated cases in the public dataset layouts, for the adapter and training tests.

Each case is a 48 mm cube at 1 mm: a brain ball with four contrasts and one tumour whose
phenotype follows its labels as in ``glioma-node synth`` (IDH-wildtype: larger, enhancing
rim around necrosis, wider edema; MGMT-methylated: narrower edema), so a working
pipeline must learn IDH from it.
"""
from __future__ import annotations

import csv
import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from glioma_node.dicom_io.nifti import write_nifti

N = 48
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])
# Intensity of (background brain, necrosis, edema, enhancing) per role.
CONTRAST = {"FLAIR": (0.5, 0.6, 1.0, 0.8), "T1": (0.7, 0.3, 0.5, 0.5), "T1c": (0.7, 0.3, 0.5, 1.2), "T2": (0.5, 1.1, 0.9, 0.7)}


def tiny_case(rng: np.random.Generator, idh: int, mgmt: int) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """(role → image, BraTS labels, brain mask) of one fabricated case, ``[z, y, x]``."""
    zz, yy, xx = np.mgrid[:N, :N, :N].astype(float)
    brain = (zz - 24) ** 2 + (yy - 24) ** 2 + (xx - 24) ** 2 < 21 ** 2
    centre = np.array([24, 24, 24]) + rng.integers(-4, 5, 3)
    r = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    core = rng.uniform(4, 5.5) if idh else rng.uniform(6, 8)
    margin = (rng.uniform(2, 3.5) if idh else rng.uniform(4, 6)) * (0.8 if mgmt else 1.0)
    labels = np.zeros((N, N, N), np.uint8)
    labels[(r < core + margin) & brain] = 2
    if idh:
        labels[r < core] = 1
    else:
        labels[r < core] = 4
        labels[r < core - 2.5] = 1
    images = {}
    for role, (base, nec, ede, enh) in CONTRAST.items():
        img = np.where(brain, base, 0.0)
        img = np.where(labels == 1, nec, np.where(labels == 2, ede, np.where(labels == 4, enh, img)))
        img = img * (1 + 0.08 * rng.standard_normal(img.shape)) * brain
        images[role] = (img * 1000).astype(np.float32)
    return images, labels, brain


def _phenotype(i: int) -> tuple[int, int, int, float, int]:
    rng = np.random.default_rng(1000 + i)
    idh = int(i % 3 == 0)
    mgmt = int(rng.random() < (0.8 if idh else 0.4))
    age = float(rng.normal(40 if idh else 62, 5))
    days = int(rng.exponential(1500 if idh else 400) * (0.4 if egfr_amplified(i) else 1.0)) + 30
    return idh, mgmt, int(rng.random() < 0.8), age, days


def egfr_amplified(i: int) -> int:
    """Case ``i``'s EGFR amplification (IDH-wildtype cases, one in two): invisible on the
    images, it cuts survival to 40 % (a known-status survival model can find it)."""
    return int(i % 3 != 0 and np.random.default_rng(5000 + i).random() < 0.5)


def _lower_name(folder: Path, role: str) -> Path:
    return folder / f"{role.lower()}.nii.gz"


def _named(folder: Path, prefix: str, names: dict[str, str] | None, role: str) -> Path:
    """``folder/<prefix><name>.nii.gz``, the name a layout gives the role (the role itself when ``names`` is None)."""
    return folder / f"{prefix}{names[role] if names else role}.nii.gz"


def _write_images(images: dict[str, np.ndarray], path_of: Callable[[str], Path]) -> None:
    for role, img in images.items():
        write_nifti(path_of(role), img, AFFINE)


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def write_synthetic(root: Path, cases: int) -> None:
    rows = []
    for i in range(cases):
        idh, mgmt, event, age, days = _phenotype(i)
        images, labels, brain = tiny_case(np.random.default_rng(i), idh, mgmt)
        folder = root / "nifti" / f"tiny-{i:03d}"
        _write_images(images, functools.partial(_lower_name, folder))
        write_nifti(folder / "seg.nii.gz", labels, AFFINE)
        write_nifti(folder / "brainmask.nii.gz", brain.astype(np.uint8), AFFINE)
        rows.append({"case": f"tiny-{i:03d}", "age": age, "sex": "F", "IDH": idh, "MGMT": mgmt,
                     "EGFR": egfr_amplified(i), "survival_days": days, "event": event})
    _write_csv(root / "labels.csv", rows)


def write_brats2021(root: Path, cases: int) -> None:
    names = {"FLAIR": "flair", "T1": "t1", "T1c": "t1ce", "T2": "t2"}
    with open(root / "train_labels.csv", "w") as f:
        f.write("BraTS21ID,MGMT_value\n")
        for i in range(cases):
            idh, mgmt, *_ = _phenotype(i)
            images, labels, _ = tiny_case(np.random.default_rng(i), idh, mgmt)
            folder = root / f"BraTS2021_{i:05d}"
            _write_images(images, functools.partial(_named, folder, f"BraTS2021_{i:05d}_", names))
            write_nifti(folder / f"BraTS2021_{i:05d}_seg.nii.gz", labels, AFFINE)
            if i != 1:  # case 1 is not in the RSNA labels
                f.write(f"{i},{mgmt}\n")


def write_rsna(root: Path, cases: int) -> None:
    from glioma_node.dicom_io.mr_writer import SeriesInfo, StudyInfo, write_mr_series
    from glioma_node.dicom_io.uids import derived_uid

    folders = {"FLAIR": "FLAIR", "T1": "T1w", "T1c": "T1wCE", "T2": "T2w"}
    with open(root / "train_labels.csv", "w") as f:
        f.write("BraTS21ID,MGMT_value\n")
        for i in range(cases):
            idh, mgmt, *_ = _phenotype(i)
            images, _, _ = tiny_case(np.random.default_rng(i), idh, mgmt)
            study = StudyInfo(derived_uid("rsna", i, "study"), derived_uid("rsna", i, "for"), f"RSNA^{i}", f"{i:05d}")
            for n, (role, img) in enumerate(images.items()):
                series = SeriesInfo(derived_uid("rsna", i, role), n + 1, folders[role])
                write_mr_series(img, AFFINE, study, series, root / "train" / f"{i:05d}" / folders[role])
            f.write(f"{i},{mgmt}\n")


def write_ucsf(root: Path, cases: int, first: int = 0) -> None:
    """Cases ``first`` .. ``first + cases - 1`` in the UCSF-PDGM layout (other cases than the
    synthetic tree's when ``first`` is past them: an external cohort)."""
    rows = []
    for i in range(first, first + cases):
        idh, mgmt, event, age, days = _phenotype(i)
        images, labels, _ = tiny_case(np.random.default_rng(i), idh, mgmt)
        folder = root / f"UCSF-PDGM-{i + 4:04d}_nifti"
        _write_images(images, functools.partial(_named, folder, f"UCSF-PDGM-{i + 4:04d}_", None))
        write_nifti(folder / f"UCSF-PDGM-{i + 4:04d}_FLAIR_bias.nii.gz", images["FLAIR"], AFFINE)
        write_nifti(folder / f"UCSF-PDGM-{i + 4:04d}_tumor_segmentation.nii.gz", labels, AFFINE)
        rows.append({"ID": f"UCSF-PDGM-{i + 4:03d}", "Sex": "M", "Age at MRI": round(age),
                     "WHO CNS Grade": 4, "MGMT status": ["negative", "positive"][mgmt] if i != first + 2 else "indeterminate",
                     "IDH": ["wildtype", "mutant (NOS)"][idh], "1-dead 0-alive": event, "OS": days})
    _write_csv(root / "UCSF-PDGM-metadata_v2.csv", rows)


def write_upenn(root: Path, cases: int) -> None:
    rows = []
    for i in range(cases):
        idh, mgmt, event, age, days = _phenotype(i)
        images, labels, _ = tiny_case(np.random.default_rng(i), idh, mgmt)
        case = f"UPENN-GBM-{i + 1:05d}_11"
        names = {"FLAIR": "FLAIR", "T1": "T1", "T1c": "T1GD", "T2": "T2"}
        _write_images(images, functools.partial(_named, root / "images_structural" / case, f"{case}_", names))
        write_nifti(root / "images_segm" / f"{case}_segm.nii.gz", labels, AFFINE)
        rows.append({"ID": case, "Gender": "F", "Age_at_scan_years": age,
                     "Survival_from_surgery_days_UPDATED": days if i != 3 else "Not Available",
                     "Survival_Status": ["Alive", "Deceased"][event],
                     "IDH1": ["Wildtype", "Mutated"][idh] if i != 0 else "NOS/NEC",
                     "MGMT": ["Unmethylated", "Methylated"][mgmt] if i != 1 else "Not Available"})
    _write_csv(root / "UPENN-GBM_clinical_info_v2.1.csv", rows)


TCGA_DESCRIPTIONS = {"FLAIR": "AX FLAIR", "T1": "AX T1 pre", "T1c": "AX T1 POST GD", "T2": "AX T2 FSE"}


def tcga_barcode(i: int) -> str:
    return f"TCGA-02-{i + 1:04d}"


def _write_tcia_study(root: Path, i: int, date: str, images: dict[str, np.ndarray]) -> None:
    """One study of patient ``i`` as NBIA Data Retriever lays it out: ``<date>-MRI BRAIN-NNNNN/<n>.000000-<desc>-NNNNN/``;
    the series are named only by their descriptions and physics (ROLE_SERIES of nifti2dicom)."""
    from glioma_node.dicom_io.mr_writer import SeriesInfo, StudyInfo, write_mr_series
    from glioma_node.dicom_io.nifti import ROLE_SERIES
    from glioma_node.dicom_io.uids import derived_uid

    barcode = tcga_barcode(i)
    study = StudyInfo(derived_uid("tcga", i, date), derived_uid("tcga", i, date, "for"), barcode, barcode, study_date=date)
    folder = root / "TCGA-GBM" / barcode / f"{date[4:6]}-{date[6:]}-{date[:4]}-MRI BRAIN-{i + 4000}"
    for n, (role, img) in enumerate(images.items()):
        spec = ROLE_SERIES[role]
        series = SeriesInfo(derived_uid("tcga", i, date, role), n + 2, TCGA_DESCRIPTIONS[role],
                            attributes={**spec["attributes"], "MRAcquisitionType": "2D"})
        write_mr_series(img, AFFINE, study, series, folder / f"{n + 2}.000000-{TCGA_DESCRIPTIONS[role]}-{n + 700}")


def write_tcga(root: Path, cases: int) -> None:
    """TCGA-GBM as researchers hold it: TCIA DICOM per patient, GDC's clinical.tsv (GDC's
    ``'--`` for empty, two treatment rows for one patient) and a marker table keyed by barcode.

    Patient 0 also has a later (post-operative) study, with other images; patient 1 has an
    earlier study with only a T2: the earliest complete study is the one to read."""
    clinical = ["case_id\tcase_submitter_id\tproject_id\tage_at_index\tvital_status\tdays_to_death\t"
                "days_to_last_follow_up\ttreatment_type"]
    markers = []
    for i in range(cases):
        idh, mgmt, event, age, days = _phenotype(i)
        images, _, _ = tiny_case(np.random.default_rng(i), idh, mgmt)
        _write_tcia_study(root, i, "19970608", images)
        if i == 0:
            _write_tcia_study(root, i, "19980101", {role: img * 2 for role, img in images.items()})
        if i == 1:
            _write_tcia_study(root, i, "19970101", {"T2": images["T2"]})
        death, follow = (str(days), "'--") if event else ("'--", str(days))
        for treatment in ("Radiation Therapy, NOS", "Pharmaceutical Therapy, NOS")[: 2 if i == 0 else 1]:
            clinical.append(f"uuid-{i}\t{tcga_barcode(i)}\tTCGA-GBM\t{round(age)}\t{['Alive', 'Dead'][event]}\t{death}\t"
                            f"{follow}\t{treatment}")
        markers.append({"Case": tcga_barcode(i), "IDH status": ["WT", "Mutant"][idh],
                        "MGMT promoter status": ["Unmethylated", "Methylated"][mgmt] if i != 2 else "NA",
                        "EGFR amplification": ["Not amplified", "Amplified"][egfr_amplified(i)]})
    (root / "clinical.tsv").write_text("\n".join(clinical) + "\n")
    _write_csv(root / "TableS1_pan-glioma.csv", markers)
