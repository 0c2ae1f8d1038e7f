"""Read one DICOM series into a :class:`glioma_node.core.volume.Volume`.

Classic single-frame images (MR Image Storage, and CT and other cross-sectional
classes with the Image Plane module) and Enhanced MR multi-frame objects are both
reduced to one :class:`SliceRecord` per 2D image, so a single set of checks applies:
one orientation, one matrix, one image component, one echo, one time point, one
b-value, a uniform stack along the normal. Slices are sorted by their position along
the normal, never by InstanceNumber. Pixel values are modality values (RescaleSlope
and RescaleIntercept applied), float32.

Bounds (:mod:`glioma_node.dicom_io.bounded`): the voxels a series' headers declare
(Rows × Columns × frames × samples, summed over its instances) are checked against
``max_voxels`` before any record is built or array allocated, so a folder of 1 KB
JPEG 2000 files declaring 4096 × 4096 is refused (``too_large``) instead of decoded;
a Deflated file is inflated within ``max_bytes``.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import (
    UID,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    LegacyConvertedEnhancedCTImageStorage,
    LegacyConvertedEnhancedMRImageStorage,
    MRImageStorage,
)

from glioma_node.core.volume import SeriesMetadata, Volume
from glioma_node.dicom_io.bounded import (
    MAX_INSTANCE_BYTES,
    MAX_SERIES_VOXELS,
    InstanceTooLarge,
    image_voxels,
    read_file,
)
from glioma_node.dicom_io.errors import SeriesRefused
from glioma_node.dicom_io.geometry import affine_from_geometry, check_orientation, stack_slices
from glioma_node.dicom_io.header import SeriesHeader, functional_group_item, to_float
from glioma_node.dicom_io.scan import Instance

# Vendor b-value tags, read when the standard DiffusionBValue is absent.
_SIEMENS_B_VALUE = Tag(0x0019, 0x100C)
_GE_B_VALUE = Tag(0x0043, 0x1039)  # first value, with 1e9 added on some software
_LOCALIZER_WORDS = ("LOCALIZER", "SCOUT", "SURVEY")
# Cross-sectional image classes read as volumes: MR (the node's input) and CT (its
# geometry is the same; recognition calls it "other"). SEG, SR, Parametric Map,
# Secondary Capture and the rest are refused by class.
VOLUME_SOP_CLASSES = {uid: uid.name for uid in (
    MRImageStorage, EnhancedMRImageStorage, LegacyConvertedEnhancedMRImageStorage,
    CTImageStorage, EnhancedCTImageStorage, LegacyConvertedEnhancedCTImageStorage)}


@dataclass(frozen=True)
class SliceRecord:
    """One 2D image: a classic instance or one frame of a multi-frame object."""

    instance: int  # index into the series' instance list
    frame: int | None  # 0-based frame index for multi-frame objects
    sop_instance_uid: str
    position: np.ndarray
    orientation: np.ndarray
    pixel_spacing: tuple[float, float]
    matrix: tuple[int, int]
    rescale: tuple[float, float]  # slope, intercept
    component: str  # MAGNITUDE, PHASE, REAL, IMAGINARY, or '' when not stated
    echo: str
    temporal: str
    b_value: float | None


def _floats(value: Any, n: int, what: str) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError) as exc:
        raise SeriesRefused("missing_geometry", f"{what} is not numeric: {value!r}") from exc
    if array.shape != (n,) or not np.all(np.isfinite(array)):
        raise SeriesRefused("missing_geometry", f"{what} must have {n} finite values; got {value!r}")
    return array


def _number(ds: Dataset, keyword: str, default: float) -> float:
    """A numeric attribute, ``default`` when absent; SeriesRefused naming it when it is garbage."""
    value = ds.get(keyword)
    if value is None or value == "":
        return default
    number = to_float(value)
    if number is None or not np.isfinite(number):
        raise SeriesRefused("bad_header", f"{keyword} of {ds.get('SOPInstanceUID', '?')} is not a number: {str(value)[:40]!r}")
    return number


def _b_value(ds: Dataset) -> float | None:
    for tag in ("DiffusionBValue", _SIEMENS_B_VALUE, _GE_B_VALUE):
        if tag not in ds:
            continue
        value = ds[tag].value
        if isinstance(value, bytes):  # private tags read as UN
            value = value.decode("ascii", "replace").strip("\x00 ")
        if isinstance(value, str):
            value = value.split("\\")[0]
        elif not isinstance(value, (int, float)):
            value = value[0] if len(value) else None
        try:
            b = float(value)
        except (TypeError, ValueError):
            continue
        return b % 1e9 if b >= 1e9 else b
    return None


def _classic_records(index: int, ds: Dataset) -> list[SliceRecord]:
    missing = [kw for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing") if kw not in ds]
    if missing:
        raise SeriesRefused(
            "missing_geometry",
            f"instance {ds.SOPInstanceUID} lacks {', '.join(missing)}; without the Image Plane module "
            "its place in the patient is unknown",
        )
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    component = image_type[2] if len(image_type) > 2 and image_type[2] in ("M", "P", "R", "I") else ""
    component = {"M": "MAGNITUDE", "P": "PHASE", "R": "REAL", "I": "IMAGINARY"}.get(component, "")
    return [
        SliceRecord(
            instance=index,
            frame=None,
            sop_instance_uid=str(ds.SOPInstanceUID),
            position=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient"),
            orientation=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient"),
            pixel_spacing=tuple(_floats(ds.PixelSpacing, 2, "PixelSpacing")),
            matrix=(int(_number(ds, "Rows", 0)), int(_number(ds, "Columns", 0))),
            rescale=(_number(ds, "RescaleSlope", 1.0) or 1.0, _number(ds, "RescaleIntercept", 0.0)),
            component=component,
            echo=str(ds.get("EchoNumbers", "")),
            temporal=str(ds.get("TemporalPositionIdentifier", "")),
            b_value=_b_value(ds),
        )
    ]


def _enhanced_records(index: int, ds: Dataset) -> list[SliceRecord]:
    frames = int(_number(ds, "NumberOfFrames", 1))
    records = []
    for f in range(frames):
        plane = functional_group_item(ds, "PlanePositionSequence", f)
        orient = functional_group_item(ds, "PlaneOrientationSequence", f)
        measures = functional_group_item(ds, "PixelMeasuresSequence", f)
        if plane is None or orient is None or measures is None or "PixelSpacing" not in measures:
            raise SeriesRefused(
                "missing_geometry",
                f"frame {f + 1} of {ds.SOPInstanceUID} lacks Plane Position, Plane Orientation or Pixel Measures",
            )
        transform = functional_group_item(ds, "PixelValueTransformationSequence", f)
        frame_type = functional_group_item(ds, "MRImageFrameTypeSequence", f)
        content = functional_group_item(ds, "FrameContentSequence", f)
        echo = functional_group_item(ds, "MREchoSequence", f)
        diffusion = functional_group_item(ds, "MRDiffusionSequence", f)
        component = str(frame_type.get("ComplexImageComponent", "")) if frame_type is not None else ""
        temporal = ""
        if content is not None and "TemporalPositionIndex" in content:
            temporal = str(content.TemporalPositionIndex)
        b_value = None
        if diffusion is not None and diffusion.get("DiffusionBValue") is not None:
            b_value = float(diffusion.DiffusionBValue)
        records.append(
            SliceRecord(
                instance=index,
                frame=f,
                sop_instance_uid=str(ds.SOPInstanceUID),
                position=_floats(plane.ImagePositionPatient, 3, f"frame {f + 1} ImagePositionPatient"),
                orientation=_floats(orient.ImageOrientationPatient, 6, f"frame {f + 1} ImageOrientationPatient"),
                pixel_spacing=tuple(_floats(measures.PixelSpacing, 2, f"frame {f + 1} PixelSpacing")),
                matrix=(int(_number(ds, "Rows", 0)), int(_number(ds, "Columns", 0))),
                rescale=(
                    _number(transform if transform is not None else ds, "RescaleSlope", 1.0) or 1.0,
                    _number(transform if transform is not None else ds, "RescaleIntercept", 0.0),
                ),
                component=component.upper(),
                echo=str(echo.get("EffectiveEchoTime", "")) if echo is not None else "",
                temporal=temporal,
                b_value=b_value,
            )
        )
    return records


def _refuse_non_volume_kinds(instances: Sequence[Instance]) -> None:
    """Refusals decided from the header alone, before geometry."""
    ds = instances[0].header
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    if str(sop_class) not in VOLUME_SOP_CLASSES or _number(ds, "Rows", 0) < 1 or _number(ds, "Columns", 0) < 1:
        name = sop_class.name if sop_class.is_valid else (str(sop_class) or "no SOPClassUID")
        raise SeriesRefused("not_image", f"not an MR or CT image ({name}); glioma-node reads MR image series")
    image_types = {v for inst in instances for v in (str(x).upper() for x in inst.header.get("ImageType", []))}
    text = " ".join(str(ds.get(k, "")) for k in ("SeriesDescription", "ProtocolName")).upper()
    if "LOCALIZER" in image_types or any(word in text for word in _LOCALIZER_WORDS):
        raise SeriesRefused("localizer", "a localizer/scout series (ImageType or description says so), not a diagnostic volume")
    if "MOSAIC" in image_types:
        raise SeriesRefused(
            "mosaic",
            "Siemens mosaic images (ImageType MOSAIC): an EPI time series or diffusion series, not an anatomical volume",
        )


def _voxels(ds: Dataset) -> tuple[int, str]:
    """:func:`glioma_node.dicom_io.bounded.image_voxels`, SeriesRefused for a value that is not a number."""
    try:
        return image_voxels(ds)
    except ValueError as exc:
        raise SeriesRefused("bad_header", f"{exc} in {ds.get('SOPInstanceUID', '?')}") from exc


def refuse_too_large(instances: Sequence[Instance], max_voxels: int = MAX_SERIES_VOXELS) -> int:
    """The voxels the series' headers declare (Rows × Columns × frames × samples, summed
    over its instances: what decoding it allocates); SeriesRefused ``too_large`` past ``max_voxels``."""
    total = 0
    for inst in instances:
        voxels, spelt = _voxels(inst.header)
        total += voxels
        if total > max_voxels:
            raise SeriesRefused(
                "too_large",
                f"the series declares more than {max_voxels} voxels (node.max_series_voxels): {len(instances)} "
                f"instance(s) of {spelt}; not decoded",
            )
    return total


def slice_records(instances: Sequence[Instance], max_voxels: int = MAX_SERIES_VOXELS) -> list[SliceRecord]:
    """All 2D images of a series as :class:`SliceRecord` s, header checks applied (the
    declared voxels within ``max_voxels`` first: a record per frame of a billion frames
    is never built)."""
    if not instances:
        raise SeriesRefused("empty", "the series has no instances")
    _refuse_non_volume_kinds(instances)
    refuse_too_large(instances, max_voxels)
    records: list[SliceRecord] = []
    for i, inst in enumerate(instances):
        ds = inst.header
        if _number(ds, "NumberOfFrames", 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
            records.extend(_enhanced_records(i, ds))
        else:
            records.extend(_classic_records(i, ds))
    return records


def _refuse_mixtures(records: list[SliceRecord]) -> None:
    matrices = Counter(r.matrix for r in records)
    if len(matrices) > 1:
        raise SeriesRefused("mixed_matrix", f"slices have different matrix sizes {sorted(matrices)}; one volume needs one")
    components = {r.component for r in records if r.component}
    if len(components) > 1:
        raise SeriesRefused(
            "mixed_components",
            f"the series mixes image components ({', '.join(sorted(components))}), e.g. magnitude and phase of a field map",
        )
    spacings = {tuple(np.round(r.pixel_spacing, 4)) for r in records}
    if len(spacings) > 1:
        raise SeriesRefused("mixed_spacing", f"slices have different PixelSpacing values {sorted(spacings)}")
    locations = Counter(tuple(np.round(r.position, 2)) for r in records)
    per_location = max(locations.values())
    if per_location > 1:
        b_values = {r.b_value for r in records if r.b_value is not None}
        echoes = {r.echo for r in records if r.echo}
        times = {r.temporal for r in records if r.temporal}
        acquisitions = len(records) // len(locations)
        if len(b_values) > 1:
            raise SeriesRefused(
                "multiple_b_values",
                f"diffusion series: {len(b_values)} b-values ({', '.join(f'{b:g}' for b in sorted(b_values))}) "
                f"at {len(locations)} slice locations; not an anatomical volume",
            )
        if len(echoes) > 1:
            raise SeriesRefused("multiple_echoes", f"{len(echoes)} echoes at each of {len(locations)} slice locations")
        raise SeriesRefused(
            "time_series",
            f"several time points: {len(records)} images at {len(locations)} slice locations "
            f"(about {acquisitions} volumes{', temporal positions ' + str(len(times)) if times else ''}); "
            "fMRI, perfusion or repeated acquisitions are not one volume",
        )


@dataclass(frozen=True)
class SeriesLayout:
    """How a series' images form a volume, known from headers alone (no pixel data read)."""

    records: list[SliceRecord]  # sorted along the normal
    affine: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        rows, cols = self.records[0].matrix
        return (len(self.records), rows, cols)


