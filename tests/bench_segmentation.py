"""Segmentation speed and memory on one 4 x 240 x 240 x 155 study, in its own process.

Run by `make bench` (tests/bench.py) as a child process so its peak RSS is its own.
Prints one JSON object: median seconds over the runs, per stage, and the device.
"""
from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from inference.segmentation import segment
from node.config import load_config
from node.process import load_models
from tests.helpers import SHARED, nifti_volumes


def main(runs: int = 3) -> None:
    volumes = nifti_volumes(SHARED / "brats23-gli-00001-000")
    segmenter = load_models(load_config()).segmenter
    times, stages = [], []
    for _ in range(runs):
        start = time.perf_counter()
        result = segment(volumes, segmenter, same_frame=True)
        times.append(time.perf_counter() - start)
        stages.append(result.timings_s)
    shape = next(iter(volumes.values())).shape
    print(json.dumps({
        "benchmark": f"segment 4x{shape[2]}x{shape[1]}x{shape[0]} study (register, resample, 2-pass network, map back)",
        "seconds": round(statistics.median(times), 2),
        "stages_s": {k: round(statistics.median(s[k] for s in stages), 2) for k in stages[0]},
        "device": "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)",
        "whole_tumour_ml": result.volumes_ml["whole_tumour"],
    }))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
