"""Resumable, deterministic training loop for density-map counters, with source-val model selection.

Recipe (defaults) — the lightweight-counter baseline of the PromptMix report (Biørirth, Thomsen & Vindbjerg,
"Using Generated Images in Crowd Counting", Table III; PromptMix, Bakhtiarnia et al. 2023):

- loss: pixel-wise MSE between predicted and target density maps, averaged over the pixels of each image
  (report eq. 8); model selection: count MAE on the validation images (report eq. 9);
- optimiser AdamW, learning rate 1e-3, weight decay 1e-4; StepLR with step 1 (epoch) and γ = 0.99;
  batch size 1 (larger batches accumulate gradients over ``batch_size`` images, so images of different sizes
  can share a batch); the report trains 500 epochs.

Targets: the head points (scaled with the image) become a density map
(:func:`harness.data.density.density_map`, geometry-adaptive by default: σ_i = β · mean k-NN distance, MCNN
eq. 1), sum-pooled to the counter's output stride (:func:`harness.data.density.downsample_density`, count
kept), times ``density_scale``. ``density_scale`` (e.g. 100) only enlarges the tiny per-cell values so that
the MSE gradients are not vanishingly small; predictions are divided back, so counts are unaffected.

Reduced-size training: every image (train, val and, through the returned :class:`ScaledCounter`, every image
at prediction time) is resized by ``factor = scale`` (times ``min(1, max_side / max(H, W))`` when
``max_side`` is set) before the network sees it; points are scaled with it, so the count is unchanged by
design. Images are zero-padded at the bottom/right to a multiple of the stride so that the network's output
and the sum-pooled target have the same shape; random crops (``crop_size``, rounded down to a multiple of the
stride, at stride-aligned offsets) and horizontal flips augment each epoch. Decoded, scaled, padded images
and their targets are computed once and kept in memory.

Determinism and resume: the epoch-``e`` randomness (sample order, crops, flips, ``extra_samples``, torch's
global RNG for e.g. dropout) comes from generators seeded with ``(seed, e)``, so an interrupted run resumed
from its checkpoint draws the same numbers as an uninterrupted one. After every epoch ``checkpoint_dir /
"last.pt"`` is written atomically (:func:`harness.io.atomic_save`) with the model, optimiser and scheduler
states, the epoch, the best state and its validation MAE, the RNG states and the history; calling again with
the same ``checkpoint_dir`` continues with the next epoch, and a finished training returns at once with the
best state. On CPU, two runs with the same seed give identical weights.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from .errors import ConfigError
from .io import atomic_save
from .specs import Prediction, SampleRef

#: PromptMix report, Table III.
PAPER_HPARAMS = {"epochs": 500, "lr": 1e-3, "weight_decay": 1e-4, "gamma": 0.99, "batch_size": 1}

CHECKPOINT_NAME = "last.pt"

_module_log = logging.getLogger("harness.training")


# ----------------------------------------------------------------------------------------- resizing


def scale_factor(height: int, width: int, scale: float = 1.0, max_side: int | None = None) -> float:
    """Resize factor for an ``height × width`` image: ``scale``, times ``min(1, max_side / max(H, W))`` when
    ``max_side`` is given (so large images shrink to at most ``max_side`` px and small ones keep ``scale``)."""
    f = float(scale)
    if max_side is not None:
        f *= min(1.0, float(max_side) / max(int(height), int(width)))
    return f


def resize_sample(image: np.ndarray, points: np.ndarray | None, factor: float,
                  min_side: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize an image (Pillow bilinear, antialiased when shrinking) and its head points by ``factor``.

    Args:
        image: ``(H, W, 3) uint8``.
        points: ``(N, 2)`` float ``(x, y)`` pixels, or None.
        factor: resize factor (1.0 returns the inputs unchanged).
        min_side: lower bound on each output side in pixels.

    Returns:
        ``(image (h, w, 3) uint8, points (N, 2) float64 scaled by (w / W, h / H))`` with
        ``h = max(min_side, round(H · factor))`` (same for ``w``); the number of points is unchanged.
    """
    if factor == 1.0:
        return image, (None if points is None else np.asarray(points, dtype=np.float64))
    H, W = image.shape[:2]
    h, w = max(min_side, int(round(H * factor))), max(min_side, int(round(W * factor)))
    out = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.uint8)
    if points is None:
        return out, None
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) * np.array([w / W, h / H])
    return out, pts


