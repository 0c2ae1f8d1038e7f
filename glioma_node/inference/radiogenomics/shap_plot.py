"""The SHAP bar chart written beside findings.json (``explanations.png``)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from glioma_node.core.files import atomic_path
from glioma_node.core.findings import RESEARCH_USE, Radiogenomics  # noqa: E402
from glioma_node.core.targets import TARGET_INFO  # noqa: E402

TITLES = {**{t: f"{info.short} (log-odds)" for t, info in TARGET_INFO.items()}, "risk": "Cox risk (log hazard)"}


def plot_attributions(result: Radiogenomics, path: Path, top: int = 8) -> None:
    """One panel per prediction: its ``top`` SHAP values as bars (red raises, blue lowers)."""
    panels = [(t, p.top_features, f"{p.status} p={p.probability:.2f}") for t, p in sorted(result.predictions.items())
              if p.top_features]
    if result.risk is not None and result.risk.top_features:
        panels.append(("risk", result.risk.top_features, f"{result.risk.group} risk, score {result.risk.score:.2f}"))
    if not panels:
        return
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.2 * len(panels) + 0.6), squeeze=False)
    for ax, (key, feats, subtitle) in zip(axes[:, 0], panels):
        items = feats[:top][::-1]
        values = [f["shap"] for f in items]
        ax.barh([f["feature"] for f in items], values, color=["#c0392b" if v > 0 else "#2e6da4" for v in values])
        ax.axvline(0, color="black", linewidth=0.6)
        ax.set_title(f"{TITLES[key]}: {subtitle}", fontsize=9)
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"SHAP feature attributions. {RESEARCH_USE}", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(Path(path)) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
