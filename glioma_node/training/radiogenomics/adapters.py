"""Dataset adapters: the layouts research groups download, read into one list of cases.

=============  ==============================================================================
layout         what is read
=============  ==============================================================================
synthetic      ``glioma-node synth`` cohorts (``labels.csv`` + ``nifti/<case>/``), one or several
brats2021      ``BraTS2021_NNNNN/BraTS2021_NNNNN_{flair,t1,t1ce,t2,seg}.nii.gz``; MGMT from an
               RSNA-MICCAI ``train_labels.csv`` (BraTS21ID, MGMT_value) in the folder, if any
rsna-miccai    ``train/NNNNN/{FLAIR,T1w,T1wCE,T2w}/*.dcm`` + ``train_labels.csv`` (no masks:
               the segmentation model draws them)
ucsf-pdgm      ``UCSF-PDGM-NNNN_nifti/UCSF-PDGM-NNNN_{FLAIR,T1,T1c,T2,tumor_segmentation}.nii.gz``
               + ``UCSF-PDGM-metadata*.csv`` (ID, Age at MRI, IDH, MGMT status, OS, 1-dead 0-alive)
upenn-gbm      ``images_structural/<ID>/<ID>_{FLAIR,T1,T1GD,T2}.nii.gz``, masks in
               ``images_segm/<ID>_segm.nii.gz`` (or ``automated_segm/``) + ``UPENN-GBM_clinical_info*.csv``
               (ID, Age_at_scan_years, IDH1, MGMT, Survival_from_surgery_days[_UPDATED], Survival_Status)
tcga           TCGA-GBM / TCGA-LGG as TCIA's NBIA Data Retriever writes them, one folder per patient
               (``TCGA-XX-XXXX/<study>/<series>/*.dcm``; no masks: the segmentation model draws
               them) + GDC's ``clinical.tsv`` (case_submitter_id, vital_status, days_to_death,
               days_to_last_follow_up, age_at_index; with or without the ``cases.``/``demographic.``
               prefixes of newer GDC releases) + any other table in the folder keyed by the
               TCGA barcode with IDH, MGMT or EGFR columns (the TCGA marker papers' supplements,
               cBioPortal's patient table)
=============  ==============================================================================

Labels the source leaves empty or "indeterminate" are None: that case is left out of that
target only. Column names are matched case-insensitively, so a renamed metadata release
with the same words still reads.
"""
from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from glioma_node.core.clinical import egfr_status, idh_status, mgmt_status
from glioma_node.core.targets import CHEMO_BENEFIT_DAYS, Target, chemo_benefit_label
from glioma_node.dicom_io.nifti import find_role_files

LAYOUTS = ("synthetic", "brats2021", "rsna-miccai", "ucsf-pdgm", "upenn-gbm", "tcga")


@dataclass
class LabelledCase:
    """One training case: where its images are and what is known about the patient.

    ``images``: role → NIfTI file (None for DICOM layouts, see ``dicom_dir``); ``seg``: a
    BraTS-label NIfTI or None (then the segmentation model draws the mask); ``brain``: a
    brain-mask NIfTI when the images are not skull-stripped. ``mgmt``/``idh``/``egfr``
    (amplified): 1, 0 or None; ``survival_days`` with ``event`` (1 death, 0 censored) or None.
    """

    name: str
    images: dict[str, Path] | None
    seg: Path | None
    brain: Path | None = None
    dicom_dir: Path | None = None
    age_years: float | None = None
    mgmt: int | None = None
    idh: int | None = None
    survival_days: float | None = None
    event: int | None = None
    egfr: int | None = None

    def label(self, target: str) -> int | None:
        """1, 0 or None (unknown) for a :class:`~glioma_node.core.targets.Target`."""
        if target == Target.CHEMO_BENEFIT:
            return chemo_benefit_label(self.survival_days, self.event)
        return {Target.MGMT: self.mgmt, Target.IDH: self.idh}[Target(target)]


