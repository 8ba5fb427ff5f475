"""Source training of R, D and Φ, inference helpers, and target fine-tuning (RDBT §3.2–3.4, §4.2).

Resumability: every training loop writes ``{step, model, optimiser, history}`` atomically
(:func:`harness.io.atomic_save`) every ``checkpoint_every`` steps; calling again with the same checkpoint path
continues after the last saved step. The randomness of step ``k`` comes from ``default_rng([seed, salt, k])``,
so a resumed run draws the same crops as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness.io import atomic_save
from harness.models.base import imagenet_preprocess
from harness.training import resize_sample, scale_factor

from .config import RDBTConfig
from .losses import csp_loss, dms_ssim_loss, focal_mse_loss
from .transforms import Detections, csp_targets, decode_csp, head_sizes, phi_points

_log = logging.getLogger("harness_rdbt")


# ------------------------------------------------------------------------------------------ data


@dataclass
class SourceItem:
    """One labelled source image at network resolution: ``image (H, W, 3) uint8``, ``points (N, 2)`` px,
    ``density (H, W) float32`` (geometry-adaptive, sums to N), ``sizes (N,)`` pseudo box sides px."""

    image: np.ndarray
    points: np.ndarray
    density: np.ndarray
    sizes: np.ndarray


def shrink(image: np.ndarray, max_side: int | None, points=None):
    """Resize so the longer side is at most ``max_side`` (None: unchanged); returns ``(image, points, factor)``."""
    f = scale_factor(image.shape[0], image.shape[1], 1.0, max_side)
    img, pts = resize_sample(image, points, f, min_side=16)
    return img, pts, f


def load_source_items(refs: Sequence, cfg: RDBTConfig) -> list[SourceItem]:
    """Load, shrink and label source images (density map: :func:`harness.data.density.density_map`)."""
    from harness.data.density import density_map

    items = []
    for ref in refs:
        s = ref.load()
        img, pts, _ = shrink(s.image, cfg.max_side, s.points)
        pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
        dens = density_map(pts, img.shape[:2]).astype(np.float32)
        sizes = head_sizes(pts, default=cfg.default_head, min_size=cfg.min_head, max_size=cfg.max_head)
        items.append(SourceItem(img, pts, dens, sizes))
    return items


def random_crop(item: SourceItem, crop: int, rng: np.random.Generator):
    """A ``crop × crop`` window (zero-padded when the image is smaller), offsets multiples of 16, random h-flip.
    Returns ``(image, density, points, sizes)`` of the crop."""
    img, dens, pts, sizes = item.image, item.density, item.points, item.sizes
    H, W = img.shape[:2]
    ph, pw = max(0, crop - H), max(0, crop - W)
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
        dens = np.pad(dens, ((0, ph), (0, pw)))
        H, W = img.shape[:2]
    y0 = 16 * int(rng.integers(0, (H - crop) // 16 + 1))
    x0 = 16 * int(rng.integers(0, (W - crop) // 16 + 1))
    img, dens = img[y0:y0 + crop, x0:x0 + crop], dens[y0:y0 + crop, x0:x0 + crop]
    inside = (pts[:, 0] >= x0) & (pts[:, 0] < x0 + crop) & (pts[:, 1] >= y0) & (pts[:, 1] < y0 + crop)
    p, s = pts[inside] - [x0, y0], sizes[inside]
    if rng.random() < 0.5:
        img, dens = img[:, ::-1], dens[:, ::-1]
        p = np.stack([crop - p[:, 0], p[:, 1]], 1) if len(p) else p
    return np.ascontiguousarray(img), np.ascontiguousarray(dens), p.reshape(-1, 2), s


def pool(density: np.ndarray, stride: int) -> np.ndarray:
    """Sum-pool (count kept), see :func:`harness.data.density.downsample_density`."""
    from harness.data.density import downsample_density

    return downsample_density(density, stride) if stride > 1 else np.asarray(density, np.float32)


def phi_input(density8: torch.Tensor, out_hw: tuple[int, int], phi_stride: int) -> torch.Tensor:
    """Φ's input: a stride-8 density ``(B, 1, h, w)`` spread to stride ``phi_stride`` (bilinear, divided by the
    area ratio so the count is kept), cropped/padded to ``out_hw``. Φ is trained on ground-truth densities
    pooled to stride 8 and spread back the same way, so it sees at training time what R gives it on the target."""
    f = 8 // phi_stride
    x = density8 if f == 1 else F.interpolate(density8, scale_factor=f, mode="bilinear", align_corners=False) / (f * f)
    h, w = out_hw
    x = x[..., :h, :w]
    if x.shape[-2:] != (h, w):
        x = F.pad(x, (0, w - x.shape[-1], 0, h - x.shape[-2]))
    return x


def loc_map(points, hw, stride: int) -> np.ndarray:
    """Binary head-centre map M^D at ``stride``: 1 at the cell of each head (RDBT §3.3)."""
    h, w = -(-hw[0] // stride), -(-hw[1] // stride)
    m = np.zeros((h, w), np.float32)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    r = np.clip((pts[:, 1] // stride).astype(int), 0, h - 1)
    c = np.clip((pts[:, 0] // stride).astype(int), 0, w - 1)
    m[r, c] = 1.0
    return m


def to_batch(images: Sequence[np.ndarray], device) -> torch.Tensor:
    return torch.cat([imagenet_preprocess(np.ascontiguousarray(im)) for im in images]).to(device)


# ------------------------------------------------------------------------------------------ losses per model


def r_loss(model, images, densities, cfg: RDBTConfig, device) -> torch.Tensor:
    """R's loss on a batch: pixel MSE + ``ssim_weight`` · DMS-SSIM on density × density_scale (DSSINet §3.3)."""
    x = to_batch(images, device)
    y = torch.from_numpy(np.stack([pool(d, 8) for d in densities]))[:, None].to(device) * cfg.density_scale
    out = model(x)
    out, y = out[..., :y.shape[-2], :y.shape[-1]], y[..., :out.shape[-2], :out.shape[-1]]
    loss = F.mse_loss(out, y)
    if cfg.ssim_weight:
        loss = loss + cfg.ssim_weight * dms_ssim_loss(out, y)
    return loss


