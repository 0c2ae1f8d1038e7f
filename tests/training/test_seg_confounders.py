"""The generator draws what real brains show besides the tumour, and labels all of it background."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from glioma_node.core.roles import ROLES
from glioma_node.training.seg.confounders import (
    CHOROID,
    CONFOUNDERS,
    CSF_FLOW,
    DURA,
    PERIVENTRICULAR,
    VENTRICLE,
    VESSEL,
    WMH,
    add_structures,
    is_tumour,
    perturb,
)
from glioma_node.training.seg.generator import (
    CORE,
    EDEMA_CLASS,
    ENHANCING_CLASS,
    T1_KINDS,
    T1Kind,
    _class_means,
    corrupt,
    render_classes,
    sample_classes,
    synthesise,
)
from glioma_node.training.synth.anatomy import TISSUE_LABELS

CSF, GM, WM, EXT = (TISSUE_LABELS[t] for t in ("csf", "gm", "wm", "ext_csf"))


def _head(size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A 2 mm class map: an ellipsoid brain (cortex, white matter, two deep CSF cavities
    either side of the midline, sulcal CSF at the surface) in extra-axial CSF, a tumour in
    the left white matter."""
    z, y, x = np.meshgrid(*[np.arange(size, dtype=float)] * 3, indexing="ij")
    c = (size - 1) / 2
    r = np.sqrt(((z - c) / 0.8) ** 2 + (y - c) ** 2 + ((x - c) / 0.85) ** 2)
    classes = np.zeros((size,) * 3, np.uint8)
    classes[r < 31] = EXT
    classes[r < 29] = CSF
    classes[r < 28] = GM
    classes[r < 25] = WM
    for side in (-1, 1):  # lateral ventricles: elongated front to back, 5 mm off the midline
        v = np.sqrt(((z - c - 2) / 3) ** 2 + ((y - c) / 10) ** 2 + ((x - c - side * 4.5) / 2.2) ** 2)
        classes[v < 1] = CSF
    t = np.sqrt((z - c) ** 2 + (y - c + 12) ** 2 + (x - c - 12) ** 2)
    classes[t < 7] = EDEMA_CLASS
    classes[t < 4] = ENHANCING_CLASS
    classes[t < 2] = CORE
    return classes, r < 29


def test_add_structures_tells_ventricles_from_sulci_and_finds_the_falx_and_sinuses():
    classes, brain = _head()
    out = add_structures(classes, brain)
    ventricle = out == VENTRICLE
    assert ventricle.sum() > 100, "the deep CSF cavities are ventricles"
    depth = ndimage.distance_transform_edt(brain)
    assert depth[ventricle].min() >= 2, "sulcal CSF at the surface is not a ventricle"
    assert not (out[(classes == CSF) & (depth <= 1)] == VENTRICLE).any()
    assert (out == DURA).any() and (out == VESSEL).any(), "falx, dural layer and sinuses"
    assert (out[is_tumour(classes)] == classes[is_tumour(classes)]).all(), "tumour voxels unchanged"


def test_every_confounder_is_drawn_and_never_labelled_tumour():
    classes, brain = _head()
    classes = add_structures(classes, brain)
    rng = np.random.default_rng(1)
    seen = {name: 0 for name in CONFOUNDERS}
    for _ in range(30):
        drawn, soft = sample_classes(classes, brain, rng)
        for name, cls in CONFOUNDERS.items():
            where = drawn == cls
            seen[name] += int(where.any())
            assert (soft[:, where] <= 0.45).all(), f"{name} is background in every target"
        assert np.array_equal(is_tumour(drawn), soft[0] >= 0.55), "targets agree with the class map drawn"
    assert all(n >= 2 for n in seen.values()), seen


def test_perturb_changes_only_normal_tissue():
    classes, brain = _head()
    classes = add_structures(classes, brain)
    rng = np.random.default_rng(2)
    tumour = is_tumour(classes)
    for _ in range(10):
        out = perturb(classes, brain, rng)
        assert np.array_equal(out[tumour], classes[tumour])
        assert not is_tumour(out[~tumour]).any()


