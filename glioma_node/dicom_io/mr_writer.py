"""Write a volume as an MR series the way scanners do: classic MR Image Storage (one
file per slice) or Enhanced MR Image Storage (one multi-frame file).

Geometry is exact: the affine (LPS, mm; see :mod:`glioma_node.core.volume`) becomes
ImageOrientationPatient, PixelSpacing and one ImagePositionPatient per slice, so that
reading the series back gives the same affine. UIDs are derived from the series UID,
so writing the same series twice gives byte-identical files (deterministic runs, no
duplicates on retry).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, EnhancedMRImageStorage, ExplicitVRLittleEndian, MRImageStorage

from glioma_node.dicom_io.geometry import affine_directions
from glioma_node.dicom_io.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION, derived_uid


@dataclass
class StudyInfo:
    """Patient and study attributes shared by every series of a study (DICOM keywords and values)."""

    study_instance_uid: str
    frame_of_reference_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str = ""
    patient_sex: str = ""
    patient_age: str = ""
    study_date: str = "20260101"
    study_time: str = "080000"
    accession_number: str = ""
    study_id: str = "1"
    study_description: str = "MRI BRAIN WITH AND WITHOUT CONTRAST"
    institution_name: str = ""


@dataclass
class SeriesInfo:
    """One series: identity, vendor and acquisition attributes (DICOM keywords → values).

    ``attributes`` holds the MR physics and any vendor tags (RepetitionTime, EchoTime,
    InversionTime, ScanningSequence, SequenceVariant, ScanOptions, MRAcquisitionType,
    SequenceName, FlipAngle, ImageType, ContrastBolusAgent, ...). ``slice_thickness_mm``
    defaults to the slice spacing.
    """

    series_instance_uid: str
    series_number: int
    series_description: str
    series_time: str = "080000"
    protocol_name: str = ""
    manufacturer: str = ""
    model_name: str = ""
    software_versions: str = ""
    field_strength_t: float = 3.0
    slice_thickness_mm: float | None = None
    enhanced: bool = False
    acquisition_contrast: str = "UNKNOWN"  # Enhanced MR AcquisitionContrast: T1, T2, FLUID_ATTENUATED, ...
    transfer_syntax: str = str(ExplicitVRLittleEndian)
    attributes: dict[str, Any] = field(default_factory=dict)


def _pixel_format(voxels: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """Stored integer pixels and the pixel attributes describing them (float input is rescaled)."""
    if np.issubdtype(voxels.dtype, np.integer) or np.allclose(voxels, np.round(voxels)):
        lo, hi = float(voxels.min()), float(voxels.max())
        if lo >= 0 and hi <= 65535:
            stored = voxels.astype(np.uint16)
            bits = max(12, int(hi).bit_length())
            return stored, {"BitsAllocated": 16, "BitsStored": bits, "HighBit": bits - 1, "PixelRepresentation": 0,
                            "RescaleSlope": 1, "RescaleIntercept": 0}
        if lo >= -32768 and hi <= 32767:
            return voxels.astype(np.int16), {"BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 1,
                                             "RescaleSlope": 1, "RescaleIntercept": 0}
    lo, hi = float(voxels.min()), float(voxels.max())
    slope = (hi - lo) / 65535.0 if hi > lo else 1.0
    stored = np.round((voxels - lo) / slope).astype(np.uint16)
    return stored, {"BitsAllocated": 16, "BitsStored": 16, "HighBit": 15, "PixelRepresentation": 0,
                    "RescaleSlope": f"{slope:.10g}"[:16], "RescaleIntercept": f"{lo:.10g}"[:16]}


def _ds_number(value: float) -> str:
    """A DS string (≤ 16 characters) as precise as the VR allows."""
    for digits in range(12, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.5g}"


def _geometry(affine: np.ndarray, n_slices: int) -> tuple[list[str], list[str], list[list[str]], float]:
    direction, spacing = affine_directions(affine)
    iop = [_ds_number(v) for v in np.concatenate([direction[:, 0], direction[:, 1]])]
    pixel_spacing = [_ds_number(spacing[1]), _ds_number(spacing[0])]
    positions = [[_ds_number(v) for v in affine[:3, :3] @ np.array([0.0, 0.0, k]) + affine[:3, 3]] for k in range(n_slices)]
    return iop, pixel_spacing, positions, float(spacing[2])


def _base_dataset(study: StudyInfo, series: SeriesInfo, sop_class: UID) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Modality = "MR"
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = study.patient_birth_date
    ds.PatientSex = study.patient_sex
    if study.patient_age:
        ds.PatientAge = study.patient_age
    ds.StudyDate = study.study_date
    ds.StudyTime = study.study_time
    ds.SeriesDate = study.study_date
    ds.SeriesTime = series.series_time
    ds.AcquisitionDate = study.study_date
    ds.AcquisitionTime = series.series_time
    ds.ContentDate = study.study_date
    ds.ContentTime = series.series_time
    ds.ReferringPhysicianName = ""
    ds.StudyID = study.study_id
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.study_description
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = series.series_description
    ds.ProtocolName = series.protocol_name or series.series_description
    ds.Manufacturer = series.manufacturer
    ds.ManufacturerModelName = series.model_name
    ds.SoftwareVersions = series.software_versions
    if study.institution_name:
        ds.InstitutionName = study.institution_name
    ds.MagneticFieldStrength = series.field_strength_t
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "BRAIN"
    ds.ImagedNucleus = "1H"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    return ds


def _file_meta(ds: Dataset, transfer_syntax: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    if UID(transfer_syntax) != ExplicitVRLittleEndian:
        ds.compress(UID(transfer_syntax), generate_instance_uid=False)


def _apply_attributes(ds: Dataset, attributes: dict[str, Any]) -> None:
    for keyword, value in attributes.items():
        if value is None:
            continue
        setattr(ds, keyword, value)


def write_mr_series(voxels: np.ndarray, affine: np.ndarray, study: StudyInfo, series: SeriesInfo, out_dir: Path,
                    first_instance: int = 0) -> list[Path]:
    """Write ``voxels`` ([slice, row, column]) with ``affine`` as one MR series in ``out_dir``.

    Returns the files written, in slice order. Float voxels are stored as uint16 with
    RescaleSlope/RescaleIntercept; integer voxels are stored as they are.
    ``first_instance`` offsets instance numbers (and the UIDs derived from them) so that
    several calls can write one series, e.g. the three planes of a localizer.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stored, pixel_attrs = _pixel_format(np.asarray(voxels))
    iop, pixel_spacing, positions, step = _geometry(affine, stored.shape[0])
    thickness = _ds_number(series.slice_thickness_mm if series.slice_thickness_mm else step)
    if series.enhanced:
        stack = _Stack(stored, pixel_attrs, iop, pixel_spacing, positions, thickness, step)
        return [_write_enhanced(stack, study, series, out_dir)]
    normal = np.cross(np.array(iop[:3], float), np.array(iop[3:], float))
    paths = []
    for k in range(stored.shape[0]):
        n = first_instance + k + 1
        ds = _base_dataset(study, series, MRImageStorage)
        ds.SOPInstanceUID = derived_uid(series.series_instance_uid, "slice", n - 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.InstanceNumber = n
        ds.AcquisitionNumber = 1
        ds.ImagePositionPatient = positions[k]
        ds.ImageOrientationPatient = iop
        ds.PixelSpacing = pixel_spacing
        ds.SliceThickness = thickness
        ds.SpacingBetweenSlices = _ds_number(step)
        ds.SliceLocation = _ds_number(float(np.dot(np.array(positions[k], float), normal)))
        ds.ImagesInAcquisition = first_instance + stored.shape[0]
        ds.Rows, ds.Columns = int(stored.shape[1]), int(stored.shape[2])
        for key, value in pixel_attrs.items():
            setattr(ds, key, value)
        _apply_attributes(ds, series.attributes)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        _file_meta(ds, series.transfer_syntax)
        path = out_dir / f"IM{n:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass(frozen=True)
class _Stack:
    """One series' pixels and geometry as DICOM writes them: ``stored`` [slice, row, column],
    its pixel-module attributes, ImageOrientationPatient, PixelSpacing, one
    ImagePositionPatient per slice, SliceThickness (DS text) and the slice step (mm)."""

    stored: np.ndarray
    pixel_attrs: dict[str, Any]
    iop: list[str]
    pixel_spacing: list[str]
    positions: list[list[str]]
    thickness: str
    step: float


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def _contrast_agent(name: str) -> Dataset:
    """The Contrast/Bolus Agent Sequence item of a gadolinium agent named ``name``."""
    agent = _code("C0017075", "UMLS", name[:64])
    agent.ContrastBolusAgentNumber = 1
    agent.ContrastBolusIngredientConcentration = 0.5
    agent.ContrastBolusIngredientCodeSequence = Sequence([_code("C0017052", "UMLS", "Gadolinium")])
    agent.ContrastBolusAdministrationRouteSequence = Sequence([_code("C38276", "NCIt",
                                                                      "Intravenous Route of Administration")])
    return agent


def _enhanced_mr_image(ds: Dataset, stack: _Stack, study: StudyInfo, series: SeriesInfo) -> None:
    """The Enhanced MR Image and MR Pulse Sequence modules, from the series' attributes."""
    a = series.attributes
    image_type = list(a.get("ImageType", ["ORIGINAL", "PRIMARY", "M", "NONE"]))[:4]
    ds.ImageType = image_type + ["NONE"] * (4 - len(image_type))
    ds.InstanceNumber = 1
    ds.ContentQualification = "RESEARCH"
    ds.NumberOfFrames = stack.stored.shape[0]
    ds.Rows, ds.Columns = int(stack.stored.shape[1]), int(stack.stored.shape[2])
    for key in ("BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation"):
        setattr(ds, key, stack.pixel_attrs[key])
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContrast = series.acquisition_contrast
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.ComplexImageComponent = "MAGNITUDE"
    ds.AcquisitionDateTime = study.study_date + series.series_time
    ds.ResonantNucleus = "1H"
    ds.KSpaceFiltering = "NONE"
    ds.MagneticFieldStrength = series.field_strength_t
    ds.ApplicableSafetyStandardAgency = "IEC"
    ds.ImageComments = ""
    scanning = set(a.get("ScanningSequence", []))
    ds.PulseSequenceName = str(a.get("SequenceName", ""))[:16]
    ds.EchoPulseSequence = "SPIN" if "SE" in scanning else "GRADIENT"
    ds.MultipleSpinEcho = "NO"
    ds.MultiPlanarExcitation = "NO"
    ds.PhaseContrast = "NO"
    ds.TimeOfFlightContrast = "NO"
    ds.SteadyStatePulseSequence = "NONE"
    ds.EchoPlanarPulseSequence = "NO"
    ds.SaturationRecovery = "NO"
    ds.SpectrallySelectedSuppression = "NONE"
    ds.OversamplingPhase = "NONE"
    ds.GeometryOfKSpaceTraversal = "RECTILINEAR"
    ds.SegmentedKSpaceTraversal = "SINGLE"
    ds.RectilinearPhaseEncodeReordering = "LINEAR"
    ds.CoverageOfKSpace = "FULL"
    ds.NumberOfKSpaceTrajectories = 1
    ds.MRAcquisitionType = str(a.get("MRAcquisitionType", "3D"))
    if a.get("ContrastBolusAgent"):
        ds.ContrastBolusAgentSequence = Sequence([_contrast_agent(str(a["ContrastBolusAgent"]))])


def _shared_groups(ds: Dataset, stack: _Stack, attributes: dict[str, Any]) -> Dataset:
    """The Shared Functional Groups item: geometry, timing, echo, modifiers, frame type, rescale."""
    a = attributes
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = stack.pixel_spacing
    measures.SliceThickness = stack.thickness
    measures.SpacingBetweenSlices = _ds_number(stack.step)
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = Dataset()
    orientation.ImageOrientationPatient = stack.iop
    shared.PlaneOrientationSequence = Sequence([orientation])
    timing = Dataset()
    timing.RepetitionTime = a.get("RepetitionTime", 0)
    timing.FlipAngle = a.get("FlipAngle", 90)
    timing.EchoTrainLength = a.get("EchoTrainLength", 1)
    timing.RFEchoTrainLength = a.get("EchoTrainLength", 1)
    timing.GradientEchoTrainLength = 0
    shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    echo = Dataset()
    echo.EffectiveEchoTime = a.get("EchoTime", 0)
    shared.MREchoSequence = Sequence([echo])
    modifier = Dataset()
    modifier.InversionRecovery = "YES" if a.get("InversionTime") else "NO"
    if a.get("InversionTime"):
        modifier.InversionTimes = [a["InversionTime"]]
    modifier.FlowCompensation = "NONE"
    modifier.Spoiling = "NONE"
    modifier.T2Preparation = "NO"
    modifier.SpectrallySelectedExcitation = "NONE"
    modifier.SpatialPresaturation = "NONE"
    modifier.PartialFourier = "NO"
    shared.MRModifierSequence = Sequence([modifier])
    frame_type = Dataset()
    frame_type.FrameType = ds.ImageType
    frame_type.PixelPresentation = "MONOCHROME"
    frame_type.VolumetricProperties = "VOLUME"
    frame_type.VolumeBasedCalculationTechnique = "NONE"
    frame_type.ComplexImageComponent = "MAGNITUDE"
    frame_type.AcquisitionContrast = ds.AcquisitionContrast
    shared.MRImageFrameTypeSequence = Sequence([frame_type])
    transform = Dataset()
    transform.RescaleSlope = stack.pixel_attrs["RescaleSlope"]
    transform.RescaleIntercept = stack.pixel_attrs["RescaleIntercept"]
    transform.RescaleType = "US"
    shared.PixelValueTransformationSequence = Sequence([transform])
    return shared


def _dimensions(ds: Dataset, series_uid: str) -> None:
    """The Multi-frame Dimension module: one stack, frames indexed by their position in it."""
    dimension_org = derived_uid(series_uid, "dimension-organization")
    org = Dataset()
    org.DimensionOrganizationUID = dimension_org
    ds.DimensionOrganizationSequence = Sequence([org])
    dims = []
    for pointer, group in (("StackID", "FrameContentSequence"), ("InStackPositionNumber", "FrameContentSequence")):
        d = Dataset()
        d.DimensionOrganizationUID = dimension_org
        d.DimensionIndexPointer = pointer
        d.FunctionalGroupPointer = group
        dims.append(d)
    ds.DimensionIndexSequence = Sequence(dims)
    ds.DimensionOrganizationType = "3D"


def _per_frame_groups(positions: list[list[str]], acquired: str) -> Sequence:
    """One Per-frame Functional Groups item per slice: its place in the stack and its position (LPS mm)."""
    per_frame = []
    for k, position in enumerate(positions):
        frame = Dataset()
        content = Dataset()
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.DimensionIndexValues = [1, k + 1]
        content.FrameAcquisitionDateTime = acquired
        content.FrameReferenceDateTime = acquired
        content.FrameAcquisitionDuration = 0
        frame.FrameContentSequence = Sequence([content])
        plane = Dataset()
        plane.ImagePositionPatient = position
        frame.PlanePositionSequence = Sequence([plane])
        per_frame.append(frame)
    return Sequence(per_frame)


def _write_enhanced(stack: _Stack, study: StudyInfo, series: SeriesInfo, out_dir: Path) -> Path:
    """The whole series as one Enhanced MR Image object, ``out_dir/ENHANCED.dcm``."""
    ds = _base_dataset(study, series, EnhancedMRImageStorage)
    ds.SOPInstanceUID = derived_uid(series.series_instance_uid, "enhanced")
    _enhanced_mr_image(ds, stack, study, series)
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(ds, stack, series.attributes)])
    _dimensions(ds, series.series_instance_uid)
    ds.PerFrameFunctionalGroupsSequence = _per_frame_groups(stack.positions, ds.AcquisitionDateTime)
    ds.PixelData = np.ascontiguousarray(stack.stored).tobytes()
    _file_meta(ds, series.transfer_syntax)
    path = out_dir / "ENHANCED.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path
