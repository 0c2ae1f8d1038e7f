"""The summary image: one picture of the results for PACS viewers that show neither SR nor SEG.

A 1600×1000 RGB panel: a "research use only, not for diagnosis" banner; three key
slices of the reference (T1c) series with the tumour outline (necrotic core red, edema
green, enhancing yellow) and the Grad-CAM maps of MGMT and IDH over them; volumes,
predictions with probabilities and thresholds, the risk group, the top SHAP features
and the model versions. It carries no patient name or ID. Saved as PNG and as a DICOM
Secondary Capture (:func:`summary_image`).
"""
from __future__ import annotations

import io

import highdicom as hd
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from glioma_node.core.clinical import CovariateSource
from glioma_node.core.findings import RESEARCH_USE, Findings
from glioma_node.core.targets import TARGET_INFO
from glioma_node.core.volume import Volume
from glioma_node.dicom_io.results.context import MANUFACTURER, ResultContext
from glioma_node.dicom_io.results.seg import SEGMENTS

WIDTH, HEIGHT, DPI = 1600, 1000, 100
_ORIENTATION = (("L", "R"), ("P", "A"), ("H", "F"))


def key_slices(labels: np.ndarray, count: int = 3) -> list[int]:
    """Slices through the tumour at 25, 50 and 75 % of its extent (the middle when no tumour)."""
    area = (labels > 0).reshape(labels.shape[0], -1).sum(axis=1)
    present = np.flatnonzero(area)
    if present.size == 0:
        return [labels.shape[0] // 2] * count
    return [int(present[int(round(q * (present.size - 1)))]) for q in np.linspace(0.25, 0.75, count)]


def _window(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (1, 99.5))
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1)


#: how the summary words where a survival-model input came from
SOURCE_WORDS = {CovariateSource.CLINICAL.value: "known", CovariateSource.PREDICTED.value: "predicted",
                CovariateSource.IMPUTED.value: "unknown (median)"}


def _short(target: str) -> str:
    return TARGET_INFO[target].short if target in TARGET_INFO else target.upper()


def _text_lines(findings: Findings) -> list[tuple[str, str]]:
    """(text, style) lines of the right-hand column; style is 'head', 'body', 'small' or
    'warning' (first, in red: what the results must not be read without)."""
    lines = [(f"WARNING: {warning}"[:88], "warning") for warning in findings.warnings[:4]]
    lines.append(("Tumour volumes", "head"))
    for spec in SEGMENTS:
        lines.append((f"{spec.label}: {findings.volumes_ml.get(spec.key, 0.0):.1f} ml", "body"))
    rg = findings.radiogenomics
    if rg is None:
        lines += [("Predictions", "head"), ("not computed (no tumour segmented or model off)", "body")]
    else:
        lines.append(("Predictions (calibrated probability; threshold)", "head"))
        for target, p in rg.predictions.items():
            lines.append((f"{_short(target)}: {p.status}  p={p.probability:.2f}  (threshold {p.threshold:.2f}, "
                          f"{p.variant})", "body"))
        if rg.risk is not None:
            risk = rg.risk
            lines.append((f"Risk group: {risk.group}  (Cox score {risk.score:+.2f}, cutoff {risk.cutoff:+.2f})",
                          "body"))
            if risk.inputs:
                lines.append(("Risk inputs: " + ", ".join(f"{m.upper()} {SOURCE_WORDS.get(v, v)}"
                                                          for m, v in risk.inputs.items()), "body"))
        for target, p in rg.predictions.items():
            lines.append((f"Top SHAP features, {_short(target)} (log-odds)", "head"))
            for item in p.top_features[:4]:
                lines.append((f"{float(item['shap']):+.3f}  {str(item['feature'])[:58]}", "small"))
    lines.append(("Models", "head"))
    for model in findings.models:
        lines.append((f"{model.get('task')}: {model.get('name')} {model.get('version')} "
                      f"(sha256 {str(model.get('sha256', ''))[:12]})", "small"))
    return lines


