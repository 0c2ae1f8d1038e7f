"""Segmentation quality control: a mask that is probably wrong is called doubtful, and says why."""
from __future__ import annotations

import numpy as np
import pytest

from glioma_node.inference.quality import assess
from glioma_node.inference.symmetry import midline_x, mirror

SHAPE = (48, 64, 56)  # 2 mm voxels: z, y, x


def _ball(centre: tuple[float, float, float], radius: float) -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    return (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2


def _brain() -> np.ndarray:
    z, y, x = np.meshgrid(*[np.arange(n, dtype=float) for n in SHAPE], indexing="ij")
    return ((z - 24) / 21) ** 2 + ((y - 32) / 29) ** 2 + ((x - 27.5) / 24) ** 2 <= 1


def _images(brain: np.ndarray, lesion: np.ndarray | None, ventricles: np.ndarray) -> dict[str, np.ndarray]:
    """FLAIR, T1 of a brain with CSF-dark ventricles and a FLAIR-bright, T1-dark lesion."""
    rng = np.random.default_rng(0)
    flair = 100 + rng.normal(0, 3, SHAPE)
    t1 = 100 + rng.normal(0, 3, SHAPE)
    flair[ventricles], t1[ventricles] = 30, 25
    if lesion is not None:
        flair[lesion], t1[lesion] = 200, 70
    return {"FLAIR": (flair * brain).astype(np.float32), "T1": (t1 * brain).astype(np.float32)}


def _ventricles() -> np.ndarray:
    return _ball((24, 30, 21.5), 4) | _ball((24, 30, 33.5), 4)


def test_mirror_reflects_about_the_brains_own_midline():
    brain = _brain()
    assert np.nanmedian(midline_x(brain)) == pytest.approx(27.5, abs=0.5)
    left = _ball((24, 32, 15), 4)
    assert np.array_equal(mirror(left, brain), _ball((24, 32, 40), 4))


def test_a_one_sided_lesion_where_flair_shows_it_is_plausible():
    brain, lesion = _brain(), _ball((24, 24, 14), 6)
    quality = assess(_images(brain, lesion, _ventricles()), brain, lesion.astype(np.float32), 2.0, agreement=0.93)
    assert not quality.doubtful and quality.score > 0.8, quality
    assert quality.evidence["symmetric_share"] < 0.05


def test_ventricles_taken_for_tumour_are_doubtful_and_named():
    """The failure class seen on real scans: the lateral ventricles labelled as tumour while
    the real lesion is missed."""
    brain, lesion, ventricles = _brain(), _ball((24, 24, 14), 6), _ventricles()
    quality = assess(_images(brain, lesion, ventricles), brain, ventricles.astype(np.float32), 2.0, agreement=0.9)
    assert quality.doubtful and quality.score < 0.5
    text = quality.warning
    assert text.startswith("segmentation doubtful: ") and "mirrored on the other side" in text
    assert "ventricular CSF" in text


def test_a_missed_obvious_lesion_is_doubtful():
    brain, lesion = _brain(), _ball((24, 24, 14), 6)
    quality = assess(_images(brain, lesion, _ventricles()), brain, np.zeros(SHAPE, np.float32), 2.0)
    assert quality.doubtful and "no tumour segmented" in quality.warning


def test_no_lesion_and_no_mask_is_not_doubtful():
    brain = _brain()
    quality = assess(_images(brain, None, _ventricles()), brain, np.zeros(SHAPE, np.float32), 2.0)
    assert not quality.doubtful


def test_test_time_variants_that_disagree_make_the_mask_doubtful():
    brain, lesion = _brain(), _ball((24, 24, 14), 6)
    quality = assess(_images(brain, lesion, _ventricles()), brain, lesion.astype(np.float32), 2.0, agreement=0.4,
                     agreement_of="the input and its mirror image")
    assert quality.doubtful and "the input and its mirror image agree on the whole tumour with Dice 0.40" in \
        quality.warning


def test_an_over_call_far_beyond_the_flair_signal_is_doubtful():
    brain, lesion = _brain(), _ball((24, 24, 14), 3)
    overcall = _ball((24, 30, 16), 13) & brain
    quality = assess(_images(brain, lesion, _ventricles()), brain, overcall.astype(np.float32), 2.0, agreement=0.95)
    assert quality.doubtful and "one-sided FLAIR hyperintensity" in quality.warning


def test_a_mask_that_covers_part_of_its_lesion_is_doubtful():
    """An under-call: the hyperintensity the mask belongs to runs well beyond it."""
    brain, lesion = _brain(), _ball((24, 30, 14), 9) & _brain()
    part = lesion & _ball((24, 24, 14), 4)
    quality = assess(_images(brain, lesion, _ventricles()), brain, part.astype(np.float32), 2.0, agreement=0.95)
    assert quality.doubtful and "extends" in quality.warning and "part of the lesion missed" in quality.warning


def test_a_mask_over_normal_looking_tissue_is_doubtful():
    brain, lesion = _brain(), _ball((24, 24, 14), 6)
    elsewhere = _ball((24, 40, 40), 6)
    quality = assess(_images(brain, lesion, _ventricles()), brain, elsewhere.astype(np.float32), 2.0, agreement=0.95)
    assert quality.doubtful and "not hyperintense on FLAIR" in quality.warning


def test_a_t2_only_study_and_an_empty_brain_mask_get_an_answer_not_a_crash():
    brain, lesion = _brain(), _ball((24, 24, 14), 6)
    images = _images(brain, lesion, _ventricles())
    t2_only = assess({"T2": images["FLAIR"]}, brain, lesion.astype(np.float32), 2.0)
    assert not t2_only.doubtful and "deep_csf_share" not in t2_only.evidence  # no T1w: that check is skipped
    nothing = assess(images, np.zeros(SHAPE, bool), lesion.astype(np.float32), 2.0)
    assert nothing.doubtful and "outside the brain mask" in nothing.warning


def test_a_necrotic_core_inside_an_enhancing_rim_is_not_taken_for_a_ventricle():
    brain = _brain()
    tumour = _ball((24, 32, 14), 8)
    core = _ball((24, 32, 14), 5)
    images = _images(brain, tumour, _ventricles())
    images["T1"][core] = 20  # CSF-dark necrosis, FLAIR not bright
    images["FLAIR"][core] = 90
    t1c = images["T1"].copy()
    t1c[tumour & ~core] = 260  # the enhancing rim
    images["T1c"] = t1c
    quality = assess(images, brain, tumour.astype(np.float32), 2.0, agreement=0.95)
    assert quality.evidence["deep_csf_share"] < 0.15 and "ventricular CSF" not in quality.warning


def test_a_butterfly_glioma_crossing_the_white_matter_is_not_taken_for_the_ventricles():
    brain = _brain()
    z, y, x = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    butterfly = (np.abs(z - 34) <= 5) & (np.abs(y - 32) <= 9) & (np.abs(x - 27.5) <= 16) & brain  # above the ventricles
    images = _images(brain, butterfly, _ventricles())
    quality = assess(images, brain, butterfly.astype(np.float32), 2.0, agreement=0.95)
    assert quality.evidence["symmetric_share"] > 0.9 and not quality.doubtful, quality


def test_the_threshold_is_the_configured_one():
    brain, lesion = _brain(), _ball((24, 24, 14), 6)
    images = _images(brain, lesion, _ventricles())
    strict = assess(images, brain, lesion.astype(np.float32), 2.0, agreement=0.75, threshold=0.99)
    lenient = assess(images, brain, lesion.astype(np.float32), 2.0, agreement=0.75, threshold=0.1)
    assert strict.doubtful and not lenient.doubtful and strict.score == lenient.score


class _Symmetric:
    """A segmenter that labels two mirror-image balls: the ventricles taken for tumour."""

    required_roles: tuple[str, ...] = ()

    def describe(self) -> dict[str, str]:
        return {"name": "symmetric", "version": "1", "sha256": "0" * 64, "kind": "test"}

    def predict(self, prepared, brain):
        from glioma_node.inference.segmenters.base import RegionMaps

        z, y, x = np.meshgrid(*[np.arange(n) for n in prepared.grid.shape], indexing="ij")
        cz, cy, cx = (np.array(prepared.grid.shape) - 1) / 2
        wt = np.zeros(prepared.grid.shape, np.float32)
        for side in (-1, 1):
            wt[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx - side * 14) ** 2 <= 64] = 1.0
        return RegionMaps(wt, wt * 0, wt * 0)


