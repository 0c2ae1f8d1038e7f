"""The follow-up part of the TID 1500 report: what changed since the patient's earlier studies.

Content (added to :func:`glioma_node.dicom_io.results.sr.measurement_report` when the
findings carry a :class:`glioma_node.core.longitudinal.FollowUp`)::

    imaging measurements
    ├─ one TID 1501 group per lesion of the measured component, this study's time point
    │  (TID 1502: its type and date): tracking identifier and tracking UID (the same UID
    │  at every time point), finding type, longest and perpendicular diameters (mm), their
    │  product (mm²), volume (ml), and its RANO role (target, non-target, new)
    └─ the same groups for the prior study compared with, at that study's time point, with
       the values measured on it (a viewer lines them up by tracking UID)
    qualitative evaluations
    └─ Response Evaluation (DCM 112020) = the RANO call, with HAS PROPERTIES: the method
       (RANO), its status (preliminary or confirmed), the component measured, the change in
       the sum of products and in the component's volume (%), one reason per TEXT, the
       baseline and prior studies (UIDREF), each region's volume change since the prior (ml
       and %, the region as concept modifier), and the algorithm (TID 4019)

Codes: :mod:`glioma_node.dicom_io.results.codes`; the rules: docs/rano.md.
"""
from __future__ import annotations

import highdicom as hd
from pydicom.sr.coding import Code

from glioma_node.core.longitudinal import FollowUp, Lesion, TimePoint
from glioma_node.dicom_io.results import codes
from glioma_node.dicom_io.results.context import ResultContext
from glioma_node.dicom_io.results.seg import SEGMENTS

_REL = hd.sr.RelationshipTypeValues
_REGIONS = {spec.key: spec for spec in SEGMENTS}


def _time_point(time_point: TimePoint) -> hd.sr.TimePointContext:
    when = time_point.date.isoformat() if time_point.date else "date unknown"
    return hd.sr.TimePointContext(time_point=f"{time_point.kind} {when}"[:64],
                                  time_point_type=codes.TIME_POINT_TYPE[str(time_point.kind)],
                                  subject_time_point_identifier=time_point.study_instance_uid[:64])


def _role(lesion: Lesion, time_point: TimePoint, follow_up: FollowUp, new: set[str]) -> Code:
    if lesion.tracking_uid in new:
        return codes.NEW_LESION
    targets = {t.tracking_uid for t in time_point.burdens[follow_up.component].targets}
    return codes.TARGET_LESION if lesion.tracking_uid in targets else codes.NON_TARGET_LESION


def lesion_groups(ctx: ResultContext,
                  algorithm: hd.sr.AlgorithmIdentification) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """TID 1501 groups for every lesion of the current and the latest prior time point."""
    follow_up = ctx.findings.follow_up
    if follow_up is None:
        return []
    new = {lesion.tracking_uid for lesion in follow_up.new}
    finding = codes.COMPONENT[str(follow_up.component)]
    groups = []
    for time_point, found in ((follow_up.current, follow_up.lesions), (follow_up.latest, follow_up.prior_lesions)):
        context = _time_point(time_point)
        for n, lesion in enumerate(found, start=1):
            tracking = hd.sr.TrackingIdentifier(uid=lesion.tracking_uid or ctx.uid("lesion", time_point.study_instance_uid, n),
                                                identifier=f"{follow_up.component} lesion {n}"[:64])
            measurements = [
                hd.sr.Measurement(name=codes.LONG_AXIS, value=lesion.longest_mm, unit=codes.MILLIMETER,
                                  algorithm_id=algorithm),
                hd.sr.Measurement(name=codes.PERPENDICULAR_AXIS, value=lesion.perpendicular_mm, unit=codes.MILLIMETER,
                                  algorithm_id=algorithm),
                hd.sr.Measurement(name=codes.BIDIMENSIONAL_PRODUCT, value=round(lesion.product_mm2, 2),
                                  unit=codes.SQUARE_MILLIMETER, algorithm_id=algorithm),
                hd.sr.Measurement(name=codes.VOLUME, value=lesion.volume_ml, unit=codes.MILLILITER, algorithm_id=algorithm),
            ]
            role = hd.sr.QualitativeEvaluation(name=codes.LESION_ROLE, value=_role(lesion, time_point, follow_up, new))
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=tracking, time_point_context=context, finding_type=finding,
                finding_category=codes.MORPHOLOGICALLY_ABNORMAL_STRUCTURE, finding_sites=[hd.sr.FindingSite(codes.BRAIN)],
                algorithm_id=algorithm, measurements=measurements, qualitative_evaluations=[role]))
    return groups


