"""The classical baseline: intensity thresholds after normalisation, no learning.

Within the brain, each channel is z-scored (:func:`glioma_node.inference.intensity.zscore`), then

* whole tumour: FLAIR z > 2.0 and T2 z > 1.0 (hyperintense on both; CSF is bright on
  T2 only, so the pair excludes it), small islands removed, components touching the
  largest one kept;
* enhancing tumour: whole tumour voxels where T1c z exceeds T1 z by more than 1.5;
* tumour core: enhancing tumour with the holes it encloses filled (the necrosis of a
  ring), plus whole-tumour voxels darker than white matter on T1 (T1 z < -1.5).

The cut-offs were chosen by hand once, not fitted; this segmenter exists so every
figure for the network can be read next to what simple thresholds already get.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from glioma_node.inference.intensity import zscore
from glioma_node.inference.preprocess import PreparedStudy
from glioma_node.inference.segmenters.base import RegionMaps


class ClassicalSegmenter:
    """Threshold baseline, inside the brain mask it is given."""

    required_roles: tuple[str, ...] = ("FLAIR", "T1", "T1c", "T2")

    def __init__(self, flair_z: float = 2.0, t2_z: float = 1.0, enhancement_z: float = 1.5, t1_dark_z: float = -1.5,
                 min_voxels: int = 300) -> None:
        self.flair_z, self.t2_z, self.enhancement_z, self.t1_dark_z = flair_z, t2_z, enhancement_z, t1_dark_z
        self.min_voxels = min_voxels

    def describe(self) -> dict[str, str]:
        return {"name": "classical-threshold-baseline", "version": "1", "sha256": "", "kind": "classical"}

    def predict(self, prepared: PreparedStudy, brain: np.ndarray) -> RegionMaps:
        z = {role: zscore(ch, brain) for role, ch in prepared.channels.items()}
        wt = (z["FLAIR"] > self.flair_z) & (z["T2"] > self.t2_z) & brain
        wt = ndimage.binary_opening(wt, iterations=1)
        labels, n = ndimage.label(wt)
        if n:
            sizes = ndimage.sum_labels(wt, labels, index=np.arange(1, n + 1))
            wt = np.isin(labels, 1 + np.nonzero(sizes >= max(self.min_voxels, 0.2 * sizes.max()))[0])
        et = wt & ((z["T1c"] - z["T1"]) > self.enhancement_z)
        et = ndimage.binary_opening(et)
        tc = (ndimage.binary_fill_holes(ndimage.binary_closing(et, iterations=2)) | (wt & (z["T1"] < self.t1_dark_z))) & wt
        return RegionMaps(wt.astype(np.float32), tc.astype(np.float32), et.astype(np.float32))
