"""CaPTk's DeepMedic brain-tumour model, rebuilt in PyTorch from the files CaPTk ships.

A CaPTk model folder holds ``modelConfig.txt`` (DeepMedic's model configuration),
``model.ckpt.index`` + ``model.ckpt.data-*`` (a TensorFlow 1 checkpoint, read by
:mod:`glioma_node.inference.segmenters.tf_checkpoint`, no TensorFlow needed) and ``VERSION.yaml``.
The network follows DeepMedic's TensorFlow sources (Kamnitsas et al. 2017;
``deepmedic/neuralnet``):

* pathways of valid 3D convolutions, each block applied as *[batch norm, or a bias on
  the pathway's first block] → activation (linear on the first block, PReLU after) →
  convolution*; a residual connection adds the centre of a block's *input to the
  previous block* to its output, zero-padding the missing feature maps;
* one normal pathway on the image, one subsampled pathway per ``subsampleFactor``
  whose input is the image sampled every *f* voxels around the same segment
  (``sampling.get_subsampl_segment``) and whose output is repeated *f* times per axis
  and cropped to the normal pathway's output;
* the concatenated feature maps go through the FC pathway (its first block has batch
  norm and PReLU, its first convolution is ``kernelDimFor1stFcLayer`` with mirror
  padding), then a bias and a softmax over ``numberOfOutputClasses``;
* batch norm at inference uses the mean of the stored rolling averages, as DeepMedic does.

Inference tiles the image as DeepMedic's testing does: the image is mirror-padded by
half the receptive field, cut into ``segmentsDimInference`` segments whose predicted
centres tile it without overlap, segments outside the brain skipped.

CaPTk's input convention (``src/applications/DeepMedic.cxx``): channels T1, T1-Gd,
T2, FLAIR, co-registered, skull-stripped, 1 mm isotropic, each z-scored with
``ZScoreNormalizer`` (statistics of the positive voxels between the 5th and 95th
percentiles and within mean ± 3 SD, then applied to the whole image, background
included). Arrays are given in the voxel order nibabel reads a BraTS NIfTI stored
LPS (x toward the left, y toward posterior, z toward superior): our canonical
``[z, y, x]`` transposed. The five output classes are BraTS labels 0-4: 1
necrotic/non-enhancing core, 2 edema, 4 enhancing tumour; class 3 (the old BraTS
"non-enhancing" label, absent from BraTS 2017+ ground truth) is counted as core.
CaPTk's own post-processing rewrites 3 as 4, but this model never predicts 3: on
TCGA-FG-6692 it predicts class 4 where the reference has enhancing tumour (found by
looking at that case's output; see docs/segmentation.md).
"""
from __future__ import annotations

import ast
import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from glioma_node.core.grid import shape3
from glioma_node.inference.model_dir import ModelError
from glioma_node.inference.networks import device
from glioma_node.inference.preprocess import PreparedStudy
from glioma_node.inference.segmenters.base import RegionMaps
from glioma_node.inference.segmenters.tf_checkpoint import Checkpoint, load_checkpoint

INPUTS: tuple[str, ...] = ("T1", "T1c", "T2", "FLAIR")
KIND = "captk-deepmedic"


def read_model_config(path: Path) -> dict:
    """``modelConfig.txt`` as a dict (``key = python literal`` lines, ``#`` comments)."""
    if not path.is_file():
        raise ModelError(f"{path}: DeepMedic modelConfig.txt not found")
    return parse_model_config(path.read_bytes(), path)


