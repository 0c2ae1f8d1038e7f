"""write_results: every DICOM result object of one study, plus the summary PNG.

Into ``OUT/<StudyInstanceUID>/``:

* ``dicom/seg-t1c.dcm``, ``dicom/seg-flair.dcm``: the tumour SEG on each of those series
  (``seg-t1.dcm`` or ``seg-t2.dcm`` on the reference series of a study without T1c);
* ``dicom/gradcam-mgmt.dcm``, ``dicom/gradcam-idh.dcm``: the Grad-CAM Parametric Maps;
* ``dicom/report.dcm``: the TID 1500 Comprehensive 3D SR;
* ``dicom/summary.dcm`` and ``summary.png``: the summary image.

Objects whose inputs are absent are skipped (no FLAIR mask, no radiogenomic stage), and
the SR then says only what was found. Each file is written atomically.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset

from glioma_node.core.files import atomic_path
from glioma_node.core.findings import Findings
from glioma_node.core.volume import Volume
from glioma_node.dicom_io.results.context import (
    SERIES,
    ResultContext,
    ResultVersion,
    apply_character_set,
    created_time,
    save,
    text_neutral,
)
from glioma_node.dicom_io.results.pmap import heat_map
from glioma_node.dicom_io.results.seg import tumour_segmentation
from glioma_node.dicom_io.results.sr import measurement_report
from glioma_node.dicom_io.results.summary import png_bytes, render_summary, summary_image

SEG_ROLES = ("T1c", "FLAIR")


@dataclass(frozen=True)
class WrittenObject:
    """One result object on disk."""

    kind: str
    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


def build_results(findings: Findings, sources: dict[str, list[Dataset]], reference: Volume,
                  version: ResultVersion | None = None) -> tuple[list[tuple[str, str, Dataset]], bytes]:
    """The result datasets as (kind, file stem, dataset), and the summary PNG.

    ``sources``: SeriesInstanceUID → instance headers of every series the findings
    name; ``reference``: the reference-role volume (pixels for the summary image);
    ``version``: which version of the study's results these are (default: the first).
    """
    neutral, charset = text_neutral(sources)
    ctx = ResultContext(findings, neutral, created_time(findings), version=version or ResultVersion())
    objects: list[tuple[str, str, Dataset]] = []
    segs = {role: tumour_segmentation(ctx, findings.masks[role]) for role in SEG_ROLES if role in findings.masks}
    if findings.reference_role not in segs:
        segs[findings.reference_role] = tumour_segmentation(ctx, findings.masks[findings.reference_role])
    objects += [("seg", SERIES[("seg", role)].stem, ds) for role, ds in segs.items()]
    if findings.radiogenomics is not None:
        objects += [("pmap", SERIES[("pmap", target)].stem, heat_map(ctx, target, heat))
                    for target, heat in findings.radiogenomics.heat_maps.items()]
    others = [ds for _, _, ds in objects if ds is not segs[findings.reference_role]]
    objects.append(("sr", SERIES[("sr", "")].stem, measurement_report(ctx, segs[findings.reference_role], others)))
    rgb = render_summary(findings, reference)
    mask = findings.masks[findings.reference_role]
    header = ctx.ordered_sources(mask.series_instance_uid, mask.sop_instance_uids, mask.frame_numbers)[0]
    objects.append(("sc", SERIES[("sc", "")].stem, summary_image(ctx, rgb, header, reference)))
    return [(kind, stem, apply_character_set(ds, charset)) for kind, stem, ds in objects], png_bytes(rgb)


def write_results(findings: Findings, sources: dict[str, list[Dataset]], reference: Volume,
                  folder: Path, version: ResultVersion | None = None) -> list[WrittenObject]:
    """Write the result objects of one study into ``folder`` (see the module doc)."""
    objects, png = build_results(findings, sources, reference, version)
    written = []
    for kind, stem, ds in objects:
        path = save(ds, folder / "dicom" / f"{stem}.dcm")
        written.append(WrittenObject(kind, path, str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                                     str(ds.SeriesInstanceUID)))
    with atomic_path(folder / "summary.png") as tmp:
        tmp.write_bytes(png)
    return written
