"""The synthetic patient: latent IDH and MGMT status, the tumour they shape, and survival.

Generative model (documented in docs/synthetic-cohort.md; numbers are the defaults):

* IDH mutant with probability 0.35. MGMT promoter methylated with probability 0.85
  when IDH-mutant, 0.45 when IDH-wildtype (as in glioma series). Age ~ N(38, 10) years
  for IDH-mutant and N(62, 11) for IDH-wildtype, clipped to 18–90; sex male with 0.58.
* Location: IDH-mutant tumours favour the frontal lobe (70 %); IDH-wildtype ones lie
  anywhere in the cerebral white matter.
* Size: core radius ~ lognormal, median 14 mm (IDH-mutant) or 17 mm (IDH-wildtype).
* Enhancement with probability 0.25 (IDH-mutant) or 0.9 (IDH-wildtype); necrosis inside
  an enhancing rim with probability 0.15 or 0.8. Edema margin 2–9 mm (IDH-mutant) or
  7–22 mm (IDH-wildtype), shortened by 15 % when MGMT is methylated (a deliberately weak
  effect, as MGMT is hard to see on MRI), and spreading along white matter.
* T2-FLAIR mismatch (non-enhancing IDH-mutant tumours, probability 0.45): the core is
  bright on T2 but dark on FLAIR except for a thin bright rim.
* EGFR amplified with probability 0.45 when IDH-wildtype, 0.05 when IDH-mutant. It has
  no effect on the images (only through its association with IDH): it acts on survival
  alone, so a model that is given the known status can recover it and one that only
  sees images cannot. It is drawn from a child stream of the case's generator, so the
  images of a seed are the same as before it was added.
* Survival: Weibull (shape 1.3) with log hazard ratio
  0.035·(age − 55) − 1.0·IDH-mutant − 0.5·MGMT-methylated + 0.5·EGFR-amplified
  + 0.3·log(core ml / 20) + 0.8·necrosis fraction, median 450 days at the reference;
  uniform censoring over 180–2200 days of follow-up.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from glioma_node.training.synth.anatomy import smooth_noise

NECROTIC_CORE, EDEMA, ENHANCING = 1, 2, 4  # BraTS labels


@dataclass(frozen=True)
class Patient:
    """Latent truth of one synthetic case (what labels.csv publishes, plus phenotype draws)."""

    age: float
    sex: str
    idh_mutant: bool
    mgmt_methylated: bool
    frontal: bool
    core_radius_mm: float
    enhancing: bool
    necrotic: bool
    edema_margin_mm: float
    rim_mm: float
    mismatch: bool
    heterogeneity: float
    egfr_amplified: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def sample_patient(rng: np.random.Generator) -> Patient:
    """Draw latent status and the tumour phenotype it implies (see the module doc)."""
    idh = bool(rng.random() < 0.35)
    mgmt = bool(rng.random() < (0.85 if idh else 0.45))
    # A child stream: the draws below (and every image) stay what they were before EGFR existed.
    egfr = bool(rng.spawn(1)[0].random() < (0.05 if idh else 0.45))
    age = float(np.clip(rng.normal(38, 10) if idh else rng.normal(62, 11), 18, 90))
    enhancing = bool(rng.random() < (0.25 if idh else 0.9))
    necrotic = enhancing and bool(rng.random() < (0.15 if idh else 0.8))
    margin = rng.uniform(2, 9) if idh else rng.uniform(7, 22)
    return Patient(
        age=round(age, 1),
        sex="M" if rng.random() < 0.58 else "F",
        idh_mutant=idh,
        mgmt_methylated=mgmt,
        frontal=bool(rng.random() < (0.7 if idh else 0.25)),
        core_radius_mm=float(np.clip(rng.lognormal(np.log(14 if idh else 17), 0.25), 7, 32)),
        enhancing=enhancing,
        necrotic=necrotic,
        edema_margin_mm=float(margin * (0.85 if mgmt else 1.0)),
        rim_mm=float(rng.uniform(2, 5)),
        mismatch=idh and not enhancing and bool(rng.random() < 0.45),
        heterogeneity=float(rng.uniform(0.15, 0.3) if not idh else rng.uniform(0.05, 0.15)),
        egfr_amplified=egfr,
    )


def choose_centre(wm: np.ndarray, brain: np.ndarray, affine: np.ndarray, patient: Patient,
                  rng: np.random.Generator) -> np.ndarray:
    """A voxel (z, y, x) in deep white matter ≥ core radius from the brain surface.

    Frontal means the anterior third of the brain (LPS y is posterior, so low y).
    """
    depth = ndimage.distance_transform_edt(brain)
    ok = (wm > 0.6) & (depth > patient.core_radius_mm * 0.9 + 3)
    idx = np.argwhere(ok)
    if len(idx) == 0:
        idx = np.argwhere(depth >= depth.max() * 0.8)
    y_mm = (affine[:3, :3] @ idx[:, ::-1].T.astype(float))[1] + affine[1, 3]
    lo, hi = np.percentile(y_mm, [0, 100])
    anterior = y_mm < lo + (hi - lo) / 3
    pool = idx[anterior] if patient.frontal and anterior.any() else idx[~anterior] if (~anterior).any() else idx
    return pool[rng.integers(len(pool))].astype(float)


def grow_tumour(centre: np.ndarray, wm: np.ndarray, brain: np.ndarray, ventricles: np.ndarray,
                patient: Patient, rng: np.random.Generator) -> np.ndarray:
    """BraTS label map (uint8: 0, 1 necrotic/non-enhancing core, 2 edema, 4 enhancing), 1 mm grid."""
    shape = wm.shape
    r0 = int(patient.core_radius_mm + patient.edema_margin_mm * 1.6 + 8)
    lo = np.maximum(centre.astype(int) - r0, 0)
    hi = np.minimum(centre.astype(int) + r0 + 1, shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    grids = np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij")
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre)))
    sub = tuple(b - a for a, b in zip(lo, hi))
    lobes = 1.0 + 0.22 * np.clip(smooth_noise(sub, rng, 10.0, coarse=2), -2.5, 2.5)
    r_core = dist / (patient.core_radius_mm * lobes)  # < 1 inside the core
    labels = np.zeros(sub, np.uint8)
    in_brain = brain[box] & ~(ventricles[box] > 0.5)
    core = (r_core < 1.0) & in_brain
    # Edema follows white matter: the margin is longer where white matter is dense.
    margin = patient.edema_margin_mm * (0.4 + 0.9 * wm[box]) * (1 + 0.3 * smooth_noise(sub, rng, 8.0, coarse=2))
    edema = (dist < patient.core_radius_mm * lobes + margin) & in_brain & ~core
    labels[edema] = EDEMA
    if patient.enhancing:
        rim_fraction = patient.rim_mm / patient.core_radius_mm
        rim = core & (r_core >= 1.0 - rim_fraction)
        inner = core & ~rim
        if not patient.necrotic:
            # Enhancement without necrosis is patchy, not a closed ring.
            patchy = smooth_noise(sub, rng, 5.0, coarse=2) > -0.3
            rim = core & (rim | (patchy & (r_core < 0.8))) & (patchy | (r_core >= 1.0 - rim_fraction))
            inner = core & ~rim
        labels[inner] = NECROTIC_CORE
        labels[rim] = ENHANCING
    else:
        labels[core] = NECROTIC_CORE
    full = np.zeros(shape, np.uint8)
    full[box] = labels
    return full


def survival(patient: Patient, core_ml: float, necrosis_fraction: float, rng: np.random.Generator) -> tuple[int, bool]:
    """(observed days, event) from the Weibull proportional-hazards model of the module doc."""
    log_hr = (0.035 * (patient.age - 55) - 1.0 * patient.idh_mutant - 0.5 * patient.mgmt_methylated
              + 0.5 * patient.egfr_amplified + 0.3 * np.log(max(core_ml, 0.5) / 20.0) + 0.8 * necrosis_fraction)
    shape, median = 1.3, 450.0
    scale = median / np.log(2) ** (1 / shape)
    t = scale * (-np.log(rng.random()) / np.exp(log_hr)) ** (1 / shape)
    censor = rng.uniform(180, 2200)
    return int(round(min(t, censor))), bool(t <= censor)
