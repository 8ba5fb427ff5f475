"""SASNet (Song, Wang, Wang, Tai, Wang, Li, Huang & Ji, "To Choose or to Fuse? Scale Selection for Crowd Counting",
AAAI 2021): the heavyweight annotator of the PromptMix report (two SASNets, trained on ShanghaiTech A and B, §IV-B-3).

Written for this harness from the paper (§3: a VGG-16-BN encoder, a U-shaped decoder of five levels, per level a
density head and a confidence head; the confidence of each level, averaged over ``block_size``² patches, chooses
between the levels' densities per patch) with the layer layout of the authors' code (TencentYoutuResearch/
CrowdCounting-SASNet, ``model.py``), read to understand it so that their released checkpoints (``SHHA.pth``,
``SHHB.pth``) load by name; not copied.

- encoder: torchvision ``vgg16_bn().features`` in five stages (``features1`` … ``features5``: indices 0–5, 6–12,
  13–22, 23–32, 33–42, i.e. conv1 … conv5 with their batch norms, pools between stages);
- decoder ``de_pred5`` … ``de_pred1``: two 3 × 3 convolutions + ReLU each (512 → 1024 → 512; then the upsampled
  coarser output concatenated with the stage's features: 1024 → 512 → 256, 512 → 256 → 128, 256 → 128 → 64,
  128 → 64 → 64), bilinear upsampling between levels;
- density heads ``density_head5`` … ``1``: a multi-branch module (three 1 × 1 → 1 × 1 / 3 × 3 / 5 × 5 branches of
  bias-free convolutions with batch norm (eps 1e-3) and ReLU, then the input, concatenated in that order: 4 × the
  channels; ``model.py``'s ``MultiBranchModule`` / ``BasicConv2d``, same attribute names) and a 1 × 1 convolution to
  one channel with ReLU;
- confidence heads ``confidence_head5`` … ``1``: the level's decoder output average-pooled to ``H / block_size ×
  W / block_size``, then 1 × 1 conv + ReLU and a 1 × 1 conv to one channel;
- fusion (eq. 6–7): every level's density and confidence upsampled (nearest) to the first stage's resolution (the
  input's: ``features1`` has no pooling), the confidences passed through a sigmoid and then soft-maxed over the five
  levels (as ``model.py`` does), the densities weighted by them and summed.

Output: ``(B, 1, H, W)``, scaled by ``LOG_PARA`` = 1000 (the authors' ``--log_para``): count = sum / 1000.
Input: RGB / 255 normalised with ImageNet's mean and std, any size, nothing padded (the authors' test loader:
``ToTensor`` + ``Normalize``, batch 1): the patch grid is ``H // block_size × W // block_size``. Only an image under
``block_size`` on a side is zero-padded up to it (the border's density cropped away).

Checked against the authors' ``model.py`` / ``main.py`` (commit ``3e2b78a``): the same 321 state-dict keys and
shapes, 38,898,698 parameters; their ``main.py`` loads the file strictly into a bare model (no ``module.`` prefix; a
prefixed file is unwrapped too).

Weights: a local file — ``$HARNESS_WEIGHTS/sasnet/SHHA.pth`` / ``SHHB.pth`` (the checkpoints linked from the authors'
README) or a path; absent, one line says which file, from where and where to put it. ``"random"``: random weights
(tests, the dry run's architecture-only runs).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import WeightsError
from ..types import Provenance
from .base import TorchDensityCounter, imagenet_preprocess

#: the authors' density scale (``--log_para 1000``): the network predicts 1000 × the density
LOG_PARA = 1000.0
#: the authors' ``--block_size``: side of the patches the confidences choose a level for
BLOCK_SIZE = 32
STRIDE = 1
#: the authors' released checkpoints (their README), by the dataset whose labels trained them
FILES = {"SHA": "SHHA.pth", "SHB": "SHHB.pth"}
#: torchvision vgg16_bn().features indices of the five encoder stages
STAGES = ((0, 6), (6, 13), (13, 23), (23, 33), (33, 43))


class _Conv(nn.Module):
    """The authors' ``Conv2d`` wrapper: a convolution (``.conv``) with "same" padding, then ReLU where asked."""

    def __init__(self, cin: int, cout: int, k: int, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2)
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x):
        x = self.conv(x)
        return self.relu(x) if self.relu is not None else x


