"""Recognise the role of each series (FLAIR, T1, T1c, T2 or other) and choose one per role.

Two independent sources of evidence are weighed:

1. **Header physics**: TR, TE and TI (ms), ScanningSequence, flip angle. They follow
   from how the image was made and survive new scanners and renamed protocols: a long
   TI with a long TE is FLAIR; a short TE with a short TR, a ~1 s TI (MPRAGE, T1-FLAIR)
   or a short-TR gradient echo is T1; a long TE with a long TR is T2.
2. **Descriptions**: SeriesDescription, ProtocolName and sequence name against the
   patterns of ``conf/`` (OR, AND and exclusions).

Physics decides when present; descriptions confirm, break ties where physics is
silent (anonymised or derived headers) and say "post contrast" together with
ContrastBolusAgent. Every call has a confidence in [0, 1] and a reason in words.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from glioma_node.core.roles import ROLES
from glioma_node.dicom_io.header import SeriesHeader
from glioma_node.dicom_io.sequence_rules import SequenceRules, normalise_description

OTHER = "other"
_DERIVED_MARKERS = {"MPR", "MIP", "PROJECTION IMAGE", "REFORMATTED", "SUBTRACTION", "SUB", "ADC", "TRACEW", "FA", "EADC", "CPR"}


@dataclass(frozen=True)
class RoleCall:
    """The role of one series, how sure we are (0–1), and why, in words."""

    role: str
    confidence: float
    reason: str


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:g} ms"


def physics_weighting(h: SeriesHeader, rules: SequenceRules) -> tuple[str | None, str]:
    """Weighting from TR/TE/TI: ``FLAIR``, ``T1``, ``T2``, ``other`` or ``None`` (not enough to say)."""
    t = rules.physics
    tr, te, ti = h.repetition_time_ms, h.echo_time_ms, h.inversion_time_ms
    ss = set(h.scanning_sequence)
    facts = f"TR {_ms(tr)}, TE {_ms(te)}" + (f", TI {_ms(ti)}" if ti else "")
    if "EP" in ss and not ti:
        return OTHER, f"echo-planar ({facts}): diffusion, perfusion or fMRI"
    if ti is not None and ti > 0:
        if ti >= t.flair_min_ti_ms:
            if te is None or te >= t.flair_min_te_ms:
                return "FLAIR", f"inversion recovery with long TI and long TE ({facts})"
            return "T1" if te <= t.t1_max_te_ms else None, f"long TI with short TE ({facts}): MP2RAGE-like T1"
        if ti >= t.t1_inversion_min_ti_ms:
            if te is None or te <= t.t1_max_te_ms:
                return "T1", f"inversion recovery with TI near 1 s and short TE ({facts}): MPRAGE or T1-FLAIR"
            return None, f"mid TI with long TE ({facts})"
        return OTHER, f"short TI ({facts}): STIR, fat suppression by inversion"
    if te is None or tr is None:
        return None, f"TR or TE missing ({facts})"
    if te >= t.t2_min_te_ms and tr >= t.t2_min_tr_ms:
        return "T2", f"long TR and long TE ({facts})"
    if te <= t.t1_max_te_ms and tr <= t.t1_max_tr_ms:
        small_flip = h.flip_angle_deg is not None and h.flip_angle_deg < t.gradient_echo_t1_min_flip_deg
        if "GR" in ss and tr <= t.gradient_echo_max_tr_ms and small_flip:
            return OTHER, f"gradient echo with a small flip angle ({facts}, {h.flip_angle_deg:g}°): proton density"
        return "T1", f"short TR and short TE ({facts})"
    if te <= t.t1_max_te_ms and tr >= t.t2_min_tr_ms:
        return OTHER, f"long TR and short TE ({facts}): proton density"
    if "GR" in ss and te >= 15:
        return OTHER, f"gradient echo with long TE ({facts}): T2*/SWI"
    return None, f"no clear weighting ({facts})"


def _description_role(text: str, rules: SequenceRules) -> tuple[str | None, str]:
    hits = [role for role in ("FLAIR", "T1", "T2") if getattr(rules.roles, role).matches(text)]
    if len(hits) == 1:
        pattern = getattr(rules.roles, hits[0]).first_match(text)
        return hits[0], f"description {text!r} matches {hits[0]} pattern {pattern!r}"
    if len(hits) > 1:
        return None, f"description {text!r} matches several roles ({', '.join(hits)})"
    return None, f"description {text!r} matches no role pattern"


def _spans(patterns: list[str], text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), p) for p in patterns for m in re.finditer(p, text)]


def _negated(post: tuple[int, int, str], pre_spans: list[tuple[int, int, str]], text: str) -> bool:
    """A post-contrast marker that a pre/without marker overlaps or stands right before
    ("pre gd", "w o contrast", "non contrast"; at most one word between) says the opposite."""
    start, end, _ = post
    for pre_start, pre_end, _ in pre_spans:
        if pre_start < end and start < pre_end:
            return True
        if pre_end <= start and len(text[pre_end:start].split()) <= 1:
            return True
    return False


def _contrast(h: SeriesHeader, text: str, rules: SequenceRules) -> tuple[bool, str]:
    pre_spans = _spans(rules.contrast.pre, text)
    post = next((span[2] for span in _spans(rules.contrast.post, text) if not _negated(span, pre_spans, text)), None)
    pre = pre_spans[0][2] if pre_spans else None
    if pre and not post:
        return False, f"description says pre-contrast ({pre!r})" + (
            f" although ContrastBolusAgent is {h.contrast_agent!r}" if h.contrast_agent else ""
        )
    if h.contrast_agent:
        return True, f"ContrastBolusAgent {h.contrast_agent!r}"
    if post:
        return True, f"description says post-contrast ({post!r})"
    return False, "no contrast agent in the header or description"


def _excluded(h: SeriesHeader, text: str, rules: SequenceRules) -> str | None:
    if h.modality and h.modality != "MR":
        return f"modality {h.modality}, not MR"
    if h.image_type[:1] == ["DERIVED"] and _DERIVED_MARKERS & set(h.image_type):
        return f"derived image ({'/'.join(h.image_type)})"
    pattern = next((p for p in rules.exclude if re.search(p, text)), None)
    if pattern:
        return f"description {text!r} matches exclusion {pattern!r}"
    return None


def recognise(h: SeriesHeader, rules: SequenceRules) -> RoleCall:
    """The role of one series from its header (see the module doc for the rules)."""
    text = normalise_description(h.series_description, h.protocol_name, h.sequence_name)
    excluded = _excluded(h, text, rules)
    if excluded:
        return RoleCall(OTHER, 0.95, excluded)
    physics, physics_reason = physics_weighting(h, rules)
    described, described_reason = _description_role(text, rules)
    if physics == OTHER:
        return RoleCall(OTHER, 0.8, f"physics: {physics_reason}; {described_reason}")
    if physics and described == physics:
        role, confidence, reason = physics, 0.97, f"physics ({physics_reason}) and {described_reason}"
    elif physics and described:
        role, confidence, reason = physics, 0.65, f"physics ({physics_reason}) wins over {described_reason}"
    elif physics:
        role, confidence, reason = physics, 0.85, f"physics ({physics_reason}); {described_reason}"
    elif described:
        role, confidence, reason = described, 0.7, f"{described_reason}; physics: {physics_reason}"
    else:
        return RoleCall(OTHER, 0.5, f"{described_reason}; physics: {physics_reason}")
    if role == "T1":
        post, contrast_reason = _contrast(h, text, rules)
        role = "T1c" if post else "T1"
        reason = f"{reason}; {contrast_reason}"
    return RoleCall(role, confidence, reason)


@dataclass(frozen=True)
class Candidate:
    """A readable series with its role call, as selection sees it."""

    series_instance_uid: str
    call: RoleCall
    is_3d_isotropic: bool
    slices: int
    series_date: str
    series_time: str
    series_number: int | None


def selection_key(c: Candidate) -> tuple:
    """Order of preference within a role: 3D isotropic, then most slices, then latest.

    "Latest" is SeriesDate+SeriesTime, then the higher SeriesNumber; the
    SeriesInstanceUID makes the order total, so the choice is reproducible.
    """
    return (c.is_3d_isotropic, c.slices, c.series_date + c.series_time, c.series_number or 0, c.series_instance_uid)


def select_roles(candidates: Iterable[Candidate]) -> dict[str, Candidate]:
    """One series per role (FLAIR, T1, T1c, T2) by :func:`selection_key`."""
    chosen: dict[str, Candidate] = {}
    for c in candidates:
        if c.call.role in ROLES and (c.call.role not in chosen or selection_key(c) > selection_key(chosen[c.call.role])):
            chosen[c.call.role] = c
    return chosen
