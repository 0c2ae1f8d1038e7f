"""Radiogenomic stage speed and memory on one real study, in its own process.

Segments the BraTS 2023 case once, then times the radiogenomic stage of `process`
(radiomics, deep features, fusion heads, Cox, Grad-CAM, SHAP) on it. The first run also
starts the radiomics worker processes (a node pays that once, at its first study), so it
is reported apart from the median of the later runs. The same stage with the full
extraction (every feature, as training computes them) runs alternately beside it, as the
peer: the ratio is what computing only the features the model reads saves. Prints one
JSON object.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import torch

from glioma_node.inference.radiogenomics import radiomics
from glioma_node.inference.radiogenomics.tumour_study import tumour_study
from glioma_node.inference.segmentation import segment
from glioma_node.service.config import load_config
from glioma_node.service.pipeline import load_models
from tests.helpers import SHARED, nifti_volumes


def main(runs: int = 3) -> None:
    volumes = nifti_volumes(SHARED / "brats23-gli-00001-000")
    models = load_models(load_config())
    if models.radiogenomics is None:
        raise SystemExit("the configuration names no radiogenomic model")
    seg = segment(volumes, models.segmenter, same_frame=True)
    study = tumour_study(seg.grid, seg.prepared.channels, seg.labels, seg.brain, age_years=60.0)
    model = models.radiogenomics
    selected = model.features_read
    times, stages, full_times = [], [], []
    for _ in range(runs):
        model.features_read = selected
        start = time.perf_counter()
        result = model.run(study, models.workers)
        times.append(time.perf_counter() - start)
        stages.append(result.timings_s)
        model.features_read = None  # every feature, as training extracts them
        start = time.perf_counter()
        full = model.run(study, models.workers)
        full_times.append(time.perf_counter() - start)
        if full.probabilities != result.probabilities:
            raise SystemExit(f"the full extraction predicts {full.probabilities}, the selective {result.probabilities}")
    radiomics.shutdown_workers()  # so their peak memory is counted below
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    later = stages[1:] or stages
    print(json.dumps({
        "benchmark": "radiogenomic stage (radiomics, deep features, fusion, Cox, Grad-CAM, SHAP)",
        "seconds": round(statistics.median(times[1:] or times), 2),
        "first_run_s": round(times[0], 2),
        "full_extraction_s": round(statistics.median(full_times[1:] or full_times), 2),
        "features_read": len(selected or []),
        "stages_s": {k: round(statistics.median(s[k] for s in later), 2) for k in later[0]},
        "workers": models.workers,
        "features": len(result.features),
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "probabilities": {k: round(v, 3) for k, v in result.probabilities.items()},
        "peak_rss_mb": round(peak / 1024),
    }))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