class ScaledCounter:
    """A trained density counter that predicts at its training resolution.

    ``predict(image)`` resizes the full-resolution image by :func:`scale_factor` (``scale``, ``max_side``),
    runs the wrapped counter, and divides the density by ``density_scale``. The count is a sum, so it needs no
    correction for the resize; head points (local maxima of the density, when :mod:`harness.metrics` provides
    ``points_from_density``) are returned in pixels of the *original* image.

    Attributes:
        inner: the wrapped counter (``model``, ``stride``, ``preprocess``, ``predict``, ``to``).
        scale / max_side / density_scale: as given to :func:`train_density_counter`.
        name, provenance: the counter's (settable; the strategy records where the weights came from).
    """

    def __init__(self, inner: Any, *, scale: float = 1.0, max_side: int | None = None,
                 density_scale: float = 1.0, name: str | None = None, provenance: Any = None):
        self.inner = inner
        self.scale = float(scale)
        self.max_side = max_side
        self.density_scale = float(density_scale)
        self.name = name or getattr(inner, "name", "counter")
        self.provenance = provenance if provenance is not None else getattr(inner, "provenance", None)

    def __repr__(self) -> str:
        return (f"ScaledCounter({self.inner!r}, scale={self.scale}, max_side={self.max_side}, "
                f"density_scale={self.density_scale})")

    @property
    def model(self):
        return self.inner.model

    @property
    def stride(self) -> int:
        """Output stride of the wrapped network, in pixels of the *resized* input."""
        return self.inner.stride

    def to(self, device) -> "ScaledCounter":
        self.inner.to(device)
        return self

    def input_factor(self, image: np.ndarray) -> float:
        """The resize factor applied to ``image`` before the network (see :func:`scale_factor`)."""
        return scale_factor(image.shape[0], image.shape[1], self.scale, self.max_side)

    def predict(self, image: np.ndarray) -> Prediction:
        """``image``: ``(H, W, 3) uint8`` RGB at full resolution -> :class:`Prediction` whose ``density`` is at
        stride ``stride`` of the resized image (``extras["input_factor"]``) and sums to ``count``."""
        f = self.input_factor(image)
        small, _ = resize_sample(image, None, f, min_side=self.inner.stride)
        pred = self.inner.predict(small)
        density = None if pred.density is None else (pred.density / self.density_scale).astype(np.float32)
        points, scores = pred.points, pred.scores
        fx, fy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        if points is not None:
            points = np.asarray(points, dtype=np.float64) / np.array([fx, fy])
        elif density is not None:  # here, where the integer stride is known (W / w is not an integer)
            points, scores = _points_from_density(density, self.inner.stride, fx, fy)
        extras = dict(pred.extras)
        extras["input_factor"] = f
        return Prediction(count=float(pred.count) / self.density_scale, density=density, points=points,
                          scores=scores, extras=extras)


def _points_from_density(density: np.ndarray, stride: int, fx: float, fy: float):
    try:
        from .metrics import points_from_density
    except ImportError:  # metrics not available: the runner derives points itself
        return None, None
    pts, scores = points_from_density(density, stride=stride)
    return np.asarray(pts, dtype=np.float64) / np.array([fx, fy]), scores


