"""analyze(StudyInput, models) -> Findings: the whole inference stage of one study."""
from __future__ import annotations

import time
from dataclasses import dataclass

from inference.findings import Findings, LabelMask
from inference.segmentation import segment
from inference.segmenters.base import Segmenter
from inference.study import StudyInput


@dataclass
class Models:
    """The loaded models a study runs through (see :func:`inference.segmenters.load_segmenter`)."""

    segmenter: Segmenter
    min_component_ml: float = 0.3


def analyze(study: StudyInput, models: Models) -> Findings:
    """Segment ``study`` and describe the result; masks are given on every role's source grid."""
    start = time.perf_counter()
    seg = segment(study.volumes, models.segmenter, same_frame=study.shared_frame_of_reference,
                  min_component_ml=models.min_component_ml)
    masks = {}
    for role, labels in seg.source_labels.items():
        volume = study.volumes[role]
        masks[role] = LabelMask(role, volume.metadata.series_instance_uid, labels, volume.affine,
                                list(volume.sop_instance_uids), volume.frame_numbers)
    timings = {f"segmentation_{k}": v for k, v in seg.timings_s.items()}
    timings["analyze_total"] = round(time.perf_counter() - start, 2)
    return Findings(
        study_instance_uid=study.study_instance_uid,
        reference_role=seg.prepared.reference_role,
        masks=masks,
        volumes_ml=seg.volumes_ml,
        brain_volume_ml=seg.brain_volume_ml,
        models=[{"task": "segmentation", **seg.model}],
        timings_s=timings,
        warnings=list(study.warnings) + seg.warnings,
        registration={role: reg.summary() for role, reg in seg.prepared.registrations.items()},
    )
