"""GauGAN networks and losses, written for this harness from the paper (Park, Liu, Wang & Zhu, "Semantic Image
Synthesis with Spatially-Adaptive Normalization", CVPR 2019, §3 and Appendix A); the layer layout follows the
reference code ``NVlabs/SPADE`` (``models/networks/{normalization,architecture,generator,discriminator,encoder,
loss}.py``), read to understand it, not copied (it is CC BY-NC-SA).

- :class:`SPADE` (paper eq. 1): ``out = norm(x) · (1 + γ(m)) + β(m)``; ``norm`` is parameter-free (batch norm,
  the reference's synchronised BN on one device, or instance norm); ``m`` is the one-hot label map resized
  (nearest) to ``x``; γ, β = 3×3 convs of a shared 3×3 conv (``label_nc → 128``) + ReLU.
- :class:`SPADEResBlock` (Fig. 4 left): SPADE → LeakyReLU 0.2 → 3×3 conv, twice, spectral norm on every conv; a
  learned SPADE → 1×1 conv shortcut when the channel count changes.
- :class:`SPADEGenerator` (Fig. 4 right, Appendix A): a 16·ngf map at 1/2^n of the output (from the VAE's z through
  a linear layer, or from the downsampled label map through a 3×3 conv), head + two middle blocks, four up
  blocks 16 → 8 → 4 → 2 → 1 · ngf with nearest ×2 upsampling ("normal": 5 upsamplings, "more": 6, "most": 7),
  LeakyReLU, 3×3 conv to RGB, tanh.
- :class:`ConvEncoder` (Appendix A, VAE): six (crop ≥ 256) or five stride-2 3×3 convs with spectral norm +
  instance norm, then two linear layers to μ and log σ² of a 256-d style vector.
- :class:`MultiscaleDiscriminator` (pix2pixHD): two PatchGANs, the second on the input average-pooled (3, stride 2);
  each 4 layers of 4×4 convs (the first without norm; the middle ones spectral norm + instance norm; the last
  stride 1), returning every layer's features for feature matching.
- losses: :func:`hinge_d_loss` / :func:`hinge_g_loss` (Lim & Ye 2017, as in the reference's ``GANLoss('hinge')``),
  :func:`feature_matching_loss` (× λ_feat = 10 / number of discriminators), :func:`kld_loss` (summed, × 0.05),
  :class:`VGGLoss` (ImageNet VGG-19 relu1_1 … relu5_1 L1 with weights 1/32 … 1, × 10).

**MONAI** (``monai.networks.blocks.SPADE``, 1.6.1) was checked and is not used: with the same weights its output
differs from the paper's block (max |Δ| ≈ 5 on unit-variance inputs) because (a) its shared convolution ends in a
LeakyReLU (slope 0.01) where the paper and the reference use a ReLU, and (b) its γ and β convolutions are MONAI
``Convolution`` blocks whose default norm instance-normalises γ and β themselves (so they cannot carry a constant
scale or shift); with (a) a ReLU and (b) those norms removed, the two blocks agree exactly (max |Δ| = 0.0). Its hidden
width defaults to 64 (paper: 128) and its ``SPADENet`` has no spectral norm and ends in a LeakyReLU, not tanh.

Weights are initialised as in the reference (Xavier normal, gain 0.02, biases 0) before spectral norm is applied.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from harness import DataError

UPSAMPLINGS = {"normal": 5, "more": 6, "most": 7}
VGG_WEIGHTS = (1.0 / 32, 1.0 / 16, 1.0 / 8, 1.0 / 4, 1.0)


def _init(layer: nn.Module, gain: float = 0.02) -> nn.Module:
    nn.init.xavier_normal_(layer.weight, gain=gain)
    if getattr(layer, "bias", None) is not None:
        nn.init.zeros_(layer.bias)
    return layer


def _conv(cin: int, cout: int, k: int, *, stride: int = 1, padding: int | None = None, bias: bool = True,
          sn: bool = False) -> nn.Module:
    conv = _init(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding, bias=bias))
    return spectral_norm(conv) if sn else conv


def _param_free_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels, affine=False)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=False)
    raise ValueError(f"unknown parameter-free norm {kind!r}: use 'batch' or 'instance'")


# ----------------------------------------------------------------------------------------- labels

def one_hot(labels: torch.Tensor | np.ndarray, label_nc: int) -> torch.Tensor:
    """One-hot semantic input of a label map (the reference's ``scatter_`` in ``preprocess_input``).

    Args:
        labels: ``(H, W)`` or ``(B, H, W)`` integer ids (a tensor or an array).
        label_nc: number of labels (ids ``0 … label_nc − 1``).

    Returns:
        ``(B, label_nc, H, W) float32``; exactly one channel is 1 at every pixel.

    Raises:
        DataError: non-integer values or ids outside ``0 … label_nc − 1`` (one line; the reference crashes with a
            CUDA scatter error instead).
    """
    t = torch.from_numpy(np.array(labels)) if isinstance(labels, np.ndarray) else torch.as_tensor(labels)
    if t.is_floating_point():
        if not torch.equal(t, t.round()):
            raise DataError("label map holds non-integer values: pass integer label ids")
        t = t.long()
    if t.dtype == torch.bool or t.is_complex():
        raise DataError(f"label map has dtype {t.dtype}: pass integer label ids")
    t = t.long()
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3:
        raise DataError(f"label map has shape {tuple(t.shape)}: pass (H, W) or (B, H, W) label ids")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= label_nc):
        bad = sorted({int(v) for v in torch.unique(t) if v < 0 or v >= label_nc})
        raise DataError(f"label map holds id(s) {', '.join(map(str, bad[:5]))} outside 0..{label_nc - 1} "
                        f"(the generator has {label_nc} labels): remap the mask or train with more labels")
    return F.one_hot(t, label_nc).permute(0, 3, 1, 2).float()


# ----------------------------------------------------------------------------------------- generator

class SPADE(nn.Module):
    """Spatially-adaptive (de)normalisation (paper eq. 1, §3).

    ``forward(x (B, C, h, w), segmap (B, label_nc, H, W)) -> (B, C, h, w)``: the label map is resized (nearest) to
    ``(h, w)``; ``out = norm(x) · (1 + γ) + β`` with ``norm`` parameter-free (``norm="batch"``: the reference's
    synchronised batch norm; ``"instance"``) and γ, β ``(B, C, h, w)`` from ``kernel × kernel`` convs of a shared
    ``kernel × kernel`` conv (``label_nc → hidden``, paper: 128) + ReLU.
    """

    def __init__(self, channels: int, label_nc: int, *, hidden: int = 128, kernel: int = 3, norm: str = "batch"):
        super().__init__()
        self.param_free_norm = _param_free_norm(norm, channels)
        self.mlp_shared = nn.Sequential(_conv(label_nc, hidden, kernel), nn.ReLU())
        self.mlp_gamma = _conv(hidden, channels, kernel)
        self.mlp_beta = _conv(hidden, channels, kernel)

    def modulation(self, segmap: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(γ, β)``, each ``(B, C, *size)``, of the label map resized (nearest) to ``size``."""
        actv = self.mlp_shared(F.interpolate(segmap, size=tuple(size), mode="nearest"))
        return self.mlp_gamma(actv), self.mlp_beta(actv)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.modulation(segmap, x.shape[2:])
        return self.param_free_norm(x) * (1 + gamma) + beta


class SPADEResBlock(nn.Module):
    """SPADE residual block (paper Fig. 4 left): ``x_s + conv_1(act(SPADE_1(conv_0(act(SPADE_0(x))))))`` with
    LeakyReLU 0.2, 3×3 convs with spectral norm (``fin → min(fin, fout) → fout``) and the shortcut ``x_s = x`` or,
    when ``fin ≠ fout``, ``conv_s(SPADE_s(x))`` (1×1, no bias, spectral norm). ``(B, fin, h, w) -> (B, fout, h, w)``.
    """

    def __init__(self, fin: int, fout: int, label_nc: int, *, hidden: int = 128, norm: str = "batch",
                 spectral: bool = True):
        super().__init__()
        fmid = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = _conv(fin, fmid, 3, sn=spectral)
        self.conv_1 = _conv(fmid, fout, 3, sn=spectral)
        self.norm_0 = SPADE(fin, label_nc, hidden=hidden, norm=norm)
        self.norm_1 = SPADE(fmid, label_nc, hidden=hidden, norm=norm)
        if self.learned_shortcut:
            self.conv_s = _conv(fin, fout, 1, bias=False, sn=spectral)
            self.norm_s = SPADE(fin, label_nc, hidden=hidden, norm=norm)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


class SPADEGenerator(nn.Module):
    """The GauGAN generator (paper Fig. 4 right; Appendix A, Fig. 11).

    Args:
        label_nc: labels of the input map. ngf: base width (paper 64; the blocks are 16, 16, 16, 8, 4, 2, 1 × ngf).
        upsampling: ``normal`` (5 ×2 upsamplings), ``more`` (6) or ``most`` (7, with a fifth up block to ngf / 2).
        use_vae: start from a style vector z (``z_dim``; linear layer to a ``16·ngf × base × base`` map) instead of
            the downsampled label map (3×3 conv); without it the output is a deterministic function of the map.
        base: side of the start map at the training crop size (crop / 2^upsamplings); at other output sizes the
            VAE's start map is resized (bilinear) to ``output / 2^upsamplings`` (the reference only generates at the
            crop size).
        hidden, norm, spectral: of the SPADE blocks.

    ``forward(segmap (B, label_nc, H, W), z (B, z_dim) | None) -> (B, 3, H, W)`` in ``[-1, 1]``; ``H`` and ``W`` must
    be multiples of :attr:`multiple` (``2^upsamplings``). With ``use_vae`` and ``z=None``, z is drawn from N(0, I).
    """

    def __init__(self, label_nc: int, *, ngf: int = 64, upsampling: str = "normal", use_vae: bool = True,
                 z_dim: int = 256, base: int = 8, hidden: int = 128, norm: str = "batch", spectral: bool = True):
        super().__init__()
        if upsampling not in UPSAMPLINGS:
            raise ValueError(f"upsampling {upsampling!r} is not one of {', '.join(UPSAMPLINGS)}")
        self.label_nc, self.ngf, self.upsampling, self.use_vae = label_nc, ngf, upsampling, use_vae
        self.z_dim, self.base = z_dim, base
        self.multiple = 2 ** UPSAMPLINGS[upsampling]
        nf = ngf
        if use_vae:
            self.fc = _init(nn.Linear(z_dim, 16 * nf * base * base))
        else:
            self.fc = _conv(label_nc, 16 * nf, 3)

        def block(a, b):
            return SPADEResBlock(a, b, label_nc, hidden=hidden, norm=norm, spectral=spectral)

        self.head_0 = block(16 * nf, 16 * nf)
        self.G_middle_0 = block(16 * nf, 16 * nf)
        self.G_middle_1 = block(16 * nf, 16 * nf)
        self.up_0, self.up_1 = block(16 * nf, 8 * nf), block(8 * nf, 4 * nf)
        self.up_2, self.up_3 = block(4 * nf, 2 * nf), block(2 * nf, nf)
        final = nf
        if upsampling == "most":
            self.up_4 = block(nf, nf // 2)
            final = nf // 2
        self.conv_img = _conv(final, 3, 3)

    def start_map(self, segmap: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        """The ``(B, 16·ngf, H / multiple, W / multiple)`` map the blocks start from."""
        b, _, h, w = segmap.shape
        if h % self.multiple or w % self.multiple:
            raise DataError(f"generator input {h}x{w} is not a multiple of {self.multiple} (2^upsamplings)")
        size = (h // self.multiple, w // self.multiple)
        if not self.use_vae:
            return self.fc(F.interpolate(segmap, size=size, mode="nearest"))
        if z is None:
            z = torch.randn(b, self.z_dim, device=segmap.device)
        x = self.fc(z).view(b, 16 * self.ngf, self.base, self.base)
        if size != (self.base, self.base):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return x

    def forward(self, segmap: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        x = self.head_0(self.start_map(segmap, z), segmap)
        x = self.G_middle_0(F.interpolate(x, scale_factor=2, mode="nearest"), segmap)
        if self.upsampling in ("more", "most"):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.G_middle_1(x, segmap)
        for blk in (self.up_0, self.up_1, self.up_2, self.up_3):
            x = blk(F.interpolate(x, scale_factor=2, mode="nearest"), segmap)
        if self.upsampling == "most":
            x = self.up_4(F.interpolate(x, scale_factor=2, mode="nearest"), segmap)
        return torch.tanh(self.conv_img(F.leaky_relu(x, 0.2)))


class ConvEncoder(nn.Module):
    """The VAE image encoder (paper Appendix A, Fig. 14): the image, resized (bilinear) to ``4 · 2^L`` px
    (L = 6 layers for crops ≥ 256 — the reference's 256 — else 5, so that small crops work), through L stride-2
    3×3 convs with spectral norm + instance norm (widths ngf, 2, 4, 8, 8, 8 × ngf) and LeakyReLU 0.2, flattened, to
    μ and log σ² ``(B, z_dim)``. ``forward(image (B, 3, H, W) in [-1, 1]) -> (mu, logvar)``."""

    def __init__(self, *, ngf: int = 64, z_dim: int = 256, crop_size: int = 256):
        super().__init__()
        n = 6 if crop_size >= 256 else 5
        self.size = 4 * 2 ** n
        widths = [ngf, 2 * ngf, 4 * ngf, 8 * ngf, 8 * ngf, 8 * ngf][:n]
        layers, cin = [], 3
        for w in widths:
            layers.append(nn.Sequential(_conv(cin, w, 3, stride=2, padding=1, bias=False, sn=True),
                                        nn.InstanceNorm2d(w, affine=False)))
            cin = w
        self.layers = nn.ModuleList(layers)
        self.fc_mu = _init(nn.Linear(cin * 16, z_dim))
        self.fc_var = _init(nn.Linear(cin * 16, z_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if tuple(x.shape[2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        for i, layer in enumerate(self.layers):
            x = layer(x if i == 0 else F.leaky_relu(x, 0.2))
        x = F.leaky_relu(x, 0.2).flatten(1)
        return self.fc_mu(x), self.fc_var(x)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``z = μ + ε · exp(logvar / 2)``, ε ~ N(0, I) (the VAE's reparameterisation)."""
    return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)


# ----------------------------------------------------------------------------------------- discriminator

class NLayerDiscriminator(nn.Module):
    """A PatchGAN of ``n_layers`` 4×4 convs (padding 2, LeakyReLU 0.2): ``in → ndf`` stride 2 without norm; then
    widths doubling (≤ 512), stride 2 except the last of them (stride 1), each with spectral norm + instance norm;
    then a plain conv to 1 channel. ``forward(x) -> [features of every layer]`` (the last is the patch logits)."""

    def __init__(self, input_nc: int, *, ndf: int = 64, n_layers: int = 4):
        super().__init__()
        nf = ndf
        seq = [nn.Sequential(_conv(input_nc, nf, 4, stride=2, padding=2), nn.LeakyReLU(0.2))]
        for n in range(1, n_layers):
            prev, nf = nf, min(nf * 2, 512)
            seq.append(nn.Sequential(_conv(prev, nf, 4, stride=1 if n == n_layers - 1 else 2, padding=2,
                                           bias=False, sn=True),
                                     nn.InstanceNorm2d(nf, affine=False), nn.LeakyReLU(0.2)))
        seq.append(_conv(nf, 1, 4, padding=2))
        self.layers = nn.ModuleList(seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for layer in self.layers:
            x = layer(x)
            out.append(x)
        return out


class MultiscaleDiscriminator(nn.Module):
    """``num_d`` PatchGANs on the ``(label map ‖ image)`` input at full and successively average-pooled (3×3,
    stride 2, padding 1, padding not counted) resolutions. ``forward(x (B, label_nc + 3, H, W)) -> [[features]
    per discriminator]``."""

    def __init__(self, input_nc: int, *, ndf: int = 64, n_layers: int = 4, num_d: int = 2):
        super().__init__()
        self.discriminators = nn.ModuleList(NLayerDiscriminator(input_nc, ndf=ndf, n_layers=n_layers)
                                            for _ in range(num_d))

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for i, d in enumerate(self.discriminators):
            if i:
                x = F.avg_pool2d(x, kernel_size=3, stride=2, padding=1, count_include_pad=False)
            out.append(d(x))
        return out


# ----------------------------------------------------------------------------------------- losses

def _logits(preds) -> list[torch.Tensor]:
    """The last output of every discriminator (a tensor is one discriminator's logits)."""
    if isinstance(preds, torch.Tensor):
        return [preds]
    return [p[-1] if isinstance(p, (list, tuple)) else p for p in preds]


def hinge_d_loss(pred_real, pred_fake) -> torch.Tensor:
    """Discriminator hinge loss: mean over discriminators of ``mean(relu(1 − D(real))) + mean(relu(1 + D(fake)))``
    (the reference's ``GANLoss('hinge', for_discriminator=True)``, real and fake terms summed)."""
    real, fake = _logits(pred_real), _logits(pred_fake)
    return (sum(F.relu(1 - r).mean() for r in real) / len(real)
            + sum(F.relu(1 + f).mean() for f in fake) / len(fake))


def hinge_g_loss(pred_fake) -> torch.Tensor:
    """Generator hinge loss: mean over discriminators of ``−mean(D(fake))``."""
    fake = _logits(pred_fake)
    return sum(-f.mean() for f in fake) / len(fake)


def feature_matching_loss(feats_fake, feats_real, weight: float = 10.0) -> torch.Tensor:
    """pix2pixHD feature matching: Σ over discriminators and their intermediate layers (all but the logits) of the
    L1 distance to the (detached) real features, × ``weight`` / number of discriminators (paper: λ = 10)."""
    total = feats_fake[0][0].new_zeros(())
    for ff, fr in zip(feats_fake, feats_real):
        for a, b in zip(ff[:-1], fr[:-1]):
            total = total + F.l1_loss(a, b.detach())
    return total * weight / len(feats_fake)


def kld_loss(mu: torch.Tensor, logvar: torch.Tensor, weight: float = 0.05) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) summed over the batch and dimensions, × ``weight`` (paper: 0.05):
    ``−½ Σ (1 + log σ² − μ² − σ²)``."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp()) * weight


class VGGLoss(nn.Module):
    """Perceptual loss (paper §4, from pix2pixHD): Σ_i w_i · L1(φ_i(fake), φ_i(real)) over ImageNet VGG-19's
    relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (``features[:2], [2:7], [7:12], [12:21], [21:30]``), w = 1/32, 1/16,
    1/8, 1/4, 1. Images in ``[-1, 1]`` are mapped to ImageNet-normalised inputs first (the reference feeds [-1, 1]
    directly).

    Args:
        features: a torchvision ``vgg19().features`` module (frozen here); see :func:`load_vgg19_features`.
    """

    def __init__(self, features: nn.Module):
        super().__init__()
        self.slices = nn.ModuleList([features[a:b] for a, b in ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))])
        for p in self.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def _feats(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        ff, fr = self._feats(fake), self._feats(real)
        return sum(w * F.l1_loss(a, b.detach()) for w, a, b in zip(VGG_WEIGHTS, ff, fr))


def load_vgg19_features(weights: str) -> nn.Module:
    """torchvision's VGG-19 ``features`` initialised by the core's :func:`harness.pretrained_backbone` from
    ``weights``: ``"imagenet"`` (torchvision's ``vgg19-dcbb9e9d.pth``, IMAGENET1K_V1, looked up in
    ``$HARNESS_WEIGHTS/imagenet/`` or torch's hub cache) or a local file (a full ``vgg19`` state dict or its
    ``features.*`` part).

    Raises:
        WeightsError: the file is missing (one line: which file, from where, where to put it), unreadable or not
            VGG-19 weights.
    """
    from torchvision.models.vgg import cfgs, make_layers

    from harness import pretrained_backbone

    features = make_layers(cfgs["E"], batch_norm=False)
    pretrained_backbone(features, "vgg19", weights, option="vgg_weights",
                        rename=lambda k: k.removeprefix("features."))
    return features


Norm = Literal["batch", "instance"]

__all__ = ["SPADE", "SPADEResBlock", "SPADEGenerator", "ConvEncoder", "NLayerDiscriminator",
           "MultiscaleDiscriminator", "VGGLoss", "load_vgg19_features", "one_hot", "reparameterize", "hinge_d_loss",
           "hinge_g_loss", "feature_matching_loss", "kld_loss", "UPSAMPLINGS", "VGG_WEIGHTS"]