class _NoRadiogenomics:
    def describe(self) -> dict[str, str]:
        return {"name": "rg", "version": "1", "sha256": "1" * 64}


@pytest.mark.parametrize("report_anyway", [False, True])
def test_radiogenomics_are_withheld_from_a_doubtful_mask_unless_the_site_asks(monkeypatch, report_anyway):
    from glioma_node.core.study import StudyInput
    from glioma_node.core.volume import SeriesMetadata, Volume
    from glioma_node.inference import analyze as analyze_module
    from glioma_node.inference.brain_extraction import BrainExtractor, ExtractorKind

    brain = _brain()
    images = _images(brain, _ball((24, 24, 14), 6), _ventricles())
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    volumes = {role: Volume(images[role], affine, [f"2.25.{k}" for k in range(SHAPE[0])],
                            SeriesMetadata("2.25.1", f"2.25.9{n}", "2.25.5"))
               for n, role in enumerate(("FLAIR", "T1"))}
    volumes["T1c"] = Volume(images["T1"], affine, [f"2.25.{k}" for k in range(SHAPE[0])],
                            SeriesMetadata("2.25.1", "2.25.97", "2.25.5"))
    volumes["T2"] = Volume(images["FLAIR"], affine, [f"2.25.{k}" for k in range(SHAPE[0])],
                           SeriesMetadata("2.25.1", "2.25.98", "2.25.5"))
    calls = []
    monkeypatch.setattr(analyze_module, "_radiogenomics", lambda *a: calls.append(a) or (None, {}, []))
    models = analyze_module.Models(_Symmetric(), radiogenomics=_NoRadiogenomics(),
                                   brain_extractor=BrainExtractor(ExtractorKind.NONE),
                                   report_when_doubtful=report_anyway)
    findings = analyze_module.analyze(StudyInput("2.25.1", volumes, shared_frame_of_reference=True), models)
    quality = findings.segmentation_quality
    assert quality is not None and quality.doubtful, quality
    assert quality.warning in findings.warnings
    assert findings.to_json()["segmentation"]["quality"]["doubtful"] is True
    if report_anyway:
        assert len(calls) == 1 and any("reported although the segmentation is doubtful" in w for w in findings.warnings)
    else:
        assert not calls and any(w.startswith("MGMT, IDH and risk withheld: the segmentation") for w in findings.warnings)