def layout(instances: Sequence[Instance], max_voxels: int = MAX_SERIES_VOXELS) -> SeriesLayout:
    """Work out the volume geometry of a series from its headers, or refuse it (also
    when it declares more than ``max_voxels``, see :func:`refuse_too_large`)."""
    records = slice_records(instances, max_voxels)
    _refuse_mixtures(records)
    orientation = check_orientation(np.stack([r.orientation for r in records]))
    stack = stack_slices(np.stack([r.position for r in records]), orientation)
    ordered = [records[i] for i in stack.order]
    affine = affine_from_geometry(orientation[:3], orientation[3:6], ordered[0].pixel_spacing, ordered[0].position, stack.step)
    return SeriesLayout(records=ordered, affine=affine)


def decode_pixels(path: Path, max_bytes: int = MAX_INSTANCE_BYTES,
                  max_voxels: int = MAX_SERIES_VOXELS) -> tuple[Dataset, np.ndarray]:
    """The dataset and its stored pixel values (compressed transfer syntaxes decoded).

    A Deflated file is inflated within ``max_bytes``; an image declaring more than
    ``max_voxels`` is refused (``too_large``) before the decoder allocates it."""
    try:
        ds = read_file(path, max_bytes)
        voxels, spelt = image_voxels(ds)
        if voxels > max_voxels:
            raise SeriesRefused("too_large", f"{path.name} declares {spelt}, more than {max_voxels} voxels "
                                             "(node.max_series_voxels); not decoded")
        return ds, ds.pixel_array
    except SeriesRefused:
        raise
    except InstanceTooLarge as exc:
        raise SeriesRefused("too_large", f"{path.name}: {exc} (node.max_instance_mb); not decoded") from exc
    except Exception as exc:  # decoders raise many kinds; all mean the same to the caller
        raise SeriesRefused(
            "pixel_decode",
            f"pixel data of {path.name} cannot be decoded ({exc.__class__.__name__}: {exc}); "
            "the file may be truncated or its transfer syntax unsupported",
        ) from exc


