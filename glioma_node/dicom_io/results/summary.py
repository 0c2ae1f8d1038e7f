"""The summary image: one picture of the results for PACS viewers that show neither SR nor SEG.

A 1600×1000 RGB panel: a "research use only, not for diagnosis" banner; three key
slices of the reference (T1c) series with the tumour outline (necrotic core red, edema
green, enhancing yellow) and the Grad-CAM maps of MGMT and IDH over them; volumes,
a colour legend, the segmentation's quality, predictions with probabilities and
thresholds, the risk group, the top SHAP features, and at the bottom the model versions
with their checksums (laid out from the bottom up, so nothing overlaps). It carries no
patient name or ID. Saved as PNG and as a DICOM Secondary Capture (:func:`summary_image`).
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


def _text_lines(findings: Findings) -> tuple[list[tuple[str, str]], list[str]]:
    """(text, style) lines of the right-hand column, and the footer lines (the models with
    their checksums). Style is 'head', 'body', 'small', 'warning' (first, in red: what the
    results must not be read without) or 'legend:<k>' (a volume line drawn beside the
    colour of segment ``k`` in the overlay)."""
    lines = [(f"WARNING: {warning}"[:88], "warning") for warning in findings.warnings[:4]]
    lines.append(("Tumour volumes (overlay colours)", "head"))
    for k, spec in enumerate(SEGMENTS):
        style = f"legend:{k}" if k < 3 else "body"
        lines.append((f"{spec.label}: {findings.volumes_ml.get(spec.key, 0.0):.1f} ml", style))
    quality = findings.segmentation_quality
    if quality is not None:
        verdict = "DOUBTFUL" if quality.doubtful else "plausible"
        lines.append((f"Segmentation quality {quality.score:.2f}: {verdict} (doubtful below {quality.threshold:.2f})",
                      "warning" if quality.doubtful else "body"))
    rg = findings.radiogenomics
    if rg is None:
        lines += [("Predictions", "head"), ("not computed (see the warnings above)" if findings.warnings else
                                            "not computed (no tumour segmented or model off)", "body")]
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
    footer = [f"{model.get('task')}: {model.get('name')} {model.get('version')} "
              f"(sha256 {str(model.get('sha256', ''))[:12]})"[:90] for model in findings.models]
    return lines, footer


LINE_STEP = {"small": 0.025}  # figure-height fraction per line; 0.03 for the rest
FOOTER_STEP = 0.022


def column_layout(lines: list[tuple[str, str]], footer: list[str]
                  ) -> tuple[list[tuple[float, str, str]], list[tuple[float, str, str]]]:
    """Where each line of the right-hand column goes: ``(top y, text, style)`` in figure
    fractions (0 bottom, 1 top). The footer (a "Models" head and one line per model) is
    laid out from the bottom up, above the study line; the column runs down from the top
    and stops before the footer, with a last line saying the rest is in the SR."""
    footer_top = 0.012 + FOOTER_STEP * (len(footer) + 1.6)
    footer_placed = [(footer_top, "Models", "head")] + [
        (footer_top - FOOTER_STEP * (k + 1.1), text, "small") for k, text in enumerate(footer)]
    floor = footer_top + 0.02
    placed: list[tuple[float, str, str]] = []
    y = 0.9
    for text, style in lines:
        step = LINE_STEP.get(style, 0.03)
        top = y - (0.012 if style == "head" else 0.0)
        if top - step < floor:
            if placed:  # the last line that fits says where the rest is
                placed[-1] = (placed[-1][0], "… (more in the SR and findings.json)", "small")
            break
        placed.append((top, text, style))
        y = top - step
    return placed, footer_placed


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
    sizes = {"head": (13, "bold", "#ffd54f"), "body": (12, "normal", "white"), "small": (10, "normal", "#cfd8dc"),
             "warning": (10, "bold", "#ff5252")}
    placed, footer = column_layout(*_text_lines(findings))
    figure.text(0.62, 0.012, f"Study {findings.study_instance_uid}"[:80], color="#90a4ae", fontsize=8)
    for y, text, style in footer:
        figure.text(0.62, y, text, color="#ffd54f" if style == "head" else "#cfd8dc",
                    fontsize=11 if style == "head" else 9, weight="bold" if style == "head" else "normal", va="top")
    for y, text, style in placed:
        legend = style.startswith("legend:")
        size, weight, text_colour = sizes["body" if legend else style]
        x = 0.62
        if legend:
            rgb = np.asarray(SEGMENTS[int(style.split(":")[1])].rgb) / 255
            figure.patches.append(Rectangle((0.62, y - 0.019), 0.011, 0.016, transform=figure.transFigure,
                                            facecolor=rgb, edgecolor=rgb, linewidth=0))
            x = 0.636
        figure.text(x, y, text, color=text_colour, fontsize=size, weight=weight, va="top", family="DejaVu Sans")
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
