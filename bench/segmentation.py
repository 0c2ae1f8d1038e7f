"""Segmentation speed and memory on one 4 x 240 x 240 x 155 study, one segmenter per process.

Run by `make bench` (tests/bench.py) as a child process per segmenter, so each peak RSS
is its own: ``python -m tests.bench_segmentation [default|captk-deepmedic|ensemble] [runs]``.
Prints one JSON object: median seconds over the runs (brain extraction included), per
stage, the device and the peak RSS.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import torch

from glioma_node.core.resources import DEFAULT_MODELS
from glioma_node.inference.brain_extraction import BrainExtractor
from glioma_node.inference.segmentation import segment
from glioma_node.inference.segmenters import Segmenter, load_segmenter
from glioma_node.inference.segmenters.ensemble import EnsembleSegmenter
from tests.helpers import SHARED, nifti_volumes


def segmenter_named(name: str) -> Segmenter:
    default = DEFAULT_MODELS / "segmentation"
    if name == "default":
        return load_segmenter("glioma-node", default)
    if name == "captk-deepmedic":
        return load_segmenter("captk-deepmedic", SHARED / "captk-deepmedic")
    if name == "ensemble":
        return EnsembleSegmenter([load_segmenter("glioma-node", default),
                                  load_segmenter("captk-deepmedic", SHARED / "captk-deepmedic")])
    raise SystemExit(f"unknown segmenter {name!r}: default, captk-deepmedic or ensemble")


def main(name: str = "default", runs: int = 3) -> None:
    volumes = nifti_volumes(SHARED / "brats23-gli-00001-000")
    segmenter = segmenter_named(name)
    extractor = BrainExtractor()
    times, stages = [], []
    for _ in range(runs):
        start = time.perf_counter()
        result = segment(volumes, segmenter, extractor, same_frame=True)
        times.append(time.perf_counter() - start)
        stages.append(result.timings_s)
    shape = next(iter(volumes.values())).shape
    print(json.dumps({
        "benchmark": f"segment 4x{shape[2]}x{shape[1]}x{shape[0]} study, {name} (register, deepbet, network, map back)",
        "segmenter": name,
        "seconds": round(statistics.median(times), 2),
        "stages_s": {k: round(statistics.median(s[k] for s in stages), 2) for k in stages[0]},
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "whole_tumour_ml": result.volumes_ml["whole_tumour"],
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "default", int(sys.argv[2]) if len(sys.argv) > 2 else 3)