def read_series(instances: Sequence[Instance], max_voxels: int = MAX_SERIES_VOXELS,
                max_bytes: int = MAX_INSTANCE_BYTES) -> Volume:
    """Read a series (its instances as found by :func:`glioma_node.dicom_io.scan.scan`) into a Volume.

    Raises :class:`glioma_node.dicom_io.errors.SeriesRefused` with a reason when the series is not
    one 3D volume, its pixel data cannot be decoded, or its headers declare more than
    ``max_voxels`` voxels (``too_large``: ``node.max_series_voxels``; checked before
    anything is allocated). ``max_bytes``: see :func:`decode_pixels`.
    """
    plan = layout(instances, max_voxels)
    rows, cols = plan.records[0].matrix
    voxels = np.empty((len(plan.records), rows, cols), dtype=np.float32)
    frames_by_instance: dict[int, np.ndarray] = {}
    for k, record in enumerate(plan.records):
        if record.instance not in frames_by_instance:
            path = instances[record.instance].path
            _, array = decode_pixels(path, max_bytes, max_voxels)
            frames = array[None] if array.ndim == 2 else array
            if frames.ndim != 3 or frames.shape[1:] != (rows, cols):
                raise SeriesRefused(
                    "pixel_decode",
                    f"{path.name}: pixel array of shape {array.shape} is not greyscale {rows}x{cols} frames",
                )
            frames_by_instance[record.instance] = frames
        frames = frames_by_instance[record.instance]
        index = record.frame or 0
        if index >= len(frames):
            raise SeriesRefused("pixel_decode", f"frame {index + 1} is missing from the pixel data ({len(frames)} frames)")
        slope, intercept = record.rescale
        voxels[k] = frames[index].astype(np.float32) * np.float32(slope) + np.float32(intercept)
        if record.frame is None:
            del frames_by_instance[record.instance]  # classic: one slice per file, free it now
    header = SeriesHeader.from_dataset(instances[0].header)
    return Volume(
        voxels=voxels,
        affine=plan.affine,
        sop_instance_uids=[r.sop_instance_uid for r in plan.records],
        frame_numbers=None if plan.records[0].frame is None else [int(r.frame) + 1 for r in plan.records],  # type: ignore[arg-type]
        metadata=series_metadata(header),
    )


def series_metadata(header: SeriesHeader) -> SeriesMetadata:
    """The inference-side metadata of a series, from its header summary."""
    return SeriesMetadata(
        study_instance_uid=header.study_instance_uid,
        series_instance_uid=header.series_instance_uid,
        frame_of_reference_uid=header.frame_of_reference_uid,
        modality=header.modality,
        sop_class_uid=header.sop_class_uid,
        series_description=header.series_description,
        protocol_name=header.protocol_name,
        series_number=header.series_number,
        series_time=header.series_time,
        manufacturer=header.manufacturer,
        repetition_time_ms=header.repetition_time_ms,
        echo_time_ms=header.echo_time_ms,
        inversion_time_ms=header.inversion_time_ms,
        mr_acquisition_type=header.mr_acquisition_type,
    )
