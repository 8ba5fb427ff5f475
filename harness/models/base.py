"""A torch density-map network wrapped as a :class:`harness.specs.Counter`.

Conventions (docs/design.md §3): the input is an ``(H, W, 3) uint8`` RGB image at full resolution; the network
outputs a density map at its output stride ``s``; the predicted count is the sum of that map
(Zhang et al., CVPR 2016, §2; Li et al., CVPR 2018, §3).

Resolution and padding: nothing is resized and nothing is padded. Each network uses "same" convolution
padding, so the output covers the whole image up to its pooling arithmetic:

- MCNN and CSRNet pool with 2×2 max-pooling (floor), so their output is ``(H // s, W // s)``; the last
  ``H mod s`` rows / ``W mod s`` columns (fewer than ``s`` pixels) only reach the output through the
  receptive field of the border cells. This is what the released evaluation code does (CSRNet feeds the
  full image; MCNN's loader resizes down to a multiple of 4, i.e. drops at most 3 pixels per side).
- ResCSRNet (strided convolutions with padding) outputs ``(ceil(H / 8), ceil(W / 8))``.

For an input whose sides are multiples of ``s`` every network outputs exactly ``(H / s, W / s)``, the shape
of :func:`harness.data.density.downsample_density(density, s)`, so training code should crop training
patches to multiples of :attr:`TorchDensityCounter.stride` (see :meth:`TorchDensityCounter.output_size`).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..types import Prediction, Provenance

#: ImageNet mean / std used by torchvision's VGG/ResNet preprocessing (RGB, on 0-1 values).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image(image: np.ndarray) -> np.ndarray:
    """Validate an ``(H, W, 3) uint8`` RGB image.

    Raises:
        DataError: wrong dtype, rank or channel count (one line, says what was given).
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = (f"{type(image).__name__} {getattr(image, 'shape', '')} {getattr(image, 'dtype', '')}").strip()
        raise DataError(f"counter input must be an (H, W, 3) uint8 RGB image, got {desc}; read images with "
                        f"harness.data.images.read_image")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DataError(f"counter input image is empty: shape {image.shape}")
    return image


def imagenet_preprocess(image: np.ndarray) -> torch.Tensor:
    """RGB ``(H, W, 3) uint8`` -> ``(1, 3, H, W) float32``: ``(x / 255 - mean) / std`` with the ImageNet
    mean/std (torchvision ``ToTensor`` + ``Normalize``, as in the CSRNet reference code)."""
    x = torch.from_numpy(check_image(image).astype(np.float32)).permute(2, 0, 1).div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((x - mean) / std).unsqueeze(0)


#: images with more pixels than this are counted in overlapping tiles (e.g. UCF-QNRF's 9000 × 6000 photos)
MAX_PIXELS = 2048 * 2048
#: side of a tile's core in input pixels (plus a margin of the receptive-field radius on every side)
TILE_SIZE = 1024


