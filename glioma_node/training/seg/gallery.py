"""A picture of every confounder the generator draws, for the docs and for a reviewer's eye.

``python -m glioma_node.training.seg.gallery CASE_DIR OUT.png`` (CASE_DIR: a label-driven
case of ``glioma-node synth --nifti-only``) draws samples of the case until each
confounder of :data:`glioma_node.training.seg.confounders.CONFOUNDERS` appears, and shows
the slice holding most of it on the sequence where it matters, outlined in yellow, with
the whole-tumour target in red. Every panel is a real output of the training generator.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from glioma_node.core.roles import ROLES
from glioma_node.training.seg.confounders import (
    CHOROID,
    CONFOUNDERS,
    CSF_FLOW,
    DURA,
    FLOW_VOID,
    PERIVENTRICULAR,
    VENTRICLE,
    VESSEL,
    WMH,
    is_tumour,
)
from glioma_node.training.seg.dataset import Case, load_case
from glioma_node.training.seg.generator import corrupt, render_classes, sample_classes

# the sequence on which each confounder is mistaken for tumour
SHOWN_ON = {PERIVENTRICULAR: "FLAIR", WMH: "FLAIR", CHOROID: "T1c", VESSEL: "T1c", FLOW_VOID: "T2",
            CSF_FLOW: "FLAIR", DURA: "T1c", VENTRICLE: "FLAIR"}


def draw_with(case: Case, cls: int, rng: np.random.Generator, patch: int = 80, tries: int = 80
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(classes, image (4, z, y, x), targets) of a sample of ``case`` where class ``cls``
    covers at least 5 voxels and its sequence was not dropped; None after ``tries``."""
    from glioma_node.training.seg.train import _random_spatial

    channel = ROLES.index(SHOWN_ON[cls])
    for _ in range(tries):
        classes, _, brain, soft = _random_spatial(case, rng, patch)
        assert classes is not None
        classes, soft = sample_classes(classes, brain, rng, soft)
        if (classes == cls).sum() < 5:
            continue
        tumour = is_tumour(classes)
        sample = corrupt(render_classes(classes, tumour, brain, rng), brain, tumour, soft, rng)
        if (sample.image[channel] != 0).any():
            return classes, sample.image, sample.target
    return None


def gallery(case_dir: Path, out: Path, seed: int = 0) -> Path:
    """Write the picture (see the module doc); returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    case = load_case(case_dir)
    rng = np.random.default_rng(seed)
    fig, axes = plt.subplots(2, 4, figsize=(13, 7))
    for ax, (name, cls) in zip(axes.ravel(), CONFOUNDERS.items()):
        ax.axis("off")
        drawn = draw_with(case, cls, rng)
        if drawn is None:
            ax.set_title(f"{name}: not drawn", fontsize=9)
            continue
        classes, image, target = drawn
        shown = image[ROLES.index(SHOWN_ON[cls])]
        z = int(np.argmax(((classes == cls) & (shown != 0)).sum(axis=(1, 2))))
        ax.imshow(shown[z], cmap="gray", origin="upper")
        ax.contour(classes[z] == cls, levels=[0.5], colors="yellow", linewidths=0.6)
        if (target[0, z] > 0.5).any():
            ax.contour(target[0, z] > 0.5, levels=[0.5], colors="red", linewidths=0.6)
        ax.set_title(f"{name} ({SHOWN_ON[cls]})", fontsize=9)
    fig.suptitle("Training generator: confounders (yellow, labelled background) and tumour target (red)",
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m glioma_node.training.seg.gallery CASE_DIR OUT.png")
    print(gallery(Path(sys.argv[1]), Path(sys.argv[2])))