def label_array(cases: list[LabelledCase], target: str) -> np.ndarray:
    """Each case's label for ``target`` (1.0, 0.0, NaN unknown), in case order."""
    values = [c.label(target) for c in cases]
    return np.array([np.nan if v is None else float(v) for v in values])


def censored_before_endpoint(cases: list[LabelledCase]) -> int:
    """Cases followed up alive for less than the chemotherapy-benefit endpoint: no label, counted."""
    return sum(1 for c in cases if c.survival_days is not None and c.event == 0 and c.survival_days < CHEMO_BENEFIT_DAYS)


def _read_csv(path: Path) -> list[dict[str, str]]:
    """Rows with lower-case column names; tab-separated when the name ends in .tsv or .txt."""
    delimiter = "\t" if path.suffix.lower() in (".tsv", ".txt") else ","
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [{(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
                for row in csv.DictReader(f, delimiter=delimiter)]


def _col(row: dict[str, str], *names: str) -> str:
    for name in names:
        if row.get(name.lower(), "") != "":
            return row[name.lower()]
    return ""


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value else None


def synthetic(root: Path) -> list[LabelledCase]:
    cases = []
    for labels in sorted(root.rglob("labels.csv")):
        for row in _read_csv(labels):
            folder = labels.parent / "nifti" / row["case"]
            if not folder.is_dir():
                continue
            cases.append(LabelledCase(
                row["case"], find_role_files(folder), folder / "seg.nii.gz", folder / "brainmask.nii.gz",
                age_years=_float(row["age"]), mgmt=int(row["mgmt"]), idh=int(row["idh"]),
                survival_days=_float(row["survival_days"]), event=int(row["event"]),
                egfr=egfr_status(row.get("egfr", ""))))
    return cases


def _rsna_labels(root: Path) -> dict[int, int | None]:
    found = sorted(root.rglob("train_labels.csv"))
    if not found:
        return {}
    return {int(r["brats21id"]): mgmt_status(r["mgmt_value"]) for r in _read_csv(found[0]) if r.get("brats21id", "").isdigit()}


def brats2021(root: Path) -> list[LabelledCase]:
    mgmt = _rsna_labels(root)
    cases = []
    for folder in sorted(p for p in root.rglob("BraTS2021_*") if p.is_dir()):
        number = int(folder.name.rsplit("_", 1)[-1]) if folder.name.rsplit("_", 1)[-1].isdigit() else -1
        seg = next(iter(sorted(folder.glob("*_seg.nii*"))), None)
        cases.append(LabelledCase(folder.name, find_role_files(folder), seg, mgmt=mgmt.get(number)))
    return cases


def rsna_miccai(root: Path) -> list[LabelledCase]:
    mgmt = _rsna_labels(root)
    train = root / "train" if (root / "train").is_dir() else root
    cases = []
    for folder in sorted(p for p in train.iterdir() if p.is_dir() and p.name.isdigit()):
        cases.append(LabelledCase(folder.name, None, None, dicom_dir=folder, mgmt=mgmt.get(int(folder.name))))
    return cases


def ucsf_pdgm(root: Path) -> list[LabelledCase]:
    tables = sorted(root.rglob("UCSF-PDGM-metadata*.csv"))
    if not tables:
        raise FileNotFoundError(f"{root}: no UCSF-PDGM-metadata*.csv")
    # The metadata writes UCSF-PDGM-004 where the folders say UCSF-PDGM-0004: match the number.
    rows = {int(re.sub(r"\D", "", r["id"])): r for r in _read_csv(tables[0]) if re.search(r"\d", r.get("id", ""))}
    cases = []
    for folder in sorted(p for p in root.rglob("UCSF-PDGM-*") if p.is_dir()):
        found = re.search(r"(\d+)", folder.name)
        if found is None:
            continue
        number = int(found.group(1))
        row = rows.get(number, {})
        seg = next(iter(sorted(folder.glob("*tumor_segmentation*.nii*"))), None)
        images = {r: p for r, p in find_role_files(folder).items()}
        cases.append(LabelledCase(
            folder.name.removesuffix("_nifti"), images, seg,
            age_years=_float(_col(row, "age at mri", "age")), mgmt=mgmt_status(_col(row, "mgmt status", "mgmt")),
            idh=idh_status(_col(row, "idh")), survival_days=_float(_col(row, "os")),
            event=(lambda e: None if e is None else int(e))(_float(_col(row, "1-dead 0-alive")))))
    return cases


def _upenn_event(row: dict[str, str]) -> int | None:
    status = _col(row, "survival_status").lower()
    if status:
        return 1 if status.startswith(("dead", "deceased", "1")) else 0 if status.startswith(("alive", "0")) else None
    censor = _float(_col(row, "survival_censor"))
    return None if censor is None else int(censor)


def upenn_gbm(root: Path) -> list[LabelledCase]:
    tables = sorted(root.rglob("UPENN-GBM_clinical_info*.csv"))
    if not tables:
        raise FileNotFoundError(f"{root}: no UPENN-GBM_clinical_info*.csv")
    rows = {r["id"]: r for r in _read_csv(tables[0]) if r.get("id")}
    masks = {p.name.split("_segm")[0].split("_automated")[0]: p
             for folder in ("images_segm", "automated_segm") for p in sorted(root.rglob(f"{folder}/*.nii*"))}
    cases = []
    for folder in sorted(p for p in root.rglob("images_structural/*") if p.is_dir()):
        row = rows.get(folder.name, {})
        files = find_role_files(folder)
        cases.append(LabelledCase(
            folder.name, files, masks.get(folder.name),
            age_years=_float(_col(row, "age_at_scan_years")), mgmt=mgmt_status(_col(row, "mgmt")),
            idh=idh_status(_col(row, "idh1")),
            survival_days=_float(_col(row, "survival_from_surgery_days_updated", "survival_from_surgery_days")),
            event=_upenn_event(row)))
    return cases


TCGA_BARCODE = re.compile(r"TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}", re.I)
"""A TCGA patient barcode; sample and aliquot barcodes begin with it."""
_GDC_EMPTY = ("'--", "--", "not reported", "unknown", "na", "n/a")
_TCGA_ID_COLUMNS = ("case_submitter_id", "submitter_id", "case", "patient", "patient_id", "bcr_patient_barcode",
                    "sample", "sample_id", "tumor_sample_barcode")
_MARKER_COLUMNS = {
    "idh": ("idh status", "idh_status", "idh", "idh1", "idh1_mutation", "idh mutation", "idh_mutation"),
    "mgmt": ("mgmt promoter status", "mgmt_promoter_status", "mgmt status", "mgmt_status", "mgmt"),
    "egfr": ("egfr amplification", "egfr_amplification", "egfr amplification status", "egfr status", "egfr_status",
             "egfr_cna", "egfr"),
}


def _gdc_rows(path: Path) -> list[dict[str, str]]:
    """A GDC table with GDC's empty words made empty and the dotted prefixes of newer
    releases (``demographic.vital_status``) dropped."""
    rows = []
    for row in _read_csv(path):
        rows.append({k.rsplit(".", 1)[-1]: ("" if v.lower() in _GDC_EMPTY else v) for k, v in row.items()})
    return rows


def _barcode(row: dict[str, str]) -> str | None:
    for column in _TCGA_ID_COLUMNS:
        found = TCGA_BARCODE.match(row.get(column, ""))
        if found:
            return found.group(0).upper()
    return None


def _tcga_survival(rows: list[dict[str, str]]) -> tuple[float | None, int | None, float | None]:
    """(overall survival days, event, age years) of one patient from its GDC clinical rows
    (one per diagnosis or treatment): the death if any row reports one, else the longest follow-up."""
    deaths = [d for r in rows if (d := _float(_col(r, "days_to_death"))) is not None]
    dead = any(_col(r, "vital_status").lower() in ("dead", "deceased") for r in rows)
    follow = [d for r in rows if (d := _float(_col(r, "days_to_last_follow_up", "days_to_last_followup"))) is not None]
    ages = [a for r in rows if (a := _float(_col(r, "age_at_index"))) is not None]
    if not ages:
        ages = [a / 365.25 for r in rows if (a := _float(_col(r, "age_at_diagnosis"))) is not None]
    age = ages[0] if ages else None
    if dead and deaths:
        return max(deaths), 1, age
    if follow and not dead:
        return max(follow), 0, age
    return None, None, age


def _tcga_tables(root: Path) -> tuple[dict[str, list[dict[str, str]]], dict[str, dict[str, int | None]]]:
    """(barcode → GDC clinical rows, barcode → marker → status) from every table under ``root``."""
    clinical: dict[str, list[dict[str, str]]] = {}
    markers: dict[str, dict[str, int | None]] = {}
    parsers = {"idh": idh_status, "mgmt": mgmt_status, "egfr": egfr_status}
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in (".tsv", ".csv", ".txt") and p.is_file()):
        try:
            rows = _gdc_rows(path)
        except (UnicodeDecodeError, csv.Error):
            continue
        for row in rows:
            barcode = _barcode(row)
            if barcode is None:
                continue
            if path.name.lower() == "clinical.tsv":
                clinical.setdefault(barcode, []).append(row)
            for marker, columns in _MARKER_COLUMNS.items():
                status = parsers[marker](_col(row, *columns))
                if status is not None:
                    markers.setdefault(barcode, {})[marker] = status
    return clinical, markers


def tcga(root: Path) -> list[LabelledCase]:
    clinical, markers = _tcga_tables(root)
    if not clinical:
        raise FileNotFoundError(f"{root}: no GDC clinical.tsv with TCGA case barcodes")
    cases = []
    for folder in sorted(p for p in root.rglob("TCGA-*") if p.is_dir() and TCGA_BARCODE.fullmatch(p.name)):
        barcode = folder.name.upper()
        days, event, age = _tcga_survival(clinical.get(barcode, []))
        known = markers.get(barcode, {})
        cases.append(LabelledCase(barcode, None, None, dicom_dir=folder, age_years=age, mgmt=known.get("mgmt"),
                                  idh=known.get("idh"), egfr=known.get("egfr"), survival_days=days, event=event))
    return cases


def detect_layout(root: Path) -> str:
    """The layout of ``root`` (see the module doc), from the files that name it."""
    if not root.is_dir():
        raise FileNotFoundError(f"training data folder not found: {root}")
    if next(root.rglob("UCSF-PDGM-metadata*.csv"), None):
        return "ucsf-pdgm"
    if next(root.rglob("UPENN-GBM_clinical_info*.csv"), None):
        return "upenn-gbm"
    if next(root.rglob("clinical.tsv"), None) and any(TCGA_BARCODE.fullmatch(p.name) for p in root.rglob("TCGA-*")):
        return "tcga"
    if next(root.rglob("BraTS2021_*"), None):
        return "brats2021"
    if next(root.rglob("train_labels.csv"), None):
        return "rsna-miccai"
    if next(root.rglob("labels.csv"), None):
        return "synthetic"
    raise ValueError(f"{root}: not a known layout ({', '.join(LAYOUTS)}); see docs/radiogenomics.md")


def load_cases(root: Path, layout: str = "auto") -> list[LabelledCase]:
    """Every case under ``root`` in ``layout`` (``auto``: :func:`detect_layout`)."""
    layout = detect_layout(root) if layout == "auto" else layout
    reader = {"synthetic": synthetic, "brats2021": brats2021, "rsna-miccai": rsna_miccai,
              "ucsf-pdgm": ucsf_pdgm, "upenn-gbm": upenn_gbm, "tcga": tcga, "tcga-gbm": tcga, "tcga-lgg": tcga}.get(layout)
    if reader is None:
        raise ValueError(f"unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    cases = reader(root)
    if not cases:
        raise ValueError(f"{root}: no cases found in the {layout} layout")
    return cases
