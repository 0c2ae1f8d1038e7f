"""One series' header, summarised: what sequence recognition and reports need.

Works the same for classic MR (attributes at the top level) and Enhanced MR
multi-frame (attributes in the Shared or first Per-Frame Functional Group), so that
recognition never has to know which one it is looking at. Times are milliseconds.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.tag import Tag

# Vendor private tags that carry the pulse sequence name; read by creator-independent
# tag number because anonymisers often drop the private creator but keep the element.
_GE_PULSE_SEQUENCE_NAME = Tag(0x0019, 0x109C)
_SIEMENS_SEQUENCE_NAME = Tag(0x0018, 0x0024)  # public SequenceName, Siemens fills it



def _multi(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
        return [str(v).strip().upper() for v in value if str(v).strip()]
    return [s.strip().upper() for s in str(value).split("\\") if s.strip()]


def to_float(value: Any) -> float | None:
    """A header value as a float (first of several); None when absent or not a number."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, (list, tuple)) or value.__class__.__name__ == "MultiValue":
            value = value[0]
        return float(value)
    except (TypeError, ValueError, IndexError):
        return None


def functional_group_item(ds: Dataset, sequence_keyword: str, frame: int = 0) -> Dataset | None:
    """The item of a functional-group macro for ``frame`` (0-based), per-frame first, then shared."""
    for groups_kw, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(groups_kw)
        if groups and len(groups) > index:
            seq = groups[index].get(sequence_keyword)
            if seq:
                return seq[0]
    return None


def _enhanced_value(ds: Dataset, macro: str, keyword: str) -> Any:
    item = functional_group_item(ds, macro)
    return item.get(keyword) if item is not None else None


@dataclass(frozen=True)
class SeriesHeader:
    """Header facts of one series, from a representative instance."""

    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    modality: str
    frame_of_reference_uid: str | None
    series_description: str
    protocol_name: str
    series_number: int | None
    series_date: str
    series_time: str
    manufacturer: str
    model_name: str
    image_type: list[str]
    scanning_sequence: list[str]
    sequence_variant: list[str]
    scan_options: list[str]
    sequence_name: str
    mr_acquisition_type: str
    repetition_time_ms: float | None
    echo_time_ms: float | None
    inversion_time_ms: float | None
    flip_angle_deg: float | None
    contrast_agent: str
    enhanced: bool
    images_in_acquisition: int | None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> SeriesHeader:
        enhanced = "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
        tr = to_float(ds.get("RepetitionTime"))
        te = to_float(ds.get("EchoTime"))
        ti = to_float(ds.get("InversionTime"))
        flip = to_float(ds.get("FlipAngle"))
        sequence_name = str(ds.get("SequenceName", "") or ds.get("PulseSequenceName", "") or "")
        if not sequence_name and _GE_PULSE_SEQUENCE_NAME in ds:
            sequence_name = str(ds[_GE_PULSE_SEQUENCE_NAME].value or "")
        scanning_sequence = _multi(ds.get("ScanningSequence"))
        sequence_variant = _multi(ds.get("SequenceVariant"))
        contrast = str(ds.get("ContrastBolusAgent", "") or "").strip()
        if enhanced:
            timing = "MRTimingAndRelatedParametersSequence"
            tr = tr if tr is not None else to_float(_enhanced_value(ds, timing, "RepetitionTime"))
            flip = flip if flip is not None else to_float(_enhanced_value(ds, timing, "FlipAngle"))
            te = te if te is not None else to_float(_enhanced_value(ds, "MREchoSequence", "EffectiveEchoTime"))
            ti = ti if ti is not None else to_float(_enhanced_value(ds, "MRModifierSequence", "InversionTimes"))
            if not scanning_sequence:
                # Enhanced MR replaces ScanningSequence by EchoPulseSequence and InversionRecovery.
                pulse = str(ds.get("EchoPulseSequence", "")).upper()
                scanning_sequence = {"SPIN": ["SE"], "GRADIENT": ["GR"], "BOTH": ["SE", "GR"]}.get(pulse, [])
                inversion = ds.get("InversionRecovery", _enhanced_value(ds, "MRModifierSequence", "InversionRecovery") or "")
                if str(inversion).upper() == "YES":
                    scanning_sequence = scanning_sequence + ["IR"]
            if not contrast:
                agents = ds.get("ContrastBolusAgentSequence")
                if agents:
                    contrast = str(agents[0].get("CodeMeaning", "contrast agent"))
        series_number = to_float(ds.get("SeriesNumber"))
        images = to_float(ds.get("ImagesInAcquisition"))
        return cls(
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
            series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            modality=str(ds.get("Modality", "")).upper(),
            frame_of_reference_uid=str(ds.FrameOfReferenceUID) if ds.get("FrameOfReferenceUID") else None,
            series_description=str(ds.get("SeriesDescription", "") or ""),
            protocol_name=str(ds.get("ProtocolName", "") or ""),
            series_number=int(series_number) if series_number is not None else None,
            series_date=str(ds.get("SeriesDate", "") or ds.get("StudyDate", "") or ""),
            series_time=str(ds.get("SeriesTime", "") or ds.get("AcquisitionTime", "") or ""),
            manufacturer=str(ds.get("Manufacturer", "") or ""),
            model_name=str(ds.get("ManufacturerModelName", "") or ""),
            image_type=_multi(ds.get("ImageType")),
            scanning_sequence=scanning_sequence,
            sequence_variant=sequence_variant,
            scan_options=_multi(ds.get("ScanOptions")),
            sequence_name=sequence_name.strip(),
            mr_acquisition_type=str(ds.get("MRAcquisitionType", "") or "").upper(),
            repetition_time_ms=tr,
            echo_time_ms=te,
            inversion_time_ms=ti,
            flip_angle_deg=flip,
            contrast_agent=contrast,
            enhanced=enhanced,
            images_in_acquisition=int(images) if images is not None else None,
        )
