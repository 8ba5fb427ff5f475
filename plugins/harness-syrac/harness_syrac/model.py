"""SYRAC's networks and the pieces around them (SYRAC §4; the authors' ``src/models/utils.py``,
``src/models/pretrain/baseline.py``, ``src/layers/augment.py``, ``src/data/images.py``).

- :class:`SyracNet`: encoder f_θ = a timm ResNet (random init, or a local ImageNet state dict) → global average
  pool → ReLU (z ∈ R_+^d, d = 2048 for ResNet-50), and a one-unit linear head h_θ (with bias). For ranking its
  weights are kept non-negative (:func:`nonneg_projection`), so the proxy count cannot fall by weighting
  irrelevant features negatively (§4.1). The authors put a ReLU on the proxy count too; we leave it out: a clipped
  score has zero gradient for every pair whose two scores are clipped, and the loss only sees differences.
- :func:`rank_loss`: L_rank = E[−log σ(ĉ_real − ĉ_syn)] (§4.1), computed as softplus(ĉ_syn − ĉ_real).
- :func:`augment`: the authors' augmentations (flip, zoom-out, blur, colour affine, contrast, uniform noise),
  parameters drawn per image from a numpy generator (deterministic per training step).
- :func:`fit_probe`: non-negative least squares without intercept (§4.2; the authors'
  ``LinearRegression(positive=True, fit_intercept=False)``) with :func:`scipy.optimize.nnls`.
- :func:`patch_grid` and :class:`SyracCounter`: inference (§4.3): resize to the input size, g × g patches, each
  resized back to the full input size, counted and summed. Count-only (``localises = False``).

**Input normalisation.** Images are scaled to [0, 1] for augmentation, then normalised with the ImageNet mean/std
(``normalisation: imagenet``): the only weights this plugin loads are torchvision/timm ResNets, trained with that
normalisation. The authors feed ``resnet_v2.preprocess_input`` ([-1, 1]) to Keras ResNet-50 v1 weights, which
expect caffe-style BGR mean subtraction — a mismatch; ``normalisation: symmetric`` reproduces it.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness import Prediction, Provenance, autocast, check_image, count_params, stage

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ------------------------------------------------------------------------------------------------ network


class SyracNet(nn.Module):
    """Encoder + one-unit head.

    Args:
        backbone: timm model name (``resnet50``, ``resnet18``, ``test_resnet``, ...), built with
            ``pretrained=False, num_classes=0, global_pool="avg"``.
        nonneg_head: start the head with non-negative weights (|default init|) for ranking.

    ``features(x: (B, 3, H, W) normalised) -> (B, d)`` (≥ 0); ``forward(x) -> (B,)`` the head's score.
    """

    def __init__(self, backbone: str = "resnet50", *, nonneg_head: bool = True):
        super().__init__()
        import timm

        try:
            self.encoder = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="avg")
        except RuntimeError as exc:  # timm: "Unknown model (...)"
            from harness import ConfigError

            raise ConfigError(f"backbone {backbone!r} is not a timm model ({exc})") from None
        self.backbone = backbone
        self.num_features = int(self.encoder.num_features)
        self.head = nn.Linear(self.num_features, 1)
        if nonneg_head:
            with torch.no_grad():
                self.head.weight.abs_()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.encoder(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).squeeze(-1)


@contextlib.contextmanager
def nonneg_projection(*params: torch.Tensor):
    """While active, every optimiser step that updates one of ``params`` is followed by ``p.clamp_(min=0)`` on it
    (Keras ``NonNeg``: projection onto w ≥ 0 after each update). Implemented as a global optimiser step post-hook
    (:func:`torch.optim.optimizer.register_optimizer_step_post_hook`), so it works with the optimisers that the core
    loop creates; removed on exit."""
    ids = {id(p) for p in params}

    def hook(optimizer, args, kwargs):
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if id(p) in ids:
                        p.clamp_(min=0)

    with torch.no_grad():
        for p in params:
            p.clamp_(min=0)
    from torch.optim.optimizer import register_optimizer_step_post_hook

    handle = register_optimizer_step_post_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def rank_loss(score_real: torch.Tensor, score_syn: torch.Tensor) -> torch.Tensor:
    """L_rank = mean(−log σ(ĉ_real − ĉ_syn)) (SYRAC §4.1; the authors' BCE of σ(s_a − s_b) against 1), computed
    stably as ``softplus(ĉ_syn − ĉ_real)``. Shapes ``(B,)``; returns a scalar ≥ 0 (log 2 for equal scores)."""
    return F.softplus(score_syn - score_real).mean()


# ------------------------------------------------------------------------------------------------ images


def resize_uint8(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3) uint8`` → ``size = (h, w)`` uint8 (PIL bilinear, antialiased when shrinking; aspect not kept,
    as the authors' loader)."""
    from PIL import Image

    h, w = int(size[0]), int(size[1])
    if image.shape[:2] == (h, w):
        return np.ascontiguousarray(image)
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((w, h), Image.BILINEAR), dtype=np.uint8)