def parse_model_config(text: bytes, path: Path) -> dict:
    """The bytes of ``modelConfig.txt`` (``path`` for messages) as a dict: parsed from the
    same bytes that :class:`CaptkDeepMedicSegmenter` hashes."""
    config = {}
    for number, line in enumerate(text.decode(errors="replace").splitlines(), start=1):
        line = re.sub(r"#.*", "", line).strip()
        if not line or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            config[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as exc:
            raise ModelError(f"{path}:{number}: cannot read {key.strip()!r} ({exc})") from exc
    return config


def _three(values: object) -> tuple[int, int, int]:
    try:
        return shape3(values)
    except ValueError as exc:
        raise ModelError(f"modelConfig.txt: {exc}") from None


@dataclass(frozen=True)
class Architecture:
    """What :class:`DeepMedicNet` needs from ``modelConfig.txt`` (DeepMedic's defaults applied)."""

    n_inputs: int
    n_classes: int
    normal: tuple[int, ...]
    kernels: tuple[tuple[int, int, int], ...]
    residual_normal: tuple[int, ...]  # 0-based block indices
    subsampled: tuple[tuple[int, ...], ...]  # feature maps per subsampled pathway
    factors: tuple[tuple[int, int, int], ...]
    residual_subsampled: tuple[int, ...]
    fc: tuple[int, ...]
    fc_first_kernel: tuple[int, int, int]
    residual_fc: tuple[int, ...]
    segment_inference: tuple[int, int, int]

    @property
    def receptive_field(self) -> int:
        return 1 + sum(k[0] - 1 for k in self.kernels)

    @classmethod
    def from_config(cls, cfg: dict) -> Architecture:
        def need(key: str):
            if key not in cfg:
                raise ModelError(f"modelConfig.txt: required key {key!r} is missing")
            return cfg[key]

        normal = tuple(int(n) for n in need("numberFMsPerLayerNormal"))
        kernels = tuple(_three(k) for k in need("kernelDimPerLayerNormal"))
        if len(kernels) != len(normal) or any(len(set(k)) != 1 or k[0] % 2 == 0 for k in kernels):
            raise ModelError("modelConfig.txt: only cubic odd kernels, one per normal-pathway layer, are supported")
        if cfg.get("lowerRankLayersNormal") or cfg.get("lowerRankLayersSubsampled"):
            raise ModelError("modelConfig.txt: lower-rank layers are not supported")
        if cfg.get("activationFunction", "prelu") != "prelu":
            raise ModelError("modelConfig.txt: only activationFunction = \"prelu\" is supported")
        residual = tuple(int(i) - 1 for i in cfg.get("layersWithResidualConnNormal", []))
        subsampled: tuple[tuple[int, ...], ...] = ()
        factors: tuple[tuple[int, int, int], ...] = ()
        if cfg.get("useSubsampledPathway", False):
            fms = cfg.get("numberFMsPerLayerSubsampled", list(normal))
            fms = [fms] if fms and not isinstance(fms[0], list) else fms
            raw = cfg.get("subsampleFactor", [3, 3, 3])
            raw = [raw] if raw and not isinstance(raw[0], list) else raw
            factors = tuple(_three(f) for f in raw)
            while len(fms) < len(factors):
                fms.append(fms[-1])
            subsampled = tuple(tuple(int(n) for n in f) for f in fms[:len(factors)])
            kernels_sub = cfg.get("kernelDimPerLayerSubsampled", kernels)
            if [tuple(k) for k in kernels_sub] != list(kernels) or any(len(f) != len(normal) for f in subsampled):
                raise ModelError("modelConfig.txt: subsampled pathways must mirror the normal pathway's kernels")
        residual_sub = tuple(int(i) - 1 for i in cfg.get("layersWithResidualConnSubsampled",
                                                        cfg.get("layersWithResidualConnNormal", [])))
        segment = _three(cfg.get("segmentsDimInference", cfg.get("segmentsDimTrain", [45, 45, 45])))
        return cls(int(need("numberOfInputChannels")), int(need("numberOfOutputClasses")), normal, kernels, residual,
                   subsampled, factors, residual_sub, tuple(int(n) for n in cfg.get("numberFMsPerLayerFC", [])),
                   _three(cfg.get("kernelDimFor1stFcLayer", [1, 1, 1])),
                   tuple(int(i) - 1 for i in cfg.get("layersWithResidualConnFC", [])), segment)


class _BatchNorm(nn.Module):
    """DeepMedic's batch norm at inference: the mean of the rolling mean/variance rows."""

    gamma: torch.Tensor
    beta: torch.Tensor
    mean: torch.Tensor
    var: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("gamma", torch.ones(channels))
        self.register_buffer("beta", torch.zeros(channels))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        tiny = float(np.finfo(np.float32).tiny)  # DeepMedic adds it inside the square root
        return (x - self.mean.view(shape)) / torch.sqrt(self.var.view(shape) + tiny) * self.gamma.view(shape) \
            + self.beta.view(shape)


class _Bias(nn.Module):
    bias: torch.Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("bias", torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.view(1, -1, 1, 1, 1)


class _Block(nn.Module):
    """[batch norm | bias] → [identity | PReLU] → convolution (valid, or mirror-padded)."""

    def __init__(self, n_in: int, n_out: int, kernel: int, first: bool, batch_norm: bool, prelu: bool,
                 mirror_pad: bool = False) -> None:
        super().__init__()
        self.norm = _BatchNorm(n_in) if batch_norm else _Bias(n_in)
        self.prelu = nn.PReLU(n_in) if prelu else None
        self.conv = nn.Conv3d(n_in, n_out, kernel, bias=False)
        self.pad = (kernel - 1) // 2 if mirror_pad else 0
        self.first = first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.prelu is not None:
            x = self.prelu(x)
        if self.pad:
            # DeepMedic's pad_by_mirroring repeats the edge voxel first (numpy "symmetric");
            # for a one-voxel pad that is exactly "replicate".
            x = F.pad(x, (self.pad,) * 6, mode="replicate") if self.pad == 1 else _symmetric_pad(x, self.pad)
        return self.conv(x)


def _symmetric_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    for dim in (2, 3, 4):
        left = x.narrow(dim, 0, pad).flip(dim)
        right = x.narrow(dim, x.shape[dim] - pad, pad).flip(dim)
        x = torch.cat([left, x, right], dim)
    return x


def _centre_crop(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """DeepMedic's crop_center: of an even-sized axis, one voxel to the left is the centre."""
    slices = []
    for have, want in zip(x.shape[2:], shape):
        start = (have - 1) // 2 - (want - 1) // 2
        slices.append(slice(start, start + want))
    return x[(slice(None), slice(None), *slices)]


def _residual(earlier: torch.Tensor, deeper: torch.Tensor) -> torch.Tensor:
    crop = _centre_crop(earlier, tuple(deeper.shape[2:]))
    missing = deeper.shape[1] - crop.shape[1]
    if missing >= 0:
        crop = F.pad(crop, (0, 0, 0, 0, 0, 0, 0, missing))
    else:
        crop = crop[:, :deeper.shape[1]]
    return deeper + crop


class _Pathway(nn.Module):
    def __init__(self, n_in: int, fms: tuple[int, ...], kernels: tuple[int, ...], residual: tuple[int, ...],
                 fc: bool = False, mirror_first: bool = False) -> None:
        super().__init__()
        blocks = []
        for i, (n_out, kernel) in enumerate(zip(fms, kernels)):
            # The first block of an image pathway sees raw intensities: a bias, no BN, no activation.
            first = i == 0
            blocks.append(_Block(n_in, n_out, kernel, first, batch_norm=fc or not first, prelu=fc or not first,
                                 mirror_pad=fc and first and mirror_first))
            n_in = n_out
        self.blocks = nn.ModuleList(blocks)
        self.residual = set(residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        previous_input, current = None, x
        for i, block in enumerate(self.blocks):
            out = block(current)
            if i in self.residual and previous_input is not None:
                out = _residual(previous_input, out)
            previous_input, current = current, out
        return current


class DeepMedicNet(nn.Module):
    """DeepMedic's multi-scale network (see the module doc); softmax probabilities out."""

    def __init__(self, arch: Architecture) -> None:
        super().__init__()
        self.arch = arch
        kernels = tuple(k[0] for k in arch.kernels)
        self.normal = _Pathway(arch.n_inputs, arch.normal, kernels, arch.residual_normal)
        self.subsampled = nn.ModuleList(_Pathway(arch.n_inputs, fms, kernels, arch.residual_subsampled)
                                        for fms in arch.subsampled)
        n_concat = arch.normal[-1] + sum(f[-1] for f in arch.subsampled)
        fc_fms = (*arch.fc, arch.n_classes)
        fc_kernels = (arch.fc_first_kernel[0],) + (1,) * (len(fc_fms) - 1)
        self.fc = _Pathway(n_concat, fc_fms, fc_kernels, arch.residual_fc, fc=True,
                           mirror_first=arch.fc_first_kernel[0] > 1)
        self.class_bias = _Bias(arch.n_classes)

    def forward(self, x: torch.Tensor, subsampled: list[torch.Tensor]) -> torch.Tensor:
        out = self.normal(x)
        maps = [out]
        for pathway, factor, inp in zip(self.subsampled, self.arch.factors, subsampled):
            low = pathway(inp)
            for dim, f in zip((2, 3, 4), factor):
                low = low.repeat_interleave(f, dim=dim)
            maps.append(low[:, :, :out.shape[2], :out.shape[3], :out.shape[4]])
        logits = self.class_bias(self.fc(torch.cat(maps, 1)))
        return torch.softmax(logits, 1)

    def load_checkpoint(self, tensors: dict[str, np.ndarray], scope: str = "net") -> None:
        """Assign the checkpoint's variables in DeepMedic's creation order (W, b, gBn, ... with
        TensorFlow's ``_1``, ``_2`` suffixes): normal, subsampled, FC pathways, then the class bias."""
        counters = {"W": 0, "b": 0, "bn": 0, "aPrelu": 0}

        def take(kind: str, name: str | None = None) -> np.ndarray:
            i = counters[kind]
            counters[kind] += 1
            base = name or kind
            key = f"{scope}/{base}" + (f"_{i}" if i else "")
            if key not in tensors:
                raise ModelError(f"checkpoint has no tensor {key!r}: it does not fit modelConfig.txt")
            return tensors[key]

        def assign(target: torch.Tensor, value: np.ndarray, what: str) -> None:
            if tuple(target.shape) != tuple(value.shape):
                raise ModelError(f"checkpoint tensor for {what} has shape {value.shape}, modelConfig.txt "
                                 f"implies {tuple(target.shape)}")
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)))

        with torch.no_grad():
            for pathway in (self.normal, *self.subsampled, self.fc):
                for block in pathway.blocks:
                    if isinstance(block.norm, _BatchNorm):
                        i = counters["bn"]
                        counters["bn"] += 1
                        suffix = f"_{i}" if i else ""
                        for attr, name in (("gamma", "gBn"), ("beta", "bBn")):
                            assign(getattr(block.norm, attr), tensors.get(f"{scope}/{name}{suffix}", np.empty(0)), name)
                        for attr, name in (("mean", "muBnsForRollingAverage"), ("var", "varBnsForRollingAverage")):
                            rolling = tensors.get(f"{scope}/{name}{suffix}")
                            if rolling is None:
                                raise ModelError(f"checkpoint has no tensor {scope}/{name}{suffix}")
                            assign(getattr(block.norm, attr), rolling.mean(axis=0), name)
                    else:
                        assign(block.norm.bias, take("b"), "bias")
                    if block.prelu is not None:
                        assign(block.prelu.weight, take("aPrelu"), "PReLU")
                    assign(block.conv.weight, take("W"), "convolution")
            assign(self.class_bias.bias, take("b"), "class bias")


def subsampled_segment(channels: np.ndarray, start: tuple[int, ...], out_dims: tuple[int, ...], factor: tuple[int, ...],
                       rf: int, border: np.ndarray) -> np.ndarray:
    """The low-resolution input of a subsampled pathway for the segment starting at ``start``
    (DeepMedic's ``get_subsampl_segment``); outside the image, each channel's border value."""
    dims_lr = [math.ceil(o / f) + rf - 1 for o, f in zip(out_dims, factor)]
    out = np.ones((channels.shape[0], *dims_lr), np.float32) * border[:, None, None, None]
    low, high, put = [], [], []
    for d in range(3):
        f = factor[d]
        if f % 2 == 1:
            before, centre = ((f - 1) // 2) * rf, f // 2
        else:
            before, centre = (f - 2) // 2 * rf + rf // 2, f // 2 - 1
        lo = start[d] + centre - before
        hi = int(lo + f * rf + (math.ceil(out_dims[d] / f) - 1) * f)
        low.append(max(lo, 0))
        high.append(min(hi, channels.shape[d + 1]))
        put.append(0 if lo >= 0 else abs(lo) // f)
    piece = channels[:, low[0]:high[0]:factor[0], low[1]:high[1]:factor[1], low[2]:high[2]:factor[2]]
    n = piece.shape[1:]
    out[:, put[0]:put[0] + n[0], put[1]:put[1] + n[1], put[2]:put[2] + n[2]] = piece
    return out


def tile_starts(size: int, segment: int, stride: int) -> list[int]:
    """Segment starts along one axis, as DeepMedic's get_slice_coords_of_all_img_tiles."""
    starts, nxt = [], 0
    while True:
        far = min(nxt + segment, size)
        starts.append(far - segment)
        nxt += stride
        if far >= size:
            return starts


def captk_zscore(image: np.ndarray, quantiles: tuple[float, float] = (5, 95), cutoff_sd: float = 3.0) -> np.ndarray:
    """CaPTk's ZScoreNormalizer (no mask given): statistics of the positive voxels whose
    intensity lies within the quantiles and within mean ± ``cutoff_sd`` SD, applied to the
    whole image (the background becomes −mean/SD, as DeepMedic was trained)."""
    positive = image[image > 0]
    if positive.size < 10:
        return np.zeros_like(image, dtype=np.float32)
    lo = max(float(positive.min()), float(np.percentile(positive, quantiles[0])),
             float(positive.mean() - cutoff_sd * positive.std()))
    hi = min(float(positive.max()), float(np.percentile(positive, quantiles[1])),
             float(positive.mean() + cutoff_sd * positive.std()))
    kept = positive[(positive >= lo) & (positive <= hi)]
    std = float(kept.std()) or 1.0
    return ((image - float(kept.mean())) / std).astype(np.float32)


def model_sha256(config: bytes, checkpoint: Checkpoint) -> str:
    """The model's identity: everything that decides its output, not the index alone (it
    names the tensors, not their values, so other weights would share its checksum and the
    results' UIDs). It is the sha256 of the lines ``sha256sum`` prints for
    ``modelConfig.txt``, ``model.ckpt.index`` and each ``model.ckpt.data-*`` shard in
    order, so ``sha256sum modelConfig.txt model.ckpt.index model.ckpt.data-* | sha256sum``
    in the model folder gives it too."""
    lines = [f"{hashlib.sha256(config).hexdigest()}  modelConfig.txt\n"]
    lines += [f"{digest}  {name}\n" for name, digest in checkpoint.files.items()]
    return hashlib.sha256("".join(lines).encode()).hexdigest()


class CaptkDeepMedicSegmenter:
    """A CaPTk DeepMedic model folder (``modelConfig.txt``, ``model.ckpt.*``); see the module doc."""

    required_roles = INPUTS

    def __init__(self, folder: Path, batch_size: int = 8) -> None:
        self.folder = Path(folder)
        config_path = self.folder / "modelConfig.txt"
        if not config_path.is_file():
            raise ModelError(f"{config_path}: DeepMedic modelConfig.txt not found")
        config_bytes = config_path.read_bytes()
        config = parse_model_config(config_bytes, config_path)
        self.arch = Architecture.from_config(config)
        if self.arch.n_inputs != len(INPUTS) or self.arch.n_classes != 5:
            raise ModelError(f"{self.folder}: {self.arch.n_inputs} input channels and {self.arch.n_classes} classes; "
                             f"CaPTk's tumour models take 4 ({', '.join(INPUTS)}) and give 5 (BraTS labels 0-4)")
        self.name = str(config.get("modelName", self.folder.name))
        version = self.folder / "VERSION.yaml"
        self.version = (re.search(r"Version:\s*(\S+)", version.read_text()) or [None, "unknown"])[1] \
            if version.is_file() else "unknown"
        self.net = DeepMedicNet(self.arch)
        checkpoint = load_checkpoint(self.folder / "model.ckpt")
        self.net.load_checkpoint(checkpoint.tensors)
        self.device = device()
        self.net.to(self.device).eval()
        self.sha256 = model_sha256(config_bytes, checkpoint)
        self.batch_size = batch_size

    def describe(self) -> dict[str, str]:
        return {"name": f"CaPTk DeepMedic {self.name}", "version": f"CaPTk {self.version}", "sha256": self.sha256,
                "kind": KIND}

    @torch.no_grad()
    def probabilities(self, channels: np.ndarray, roi: np.ndarray) -> np.ndarray:
        """Class probabilities ``[n_classes, x, y, z]`` of normalised ``channels`` ``[4, x, y, z]``;
        segments without any ``roi`` voxel are not run (background there)."""
        arch = self.arch
        rf = arch.receptive_field
        seg = arch.segment_inference
        out_dims = tuple(s - rf + 1 for s in seg)
        left = (rf - 1) // 2
        pads = [(left, rf - 1 - left + max(0, s - (n + rf - 1))) for s, n in zip(seg, channels.shape[1:])]
        padded = np.pad(channels, [(0, 0), *pads], mode="reflect").astype(np.float32)
        roi_padded = np.pad(roi, pads, mode="constant")
        corners = padded[:, [0, -1]][:, :, [0, -1]][:, :, :, [0, -1]].reshape(padded.shape[0], -1).mean(axis=1)
        starts = [tile_starts(padded.shape[d + 1], seg[d], out_dims[d]) for d in range(3)]
        tiles = [(a, b, c) for c in starts[2] for b in starts[1] for a in starts[0]
                 if roi_padded[a:a + seg[0], b:b + seg[1], c:c + seg[2]].any()]
        probs = np.zeros((arch.n_classes, *padded.shape[1:]), np.float32)
        probs[0] = 1.0
        for i in range(0, len(tiles), self.batch_size):
            batch = tiles[i:i + self.batch_size]
            x = np.stack([padded[:, a:a + seg[0], b:b + seg[1], c:c + seg[2]] for a, b, c in batch])
            subs = [torch.from_numpy(np.stack([subsampled_segment(padded, t, out_dims, f, rf, corners) for t in batch]))
                    .to(self.device) for f in arch.factors]
            p = self.net(torch.from_numpy(x).to(self.device), subs).cpu().numpy()
            for (a, b, c), tile in zip(batch, p):
                probs[:, a + left:a + left + out_dims[0], b + left:b + left + out_dims[1],
                      c + left:c + left + out_dims[2]] = tile
        return probs[:, left:left + channels.shape[1], left:left + channels.shape[2], left:left + channels.shape[3]]

    def predict(self, prepared: PreparedStudy, brain: np.ndarray) -> RegionMaps:
        channels = np.stack([captk_zscore(prepared.channels[r] * brain).transpose(2, 1, 0) for r in INPUTS])
        probs = self.probabilities(channels, brain.transpose(2, 1, 0)).transpose(0, 3, 2, 1)
        enhancing = probs[4]
        core = probs[1] + probs[3] + enhancing
        return RegionMaps((1.0 - probs[0]).astype(np.float32), core.astype(np.float32), enhancing.astype(np.float32))