def _num(name, value: float, unit) -> hd.sr.NumContentItem:
    return hd.sr.NumContentItem(name=name, value=value, unit=unit, relationship_type=_REL.HAS_PROPERTIES)


def response_evaluation(ctx: ResultContext, algorithm: hd.sr.AlgorithmIdentification) -> hd.sr.CodeContentItem | None:
    """The RANO call as one Response Evaluation item with its properties (see the module doc)."""
    follow_up = ctx.findings.follow_up
    if follow_up is None:
        return None
    r = follow_up.response
    items: list = [
        hd.sr.CodeContentItem(name=codes.RESPONSE_EVALUATION_METHOD, value=codes.RANO, relationship_type=_REL.HAS_PROPERTIES),
        hd.sr.CodeContentItem(name=codes.RESPONSE_STATUS, value=codes.RESPONSE_STATUS_VALUE[str(r.status)],
                              relationship_type=_REL.HAS_PROPERTIES),
        hd.sr.CodeContentItem(name=codes.RESPONSE_COMPONENT, value=codes.COMPONENT[str(follow_up.component)],
                              relationship_type=_REL.HAS_PROPERTIES),
        _num(codes.SUM_OF_PRODUCTS, follow_up.current.burdens[follow_up.component].sum_of_products_mm2,
             codes.SQUARE_MILLIMETER),
    ]
    if r.change_sum_of_products is not None:
        items.append(_num(codes.CHANGE_SUM_OF_PRODUCTS, round(r.change_sum_of_products * 100, 1), codes.PERCENT))
    if r.change_volume is not None:
        items.append(_num(codes.CHANGE_COMPONENT_VOLUME, round(r.change_volume * 100, 1), codes.PERCENT))
    items += [hd.sr.TextContentItem(name=codes.RESPONSE_REASON, value=reason[:1024], relationship_type=_REL.HAS_PROPERTIES)
              for reason in (*r.reasons, *follow_up.warnings)]
    items += [hd.sr.UIDRefContentItem(name=codes.BASELINE_STUDY, value=follow_up.baseline.study_instance_uid,
                                      relationship_type=_REL.HAS_PROPERTIES),
              hd.sr.UIDRefContentItem(name=codes.PRIOR_STUDY, value=follow_up.latest.study_instance_uid,
                                      relationship_type=_REL.HAS_PROPERTIES)]
    for region, (ml, fraction) in follow_up.volume_change.items():
        spec = _REGIONS.get(region)
        if spec is None:
            continue
        values = [(ml, codes.MILLILITER)] + ([(round(fraction * 100, 1), codes.PERCENT)] if fraction is not None else [])
        for value, unit in values:
            item = _num(codes.REGION_VOLUME_CHANGE, value, unit)
            item.ContentSequence = hd.sr.ContentSequence([hd.sr.CodeContentItem(
                name=codes.FINDING, value=spec.type_code,
                relationship_type=_REL.HAS_CONCEPT_MOD)])
            items.append(item)
    evaluation = hd.sr.CodeContentItem(name=codes.RESPONSE_EVALUATION, value=codes.RESPONSE[str(r.category)],
                                       relationship_type=_REL.CONTAINS)
    evaluation.ContentSequence = hd.sr.ContentSequence([*items, *algorithm])
    return evaluation
