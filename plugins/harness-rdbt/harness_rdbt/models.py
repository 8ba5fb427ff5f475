"""The three networks of RDBT (Liu et al., ACM MM 2020, §3.2–3.3).

- :class:`DSSINet` — regression counter R (Liu, Lingbo et al., "Crowd Counting with Deep Structured Scale
  Integration Network", ICCV 2019): a VGG-16 front end shared by several rescaled copies of the image; the
  multi-scale features exchange messages through a CRF (mean-field updates, the paper's *structured feature
  enhancement*: ``h_i ← f_i + Σ_{j≠i} W_{j→i} ⊗ h_j`` for ``crf_iterations`` rounds); a dilated back end
  regresses a density map at stride 8. Trained with pixel MSE + the dilated multi-scale SSIM loss
  (:func:`harness_rdbt.losses.dms_ssim_loss`).
- :class:`CSPNet` — detection counter D (Liu, Wei et al., "High-level Semantic Feature Detection: A New
  Perspective for Pedestrian Detection" (CSP), CVPR 2019): a timm ResNet-50 (``pretrained=False``,
  ``features_only``, output stride 16 with dilation in the last stage); stages 3–5 are L2-normalised,
  upsampled to stride 4 and concatenated; a 3×3 conv then three 1×1 heads: centre heat map (logits), scale
  (log box side / stride) and offset (sub-cell x, y).
- :class:`PhiUNetPP` — the Reg→Det transformer Φ: a nested UNet (UNet++, Zhou et al. 2018) whose encoder is
  the first 10 convolutions of VGG-16 (4 levels: 64, 128, 256, 512 channels), with ``dilated=True`` followed by
  CSRNet's dilated back end as a fifth level at the same stride (the paper's "nested UNet ... with dilated VGG-16
  structure [14]", [14] = CSRNet), mapping a density map to a per-pixel head-centre logit map of the same size.

``width`` multiplies every channel count (1.0 = the papers'); smoke runs use e.g. 0.25. No ImageNet weights
exist here: every network starts from random init, or (R and Φ at ``width=1``) from the VGG-16 front end of
the CSRNet-SHA weights (:func:`load_csrnet_frontend`, provenance: trained on SHA labels).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from harness import ConfigError

#: VGG-16's first 10 convolutions (CSRNet's front end; Li et al. CVPR 2018, Table 3)
VGG10_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512)
#: CSRNet's dilated back end (Li et al. CVPR 2018, Table 3, configuration B: 3×3 convolutions, dilation 2)
CSRNET_BACKEND = (512, 512, 512, 256, 128, 64)


def _ch(c: int, width: float) -> int:
    return max(4, int(round(c * width)))


def _check_width(width: float, what: str) -> float:
    if not (isinstance(width, (int, float)) and width > 0 and math.isfinite(width)):
        raise ConfigError(f"{what}: width must be a positive number, got {width!r}")
    return float(width)


def vgg10_frontend(width: float = 1.0, in_channels: int = 3, batchnorm: bool = False) -> nn.Sequential:
    """VGG-16's first 10 conv layers (3×3, ReLU) with three 2×2 max-pools: stride 8, ``512·width`` channels.

    Module indices match CSRNet's ``frontend`` (so :func:`load_csrnet_frontend` can load it at width 1).
    ``batchnorm`` inserts BatchNorm after each conv (VGG-16-BN): without ImageNet weights a plain VGG barely
    trains from scratch in a CPU smoke schedule."""
    layers: list[nn.Module] = []
    for v in VGG10_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            c = _ch(v, width)
            layers += [nn.Conv2d(in_channels, c, 3, padding=1)] + ([nn.BatchNorm2d(c)] if batchnorm else []) \
                + [nn.ReLU(inplace=True)]
            in_channels = c
    return nn.Sequential(*layers)


def load_csrnet_frontend(frontend: nn.Sequential, npz_path) -> None:
    """Copy the ``frontend.*`` arrays of the CSRNet-SHA ``weights.zip.npz`` into a width-1 VGG-10 front end (the
    core's state-dict reader and loader).

    Raises:
        WeightsError: the front end is not width 1 (shapes differ) or the file is not CSRNet's (one line)."""
    from harness import load_into, read_state_dict

    load_into(frontend, read_state_dict(npz_path, "CSRNet-SHA front end (vgg_init: csrnet-sha; needs vgg_width 1.0)",
                                        select="frontend."),
              "CSRNet-SHA front end (vgg_init: csrnet-sha; needs vgg_width 1.0)", str(npz_path))


# ------------------------------------------------------------------------------------------------ DSSINet


class CRFMessagePassing(nn.Module):
    """Mean-field message passing between the features of ``n`` image scales (DSSINet's SFEM, ICCV 2019 §3.2).

    ``forward([f_1..f_n])`` (each ``(B, C, h, w)``, same size) returns ``[h_1..h_n]`` after ``iterations``
    updates ``h_i ← f_i + Σ_{j≠i} conv_{j→i}(h_j)`` (3×3 convolutions; the CRF's pairwise kernels)."""

    def __init__(self, channels: int, n_scales: int, iterations: int = 2):
        super().__init__()
        self.n, self.iterations = int(n_scales), int(iterations)
        self.msg = nn.ModuleDict({f"{j}to{i}": nn.Conv2d(channels, channels, 3, padding=1)
                                  for i in range(self.n) for j in range(self.n) if i != j})
        for m in self.msg.values():
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        h = list(feats)
        for _ in range(self.iterations):
            h = [feats[i] + sum(self.msg[f"{j}to{i}"](h[j]) for j in range(self.n) if j != i) for i in range(self.n)]
            h = [F.relu(x) for x in h]
        return h


class DSSINet(nn.Module):
    """Regression counter R. ``forward(x: (B, 3, H, W) ImageNet-normalised) -> (B, 1, ceil(H/8), ceil(W/8))``.

    Args:
        width: channel multiplier of front end, CRF and back end.
        scales: image scales of the branches (DSSINet: 0.5, 1, 2; the first must be 1.0).
        crf_iterations: mean-field rounds of :class:`CRFMessagePassing`.
        batchnorm: VGG-16-BN front end (see :func:`vgg10_frontend`).

    The *last two layers* (fine-tuned on the target, RDBT §4.2) are ``backend[-2]`` (3×3 conv) and ``output``.
    """

    stride = 8

    def __init__(self, width: float = 1.0, scales: Sequence[float] = (1.0, 0.5, 2.0), crf_iterations: int = 2,
                 batchnorm: bool = False):
        super().__init__()
        width = _check_width(width, "DSSINet")
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or self.scales[0] != 1.0 or any(s <= 0 for s in self.scales):
            raise ConfigError(f"DSSINet scales must start with 1.0 and be positive, got {list(scales)}")
        self.frontend = vgg10_frontend(width, batchnorm=batchnorm)
        c = _ch(512, width)
        self.crf = CRFMessagePassing(c, len(self.scales), crf_iterations)
        chans = [_ch(v, width) for v in (512, 256, 128, 64)]
        layers: list[nn.Module] = []
        cin = c * len(self.scales)
        for co in chans:
            layers += [nn.Conv2d(cin, co, 3, padding=2, dilation=2), nn.ReLU(inplace=True)]
            cin = co
        self.backend = nn.Sequential(*layers)
        self.output = nn.Conv2d(cin, 1, 1)
        for m in list(self.backend.modules()) + [self.output]:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def last_two_layers(self) -> list[nn.Module]:
        """The layers RDBT fine-tunes on the target (§4.2): the last back-end conv and the output conv."""
        convs = [m for m in self.backend if isinstance(m, nn.Conv2d)]
        return [convs[-1], self.output]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        size = (math.ceil(H / 8), math.ceil(W / 8))
        feats = []
        for s in self.scales:
            xs = x if s == 1.0 else F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False,
                                                  recompute_scale_factor=False)
            pad = (0, -xs.shape[-1] % 8, 0, -xs.shape[-2] % 8)
            f = self.frontend(F.pad(xs, pad) if any(pad) else xs)
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            feats.append(f)
        h = self.crf(feats)
        return self.output(self.backend(torch.cat(h, dim=1)))