class TorchDensityCounter:
    """Wraps a density-map ``nn.Module`` + its preprocessing + output stride into a ``Counter``.

    Large images are counted in overlapping tiles: above ``max_pixels`` the image is cut into ``tile_size`` cores
    (multiples of the stride), each run with a margin of ``receptive_field`` pixels of real context (clipped at the
    image border, where the untiled network sees its zero padding too), and the cores of the output maps are
    stitched. Tile offsets are multiples of the stride, so pooling grids align: the density equals the untiled one
    up to float rounding, while peak memory is bounded by one tile (docs/design.md §7).

    Attributes:
        name: counter name (e.g. ``"mcnn-sha"``).
        model: the ``nn.Module``; ``model(x: (B, C, H, W)) -> (B, 1, h, w)`` density.
        stride: output stride ``s`` in input pixels (one output cell covers ``s × s`` pixels).
        provenance: where the weights came from (:class:`harness.types.Provenance`).
        preprocess_fn: ``(H, W, 3) uint8 -> (1, C, H, W) float32`` (no resizing, no padding).
        receptive_field: radius in input pixels of the input region that decides one output cell (None: the
            counter is never tiled).
        max_pixels, tile_size: the tiling threshold and the tile core side (pixels).
        device: torch device the model lives on.
    """

    def __init__(self, model: nn.Module, *, name: str, stride: int, provenance: Provenance,
                 preprocess: Callable[[np.ndarray], torch.Tensor] = imagenet_preprocess,
                 output_rounding: str = "floor", device: str | torch.device = "cpu",
                 receptive_field: int | None = None, max_pixels: int = MAX_PIXELS, tile_size: int = TILE_SIZE):
        if output_rounding not in ("floor", "ceil"):
            raise ValueError(f"output_rounding must be 'floor' or 'ceil', got {output_rounding!r}")
        self.receptive_field, self.max_pixels = receptive_field, int(max_pixels)
        self.tile_size = max(int(stride), (int(tile_size) // int(stride)) * int(stride))
        self.name = name
        self.model = model
        self.stride = int(stride)
        self.provenance = provenance
        self.preprocess_fn = preprocess
        self.output_rounding = output_rounding
        self.device = torch.device("cpu")
        self.to(device)
        self.model.eval()

    def __repr__(self) -> str:
        return f"TorchDensityCounter(name={self.name!r}, stride={self.stride}, weights={self.provenance.weights!r})"

    def to(self, device: str | torch.device) -> "TorchDensityCounter":
        """Move the model to ``device``; returns ``self``."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, 3) uint8`` RGB -> ``(1, C, H, W) float32`` on CPU, exactly as the weights expect.

        Raises:
            DataError: ``image`` is not an ``(H, W, 3) uint8`` array.
        """
        return self.preprocess_fn(check_image(image))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output density shape ``(h, w)`` for an ``height × width`` input (see the module notes)."""
        r = (lambda v: v // self.stride) if self.output_rounding == "floor" else (lambda v: math.ceil(v / self.stride))
        return r(int(height)), r(int(width))

    def train_forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Forward pass with autograd for training code: ``(B, C, H, W)`` preprocessed batch (on
        :attr:`device`) -> ``(B, 1, h, w)`` density. Does not change train/eval mode."""
        return self.model(batch)

    def predict(self, image: np.ndarray) -> Prediction:
        """Count one image.

        Args:
            image: ``(H, W, 3) uint8`` RGB at full resolution.

        Returns:
            ``Prediction(count=density.sum(), density=(h, w) float32)`` with ``(h, w) = output_size(H, W)``;
            one density cell covers ``stride × stride`` input pixels.

        Raises:
            DataError: bad image array.
        """
        check_image(image)
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                H, W = image.shape[:2]
                if self.receptive_field is None or H * W <= self.max_pixels:
                    density = self._run(image)
                else:
                    density = self._tiled(image)
        finally:
            self.model.train(was_training)
        density = np.ascontiguousarray(density, dtype=np.float32)
        return Prediction(count=float(density.sum(dtype=np.float64)), density=density)

    def _run(self, image: np.ndarray) -> np.ndarray:
        out = self.model(self.preprocess(image).to(self.device))
        return out[0, 0].detach().to("cpu", torch.float32).numpy()

    def _tiled(self, image: np.ndarray) -> np.ndarray:
        """The density of a large image from overlapping tiles (see the class notes)."""
        s, T = self.stride, self.tile_size
        margin = -(-int(self.receptive_field) // s) * s
        H, W = image.shape[:2]
        oh, ow = self.output_size(H, W)
        density = np.zeros((oh, ow), np.float32)
        for y0 in range(0, H, T):
            for x0 in range(0, W, T):
                y1, x1 = min(y0 + T, H), min(x0 + T, W)
                ya, xa = max(0, y0 - margin), max(0, x0 - margin)
                out = self._run(image[ya:min(H, y1 + margin), xa:min(W, x1 + margin)])
                oy0, ox0 = y0 // s, x0 // s
                oy1, ox1 = (y1 // s if y1 < H else oh), (x1 // s if x1 < W else ow)
                density[oy0:oy1, ox0:ox1] = out[oy0 - ya // s:oy1 - ya // s, ox0 - xa // s:ox1 - xa // s]
        return density


def make_vgg_layers(cfg, in_channels: int, dilation: int = 1) -> nn.Sequential:
    """CSRNet's ``make_layers``: 3×3 conv (padding = dilation) + ReLU per int in ``cfg``, 2×2 max-pool per
    ``"M"`` (Li et al., CVPR 2018, Table 3, configuration B). Module indices match the released weights."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=dilation, dilation=dilation),
                       nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)