# ----------------------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What :func:`train_density_counter` returns.

    Attributes:
        counter: the :class:`ScaledCounter` wrapping the trained counter with the best (lowest val MAE)
            weights loaded, in eval mode.
        best_epoch: 1-based epoch whose weights were kept.
        best_val_mae: its validation MAE (people per image).
        epochs_completed: epochs trained in total (over all resumed calls).
        resumed_from_epoch: epochs already done when this call started (0: fresh start).
        history: per epoch ``{"epoch", "train_loss", "val_mae", "lr", "seconds", "n_train"}``.
        checkpoint_path: ``checkpoint_dir / "last.pt"`` or None.
        seconds: wall time of this call.
        scale / max_side / density_scale: recorded resize and target scaling (also on ``counter``).
    """

    counter: ScaledCounter
    best_epoch: int
    best_val_mae: float
    epochs_completed: int
    resumed_from_epoch: int
    history: list[dict] = field(default_factory=list)
    checkpoint_path: Path | None = None
    seconds: float = 0.0
    scale: float = 1.0
    max_side: int | None = None
    density_scale: float = 1.0


@dataclass
class _Item:
    image: np.ndarray  # (h, w, 3) uint8, padded to a multiple of the stride
    target: np.ndarray  # (h / s, w / s) float32, sums to count · density_scale


def _pad_to(image: np.ndarray, stride: int) -> np.ndarray:
    h, w = image.shape[:2]
    ph, pw = -h % stride, -w % stride
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw), (0, 0)))
    return image


def _make_item(image: np.ndarray, points: np.ndarray, *, stride: int, scale: float, max_side: int | None,
               kernel: str, sigma: float, density_scale: float) -> _Item:
    from .data.density import density_map, downsample_density

    f = scale_factor(image.shape[0], image.shape[1], scale, max_side)
    img, pts = resize_sample(image, points, f, min_side=stride)
    img = _pad_to(img, stride)
    dens = density_map(pts, img.shape[:2], kernel=kernel, sigma=sigma)
    if stride > 1:
        dens = downsample_density(dens, stride)
    return _Item(np.ascontiguousarray(img), (dens * density_scale).astype(np.float32))


def _crop_flip(item: _Item, crop: int | None, stride: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    img, tgt = item.image, item.target
    if crop is not None:
        H, W = img.shape[:2]
        ch, cw = min(crop, H), min(crop, W)
        y0 = stride * int(rng.integers(0, (H - ch) // stride + 1))
        x0 = stride * int(rng.integers(0, (W - cw) // stride + 1))
        img = img[y0:y0 + ch, x0:x0 + cw]
        tgt = tgt[y0 // stride:(y0 + ch) // stride, x0 // stride:(x0 + cw) // stride]
    if rng.random() < 0.5:
        img, tgt = img[:, ::-1], tgt[:, ::-1]
    return np.ascontiguousarray(img), np.ascontiguousarray(tgt)


def _subset(refs: Sequence[SampleRef], cap: int | None, seed: int, salt: int) -> list[SampleRef]:
    refs = list(refs)
    if cap is None or cap >= len(refs):
        return refs
    idx = np.sort(np.random.default_rng([seed, salt]).choice(len(refs), size=int(cap), replace=False))
    return [refs[i] for i in idx]


def _ref_key(ref: SampleRef) -> str:
    return f"{ref.dataset}/{ref.split}/{ref.id}"


def _epoch_seed(seed: int, epoch: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _match_shapes(out, tgt):
    """Zero-pad the smaller of ``out`` / ``tgt`` (both ``(1, 1, h, w)``) to the larger's spatial size."""
    import torch.nn.functional as F

    h, w = max(out.shape[-2], tgt.shape[-2]), max(out.shape[-1], tgt.shape[-1])
    if out.shape[-2:] != (h, w):
        out = F.pad(out, (0, w - out.shape[-1], 0, h - out.shape[-2]))
    if tgt.shape[-2:] != (h, w):
        tgt = F.pad(tgt, (0, w - tgt.shape[-1], 0, h - tgt.shape[-2]))
    return out, tgt