class _BasicConv(nn.Module):
    """Bias-free convolution (``.conv``), batch norm with eps 1e-3 (``.bn``), ReLU (``model.py``'s ``BasicConv2d``)."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)), inplace=True)


class MultiBranch(nn.Module):
    """The density heads' multi-branch module (``model.py``'s ``MultiBranchModule``): ``[b1(x), b3(x), b5(x), x]``
    concatenated (4 × ``c`` channels), each branch a 1 × 1 reduction to ``c / 2`` then a 1 × 1 / 3 × 3 / 5 × 5
    convolution back to ``c``."""

    def __init__(self, c: int):
        super().__init__()
        self.branch1x1, self.branch1x1_1 = _BasicConv(c, c // 2, 1), _BasicConv(c // 2, c, 1)
        self.branch3x3_1, self.branch3x3_2 = _BasicConv(c, c // 2, 1), _BasicConv(c // 2, c, 3)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = _BasicConv(c, c // 2, 1), _BasicConv(c // 2, c, 5)

    def forward(self, x):
        return torch.cat([self.branch1x1_1(self.branch1x1(x)), self.branch3x3_2(self.branch3x3_1(x)),
                          self.branch3x3dbl_2(self.branch3x3dbl_1(x)), x], 1)


class SASNet(nn.Module):
    """SASNet. ``forward(x: (B, 3, H, W) ImageNet-normalised, H and W >= block_size) -> (B, 1, H, W)``
    (× ``LOG_PARA``)."""

    def __init__(self, block_size: int = BLOCK_SIZE):
        super().__init__()
        from torchvision.models import vgg16_bn

        features = list(vgg16_bn(weights=None).features.children())
        for i, (a, b) in enumerate(STAGES, 1):
            setattr(self, f"features{i}", nn.Sequential(*features[a:b]))
        decoder = {5: (512, 1024, 512), 4: (1024, 512, 256), 3: (512, 256, 128), 2: (256, 128, 64), 1: (128, 64, 64)}
        for level, (cin, mid, cout) in decoder.items():
            setattr(self, f"de_pred{level}", nn.Sequential(_Conv(cin, mid, 3), _Conv(mid, cout, 3)))
        widths = {5: 512, 4: 256, 3: 128, 2: 64, 1: 64}
        for level, c in widths.items():
            setattr(self, f"density_head{level}", nn.Sequential(MultiBranch(c), _Conv(4 * c, 1, 1)))
            hidden = max(c // 2, 32)
            setattr(self, f"confidence_head{level}", nn.Sequential(_Conv(c, hidden, 1), _Conv(hidden, 1, 1, relu=False)))
        self.block_size = int(block_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        stages = []
        for i in range(1, 6):
            x = getattr(self, f"features{i}")(x)
            stages.append(x)
        out = {5: self.de_pred5(stages[4])}
        for level in (4, 3, 2, 1):
            up = F.interpolate(out[level + 1], size=stages[level - 1].shape[2:], mode="bilinear", align_corners=True)
            out[level] = getattr(self, f"de_pred{level}")(torch.cat([stages[level - 1], up], 1))
        size = stages[0].shape[2:]  # the input's resolution
        grid = (h // self.block_size, w // self.block_size)
        densities, confidences = [], []
        for level in (5, 4, 3, 2, 1):
            densities.append(F.interpolate(getattr(self, f"density_head{level}")(out[level]), size=size, mode="nearest"))
            pooled = F.adaptive_avg_pool2d(out[level], grid)
            confidences.append(F.interpolate(getattr(self, f"confidence_head{level}")(pooled), size=size,
                                             mode="nearest"))
        weights = torch.softmax(torch.sigmoid(torch.cat(confidences, 1)), 1)
        return (torch.cat(densities, 1) * weights).sum(1, keepdim=True)


class SASNetMap(nn.Module):
    """SASNet as the harness's counters see a density network: the normalised image as it is (zero-padded bottom /
    right only up to ``block_size`` on a side under it), the map divided by ``LOG_PARA`` and cropped back to
    ``(H, W)``, so its sum is the count. The authors' network is ``.net`` (their key names under ``net.``)."""

    def __init__(self, net: SASNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.net.block_size
        h, w = x.shape[-2:]
        y = self.net(F.pad(x, (0, max(b - w, 0), 0, max(b - h, 0)))) / LOG_PARA
        return y[..., : h // STRIDE, : w // STRIDE]


def sasnet_weights_file(dataset: str, weights: str | os.PathLike | None = None) -> Path:
    """The checkpoint to load: ``weights`` if given, else ``$HARNESS_WEIGHTS/sasnet/SHHA.pth`` / ``SHHB.pth``.

    Raises:
        WeightsError: not there (one line: which file, from where, where to put it)."""
    if weights is not None:
        path = Path(weights).expanduser()
    else:
        root = os.environ.get("HARNESS_WEIGHTS")
        path = Path(root or "<HARNESS_WEIGHTS>") / "sasnet" / FILES[dataset]
    if not path.is_file():
        raise WeightsError(f"SASNet-{dataset} weights {path} not found: download {FILES[dataset]} from the "
                           f"TencentYoutuResearch/CrowdCounting-SASNet README (its released models) and put it at "
                           f"$HARNESS_WEIGHTS/sasnet/{FILES[dataset]}, or pass weights=<file>")
    return path


def sasnet_counter(dataset: str, *, weights: str | os.PathLike | None = None, device: str = "cpu",
                   seed: int = 0) -> TorchDensityCounter:
    """SASNet trained on ``dataset``'s labels (``"SHA"`` or ``"SHB"``), weights from :func:`sasnet_weights_file`;
    ``weights="random"``: the architecture with random weights (provenance ``random-init``).

    In a dry run (:func:`harness.stages.active_meter`) a missing or unreadable file gives the architecture with
    random weights instead, recorded as "architecture only" in the dry run's report.

    Raises:
        WeightsError: the file is missing or does not fit SASNet (one line naming it); not in a dry run."""
    from ..stages import architecture_only
    from .pretrained import load_into, read_state_dict

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SASNet()
    if weights == "random":
        prov = Provenance("random-init")
    else:
        try:
            path = sasnet_weights_file(dataset, weights)
            state = read_state_dict(path, f"SASNet-{dataset} weights")
        except WeightsError as exc:
            architecture_only(f"SASNet-{dataset} ({FILES[dataset]})", exc)  # a dry run: random weights, same cost
            prov = Provenance("random-init")
        else:
            load_into(model, state, f"SASNet ({FILES[dataset]})", str(path))
            from ..io import file_sha256

            prov = Provenance(f"{path.name} sha256:{file_sha256(path)[:12]}", trained_on=frozenset({dataset}))
    return TorchDensityCounter(SASNetMap(model), name=f"sasnet-{dataset.lower()}", stride=STRIDE, provenance=prov,
                               device=device, preprocess=imagenet_preprocess)


__all__ = ["SASNet", "SASNetMap", "MultiBranch", "sasnet_counter", "sasnet_weights_file", "LOG_PARA",
           "BLOCK_SIZE", "FILES"]