def test_small_vessel_disease_is_sometimes_bilateral_and_symmetric_about_the_falx():
    """Real scans' bilateral, symmetric white-matter signal must be learnt as background:
    some draws mirror it about the midline, others leave it one-sided. A training crop
    centred on a tumour cuts off part of the far hemisphere, so the plane is the falx's,
    not the middle of the crop's brain (here 6.5 voxels off)."""
    classes, brain = _head()
    classes, brain = add_structures(classes, brain)[:, :, 20:], brain[:, :, 20:]  # the crop: x 20-63
    mid = (classes.shape[2] + 20 - 1) / 2 - 20  # the head's own midline in the crop's x
    x = np.arange(classes.shape[2])
    reflect = np.clip(np.round(2 * mid - x).astype(int), 0, classes.shape[2] - 1)
    rng = np.random.default_rng(6)
    symmetric = one_sided = 0
    for _ in range(60):
        wmh = perturb(classes, brain, rng) == WMH
        patches = ndimage.binary_opening(wmh)  # the confluent part, not the scattered dots
        if patches.sum() < 50:
            continue
        overlap = (patches & patches[:, :, reflect]).sum() / patches.sum()
        symmetric += overlap > 0.8
        one_sided += overlap < 0.5
    assert symmetric >= 3 and one_sided >= 3, (symmetric, one_sided)


def test_periventricular_signal_is_bright_on_flair_but_not_tumour():
    rng = np.random.default_rng(3)
    flair = ROLES.index("FLAIR")
    for _ in range(50):
        means, _ = _class_means(rng)
        wm = means[flair, WM]
        assert means[flair, PERIVENTRICULAR] > wm and means[flair, WMH] > wm
        assert means[ROLES.index("T1c"), CHOROID] >= means[ROLES.index("T1c"), WM]


def test_t1_kinds_draw_their_own_grey_white_and_csf_contrast():
    rng = np.random.default_rng(4)
    t1 = ROLES.index("T1")
    ratios: dict[str, list[float]] = {}
    for _ in range(300):
        means, kinds = _class_means(rng)
        ratios.setdefault(kinds["T1"], []).append(means[t1, CSF] / means[t1, WM])
    assert set(ratios) == {str(k) for k in T1Kind}
    for kind, (_, (lo, hi)) in T1_KINDS.items():
        assert lo <= min(ratios[str(kind)]) and max(ratios[str(kind)]) <= hi
    # CSF is nulled on a T1-weighted FLAIR, not on a spin echo
    assert np.median(ratios[str(T1Kind.T1_FLAIR)]) < 0.5 * np.median(ratios[str(T1Kind.SPIN_ECHO)])


def test_a_rendered_sample_shows_the_periventricular_band_brighter_than_white_matter_on_flair():
    classes, brain = _head()
    classes = add_structures(classes, brain)
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(40):
        drawn, soft = sample_classes(classes, brain, rng)
        band = drawn == PERIVENTRICULAR
        # away from CSF: the partial-volume blur darkens a 2 mm band beside a dark ventricle, as on real scans
        beside_csf = ndimage.binary_dilation(np.isin(drawn, (CSF, VENTRICLE, CSF_FLOW, CHOROID)), np.ones((3, 3, 3)))
        if (band & ~beside_csf).sum() < 20:
            continue
        tumour = is_tumour(drawn)
        raw = render_classes(drawn, tumour, brain, rng)
        flair = raw[ROLES.index("FLAIR")]
        assert flair[band & ~beside_csf].mean() > flair[(drawn == WM) & ~beside_csf].mean()
        sample = corrupt(raw, brain, tumour, soft, rng)
        assert (sample.target[:, band] <= 0.45).all()
        checked += 1
    assert checked >= 3


def test_synthesise_still_gives_a_sample_of_the_right_shape():
    classes, brain = _head(48)
    sample = synthesise(add_structures(classes, brain), brain, np.random.default_rng(6))
    assert sample.image.shape == (4, 48, 48, 48) and sample.target.shape == (3, 48, 48, 48)
    assert np.isfinite(sample.image).all()


