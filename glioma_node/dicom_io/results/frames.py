"""Put a volume on the frames of its source: one frame per source image, in source order.

A single-frame series gets one frame per slice, in the order the slices name their
instances. A multi-frame (enhanced) source gets exactly its NumberOfFrames frames, each
slice placed at its frame number and frames outside the volume left empty, because
highdicom takes the plane positions from the source frames one by one.
"""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset


def source_frames(values: np.ndarray, sources: list[Dataset], frame_numbers: list[int] | None) -> np.ndarray:
    """``values`` (``[slice, row, column, ...]``) laid out on the frames of ``sources``."""
    if not frame_numbers:
        if len(sources) != values.shape[0]:
            raise ValueError(f"{values.shape[0]} slices but {len(sources)} source instances")
        return values
    if len(sources) != 1:
        raise ValueError("a volume read from several multi-frame instances cannot be written on one source grid")
    frames = np.zeros((int(sources[0].NumberOfFrames), *values.shape[1:]), values.dtype)
    frames[np.asarray(frame_numbers) - 1] = values
    return frames
