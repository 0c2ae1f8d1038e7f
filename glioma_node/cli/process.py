"""`glioma-node process PATH --out OUT`: every study under a folder, offline.

Instances are grouped by StudyInstanceUID (non-DICOM files ignored, unreadable ones
logged); each study runs through :func:`glioma_node.service.pipeline.run_study` into
``OUT/<StudyInstanceUID>/`` (a UID that is not valid becomes a hashed name). One
study's failure is written to its own findings.json and never stops the others.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from glioma_node.dicom_io.scan import scan
from glioma_node.dicom_io.study import survey
from glioma_node.dicom_io.uids import safe_part
from glioma_node.inference.analyze import Models
from glioma_node.service.config import Config
from glioma_node.service.pipeline import StudyOutcome, clinical_source, load_models, run_study

log = logging.getLogger(__name__)


def process_folder(path: Path, out: Path, config: Config, models: Models | None = None) -> list[StudyOutcome]:
    """Run every study under ``path`` into ``out/<StudyInstanceUID>/``; the outcomes in StudyInstanceUID order."""
    models = models or load_models(config)
    started = time.perf_counter()
    limits = config.node.read_limits()
    result = scan(path, limits.max_bytes)
    for bad, reason in result.bad_files:
        log.warning("skipped %s: %s", bad, reason)
    outcomes = [run_study(study, models, out / safe_part(study.study_instance_uid),
                          required_roles=config.assembly.required_roles, clinical=clinical_source(config))
                for study in survey(result, config.sequences, decode=False,
                                    min_confidence=config.thresholds.min_role_confidence, limits=limits)]
    log.info("processed %d studies in %.1f s", len(outcomes), time.perf_counter() - started)
    return outcomes