def to_unit(images: Sequence[np.ndarray]) -> torch.Tensor:
    """Same-size ``(H, W, 3) uint8`` images → ``(B, 3, H, W) float32`` in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)


def normalise(x: torch.Tensor, mode: str) -> torch.Tensor:
    """[0, 1] images → network input: ``imagenet`` ((x − mean) / std) or ``symmetric`` (2x − 1, the authors')."""
    if mode == "symmetric":
        return x * 2 - 1
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - mean) / std


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[0]
    x = F.pad(x[None], (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)
    return x[0]


def augment(x: torch.Tensor, rng: np.random.Generator, factor: float = 2.0) -> torch.Tensor:
    """The authors' augmentations on ``(B, 3, H, W)`` images in [0, 1], independently per image, magnitudes divided
    by ``factor`` (their ``augment_config``; 2 in their config): horizontal flip (p 0.5), zoom-out by z ∈ [0, 0.6 /
    factor] (the image shrinks to 1 / (1 + z) of its size, centred on black), Gaussian blur σ = 1 / factor with
    p 0.5, colour affine (x @ (b·I + J), b ∈ 1 ± 0.4 / factor, J ∈ ± 0.15 / factor), contrast (per channel around
    the mean, × [1 − 0.6 / factor, 1 + 0.6 / factor]), uniform noise ± 0.1 / factor; clipped to [0, 1].
    Returns a new tensor of the same shape."""
    out = []
    B, _, H, W = x.shape
    for i in range(B):
        img = x[i]
        if rng.random() < 0.5:
            img = img.flip(-1)
        z = rng.uniform(0, 0.6 / factor)
        h, w = max(1, int(round(H / (1 + z)))), max(1, int(round(W / (1 + z))))
        if (h, w) != (H, W):
            small = F.interpolate(img[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]
            canvas = torch.zeros_like(img)
            y0, x0 = (H - h) // 2, (W - w) // 2
            canvas[:, y0:y0 + h, x0:x0 + w] = small
            img = canvas
        if rng.random() < 0.5:
            img = _gaussian_blur(img, 1.0 / factor)
        b = 1 + rng.uniform(-0.4 / factor, 0.4 / factor)
        jitter = rng.uniform(-0.15 / factor, 0.15 / factor, (3, 3))
        m = torch.as_tensor(np.eye(3) * b + jitter, dtype=img.dtype, device=img.device)
        img = torch.einsum("chw,cd->dhw", img, m).clamp(0, 1)
        c = 1 + rng.uniform(-0.6 / factor, 0.6 / factor)
        mean = img.mean(dim=(1, 2), keepdim=True)
        img = ((img - mean) * c + mean).clamp(0, 1)
        noise = torch.as_tensor(rng.uniform(-0.1 / factor, 0.1 / factor, img.shape), dtype=img.dtype,
                                device=img.device)
        out.append((img + noise).clamp(0, 1))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------ probe


def fit_probe(features: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, dict]:
    """Non-negative least squares without intercept: ``w = argmin_{w ≥ 0} ‖F w − c‖²`` (SYRAC §4.2, L_count).

    Args:
        features: ``(n, d)`` frozen encoder features. counts: ``(n,)`` the prompts' N.

    Returns:
        ``(w (d,) float64 ≥ 0, stats)``; stats: ``residual`` (‖Fw − c‖), ``nonzero`` weights, ``mae`` and ``rmse`` on
        the fitted set.

    Raises:
        ValueError: shapes that do not match."""
    from scipy.optimize import nnls

    A = np.asarray(features, dtype=np.float64)
    b = np.asarray(counts, dtype=np.float64).reshape(-1)
    if A.ndim != 2 or A.shape[0] != b.shape[0]:
        raise ValueError(f"features {A.shape} and counts {b.shape} do not match")
    w, residual = nnls(A, b, maxiter=50 * max(A.shape))
    err = A @ w - b
    return w, {"residual": float(residual), "nonzero": int((w > 0).sum()), "dims": int(A.shape[1]),
               "mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean()))}


class ProbeHead(nn.Module):
    """The probed counter ĉ = w · z (no intercept): ``forward(x) -> (B,)``, z = ``net.features(x)``."""

    def __init__(self, net: SyracNet, w: np.ndarray):
        super().__init__()
        self.net = net
        self.register_buffer("w", torch.as_tensor(np.asarray(w), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x).float() @ self.w


class RegressionHead(nn.Module):
    """End-to-end regression (Table 3 "No Pre-training"): ĉ = scale · h(z)."""

    def __init__(self, net: SyracNet, scale: float):
        super().__init__()
        self.net, self.scale = net, float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).float() * self.scale


@torch.no_grad()
def encode(net: SyracNet, images: Sequence[np.ndarray], normalisation: str, *, device="cpu", precision="fp32",
           batch_size: int = 16, fn: Callable | None = None) -> np.ndarray:
    """``fn`` (default ``net.features``) over input-size uint8 images in batches → ``(n, ...)`` float64.

    A dry-run stage (``"probe: features"``, a unit per batch; :mod:`harness.stages`): in a dry run the features of
    the batches run stand in for the rest (e.g. the paper's 660 noisy images at 640 × 853 are not all encoded)."""
    fn = fn or net.features
    net.eval()
    out: list[np.ndarray] = []
    starts = range(0, len(images), batch_size)
    with stage("probe: features", units=len(starts), unit=f"batch of {batch_size} images",
               params=count_params(net)) as st:
        for i in starts:
            n = len(images[i:i + batch_size])
            if st.done:  # a dry run: the first batch's features, cut to this batch's size, stand in
                out.append(np.resize(out[0], (n, *out[0].shape[1:])))
                continue
            with st.unit():
                x = normalise(to_unit(images[i:i + batch_size]).to(device), normalisation)
                with autocast(str(device), precision):
                    out.append(fn(x).float().cpu().numpy())
    return np.concatenate(out).astype(np.float64) if out else np.zeros((0,))


# ------------------------------------------------------------------------------------------------ inference


def patch_grid(x: torch.Tensor, g: int) -> torch.Tensor:
    """``(3, H, W)`` → ``(g·g, 3, H, W)``: the g × g grid of patches (row-major; patch sides ``H // g``, ``W // g``,
    the last ``H mod g`` rows / ``W mod g`` columns dropped, as the authors' ``patchify``), each resized back to
    the full ``H × W`` (bilinear) — SYRAC §4.3."""
    _, H, W = x.shape
    ph, pw = H // g, W // g
    patches = [x[:, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] for i in range(g) for j in range(g)]
    if g == 1:
        return x[None]
    return F.interpolate(torch.stack(patches), size=(H, W), mode="bilinear", align_corners=False)


class SyracCounter:
    """SYRAC at inference (§4.3): resize the image to ``input_size``, count each of the g × g patches (each resized
    to the full input size) with ``head``, sum. Count-only: ``localises = False`` (no mAP).

    Args:
        head: ``nn.Module``, normalised ``(B, 3, H, W)`` → ``(B,)`` counts (:class:`ProbeHead`,
            :class:`RegressionHead`).
        input_size: ``(H, W)``. grid: g. normalisation: ``imagenet`` | ``symmetric``.
        provenance: the weights' :class:`harness.Provenance` (``trained_on`` empty: no labels).
    """

    localises = False

    def __init__(self, head: nn.Module, input_size: tuple[int, int], grid: int, normalisation: str, *,
                 provenance: Provenance, name: str = "syrac", device: str = "cpu", precision: str = "fp32"):
        self.head, self.input_size, self.grid = head.eval(), tuple(int(s) for s in input_size), int(grid)
        self.normalisation, self.provenance, self.name = normalisation, provenance, name
        self.device, self.precision = device, precision

    @torch.no_grad()
    def patch_counts(self, image: np.ndarray) -> np.ndarray:
        """``(g·g,)`` counts of the patches (row-major) of an ``(H, W, 3) uint8`` image."""
        img = resize_uint8(check_image(image), self.input_size)
        x = patch_grid(to_unit([img])[0], self.grid).to(self.device)
        with autocast(str(self.device), self.precision):
            out = self.head(normalise(x, self.normalisation))
        return out.float().cpu().numpy().reshape(-1).astype(np.float64)

    def predict(self, image: np.ndarray) -> Prediction:
        """Prediction with ``count`` = the sum of the patch counts (no density, no points)."""
        return Prediction(count=float(self.patch_counts(image).sum()))


__all__ = ["SyracNet", "nonneg_projection", "rank_loss", "resize_uint8", "to_unit", "normalise",
           "augment", "fit_probe", "ProbeHead", "RegressionHead", "encode", "patch_grid", "SyracCounter"]
