"""analyze(StudyInput, models) -> Findings: the whole inference stage of one study."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from glioma_node.core.findings import Findings, HeatMap, LabelMask, Prediction, Radiogenomics, RiskScore
from glioma_node.core.roles import ROLES
from glioma_node.core.study import StudyInput
from glioma_node.inference.brain_extraction import BrainExtractor
from glioma_node.inference.quality import DEFAULT_THRESHOLD
from glioma_node.inference.radiogenomics.model import POSITIVE, RadiogenomicModel
from glioma_node.inference.radiogenomics.tumour_study import tumour_study
from glioma_node.inference.segmentation import Segmentation, segment
from glioma_node.inference.segmenters.base import Segmenter


@dataclass
class Models:
    """The loaded models a study runs through (see :func:`glioma_node.inference.segmenters.load_segmenter`).

    ``brain_extractor``: deepbet unless configured otherwise (:mod:`glioma_node.inference.brain_extraction`).
    ``radiogenomics`` None: segmentation only. ``thresholds`` override the stored decision
    thresholds per target (None keeps the model's); ``workers``: radiomics processes.
    ``quality_threshold``: a mask whose quality score (:mod:`glioma_node.inference.quality`)
    is below it is doubtful, and then MGMT, IDH and risk are withheld unless
    ``report_when_doubtful``.
    """

    segmenter: Segmenter
    min_component_ml: float = 0.3
    radiogenomics: RadiogenomicModel | None = None
    thresholds: dict[str, float | None] = field(default_factory=dict)
    workers: int = 1
    brain_extractor: BrainExtractor = field(default_factory=BrainExtractor)
    quality_threshold: float = DEFAULT_THRESHOLD
    report_when_doubtful: bool = False


def _radiogenomics(study: StudyInput, seg: Segmentation, models: Models) -> tuple[Radiogenomics, dict, list[str]]:
    rg = models.radiogenomics
    if rg is None:
        raise ValueError("no radiogenomic model is loaded")
    prepared = seg.prepared
    ts = tumour_study(seg.grid, prepared.channels, seg.labels, seg.brain, study.age_years, study.known_markers)
    result = rg.run(ts, models.workers, models.thresholds)
    predictions = {}
    for target, p in result.probabilities.items():
        positive, negative = POSITIVE[target]
        threshold = result.thresholds[target]
        predictions[target] = Prediction(target=target, probability=p, threshold=threshold,
                                         status=positive if p >= threshold else negative,
                                         variant=result.variants[target],
                                         top_features=result.attributions.get(target, []),
                                         attention=result.attention.get(target, {}))
    risk = None
    if result.risk is not None:
        score, cutoff, group = result.risk
        risk = RiskScore(score=score, cutoff=cutoff, group=group, top_features=result.risk_attributions,
                         inputs=result.risk_inputs, known_from=study.known_from if result.risk_inputs else "")
    role = prepared.reference_role
    volume = study.volumes[role]
    heat_maps = {target: HeatMap(target=target, role=role, series_instance_uid=volume.metadata.series_instance_uid,
                                 values=prepared.to_source(cam, role, "linear").clip(0, 1), affine=volume.affine,
                                 sop_instance_uids=list(volume.sop_instance_uids), frame_numbers=volume.frame_numbers)
                 for target, cam in result.cams.items()}
    radiogenomics = Radiogenomics(predictions=predictions, risk=risk, heat_maps=heat_maps, model=rg.describe())
    return radiogenomics, result.timings_s, result.warnings


def analyze(study: StudyInput, models: Models) -> Findings:
    """Segment ``study``, then (when a radiogenomic model is loaded and a tumour was found)
    predict MGMT, IDH and the risk group with their explanations; masks and heat maps are
    given on the source grids."""
    start = time.perf_counter()
    seg = segment(study.volumes, models.segmenter, models.brain_extractor,
                  same_frame=study.shared_frame_of_reference, min_component_ml=models.min_component_ml,
                  quality_threshold=models.quality_threshold)
    masks = {}
    for role, labels in seg.source_labels.items():
        volume = study.volumes[role]
        masks[role] = LabelMask(role, volume.metadata.series_instance_uid, labels, volume.affine,
                                list(volume.sop_instance_uids), volume.frame_numbers)
    timings = {f"segmentation_{k}": v for k, v in seg.timings_s.items()}
    warnings = list(study.warnings) + seg.warnings
    doubtful = seg.quality is not None and seg.quality.doubtful
    if doubtful and seg.quality is not None:
        warnings.append(seg.quality.warning)
    model_list = [seg.brain_extraction, {"task": "segmentation", **seg.model}]
    radiogenomics = None
    lacking = [r for r in ROLES if r not in seg.prepared.channels]
    if models.radiogenomics is not None:
        model_list.append({"task": "radiogenomics", **models.radiogenomics.describe()})
        if lacking:
            warnings.append(f"MGMT, IDH and risk withheld: the radiogenomic model was trained on FLAIR, T1, T1c and "
                            f"T2 and this study lacks {', '.join(lacking)}")
        elif doubtful and not models.report_when_doubtful and (seg.labels > 0).any():
            warnings.append("MGMT, IDH and risk withheld: the segmentation they would be computed in is doubtful "
                            "(set models.segmentation.quality.report_when_doubtful to report them anyway)")
        elif (seg.labels > 0).any():
            if doubtful:
                warnings.append("MGMT, IDH and risk reported although the segmentation is doubtful "
                                "(models.segmentation.quality.report_when_doubtful)")
            radiogenomics, rg_timings, rg_warnings = _radiogenomics(study, seg, models)
            timings.update(rg_timings)
            warnings += rg_warnings
        else:
            warnings.append("no tumour segmented: MGMT, IDH and risk were not predicted")
    timings["analyze_total"] = round(time.perf_counter() - start, 2)
    return Findings(
        study_instance_uid=study.study_instance_uid,
        reference_role=seg.prepared.reference_role,
        masks=masks,
        volumes_ml=seg.volumes_ml,
        brain_volume_ml=seg.brain_volume_ml,
        models=model_list,
        timings_s=timings,
        warnings=warnings,
        registration={role: reg.summary() for role, reg in seg.prepared.registrations.items()},
        radiogenomics=radiogenomics,
        completed_utc=datetime.now(UTC).replace(microsecond=0).isoformat(),
        segmentation_quality=seg.quality,
    )