def test_a_site_case_without_t2_never_loses_its_flair():
    """A case that has FLAIR but no T2 keeps FLAIR in every sample (the whole tumour is seen
    on it), and its missing T2 is zeros, never noise."""
    classes, brain = _head(40)
    tumour = is_tumour(classes)
    raw = render_classes(classes, tumour, brain, np.random.default_rng(7))
    rng = np.random.default_rng(8)
    flair, t2 = ROLES.index("FLAIR"), ROLES.index("T2")
    targets = np.zeros((3, *classes.shape), np.float32)
    for _ in range(60):
        sample = corrupt(raw, brain, tumour, targets, rng, present=(True, True, True, False))
        assert (sample.image[flair] != 0).any() and not (sample.image[t2] != 0).any()


def test_a_tumour_crossing_the_midline_bridges_it_in_grey_and_white_matter_only():
    from glioma_node.training.seg.generator import _across_midline

    classes, brain = _head()
    classes = add_structures(classes, brain)
    c = (classes.shape[2] - 1) / 2
    z, y, x = np.meshgrid(*[np.arange(n) for n in classes.shape], indexing="ij")
    near = ((z - 40) ** 2 + (y - 32) ** 2 + (x - c - 5) ** 2 <= 16) & np.isin(classes, (GM, WM))  # 5 voxels off
    classes[near] = EDEMA_CLASS
    soft = np.stack([is_tumour(classes), np.isin(classes, (CORE, ENHANCING_CLASS)), classes == ENHANCING_CLASS])
    for seed in range(20):
        crossed = _across_midline(classes, soft.astype(np.float32), brain, np.random.default_rng(seed))
        if crossed is None:
            continue
        out, targets = crossed
        added = is_tumour(out) & ~is_tumour(classes)
        assert added.any() and np.isin(classes[added], (GM, WM)).all(), "only grey and white matter is taken over"
        assert (targets[0][added] == 1).all()
        parts, n = ndimage.label(is_tumour(out) & (np.abs(x - c) <= 12) & (np.abs(z - 40) <= 4))
        assert (x[is_tumour(out)] < c).any() and (x[is_tumour(out)] > c).any(), "on both sides"
        biggest = np.argmax(ndimage.sum(np.ones_like(parts), parts, index=np.arange(1, n + 1))) + 1
        assert (x[parts == biggest] < c).any() and (x[parts == biggest] > c).any(), "one connected tumour across"
        return
    pytest.fail("no crossing drawn in 20 tries")


def test_a_soft_border_fades_outwards_as_well_as_in():
    """With a soft border the tumour's contrast runs past its label (half strength at the
    edge), not only inwards: the label stays where the contrast is half."""
    classes, brain = _head(48)
    tumour = is_tumour(classes)
    distance_out = ndimage.distance_transform_edt(~tumour)
    shell = (distance_out > 0) & (distance_out <= 2)
    far = (classes == WM) & (distance_out > 8)
    flair = ROLES.index("FLAIR")

    def excess(sigma: float) -> float:
        ratios = []
        for seed in range(6):  # same seeds, so the same contrasts, hard against soft
            raw = render_classes(classes, tumour, brain, np.random.default_rng(seed), border_sigma=sigma)
            ratios.append(raw[flair][shell].mean() / raw[flair][far].mean())
        return float(np.mean(ratios))

    assert excess(2.0) > excess(0.0) + 0.1


def test_the_same_seed_draws_the_same_sample_whatever_the_hash_seed(tmp_path):
    """Training samples follow the seed alone: which sequences are dropped once depended on
    the iteration order of a set of strings, which changes with PYTHONHASHSEED."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import hashlib, numpy as np\n"
            "from tests.training.test_seg_confounders import _head\n"
            "from glioma_node.training.seg.confounders import add_structures, is_tumour\n"
            "from glioma_node.training.seg.generator import corrupt, render_classes, sample_classes\n"
            "classes, brain = _head(32)\n"
            "classes = add_structures(classes, brain)\n"
            "rng = np.random.default_rng(11)\n"
            "h = hashlib.sha256()\n"
            "for _ in range(12):\n"
            "    drawn, soft = sample_classes(classes, brain, rng)\n"
            "    raw = render_classes(drawn, is_tumour(drawn), brain, rng)\n"
            "    h.update(corrupt(raw, brain, is_tumour(drawn), soft, rng).image.tobytes())\n"
            "print(h.hexdigest())\n")
    root = Path(__file__).resolve().parents[2]
    digests = {subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2", "3")}
    assert len(digests) == 1, digests