def train_density_counter(
    counter: Any,
    train_refs: Sequence[SampleRef],
    val_refs: Sequence[SampleRef],
    *,
    epochs: int,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    gamma: float = 0.99,
    batch_size: int = 1,
    crop_size: int | None = None,
    scale: float = 1.0,
    max_side: int | None = None,
    max_train_images: int | None = None,
    max_val_images: int | None = None,
    kernel: str = "adaptive",
    sigma: float = 15.0,
    density_scale: float = 1.0,
    seed: int = 0,
    device: str = "cpu",
    checkpoint_dir: str | Path | None = None,
    log: logging.Logger | None = None,
    extra_samples: Callable[[int, np.random.Generator], list[tuple[np.ndarray, np.ndarray]]] | None = None,
    on_epoch_end: Callable[[dict], None] | None = None,
) -> TrainResult:
    """Train a density counter on labelled source images; keep the weights with the lowest val MAE.

    Args:
        counter: a :class:`harness.models.base.TorchDensityCounter`-like object: ``model`` (``nn.Module``,
            ``(B, C, H, W) -> (B, 1, H / stride, W / stride)``), ``stride`` (int), ``preprocess(image) ->
            (1, C, H, W) tensor``, ``predict(image) -> Prediction``, ``to(device)``; trained in place.
        train_refs: labelled training images (the source domain's ``train`` split).
        val_refs: labelled images for model selection (the source domain's ``val`` split — never a test
            split); each epoch's count MAE on them picks the returned weights.
        epochs: total number of epochs (the report: 500).
        lr, weight_decay: AdamW learning rate and weight decay (report: 1e-3, 1e-4).
        gamma: StepLR decay per epoch (report: 0.99).
        batch_size: images per optimiser step (gradient accumulation; report: 1).
        crop_size: side of square random training crops in pixels of the resized image (rounded down to a
            multiple of the stride; None: whole images).
        scale, max_side: resize factor of every image (see :func:`scale_factor`); recorded in the returned
            counter, which resizes its inputs the same way.
        max_train_images, max_val_images: use a seeded random subset of at most this many images.
        kernel, sigma: density-map kernel (``"adaptive"``: geometry-adaptive, σ for lone heads; ``"fixed"``).
        density_scale: multiplier of the target density (predictions are divided back).
        seed: seed of every random choice (subsets, order, crops, flips, torch RNG).
        device: ``"cpu"`` or ``"cuda"``.
        checkpoint_dir: folder for ``last.pt`` (resume); None: no checkpoints.
        log: logger for per-epoch lines (default ``harness.training``).
        extra_samples: optional hook ``extra_samples(epoch, rng) -> [(image (H, W, 3) uint8, points (N, 2)
            float (x, y) px), ...]`` called once per epoch (1-based ``epoch``, the epoch's seeded numpy
            ``Generator``); the samples are resized/padded like the real ones and shuffled in with them for
            that epoch only (PromptMix: a random subset of ``r_mix · |real|`` pseudo-labelled synthetic
            images per epoch).
        on_epoch_end: optional callback ``on_epoch_end(record)`` after each epoch's checkpoint is written
            (progress reporting; an exception raised here stops training, resumable from the checkpoint).

    Returns:
        :class:`TrainResult` with the best-val-MAE weights loaded into ``counter`` (wrapped in a
        :class:`ScaledCounter`).

    Raises:
        ConfigError: bad options (epochs < 1, empty train/val refs, bad crop/scale), or a checkpoint in
            ``checkpoint_dir`` written with different training options.
        DataError: unreadable images or annotations (from the dataset readers).
    """
    import torch
    import torch.nn.functional as F

    log = log or _module_log
    t_start = time.perf_counter()
    if int(epochs) < 1:
        raise ConfigError(f"train_density_counter: epochs must be >= 1, got {epochs!r}")
    if not len(train_refs):
        raise ConfigError("train_density_counter: no training images (empty train_refs)")
    if not len(val_refs):
        raise ConfigError("train_density_counter: no validation images for model selection (empty val_refs); "
                          "pass the source domain's val split")
    if not (scale > 0 and math.isfinite(scale)) or (max_side is not None and max_side < 1):
        raise ConfigError(f"train_density_counter: scale must be > 0 and max_side >= 1, got {scale!r}, {max_side!r}")
    if int(batch_size) < 1:
        raise ConfigError(f"train_density_counter: batch_size must be >= 1, got {batch_size!r}")
    stride = int(getattr(counter, "stride", 1))
    crop = None
    if crop_size is not None:
        crop = (int(crop_size) // stride) * stride
        if crop < stride:
            raise ConfigError(f"train_density_counter: crop_size={crop_size!r} is smaller than the counter's "
                              f"stride {stride}; use a multiple of {stride}")

    train_refs = _subset(train_refs, max_train_images, seed, 1)
    val_refs = _subset(val_refs, max_val_images, seed, 2)
    config = {"lr": float(lr), "weight_decay": float(weight_decay), "gamma": float(gamma),
              "batch_size": int(batch_size), "crop": crop, "scale": float(scale), "max_side": max_side,
              "kernel": kernel, "sigma": float(sigma), "density_scale": float(density_scale), "seed": int(seed),
              "stride": stride, "model": type(counter.model).__name__,
              "train": [_ref_key(r) for r in train_refs], "val": [_ref_key(r) for r in val_refs],
              "extra_samples": extra_samples is not None}

    counter.to(device)
    model = counter.model
    forward = getattr(counter, "train_forward", None) or model
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=gamma)

    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    start_epoch, history = 0, []
    best_state, best_mae, best_epoch = None, math.inf, 0
    if ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        diff = sorted(k for k in set(config) | set(state["config"]) if config.get(k) != state["config"].get(k))
        if diff:
            raise ConfigError(f"checkpoint {ckpt_path} was written with different training options "
                              f"({', '.join(diff)}); delete it or use another checkpoint_dir")
        start_epoch, history = int(state["epoch"]), list(state["history"])
        best_state, best_mae, best_epoch = state["best_state"], float(state["best_val_mae"]), int(state["best_epoch"])
        if start_epoch < epochs:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["rng"]["torch"])
        log.info("resuming from %s: %d/%d epochs done, best val MAE %.3f at epoch %d",
                 ckpt_path, start_epoch, epochs, best_mae, best_epoch)

    def finish() -> TrainResult:
        if best_state is not None:
            model.load_state_dict(best_state)
        else:  # every epoch's val MAE was NaN (diverged): nothing to select
            log.warning("no epoch gave a finite val MAE; returning the last weights (try a lower lr)")
        model.eval()
        wrapped = ScaledCounter(counter, scale=scale, max_side=max_side, density_scale=density_scale)
        return TrainResult(counter=wrapped, best_epoch=best_epoch, best_val_mae=best_mae,
                           epochs_completed=len(history), resumed_from_epoch=start_epoch,
                           history=history, checkpoint_path=ckpt_path, seconds=time.perf_counter() - t_start,
                           scale=float(scale), max_side=max_side, density_scale=float(density_scale))

    if start_epoch >= epochs:
        return finish()

    # decode, resize, pad and build targets once
    t0 = time.perf_counter()
    opts = dict(stride=stride, scale=scale, max_side=max_side, kernel=kernel, sigma=sigma,
                density_scale=density_scale)
    train_items = []
    for ref in train_refs:
        s = ref.load()
        train_items.append(_make_item(s.image, s.points, **opts))
    val_items = []
    for ref in val_refs:
        s = ref.load()
        f = scale_factor(s.image.shape[0], s.image.shape[1], scale, max_side)
        val_items.append((resize_sample(s.image, None, f, min_side=stride)[0], s.count))
    log.info("prepared %d train / %d val images in %.1fs (stride %d, scale %s, max_side %s, crop %s)",
             len(train_items), len(val_items), time.perf_counter() - t0, stride, scale, max_side, crop)

    for epoch in range(start_epoch, epochs):
        t_epoch = time.perf_counter()
        rng = np.random.default_rng(_epoch_seed(seed, epoch, 0))
        torch.manual_seed(_epoch_seed(seed, epoch, 1))
        items = list(train_items)
        if extra_samples is not None:
            items += [_make_item(np.asarray(im, dtype=np.uint8), np.asarray(p, dtype=np.float64).reshape(-1, 2),
                                 **opts) for im, p in extra_samples(epoch + 1, rng)]
        order = rng.permutation(len(items))
        lr_now = optimizer.param_groups[0]["lr"]
        model.train()
        losses = []
        for b0 in range(0, len(order), batch_size):
            batch = order[b0:b0 + batch_size]
            optimizer.zero_grad(set_to_none=True)
            for idx in batch:
                img, tgt = _crop_flip(items[idx], crop, stride, rng)
                x = counter.preprocess(img).to(device)
                y = torch.from_numpy(tgt)[None, None].to(device)
                out, y = _match_shapes(forward(x), y)
                loss = F.mse_loss(out, y)
                (loss / len(batch)).backward()
                losses.append(float(loss.detach()))
            optimizer.step()
        scheduler.step()
        model.eval()
        errors = [abs(counter.predict(img).count / density_scale - gt) for img, gt in val_items]
        val_mae = float(np.mean(errors))
        if val_mae < best_mae:
            best_mae, best_epoch = val_mae, epoch + 1
            best_state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_mae": val_mae, "lr": lr_now,
                  "seconds": time.perf_counter() - t_epoch, "n_train": len(items)}
        history.append(record)
        if ckpt_path is not None:
            state = {"epoch": epoch + 1, "config": config, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "best_state": best_state, "best_val_mae": best_mae, "best_epoch": best_epoch,
                     "history": history, "rng": {"torch": torch.get_rng_state(), "scheme": "per-epoch (seed, epoch)"}}
            atomic_save(ckpt_path, lambda p, st=state: torch.save(st, p))
        log.info("epoch %d/%d  train loss %.6g  val MAE %.3f  (best %.3f @ %d)  lr %.3g  %.1fs", epoch + 1,
                 epochs, record["train_loss"], val_mae, best_mae, best_epoch, lr_now, record["seconds"])
        if on_epoch_end is not None:
            on_epoch_end(dict(record))
    return finish()

