"""MCNN: multi-column CNN for crowd density maps (Zhang et al., "Single-Image Crowd Counting via
Multi-Column Convolutional Neural Network", CVPR 2016, Fig. 2).

Three columns (large / medium / small receptive fields) on a grayscale image, each
conv-pool-conv-pool-conv-conv, concatenated and fused by a 1×1 conv into a density map at stride 4.
The layout and weights follow the widely used PyTorch port (svishwa/crowdcount-mcnn, MIT), whose HDF5
files hold ``DME.branch{1,2,3}.{0,2,4,5}.conv.{weight,bias}`` and ``DME.fuse.0.conv.*``. In that port
every ``Conv2d`` is followed by a ReLU (its default ``relu=True``), the fuse 1×1 included, and uses
"same" padding ``(k - 1) // 2``.

Input (as the port's data loader): grayscale, float values 0-255 (not normalised), full resolution.
The loader reads JPEGs with ``cv2.imread(path, 0)``; from an RGB array we use OpenCV's ``RGB2GRAY``
fixed-point formula (ITU-R BT.601 luma, ``Y = (4899 R + 9617 G + 1868 B + 2^13) >> 14``), which equals the
decoder's Y channel up to JPEG YCbCr→RGB rounding (±1 grey level). The port also resizes each image down to
a multiple of 4 (≤ 3 px); we do not resize, and the floor max-pooling ignores those ≤ 3 px instead.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import WeightsError, WeightsUnavailable
from ..io import file_sha256
from ..types import Provenance
from .base import TorchDensityCounter, check_image

#: receptive-field radius in input pixels (measured: the input support of one output cell's gradient)
RECEPTIVE_FIELD = 40
STRIDE = 4

#: (in, out, kernel) of the four convs of each column (Zhang et al. 2016, Fig. 2).
_COLUMNS = {
    "branch1": [(1, 16, 9), (16, 32, 7), (32, 16, 7), (16, 8, 7)],
    "branch2": [(1, 20, 7), (20, 40, 5), (40, 20, 5), (20, 10, 5)],
    "branch3": [(1, 24, 5), (24, 48, 3), (48, 24, 3), (24, 12, 3)],
}


class ConvReLU(nn.Module):
    """``Conv2d`` with "same" padding ``(k - 1) // 2`` followed by ReLU (the port's ``network.Conv2d``)."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=(k - 1) // 2)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x))


def _column(spec) -> nn.Sequential:
    (a, b, c, d) = spec
    # indices 0, 2, 4, 5 are convs, 1 and 3 max-pools: state_dict keys match the HDF5 file
    return nn.Sequential(ConvReLU(*a), nn.MaxPool2d(2), ConvReLU(*b), nn.MaxPool2d(2), ConvReLU(*c), ConvReLU(*d))