# ------------------------------------------------------------------------------------------------ CSP


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learnable per-channel scale (CSP, init 10)."""

    def __init__(self, channels: int, scale: float = 10.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x):
        return F.normalize(x, dim=1, eps=1e-10) * self.weight.view(1, -1, 1, 1)


class CSPNet(nn.Module):
    """Detection counter D (CSP). ``forward(x: (B, 3, H, W)) -> (centre logits (B, 1, h, w), scale (B, 1, h, w),
    offset (B, 2, h, w))`` with ``(h, w) = (ceil(H/4), ceil(W/4))`` (input padded to a multiple of 16).

    ``scale`` is log(box side / 4); ``offset`` is the head centre's sub-cell position in cells (0..1 → x, y).

    Args:
        backbone: timm model name (``"resnet50"``; built with ``pretrained=False``).
        width: multiplier of the ResNet stage widths (timm ``channels``), the neck and the heads.
        prior: initial centre probability (focal-loss bias init, Lin et al. 2017).
    """

    stride = 4

    def __init__(self, backbone: str = "resnet50", width: float = 1.0, prior: float = 0.01):
        super().__init__()
        import timm

        width = _check_width(width, "CSPNet")
        kwargs = {}
        if width != 1.0:
            kwargs["channels"] = tuple(_ch(c, width) for c in (64, 128, 256, 512))
        try:
            self.backbone = timm.create_model(backbone, pretrained=False, features_only=True,
                                              out_indices=(2, 3, 4), output_stride=16, **kwargs)
        except Exception as exc:
            raise ConfigError(f"CSP backbone {backbone!r} cannot be built by timm ({type(exc).__name__}: {exc}); "
                              f"use e.g. resnet50") from None
        chans = self.backbone.feature_info.channels()
        neck = _ch(256, width)
        self.norms = nn.ModuleList(L2Norm(c) for c in chans)
        self.feat = nn.Sequential(nn.Conv2d(sum(chans), neck, 3, padding=1, bias=False), nn.BatchNorm2d(neck),
                                  nn.ReLU(inplace=True))
        self.center = nn.Conv2d(neck, 1, 1)
        self.scale = nn.Conv2d(neck, 1, 1)
        self.offset = nn.Conv2d(neck, 2, 1)
        for m in (self.center, self.scale, self.offset):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
        nn.init.constant_(self.center.bias, -math.log((1 - prior) / prior))
        nn.init.constant_(self.scale.bias, math.log(2.0))

    def forward(self, x: torch.Tensor):
        H, W = x.shape[-2:]
        pad = (0, -W % 16, 0, -H % 16)
        if any(pad):
            x = F.pad(x, pad)
        feats = self.backbone(x)
        size = (x.shape[-2] // 4, x.shape[-1] // 4)
        up = [F.interpolate(n(f), size=size, mode="bilinear", align_corners=False) for n, f in zip(self.norms, feats)]
        f = self.feat(torch.cat(up, dim=1))
        h, w = math.ceil(H / 4), math.ceil(W / 4)
        crop = (slice(None), slice(None), slice(0, h), slice(0, w))
        return self.center(f)[crop], self.scale(f)[crop], self.offset(f)[crop]


# ------------------------------------------------------------------------------------------------ Φ


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))


class PhiUNetPP(nn.Module):
    """Reg→Det transformer Φ (RDBT §3.3): UNet++ with a VGG-16 first-10-conv encoder (``dilated``: plus CSRNet's
    dilated back end as the deepest level X^{4,0} and the depth-4 nested decoder X^{3,1} .. X^{0,4}).

    ``forward(density: (B, 1, H, W)) -> (B, 1, H, W)`` logits of the head-centre map M^D. The density (count
    per map pixel, times ``input_scale``) is repeated to 3 channels for the VGG encoder. Any ``H, W`` works
    (padded internally to a multiple of 8). Decoder convs ~ N(0, 0.01²) (RDBT §4.2).
    """

    def __init__(self, width: float = 1.0, input_scale: float = 100.0, dilated: bool = False):
        super().__init__()
        width = _check_width(width, "PhiUNetPP")
        self.input_scale = float(input_scale)
        self.dilated = bool(dilated)
        vgg = vgg10_frontend(width)
        mods = list(vgg.children())
        # encoder levels X^{0,0}..X^{3,0}: split the VGG-10 at its pools (module indices kept for csrnet init)
        self.frontend = vgg
        self._cuts = [i for i, m in enumerate(mods) if isinstance(m, nn.MaxPool2d)]
        c = [_ch(v, width) for v in (64, 128, 256, 512)]
        self.x01 = _block(c[0] + c[1], c[0])
        self.x11 = _block(c[1] + c[2], c[1])
        self.x21 = _block(c[2] + c[3], c[2])
        self.x02 = _block(2 * c[0] + c[1], c[0])
        self.x12 = _block(2 * c[1] + c[2], c[1])
        self.x03 = _block(3 * c[0] + c[1], c[0])
        if self.dilated:  # X^{4,0}: CSRNet's back end at stride 8, then the nested skips of a depth-4 UNet++
            layers: list[nn.Module] = []
            cin = c[3]
            for v in CSRNET_BACKEND:
                layers += [nn.Conv2d(cin, _ch(v, width), 3, padding=2, dilation=2), nn.ReLU(inplace=True)]
                cin = _ch(v, width)
            self.backend = nn.Sequential(*layers)
            self.x31 = _block(c[3] + cin, c[3])
            self.x22 = _block(2 * c[2] + c[3], c[2])
            self.x13 = _block(3 * c[1] + c[2], c[1])
            self.x04 = _block(4 * c[0] + c[1], c[0])
        self.out = nn.Conv2d(c[0], 1, 1)
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d) and not name.startswith("frontend"):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)

    def _encode(self, x):
        outs, start = [], 0
        mods = list(self.frontend.children())
        for cut in self._cuts + [len(mods)]:
            for m in mods[start:cut]:
                x = m(x)
            outs.append(x)
            start = cut
        return outs  # pools are at the cut indices: they start the next level

    def forward(self, density: torch.Tensor) -> torch.Tensor:
        H, W = density.shape[-2:]
        x = (density * self.input_scale).expand(-1, 3, -1, -1)
        pad = (0, -W % 8, 0, -H % 8)
        if any(pad):
            x = F.pad(x, pad)
        x00, x10, x20, x30 = self._encode(x)

        def up(t, ref):
            return F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)

        x01 = self.x01(torch.cat([x00, up(x10, x00)], 1))
        x11 = self.x11(torch.cat([x10, up(x20, x10)], 1))
        x21 = self.x21(torch.cat([x20, up(x30, x20)], 1))
        x02 = self.x02(torch.cat([x00, x01, up(x11, x00)], 1))
        x12 = self.x12(torch.cat([x10, x11, up(x21, x10)], 1))
        x03 = self.x03(torch.cat([x00, x01, x02, up(x12, x00)], 1))
        if not self.dilated:
            return self.out(x03)[..., :H, :W]
        x31 = self.x31(torch.cat([x30, self.backend(x30)], 1))
        x22 = self.x22(torch.cat([x20, x21, up(x31, x20)], 1))
        x13 = self.x13(torch.cat([x10, x11, x12, up(x22, x10)], 1))
        x04 = self.x04(torch.cat([x00, x01, x02, x03, up(x13, x00)], 1))
        return self.out(x04)[..., :H, :W]


def seeded(build, seed: int | None):
    """Call ``build()`` under ``torch.manual_seed(seed)`` without disturbing the global RNG (None: as is)."""
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()
