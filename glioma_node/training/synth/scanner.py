"""How Siemens-, GE- and Philips-style scanners acquire and label the four sequences.

A protocol picks, per role, one of the vendor's usual sequences: its description
(as those scanners write it), its physics (TR/TE/TI in ms, ScanningSequence, flip
angle), 2D or 3D, plane, resolution and slice thickness, and whether it is stored as
Enhanced MR (Philips 3D) or compressed (JPEG 2000 Lossless, as PACS exports often are).
:func:`acquire` then samples the case's 1 mm image onto that grid with a boxcar slice
profile and Rician noise.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless
from scipy import ndimage

VENDORS = ("siemens", "ge", "philips")

# Per vendor and role: (description, mode, plane, physics). Physics keys are DICOM keywords.
_SE = {"ScanningSequence": ["SE"], "SequenceVariant": ["SK", "SP"]}
_IR = {"ScanningSequence": ["SE", "IR"], "SequenceVariant": ["SK", "SP", "MP"]}
_GRIR = {"ScanningSequence": ["GR", "IR"], "SequenceVariant": ["SK", "SP", "MP"]}
_GR = {"ScanningSequence": ["GR"], "SequenceVariant": ["SK", "SS"]}

PROTOCOLS: dict[str, dict[str, list[tuple[str, str, str, dict[str, Any]]]]] = {
    "siemens": {
        "FLAIR": [("t2_tirm_tra_dark-fluid", "2D", "axial", {**_IR, "RepetitionTime": 9000, "EchoTime": 81, "InversionTime": 2500, "FlipAngle": 150, "SequenceName": "*tir2d1_16"}),
                  ("t2_space_dark-fluid_sag_p2_iso", "3D", "sagittal", {**_IR, "RepetitionTime": 5000, "EchoTime": 387, "InversionTime": 1800, "FlipAngle": 120, "SequenceName": "*spcir_278"})],
        "T1": [("t1_se_tra", "2D", "axial", {**_SE, "RepetitionTime": 550, "EchoTime": 9.1, "FlipAngle": 90, "SequenceName": "*se2d1"}),
               ("t1_mprage_sag_p2_iso", "3D", "sagittal", {**_GRIR, "RepetitionTime": 2300, "EchoTime": 2.32, "InversionTime": 900, "FlipAngle": 8, "SequenceName": "*tfl3d1_16ns"})],
        "T1c": [("t1_mprage_sag_p2_iso_KM", "3D", "sagittal", {**_GRIR, "RepetitionTime": 2300, "EchoTime": 2.32, "InversionTime": 900, "FlipAngle": 8, "SequenceName": "*tfl3d1_16ns"}),
                ("t1_mprage_tra_p2_iso", "3D", "axial", {**_GRIR, "RepetitionTime": 2300, "EchoTime": 2.32, "InversionTime": 900, "FlipAngle": 8, "SequenceName": "*tfl3d1_16ns"}),
                ("t1_se_tra_post", "2D", "axial", {**_SE, "RepetitionTime": 550, "EchoTime": 9.1, "FlipAngle": 90, "SequenceName": "*se2d1"})],
        "T2": [("t2_tse_tra_p2", "2D", "axial", {**_SE, "RepetitionTime": 6000, "EchoTime": 95, "FlipAngle": 150, "SequenceName": "*tse2d1_15"})],
    },
    "ge": {
        "FLAIR": [("AX T2 FLAIR", "2D", "axial", {**_IR, "RepetitionTime": 9000, "EchoTime": 120, "InversionTime": 2250, "FlipAngle": 160}),
                  ("SAG 3D FLAIR CUBE", "3D", "sagittal", {**_IR, "RepetitionTime": 6000, "EchoTime": 118, "InversionTime": 1800, "FlipAngle": 90})],
        "T1": [("AX T1 SE", "2D", "axial", {**_SE, "RepetitionTime": 500, "EchoTime": 12, "FlipAngle": 90}),
               ("AX T1 FLAIR", "2D", "axial", {**_IR, "RepetitionTime": 2200, "EchoTime": 20, "InversionTime": 800, "FlipAngle": 90}),
               ("3D SAG T1 BRAVO", "3D", "sagittal", {**_GRIR, "RepetitionTime": 8.2, "EchoTime": 3.2, "InversionTime": 450, "FlipAngle": 12})],
        "T1c": [("AX T1 POST GD FLAIR", "2D", "axial", {**_IR, "RepetitionTime": 2200, "EchoTime": 20, "InversionTime": 800, "FlipAngle": 90}),
                ("3D AX T1 BRAVO +C", "3D", "axial", {**_GRIR, "RepetitionTime": 8.2, "EchoTime": 3.2, "InversionTime": 450, "FlipAngle": 12})],
        "T2": [("AX T2 FSE", "2D", "axial", {**_SE, "RepetitionTime": 5000, "EchoTime": 102, "FlipAngle": 111}),
               ("Ax T2 PROPELLER", "2D", "axial", {**_SE, "RepetitionTime": 6500, "EchoTime": 110, "FlipAngle": 142})],
    },
    "philips": {
        "FLAIR": [("T2W_FLAIR", "2D", "axial", {**_IR, "RepetitionTime": 11000, "EchoTime": 125, "InversionTime": 2800, "FlipAngle": 90}),
                  ("3D_FLAIR", "3D", "sagittal", {**_IR, "RepetitionTime": 4800, "EchoTime": 310, "InversionTime": 1650, "FlipAngle": 90})],
        "T1": [("T1W_SE", "2D", "axial", {**_SE, "RepetitionTime": 550, "EchoTime": 10, "FlipAngle": 90}),
               ("3D_T1W_TFE", "3D", "sagittal", {**_GR, "RepetitionTime": 8.1, "EchoTime": 3.7, "FlipAngle": 8})],
        "T1c": [("T1W_3D_TFE +C", "3D", "sagittal", {**_GR, "RepetitionTime": 8.1, "EchoTime": 3.7, "FlipAngle": 8}),
                ("T1W_SE_GD", "2D", "axial", {**_SE, "RepetitionTime": 550, "EchoTime": 10, "FlipAngle": 90})],
        "T2": [("T2W_TSE", "2D", "axial", {**_SE, "RepetitionTime": 4000, "EchoTime": 100, "FlipAngle": 90})],
    },
}

VENDOR_HEADER = {
    "siemens": {"manufacturer": "SIEMENS", "models": ["Prisma_fit", "Skyra", "Avanto_fit"], "software": "syngo MR E11",
                "image_type": ["ORIGINAL", "PRIMARY", "M", "ND", "NORM"], "localizer": "AAHead_Scout_64ch-head-coil"},
    "ge": {"manufacturer": "GE MEDICAL SYSTEMS", "models": ["SIGNA Premier", "DISCOVERY MR750", "SIGNA Architect"],
           "software": "29\\LX\\MR Software release:MR29.1", "image_type": ["ORIGINAL", "PRIMARY", "OTHER"], "localizer": "3Plane Loc SSFSE"},
    "philips": {"manufacturer": "Philips Medical Systems", "models": ["Ingenia", "Achieva dStream", "Ingenia Elition X"],
                "software": "5.7.1\\5.7.1.2", "image_type": ["ORIGINAL", "PRIMARY", "M_SE", "M", "SE"], "localizer": "Survey MST"},
}
CONTRAST_AGENTS = ("GADOVIST", "DOTAREM", "MultiHance", "Gd-DTPA", "CLARISCAN")
ROLE_ORDER = ("T1", "T2", "FLAIR", "T1c")  # acquisition order in a glioma protocol


@dataclass
class Acquisition:
    """One planned series: labels, physics and its grid (see :func:`plan_grid`)."""

    role: str
    description: str
    mode: str
    plane: str
    attributes: dict[str, Any]
    inplane_mm: float
    thickness_mm: float
    spacing_mm: float
    matrix: int
    tilt_deg: float
    enhanced: bool
    transfer_syntax: str
    extra: bool = False  # a second series of a role that selection must not choose
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    shape: tuple[int, int, int] = (0, 0, 0)


def plan_protocol(vendor: str, rng: np.random.Generator, compressed: bool) -> list[Acquisition]:
    """The series of one study in acquisition order (T1, T2, FLAIR, T1c, maybe one extra T1c)."""
    plans = []
    contrast_tag = rng.random() < 0.65  # many sites fill ContrastBolusAgent; some only name it
    agent = str(rng.choice(CONTRAST_AGENTS))
    for role in ROLE_ORDER:
        options = PROTOCOLS[vendor][role]
        plans.append(_acquisition(vendor, role, options[rng.integers(len(options))], rng, compressed))
    t1c = plans[-1]
    if t1c.mode == "3D" and len(PROTOCOLS[vendor]["T1c"]) > 1 and rng.random() < 0.4:
        # A 2D post-contrast series as well: the rule must prefer the 3D isotropic one.
        other = next(o for o in PROTOCOLS[vendor]["T1c"] if o[1] == "2D" and o[0] != t1c.description)
        plans.append(_acquisition(vendor, "T1c", other, rng, compressed, extra=True))
    for plan in plans:
        # A T1c must carry its contrast somewhere: the agent tag, its description, or both.
        # A post-contrast FLAIR (common practice) carries the tag too and must stay FLAIR.
        described_post = any(m in plan.description.upper() for m in ("KM", "+C", "GD", "POST"))
        if (plan.role == "T1c" and (contrast_tag or not described_post)) or (plan.role == "FLAIR" and rng.random() < 0.15):
            plan.attributes["ContrastBolusAgent"] = agent
    return plans


def _acquisition(vendor: str, role: str, option: tuple[str, str, str, dict[str, Any]], rng: np.random.Generator,
                 compressed: bool, extra: bool = False) -> Acquisition:
    description, mode, plane, physics = option
    attributes = {**physics, "MRAcquisitionType": mode, "ImageType": list(VENDOR_HEADER[vendor]["image_type"])}
    attributes["EchoTrainLength"] = 1 if "GR" in physics["ScanningSequence"] else int(rng.integers(8, 24))
    if mode == "3D":
        iso = float(rng.choice([1.0, 1.0, 1.1, 1.2]))
        inplane, thickness, spacing, matrix = iso, iso, iso, int(round(240 / iso / 2) * 2)
    else:
        matrix = int(rng.choice([224, 256, 256, 288]))
        inplane = round(float(rng.uniform(220, 240)) / matrix, 4)
        thickness = float(rng.choice([3.0, 4.0, 5.0, 5.0, 6.0]))
        spacing = thickness * float(rng.choice([1.0, 1.1, 1.2]))
    tilt = float(rng.uniform(5, 20)) if mode == "2D" and plane == "axial" and rng.random() < 0.4 else 0.0
    return Acquisition(
        role=role, description=description, mode=mode, plane=plane, attributes=attributes,
        inplane_mm=inplane, thickness_mm=thickness, spacing_mm=spacing, matrix=matrix, tilt_deg=tilt,
        enhanced=vendor == "philips" and mode == "3D",
        transfer_syntax=str(JPEG2000Lossless if compressed else ExplicitVRLittleEndian), extra=extra,
    )


_PLANES = {
    # (row direction, column direction) in LPS; the normal is their cross product.
    "axial": (np.array([1.0, 0, 0]), np.array([0, 1.0, 0])),
    "sagittal": (np.array([0, 1.0, 0]), np.array([0, 0, -1.0])),
    "coronal": (np.array([1.0, 0, 0]), np.array([0, 0, -1.0])),
}


def plane_axes(plane: str, tilt_deg: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, column and normal directions (LPS unit vectors), tilted about the row direction."""
    row, col = _PLANES[plane]
    normal = np.cross(row, col)
    t = np.radians(tilt_deg)
    col_t = np.cos(t) * col + np.sin(t) * normal
    normal_t = np.cross(row, col_t)
    return row, col_t, normal_t