class MCNN(nn.Module):
    """MCNN. ``forward(x: (B, 1, H, W) float, grey 0-255) -> (B, 1, H // 4, W // 4)`` non-negative density."""

    def __init__(self):
        super().__init__()
        self.branch1 = _column(_COLUMNS["branch1"])
        self.branch2 = _column(_COLUMNS["branch2"])
        self.branch3 = _column(_COLUMNS["branch3"])
        self.fuse = nn.Sequential(ConvReLU(8 + 10 + 12, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([self.branch1(x), self.branch2(x), self.branch3(x)], dim=1))


def rgb_to_gray_cv2(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3) uint8`` RGB -> ``(H, W) uint8`` grey with OpenCV's ``COLOR_RGB2GRAY`` integer arithmetic
    (BT.601: ``(4899 R + 9617 G + 1868 B + 8192) >> 14``)."""
    img = check_image(image).astype(np.uint32)
    y = (img[..., 0] * 4899 + img[..., 1] * 9617 + img[..., 2] * 1868 + (1 << 13)) >> 14
    return y.astype(np.uint8)


def mcnn_preprocess(image: np.ndarray) -> torch.Tensor:
    """RGB ``(H, W, 3) uint8`` -> ``(1, 1, H, W) float32`` grey values 0-255 (no normalisation, no resize)."""
    return torch.from_numpy(rgb_to_gray_cv2(image).astype(np.float32))[None, None]


def load_mcnn_h5(model: MCNN, path: str | os.PathLike) -> MCNN:
    """Load the port's HDF5 weights into ``model`` strictly: every file key is used, every parameter is set,
    shapes must match.

    Raises:
        WeightsError: missing/unreadable file, missing or unexpected keys, or shape mismatch (one line
            naming the file and the fix).
    """
    import h5py

    path = Path(path)
    fix = "re-copy mcnn_shtechA_660.h5 / mcnn_shtechB_110.h5 from crowdcount-mcnn into HARNESS_WEIGHTS/mcnn/"
    if not path.is_file():
        raise WeightsError(f"MCNN weights file {path} does not exist; {fix}")
    try:
        with h5py.File(path, "r") as h5:
            arrays: dict[str, np.ndarray] = {}
            h5.visititems(lambda n, o: arrays.__setitem__(n, np.asarray(o)) if isinstance(o, h5py.Dataset) else None)
    except Exception as exc:
        raise WeightsError(f"MCNN weights file {path} is not readable HDF5 ({type(exc).__name__}); {fix}") from None
    state = model.state_dict()
    want = {f"DME.{k}": k for k in state}
    missing = sorted(set(want) - set(arrays))
    extra = sorted(set(arrays) - set(want))
    if missing or extra:
        raise WeightsError(f"MCNN weights file {path} does not match MCNN: missing {missing[:3]}"
                           f"{'…' if len(missing) > 3 else ''}, unexpected {extra[:3]}{'…' if len(extra) > 3 else ''}; {fix}")
    new_state = {}
    for hk, mk in want.items():
        arr = arrays[hk]
        if tuple(arr.shape) != tuple(state[mk].shape):
            raise WeightsError(f"MCNN weights file {path}: {hk} has shape {tuple(arr.shape)}, expected "
                               f"{tuple(state[mk].shape)}; {fix}")
        if not np.all(np.isfinite(arr)):
            raise WeightsError(f"MCNN weights file {path}: {hk} holds NaN/inf values; {fix}")
        new_state[mk] = torch.from_numpy(arr.astype(np.float32))
    model.load_state_dict(new_state, strict=True)
    return model


def mcnn_counter(dataset: str = "SHA", *, weights: str | os.PathLike | None = None,
                 weights_root: str | os.PathLike | None = None, device: str = "cpu",
                 name: str | None = None) -> TorchDensityCounter:
    """MCNN counter with the released weights trained on ShanghaiTech ``dataset`` (``"SHA"`` or ``"SHB"``).

    Args:
        dataset: which weights (part A: ``mcnn_shtechA_660.h5``; part B: ``mcnn_shtechB_110.h5``).
        weights: explicit ``.h5`` path (overrides the lookup of :func:`harness.weights.mcnn_weights`), or
            ``"random"``: the architecture with a seeded random init (tests; provenance ``random-init``).
        weights_root: folder holding ``mcnn/`` (else ``$HARNESS_WEIGHTS``).
        device: torch device.

    Raises:
        WeightsError: weights not found or not matching the architecture; in a dry run (:mod:`harness.stages`)
            weights not found give the random init, reported "architecture only".
    """
    from ..weights import MCNN_FILES, mcnn_weights

    key = dataset.upper().replace("-", "").replace("_", "")
    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = MCNN()
        return TorchDensityCounter(model, name=name or f"mcnn-{key.lower()}", stride=STRIDE,
                                   provenance=Provenance("random-init"), preprocess=mcnn_preprocess,
                                   output_rounding="floor", device=device,
                               receptive_field=RECEPTIVE_FIELD)
    try:
        path = Path(weights) if weights is not None else mcnn_weights(key, root=weights_root)
    except WeightsUnavailable as exc:  # a dry run goes on with the architecture (random weights); else raised
        from ..stages import architecture_only

        architecture_only(f"MCNN-{key} ({MCNN_FILES[key]})", exc)
        return mcnn_counter(key, weights="random", device=device, name=name)
    model = load_mcnn_h5(MCNN(), path)
    prov = Provenance(weights=f"mcnn/{path.name}", trained_on=frozenset({key}), licence="MIT",
                      sha256=file_sha256(path))
    return TorchDensityCounter(model, name=name or f"mcnn-{key.lower()}", stride=STRIDE, provenance=prov,
                               preprocess=mcnn_preprocess, output_rounding="floor", device=device,
                               receptive_field=RECEPTIVE_FIELD)
