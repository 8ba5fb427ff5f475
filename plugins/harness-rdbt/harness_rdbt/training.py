"""Source training of R, D and Φ, inference helpers, and target fine-tuning (RDBT §3.2–3.4, §4.2).

Every training runs on the core loop (:func:`harness.train`) through :func:`train_steps`: checkpoints every
``checkpoint_every`` steps, resume, the options guard and the step seeding are the loop's, so a resumed run draws
the same crops as an uninterrupted one.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness import density_map, downsample_density, imagenet_preprocess, resize_sample, scale_factor

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
    """Load, shrink and label source images (density map: :func:`harness.density_map`)."""
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
    """Sum-pool (count kept), see :func:`harness.downsample_density`."""
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
    """R's loss on a batch: ``mse_weight`` · pixel MSE + ``ssim_weight`` · DMS-SSIM on density × density_scale
    (DSSINet §3.3; the paper profile: DMS-SSIM alone, RDBT §3.2)."""
    x = to_batch(images, device)
    y = torch.from_numpy(np.stack([pool(d, 8) for d in densities]))[:, None].to(device) * cfg.density_scale
    out = model(x)
    out, y = out[..., :y.shape[-2], :y.shape[-1]], y[..., :out.shape[-2], :out.shape[-1]]
    loss = cfg.mse_weight * F.mse_loss(out, y) if cfg.mse_weight else out.new_zeros(())
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


# ------------------------------------------------------------------------------------------ the core loop


class StepTask:
    """One RDBT training (R, D or Φ on the source; R or D fine-tuned on a cycle's pseudo-labels) as a
    :class:`harness.training.loop.TrainTask`: Adam on ``params`` with ``loss_fn(rng)``, which draws its own batch
    from the step's generator. ``freeze_bn`` keeps BatchNorm statistics fixed (target fine-tuning)."""

    def __init__(self, model, params, loss_fn: Callable[[np.random.Generator], torch.Tensor], lr: float, *,
                 name: str, fingerprint: dict | None = None, freeze_bn: bool = False):
        self.model, self.params, self.loss_fn, self.lr = model, list(params), loss_fn, float(lr)
        self.name, self._fingerprint, self.freeze_bn = name, fingerprint or {}, freeze_bn

    def modules(self) -> dict:
        return {self.name: self.model}

    def objectives(self) -> list:
        from harness import Objective, OptimConfig

        return [Objective(self.name, [p for p in self.params if p.requires_grad], lambda rng, step: self.loss_fn(rng),
                          OptimConfig(name="adam", lr=self.lr))]

    def batch(self, step: int, rng: np.random.Generator) -> np.random.Generator:
        return rng  # the loss draws its crops from the step's generator

    def train_mode(self) -> None:
        self.model.train()
        if self.freeze_bn:
            for m in self.model.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def fingerprint(self) -> dict:
        return self._fingerprint


def train_steps(model, params, *, steps: int, lr: float, loss_fn: Callable[[np.random.Generator], torch.Tensor],
                seed: int, salt: int, checkpoint_dir: Path | None, checkpoint_every: int = 50, log=None,
                name: str = "model", freeze_bn: bool = False, precision: str = "fp32", device: str = "cpu",
                fingerprint: dict | None = None) -> list[dict]:
    """Adam for ``steps`` steps on ``loss_fn(rng)`` with the core training loop (:func:`harness.train`: step
    seeding from ``derive_seed(seed, salt)``, checkpoints in ``checkpoint_dir``, resume, options guard).

    Returns the loop's history ``[{"step", "<name>": mean loss, "lr"}]`` (every ``checkpoint_every`` steps)."""
    from harness import LoopConfig, derive_seed, train

    if steps == 0:
        return []
    task = StepTask(model, params, loss_fn, lr, name=name.replace(" ", "-"), fingerprint=fingerprint,
                    freeze_bn=freeze_bn)
    cfg = LoopConfig(steps=int(steps), checkpoint_every=checkpoint_every if checkpoint_dir is not None else None,
                     log_every=checkpoint_every, precision=precision)
    res = train(task, cfg, seed=derive_seed(seed, salt), device=device, checkpoint_dir=checkpoint_dir,
                log=log or _log, name=name)
    return [{"step": h["step"], "loss": h[task.name]} for h in res.history if task.name in h]


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
