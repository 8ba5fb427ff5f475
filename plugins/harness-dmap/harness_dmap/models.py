"""The networks of the density-map report (seed 003), Keras layer for layer in torch.

- :class:`VGGMapNet` (§7, "1st model"): ``vgg16.layers[0:10]`` — the input layer and VGG-16's blocks 1–3 up to
  ``block3_conv3`` (seven 3 × 3 convolutions, two 2 × 2 max-pools: stride 4) — then ``Conv2D(128, 3, relu)``,
  ``Conv2D(1, 3, relu)`` and ``UpSampling2D((4, 4))`` (nearest): 2 031 681 parameters at width 1. The VGG layers
  load torchvision's ImageNet VGG-16 ``features.0–14`` (the report: Keras' ImageNet VGG16).
- :class:`NoPoolMapNet` (§8, "latest model"): seven 3 × 3 convolutions 3 → 64 → 128 → 256 → 512 → 512 → 128 → 1, ReLU
  after each, no pooling (the report: VGG-16's layers without its max-pools, so no ImageNet weights): 4 501 889
  parameters at width 1.
- :class:`CountRegressor` (§12): ``Flatten`` of the predicted ``S × S`` map, three ``Dense(4028)`` and ``Dense(1)``
  (the report's AlexNet-style regressor: 234 574 609 parameters at S = 224). The report's listing shows no
  activation: ReLU between the dense layers is ours (AlexNet's).

``width`` multiplies every hidden channel count (smoke runs use e.g. 0.25; ``VGGMapNet`` needs width 1 for the
ImageNet file).
"""
from __future__ import annotations

import torch
from torch import nn

from harness import ConfigError

#: VGG-16 blocks 1-3 (Keras vgg16.layers[1:10]: 7 convolutions, 2 max-pools)
VGG_BLOCKS_1_3 = (64, 64, "M", 128, 128, "M", 256, 256, 256)
#: the no-pooling network's convolution widths (§8)
NOPOOL = (64, 128, 256, 512, 512, 128)


def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


def _convs(widths, width: float, cin: int = 3) -> tuple[list[nn.Module], int]:
    """3 × 3 convolutions (padding 1) each followed by ReLU, ``"M"`` a 2 × 2 max-pool; ``(layers, out channels)``.
    A width of 1 stays 1 (a map output)."""
    if not width > 0:
        raise ConfigError(f"width must be > 0, got {width}")
    layers: list[nn.Module] = []
    for v in widths:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            cout = 1 if v == 1 else _ch(v, width)
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
            cin = cout
    return layers, cin


class VGGMapNet(nn.Module):
    """``(B, 3, S, S)`` ImageNet-normalised RGB -> ``(B, 1, S, S)`` non-negative map (S a multiple of 4)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        layers, cin = _convs(VGG_BLOCKS_1_3, width)
        self.features = nn.Sequential(*layers)  # indices = torchvision vgg16.features[0:16]
        self.head = nn.Sequential(*_convs((128, 1), width, cin)[0])
        self.up = nn.Upsample(scale_factor=4, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.head(self.features(x)))


class NoPoolMapNet(nn.Module):
    """``(B, 3, S, S)`` -> ``(B, 1, S, S)``: seven 3 × 3 convolutions with ReLU, no pooling (§8)."""

    def __init__(self, width: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(*_convs(NOPOOL + (1,), width)[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CountRegressor(nn.Module):
    """``(B, 1, S, S)`` map -> ``(B,)`` count: flatten, ``layers`` × (Linear(hidden), ReLU), Linear(1) (§12)."""

    def __init__(self, size: int = 224, hidden: int = 4028, layers: int = 3):
        super().__init__()
        mods: list[nn.Module] = [nn.Flatten()]
        cin = size * size
        for _ in range(layers):
            mods += [nn.Linear(cin, hidden), nn.ReLU(inplace=True)]
            cin = hidden
        mods.append(nn.Linear(cin, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.net(maps)[:, 0]


def map_network(name: str, width: float = 1.0) -> nn.Module:
    """``vgg`` (§7) or ``nopool`` (§8). Raises: ConfigError for another name."""
    if name == "vgg":
        return VGGMapNet(width)
    if name == "nopool":
        return NoPoolMapNet(width)
    raise ConfigError(f"map network {name!r} is not one of vgg, nopool")


__all__ = ["VGGMapNet", "NoPoolMapNet", "CountRegressor", "map_network"]