def plan_grid(acq: Acquisition, centre_lps: np.ndarray, head_mask_points: np.ndarray) -> None:
    """Set ``acq.affine`` and ``acq.shape``: FOV centred on the head, slices covering it."""
    row, col, normal = plane_axes(acq.plane, acq.tilt_deg)
    depth = (head_mask_points - centre_lps) @ normal
    extent = float(depth.max() - depth.min()) + 4
    if acq.mode == "2D":
        extent = min(extent, 150.0)  # 2D protocols cover the brain, not the whole head
    n_slices = max(2, int(np.ceil(extent / acq.spacing_mm)))
    affine = np.eye(4)
    affine[:3, 0] = row * acq.inplane_mm
    affine[:3, 1] = col * acq.inplane_mm
    affine[:3, 2] = normal * acq.spacing_mm
    half = np.array([(acq.matrix - 1) / 2, (acq.matrix - 1) / 2, (n_slices - 1) / 2])
    affine[:3, 3] = centre_lps - affine[:3, :3] @ half
    acq.affine, acq.shape = affine, (n_slices, acq.matrix, acq.matrix)


def sample(image: np.ndarray, image_affine: np.ndarray, target_affine: np.ndarray, shape: tuple[int, int, int],
           thickness_mm: float = 0.0) -> np.ndarray:
    """Resample ``image`` (Volume convention) onto a target grid, averaging across the slice thickness."""
    to_source = np.linalg.inv(image_affine) @ target_affine
    n_sub = max(1, int(round(thickness_mm / 1.0)))
    step = float(np.linalg.norm(target_affine[:3, 2]))
    offsets = [((s + 0.5) / n_sub - 0.5) * thickness_mm / step for s in range(n_sub)] if thickness_mm else [0.0]
    nz, ny, nx = shape
    jj, ii = np.meshgrid(np.arange(ny, dtype=np.float32), np.arange(nx, dtype=np.float32), indexing="ij")
    out = np.zeros(shape, np.float32)
    for k in range(nz):
        acc = np.zeros((ny, nx), np.float32)
        for off in offsets:
            idx = np.stack([ii.ravel(), jj.ravel(), np.full(ii.size, k + off, np.float32), np.ones(ii.size, np.float32)])
            src = (to_source @ idx)[:3]  # (i, j, k) of the source
            acc += ndimage.map_coordinates(image, src[::-1], order=1, mode="constant", cval=0.0).reshape(ny, nx)
        out[k] = acc / len(offsets)
    return out


def acquire(image: np.ndarray, image_affine: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Stored pixel values (uint16, 12-bit) of one acquisition, with Rician noise."""
    signal = sample(image, image_affine, acq.affine, acq.shape, acq.thickness_mm if acq.mode == "2D" else 0.0)
    reference = float(np.percentile(signal[signal > 0.05], 90)) if np.any(signal > 0.05) else 1.0
    sigma = reference * rng.uniform(0.015, 0.04) / np.sqrt(max(acq.thickness_mm * acq.inplane_mm ** 2, 0.5))
    noisy = np.sqrt((signal + rng.normal(0, sigma, signal.shape)) ** 2 + rng.normal(0, sigma, signal.shape) ** 2)
    scale = rng.uniform(900, 2500) / reference
    return np.clip(np.round(noisy * scale), 0, 4095).astype(np.uint16)