def render_summary(findings: Findings, reference: Volume) -> np.ndarray:
    """The summary panel as ``[row, column, RGB]`` uint8 (see the module doc).

    ``reference`` is the reference-role volume the findings' mask lies on; slices are
    shown as stored (row 0 at the top), the way a viewer shows the source series.
    """
    mask = findings.masks[findings.reference_role]
    figure = Figure(figsize=(WIDTH / DPI, HEIGHT / DPI), dpi=DPI, facecolor="black")
    canvas = FigureCanvasAgg(figure)
    banner = figure.add_axes((0, 0.94, 1, 0.06))
    banner.set_axis_off()
    banner.add_patch(Rectangle((0, 0), 1, 1, color="#b00020"))
    banner.text(0.5, 0.5, f"glioma-node — {RESEARCH_USE.upper()}", color="white", ha="center", va="center",
                fontsize=20, weight="bold")
    slices = key_slices(mask.labels)
    maps: list[tuple[str, np.ndarray | None]] = [("Segmentation", None)]
    if findings.radiogenomics is not None:
        maps += [(f"Grad-CAM {t.upper()}", h.values) for t, h in findings.radiogenomics.heat_maps.items()]
    colours = {spec.brats_labels[0]: np.asarray(spec.rgb) / 255 for spec in SEGMENTS[:3]}
    hot = colormaps["hot"]
    cell_w, cell_h = 0.6 / len(slices), 0.92 / max(len(maps), 1)
    for r, (title, values) in enumerate(maps):
        for c, k in enumerate(slices):
            ax = figure.add_axes((c * cell_w, 0.92 - (r + 1) * cell_h, cell_w, cell_h))
            ax.set_axis_off()
            grey = _window(reference.voxels[k])
            rgb = np.repeat(grey[..., None], 3, axis=2)
            if values is None:
                for label, colour in colours.items():
                    sel = mask.labels[k] == label
                    rgb[sel] = 0.45 * rgb[sel] + 0.55 * colour
            else:
                heat = np.clip(values[k], 0, 1)
                # the weakest fifth stays transparent, so the anatomy shows where the map says little
                alpha = 0.75 * np.clip((heat - 0.2) / 0.8, 0, 1)[..., None]
                rgb = (1 - alpha) * rgb + alpha * hot(0.35 + 0.65 * heat)[..., :3]
            ax.imshow(np.clip(rgb, 0, 1), interpolation="nearest", aspect="equal")
            ax.set_title(f"{title}, slice {k + 1}", color="white", fontsize=10, pad=2)
    y = 0.9
    sizes = {"head": (13, "bold", "#ffd54f"), "body": (12, "normal", "white"), "small": (10, "normal", "#cfd8dc"),
             "warning": (10, "bold", "#ff5252")}
    for text, style in _text_lines(findings):
        size, weight, text_colour = sizes[style]
        if style == "head":
            y -= 0.012
        figure.text(0.62, y, text, color=text_colour, fontsize=size, weight=weight, va="top", family="DejaVu Sans")
        y -= 0.03 if style != "small" else 0.025
    figure.text(0.62, 0.015, f"Study {findings.study_instance_uid}"[:80], color="#90a4ae", fontsize=8)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def png_bytes(rgb: np.ndarray) -> bytes:
    """``rgb`` as PNG bytes (no timestamps, so the same picture gives the same file)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def _patient_orientation(volume: Volume) -> tuple[str, str]:
    letters = []
    for axis in (0, 1):
        direction = volume.direction[:, axis]
        dominant = int(np.argmax(np.abs(direction)))
        letters.append(_ORIENTATION[dominant][0 if direction[dominant] > 0 else 1])
    return letters[0], letters[1]


def summary_image(ctx: ResultContext, rgb: np.ndarray, reference_header: Dataset, volume: Volume) -> hd.sc.SCImage:
    """The Secondary Capture of the summary panel ``rgb``, in the study of ``reference_header``."""
    series = ctx.series("sc")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=reference_header, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=ctx.uid(series.stem, "series"), series_number=series.number,
        sop_instance_uid=ctx.uid(series.stem, "instance"), instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=_patient_orientation(volume), transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=ctx.contributing_equipment())
    sc.ConversionType = "WSD"
    sc.BurnedInAnnotation = "YES"
    sc.ImageComments = RESEARCH_USE
    return ctx.stamp(sc, series, laterality=True)
