"""MR contrast of each tissue per sequence, jittered per case, with texture and bias field.

Mean signals are relative (white matter on T1 ≈ 0.78) and follow the usual
appearances: CSF dark on T1 and FLAIR, bright on T2; fat bright on T1; cortical bone
dark everywhere; enhancing tumour bright only after contrast; edema bright on T2 and
FLAIR; necrosis CSF-like. Each case multiplies every mean by 1 ± 10 % so a model
cannot learn fixed intensities.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from glioma_node.core.roles import ROLES
from glioma_node.training.synth.anatomy import Head, smooth_noise
from glioma_node.training.synth.tumour import EDEMA, ENHANCING, NECROTIC_CORE, Patient

SEQUENCES = ROLES

MEANS: dict[str, dict[str, float]] = {
    #         csf   gm    wm    ext   bone  marrow scalp fat   necr  nonenh enh   edema
    "T1":    dict(csf=.25, gm=.55, wm=.78, ext_csf=.22, bone=.04, marrow=.75, scalp=.45, fat=.95, necrosis=.25, nonenh=.40, enhancing=.50, edema=.47),
    "T1c":   dict(csf=.26, gm=.56, wm=.78, ext_csf=.24, bone=.04, marrow=.78, scalp=.50, fat=.95, necrosis=.26, nonenh=.43, enhancing=.98, edema=.49),
    "T2":    dict(csf=1.0, gm=.55, wm=.38, ext_csf=1.0, bone=.03, marrow=.45, scalp=.35, fat=.65, necrosis=.95, nonenh=.80, enhancing=.65, edema=.78),
    "FLAIR": dict(csf=.07, gm=.55, wm=.42, ext_csf=.07, bone=.03, marrow=.50, scalp=.40, fat=.70, necrosis=.40, nonenh=.75, enhancing=.70, edema=.90),
}


def tumour_masks(labels: np.ndarray, patient: Patient) -> dict[str, np.ndarray]:
    """Soft (0–1) masks of the tumour compartments that have their own contrast."""
    core = labels == NECROTIC_CORE
    masks = {
        "edema": labels == EDEMA,
        "enhancing": labels == ENHANCING,
        # Label 1 inside an enhancing rim of a necrotic tumour is necrosis; otherwise solid non-enhancing tumour.
        "necrosis": core if patient.necrotic else np.zeros_like(core),
        "nonenh": np.zeros_like(core) if patient.necrotic else core,
    }
    return {k: ndimage.gaussian_filter(v.astype(np.float32), 0.7) for k, v in masks.items()}


def render(head: Head, soft_tumour: dict[str, np.ndarray], labels: np.ndarray, patient: Patient,
           sequence: str, rng: np.random.Generator) -> np.ndarray:
    """The noise-free relative signal of one sequence on the working grid, bias field applied."""
    means = {k: v * rng.uniform(0.9, 1.1) for k, v in MEANS[sequence].items()}
    shape = head.shape
    image = np.zeros(shape, np.float32)
    for tissue, membership in head.maps.items():
        image += membership * np.float32(means[tissue])
    texture = 1.0 + 0.03 * smooth_noise(shape, rng, 2.0, coarse=2)
    image *= texture
    tumour_total = sum(soft_tumour.values())
    tumour_texture = 1.0 + patient.heterogeneity * np.clip(smooth_noise(shape, rng, 3.0, coarse=2), -2, 2)
    inside = np.zeros(shape, np.float32)
    for compartment, mask in soft_tumour.items():
        value = means[compartment]
        if compartment == "nonenh" and sequence == "FLAIR" and patient.mismatch:
            value = means["csf"] * 4.5  # T2-FLAIR mismatch: suppressed centre
        inside += mask * np.float32(value)
    if patient.mismatch and sequence == "FLAIR":
        core = labels == NECROTIC_CORE
        rim = core & ~ndimage.binary_erosion(core, iterations=2)
        inside += ndimage.gaussian_filter(rim.astype(np.float32), 0.7) * np.float32(means["edema"] - means["csf"] * 4.5)
    image = image * (1 - np.clip(tumour_total, 0, 1)) + inside * tumour_texture
    bias = np.exp(0.12 * smooth_noise(shape, rng, 60.0, coarse=8)).astype(np.float32)
    return np.clip(image * bias, 0, None)
