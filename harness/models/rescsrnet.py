"""ResCSRNet: the lightweight counter of PromptMix (Bakhtiarnia et al. 2023; the Aarhus report,
§III-E: "a modified ResNet-18 ... a head consisting of all but the four last layers of the ResNet-18 model
... passed to six pairs of dilated convolutions with ReLU activation functions, followed by a final
convolution layer").

Architecture (our reading of that description):

- head: torchvision ``resnet18`` children minus the last four (``layer3``, ``layer4``, ``avgpool``,
  ``fc``), i.e. ``conv1 → bn1 → relu → maxpool → layer1 → layer2``: 128 channels at stride 8;
- back end: six (3×3 conv, dilation 2, padding 2) + ReLU pairs with CSRNet's channels
  ``[512, 512, 512, 256, 128, 64]`` scaled by ``width`` (Li et al. 2018, Table 3 B);
- output: 1×1 conv to one channel, no activation (as CSRNet); count = sum of the map.

Output stride 8; the strided, padded convolutions give ``(ceil(H / 8), ceil(W / 8))`` outputs, the shape of
``downsample_density(density, 8)``. The head is randomly initialised (torchvision's Kaiming init) or, with
``init="imagenet"`` (the report: "pretrained on ImageNet", §III-E), loaded from torchvision's ImageNet ResNet-18
file (``conv1``, ``bn1``, ``layer1``, ``layer2``; provenance: ImageNet labels); the back end ~ N(0, 0.01²) as in
CSRNet. Input: RGB / 255 with ImageNet mean/std (the normalisation the
ResNet-18 head was designed for).
"""
from __future__ import annotations

import torch
from torch import nn

from ..types import Provenance
from .base import TorchDensityCounter, imagenet_preprocess, make_vgg_layers

#: receptive-field radius in input pixels (measured: the input support of one output cell's gradient)
RECEPTIVE_FIELD = 152
STRIDE = 8
BACKEND_CFG = (512, 512, 512, 256, 128, 64)


class ResCSRNet(nn.Module):
    """``forward(x: (B, 3, H, W) ImageNet-normalised) -> (B, 1, ceil(H / 8), ceil(W / 8))`` density.

    Args:
        width: multiplier of the back-end channels (``1.0`` = CSRNet's; e.g. ``0.125`` for CPU smoke runs);
            each layer keeps at least 4 channels.
        dilation: dilation of the back-end convolutions (2, as CSRNet-B).
    """

    def __init__(self, width: float = 1.0, dilation: int = 2):
        super().__init__()
        from torchvision.models import resnet18

        if not width > 0:
            raise ValueError(f"width must be > 0, got {width}")
        self.width = float(width)
        self.backend_channels = [max(4, int(round(c * width))) for c in BACKEND_CFG]
        self.head = nn.Sequential(*list(resnet18(weights=None).children())[:-4])
        self.backend = make_vgg_layers(self.backend_channels, in_channels=128, dilation=dilation)
        self.output_layer = nn.Conv2d(self.backend_channels[-1], 1, kernel_size=1)
        for m in list(self.backend.modules()) + [self.output_layer]:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.backend(self.head(x)))


#: torchvision ``resnet18`` state-dict prefixes -> the head's ``nn.Sequential`` indices
_HEAD_KEYS = {"conv1.": "0.", "bn1.": "1.", "layer1.": "4.", "layer2.": "5."}


def _head_key(key: str) -> str:
    for src, dst in _HEAD_KEYS.items():
        if key.startswith(src):
            return dst + key[len(src):]
    return key


def rescsrnet_counter(*, width: float = 1.0, seed: int | None = None, device: str = "cpu",
                      name: str = "rescsrnet", init: str = "random") -> TorchDensityCounter:
    """An untrained ResCSRNet counter for training code (``.model``, ``.stride``, ``.preprocess``,
    ``.train_forward``).

    Args:
        width: back-end channel multiplier (see :class:`ResCSRNet`).
        seed: if given, initialise the weights under ``torch.manual_seed(seed)`` (global RNG state restored).
        device: torch device.
        init: ``"random"``, ``"imagenet"`` (torchvision's ResNet-18 file: :func:`harness.resolve_pretrained`) or a
            local ResNet-18 state-dict file, for the head.

    Raises:
        WeightsError: the ImageNet file is absent offline (one line: which file, from where, where to put it) or not
            a ResNet-18.
    """
    if seed is None:
        model = ResCSRNet(width=width)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            model = ResCSRNet(width=width)
    prov = Provenance(weights="random-init", trained_on=frozenset(), licence="")
    if init != "random":
        from .pretrained import pretrained_backbone

        loaded = pretrained_backbone(model.head, "resnet18", init, option="counter_options.init",
                                     allow_unused=True, rename=_head_key)
        prov = Provenance(weights=f"{loaded.path} (sha256 {loaded.sha256[:12]})",
                          trained_on=frozenset(loaded.trained_on), licence="")
    return TorchDensityCounter(model, name=name, stride=STRIDE, provenance=prov, preprocess=imagenet_preprocess,
                               output_rounding="ceil", device=device,
                               receptive_field=RECEPTIVE_FIELD)