def d_loss(model, images, points, sizes, device) -> torch.Tensor:
    """D's CSP loss on a batch of images with (pseudo) boxes."""
    x = to_batch(images, device)
    tg = [csp_targets(p, s, im.shape[:2], stride=4) for im, p, s in zip(images, points, sizes)]
    targets = {k: torch.from_numpy(np.stack([t[k] for t in tg])).to(device) for k in tg[0]}
    c, s, o = model(x)
    return csp_loss(c, s, o, targets)[0]


def phi_loss(model, densities, points, cfg: RDBTConfig, device) -> torch.Tensor:
    """Φ's loss L_Φ = focal-MSE + DMS-SSIM (RDBT eq. 7) on ground-truth density → M^D pairs."""
    hw = densities[0].shape
    out_hw = (-(-hw[0] // cfg.phi_stride), -(-hw[1] // cfg.phi_stride))
    d8 = torch.from_numpy(np.stack([pool(d, 8) for d in densities]))[:, None].to(device)
    x = phi_input(d8, out_hw, cfg.phi_stride)
    y = torch.from_numpy(np.stack([loc_map(p, hw, cfg.phi_stride) for p in points]))[:, None].to(device)
    logits = model(x)
    return focal_mse_loss(logits, y) + dms_ssim_loss(torch.sigmoid(logits), y)


# ------------------------------------------------------------------------------------------ generic loop


def _freeze_bn(model) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def train_steps(model, params, *, steps: int, lr: float, loss_fn: Callable[[np.random.Generator], torch.Tensor],
                seed: int, salt: int, checkpoint: Path | None, checkpoint_every: int = 50, log=None,
                name: str = "model", freeze_bn: bool = False) -> list[dict]:
    """Adam for ``steps`` steps on ``loss_fn(rng)``; resumable from ``checkpoint`` (see module notes).

    Returns the history ``[{"step", "loss"}]`` (every ``checkpoint_every`` steps: the mean loss since the last)."""
    log = log or _log
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    start, history = 0, []
    if checkpoint is not None and checkpoint.exists():
        st = torch.load(checkpoint, map_location="cpu", weights_only=True)
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        start, history = int(st["step"]), list(st["history"])
        log.info("%s: resuming at step %d/%d from %s", name, start, steps, checkpoint)
    t0, losses = time.perf_counter(), []
    for step in range(start, steps):
        model.train()
        if freeze_bn:
            _freeze_bn(model)
        rng = np.random.default_rng([int(seed), int(salt), step])
        torch.manual_seed(int(rng.integers(2**31)))
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(rng)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            history.append({"step": step + 1, "loss": float(np.mean(losses))})
            log.info("%s: step %d/%d loss %.5g (%.1fs)", name, step + 1, steps, history[-1]["loss"],
                     time.perf_counter() - t0)
            losses = []
            if checkpoint is not None:
                st = {"step": step + 1, "model": model.state_dict(), "optimizer": opt.state_dict(), "history": history}
                atomic_save(checkpoint, lambda p, st=st: torch.save(st, p))
    model.eval()
    return history


# ------------------------------------------------------------------------------------------ inference


@torch.inference_mode()
def infer_r(model, image: np.ndarray, cfg: RDBTConfig, device) -> np.ndarray:
    """R's density map ``(ceil(H/8), ceil(W/8)) float32`` (count per cell) for a network-resolution image."""
    model.eval()
    out = model(to_batch([image], device))[0, 0].float().cpu().numpy() / cfg.density_scale
    return np.ascontiguousarray(out, dtype=np.float32)


@torch.inference_mode()
def infer_d(model, image: np.ndarray, cfg: RDBTConfig, device) -> tuple[Detections, np.ndarray]:
    """D's detections and its scale map (box sides px at stride 4, for scale restoration)."""
    model.eval()
    c, s, o = model(to_batch([image], device))
    det = decode_csp(c[0, 0], s[0, 0], o[0], stride=4, keep_threshold=cfg.det_keep_threshold,
                     count_threshold=cfg.det_count_threshold, nms_iou=cfg.nms_iou)
    scale_map = (torch.exp(s[0, 0].clamp(-3, 6)) * 4).cpu().numpy()
    return det, scale_map


@torch.inference_mode()
def infer_phi(model, density8: np.ndarray, image_hw, cfg: RDBTConfig, device) -> tuple[np.ndarray, np.ndarray]:
    """Φ(R(I)): head points and scores from a stride-8 density (binarised at ``phi_threshold``, merged within
    ``merge_px``)."""
    model.eval()
    out_hw = (-(-image_hw[0] // cfg.phi_stride), -(-image_hw[1] // cfg.phi_stride))
    x = phi_input(torch.from_numpy(np.asarray(density8, np.float32))[None, None].to(device), out_hw, cfg.phi_stride)
    prob = torch.sigmoid(model(x))[0, 0].float().cpu().numpy()
    return phi_points(prob, stride=cfg.phi_stride, threshold=cfg.phi_threshold, merge_px=cfg.merge_px)


def count_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def ceil_div(a: int, b: int) -> int:
    return int(math.ceil(a / b))
