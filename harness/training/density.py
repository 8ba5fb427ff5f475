"""Training density-map counters: a small adapter of :func:`harness.training.loop.train`.

Recipe (defaults) — the lightweight-counter baseline of the PromptMix report (Biørirth, Thomsen & Vindbjerg,
"Using Generated Images in Crowd Counting", Table III; PromptMix, Bakhtiarnia et al. 2023):

- loss: pixel-wise MSE between predicted and target density maps, averaged over the pixels of each image
  (report eq. 8); model selection: count MAE on the source's validation images (report eq. 9);
- AdamW, learning rate 1e-3, weight decay 1e-4; learning rate × γ = 0.99 after every epoch; batch size 1
  (a larger batch averages the loss over ``batch_size`` images, which may differ in size); 500 epochs.

Targets: the head points (scaled with the image) become a density map (:func:`harness.data.density.density_map`,
geometry-adaptive by default: σ_i = β · mean k-NN distance, MCNN eq. 1), sum-pooled to the counter's output
stride (count kept), times ``density_scale``. ``density_scale`` enlarges the tiny per-cell values (a stride-8
cell of a ShanghaiTech B image holds ~0.04 people) so that the MSE gradients are not vanishingly small — many
counting codebases multiply by 100–1000; predictions are divided back, so counts are unaffected.

Reduced-size training: every image (train, val and, through the returned :class:`ScaledCounter`, every image at
prediction time) is resized by :func:`harness.data.transforms.scale_factor` before the network sees it, points
scaled with it. Images are zero-padded to a multiple of the stride; random crops (``crop_size``, at
stride-aligned offsets) and horizontal flips augment each epoch. Decoded, resized images and their targets are
computed once and kept in memory.

Determinism: epoch ``e``'s sample order and extra (e.g. synthetic) samples come from generators seeded with
``(seed, e)``; each step's crops and flips from the loop's step generator. Checkpoints, resume and the options
guard are the loop's (``checkpoint_dir / "density"``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from ..data.transforms import pad_to_multiple, resize_sample, scale_factor
from ..errors import ConfigError
from ..types import SampleRef, output_stride
from .loop import LoopConfig, Objective, OptimConfig, train
from .scaled import ScaledCounter

_log = logging.getLogger("harness.training")


@dataclass
class DensityTrainOptions:
    """Options of :func:`train_density_counter` (a method's ``train`` mapping).

    Attributes:
        epochs: passes over the training images (report: 500).
        lr, weight_decay, optimizer: optimiser (report: AdamW 1e-3 / 1e-4).
        gamma: learning-rate factor after every epoch (report: 0.99).
        batch_size: images per optimiser step (report: 1); crops of one size form one tensor batch.
        crop_size: side of square random training crops in pixels of the resized image (rounded down to a
            multiple of the stride; None: whole images).
        scale, max_side: resize of every image (see :func:`harness.data.transforms.scale_factor`).
        max_train_images, max_val_images: seeded random subsets of at most this many images.
        kernel, sigma: density-map kernel (``adaptive``: geometry-adaptive, ``sigma`` for lone heads; ``fixed``).
        density_scale: multiplier of the target density (predictions are divided back).
        grad_clip: clip the gradient norm (None: off).
        ema_decay: keep an EMA of the weights and select/return it (None: off).
        eval_every_epochs: evaluate on the val images every this many epochs (and at the end).
        select: ``best`` (the epoch with the lowest val MAE) or ``last`` (the last epoch, as the PromptMix report's
            Table IV, read "after 200 epochs").
        val_fraction: None (the source's own val split) or a share of the source's labelled train + val images held
            out for validation instead (seeded with 0; the report's 240 / 60 split of ShanghaiTech A is 0.2).
        train_mae: also measure the MAE on the (real) training images at the end (the report's "Train MAE").
    """

    epochs: int
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: Literal["adam", "adamw", "sgd"] = "adamw"
    gamma: float = 0.99
    batch_size: int = 1
    crop_size: int | None = None
    scale: float = 1.0
    max_side: int | None = None
    max_train_images: int | None = None
    max_val_images: int | None = None
    kernel: Literal["adaptive", "fixed"] = "adaptive"
    sigma: float = 15.0
    density_scale: float = 1.0
    grad_clip: float | None = None
    ema_decay: float | None = None
    eval_every_epochs: int = 1
    select: Literal["best", "last"] = "best"
    val_fraction: float | None = None
    train_mae: bool = False

    def validate(self) -> list[str]:
        p = []
        if self.epochs < 1:
            p.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            p.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not (self.scale > 0 and math.isfinite(self.scale)) or (self.max_side is not None and self.max_side < 1):
            p.append(f"scale must be > 0 and max_side >= 1, got {self.scale}, {self.max_side}")
        if self.crop_size is not None and self.crop_size < 1:
            p.append(f"crop_size must be >= 1 or null, got {self.crop_size}")
        if not self.density_scale > 0:
            p.append(f"density_scale must be > 0, got {self.density_scale}")
        if self.eval_every_epochs < 1:
            p.append("eval_every_epochs must be >= 1")
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
            p.append(f"val_fraction must lie in (0, 1) or be null, got {self.val_fraction}")
        return p


@dataclass
class EpochExtras:
    """Extra training samples drawn afresh every epoch (PromptMix / SPADE mixing of synthetic images).

    Attributes:
        per_epoch: how many samples every epoch adds (fixed, so the epoch length is known in advance).
        draw: ``draw(epoch, rng) -> [sample, ...]`` with ``per_epoch`` items; ``epoch`` is 1-based, ``rng`` the
            epoch's seeded generator. A sample is ``(image (H, W, 3) uint8, points (N, 2) float, (x, y) pixels)``
            or a zero-argument callable returning that pair, called when the sample's batch is drawn — so an
            epoch of thousands of synthetic images is read one batch at a time, never held in memory at once
            (:func:`harness.pool_extras` draws callables).

    The labels behind the samples (e.g. the pseudo-labelling annotators') are recorded by the components the
    strategy built (:meth:`harness.CellContext.build`), not here.
    """

    per_epoch: int
    draw: Callable[[int, np.random.Generator], list[tuple[np.ndarray, np.ndarray]]]


@dataclass
class TrainResult:
    """What :func:`train_density_counter` returns.

    Attributes:
        counter: the :class:`ScaledCounter` with the best (lowest val MAE) weights, in eval mode.
        best_epoch / best_val_mae: the selected epoch (1-based) and its val MAE (people per image).
        epochs_completed: epochs trained in total (over all resumed calls).
        resumed_from_epoch: epochs already done when this call started (0: fresh start).
        history: per epoch ``{"epoch", "train_loss", "val_mae", "lr"}``.
        seconds: wall time of this call.
        last_val_mae: the val MAE of the last evaluation (the returned weights' with ``select: last``).
        train_mae: MAE on the real training images at the end (``train_mae: true``; else None).
    """

    counter: ScaledCounter
    best_epoch: int
    best_val_mae: float
    epochs_completed: int
    resumed_from_epoch: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    last_val_mae: float | None = None
    train_mae: float | None = None


def subset(refs: Sequence[Any], cap: int | None, seed: int, salt: int) -> list[Any]:
    """A seeded random subset of at most ``cap`` items, in their original order (None: all)."""
    refs = list(refs)
    if cap is None or cap >= len(refs):
        return refs
    idx = np.sort(np.random.default_rng([int(seed) % 2**32, salt]).choice(len(refs), size=int(cap), replace=False))
    return [refs[i] for i in idx]


def _epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**32, 2 + stream, int(epoch)])


class DensityTask:
    """The :class:`harness.training.loop.TrainTask` of a density counter (see the module notes)."""

    def __init__(self, counter: Any, train_items: list, val_items: list, opts: DensityTrainOptions, *,
                 seed: int, device: str, make_item: Callable, extras: EpochExtras | None, fingerprint: dict):
        import torch.nn.functional as F

        self.counter, self.train_items, self.val_items, self.opts = counter, train_items, val_items, opts
        self.seed, self.device, self.make_item, self.extras = seed, device, make_item, extras
        self.stride = int(counter.stride)
        self.crop = None if opts.crop_size is None else max(self.stride, (opts.crop_size // self.stride) * self.stride)
        n = len(train_items) + (extras.per_epoch if extras else 0)
        self.steps_per_epoch = -(-n // opts.batch_size)
        self._fingerprint = fingerprint
        self._epoch, self._items, self._order = None, None, None
        self._mse = F.mse_loss

    def modules(self) -> dict:
        return {"counter": self.counter.model}

    def fingerprint(self) -> dict:
        return self._fingerprint

    def objectives(self) -> list[Objective]:
        o = self.opts
        optim = OptimConfig(name=o.optimizer, lr=o.lr, weight_decay=o.weight_decay, scheduler="step",
                            step_size=self.steps_per_epoch, gamma=o.gamma, grad_clip=o.grad_clip)
        return [Objective("density", self.counter.model.parameters(), self.loss, optim)]

    def _epoch_items(self, epoch: int):
        if self._epoch != epoch:
            items = list(self.train_items)
            if self.extras is not None:  # callables stay unread until their batch (EpochExtras.draw)
                drawn = self.extras.draw(epoch + 1, _epoch_rng(self.seed, epoch, 1))
                items += [d if callable(d) else self._make(*d) for d in drawn]
            self._epoch, self._items = epoch, items
            self._order = _epoch_rng(self.seed, epoch, 0).permutation(len(items))
        return self._items, self._order

    def batch(self, step: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        epoch, i = divmod(step, self.steps_per_epoch)
        items, order = self._epoch_items(epoch)
        idx = order[i * self.opts.batch_size:(i + 1) * self.opts.batch_size]
        return [_crop_flip(self._make(*items[j]()) if callable(items[j]) else items[j], self.crop, self.stride, rng)
                for j in idx]

    def _make(self, image, points) -> tuple[np.ndarray, np.ndarray]:
        return self.make_item(np.asarray(image, np.uint8), np.asarray(points, np.float64).reshape(-1, 2))

    def loss(self, batch, step: int):
        """Mean over the batch of each image's pixel MSE. Crops of one size go through the network as one
        ``(B, C, h, w)`` batch (BatchNorm then sees B images); images of different sizes one at a time."""
        import torch

        if len({img.shape for img, _ in batch}) == 1:
            x = _to_device(torch.cat([self.counter.preprocess(img) for img, _ in batch]), self.device)
            y = _to_device(torch.from_numpy(np.stack([tgt for _, tgt in batch]))[:, None], self.device)
            out, y = _match_shapes(self.counter.model(x), y)
            return self._mse(out.float(), y)
        total = 0.0
        for img, tgt in batch:
            x = self.counter.preprocess(img).to(self.device)
            y = torch.from_numpy(tgt)[None, None].to(self.device)
            out, y = _match_shapes(self.counter.model(x), y)
            total = total + self._mse(out.float(), y)
        return total / len(batch)

    def evaluate(self) -> float:
        ds = self.opts.density_scale
        return float(np.mean([abs(self.counter.predict(img).count / ds - gt) for img, gt in self.val_items]))


def _to_device(t, device: str):
    """Move a batch to ``device``; to a GPU through pinned memory, without blocking (the host prepares the next)."""
    if str(device).startswith("cuda"):
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _crop_flip(item: tuple[np.ndarray, np.ndarray], crop: int | None, stride: int, rng: np.random.Generator):
    img, tgt = item
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


def _match_shapes(out, tgt):
    """Zero-pad the smaller of ``out`` / ``tgt`` (both ``(B, 1, h, w)``) to the larger's spatial size."""
    import torch.nn.functional as F

    h, w = max(out.shape[-2], tgt.shape[-2]), max(out.shape[-1], tgt.shape[-1])
    if out.shape[-2:] != (h, w):
        out = F.pad(out, (0, w - out.shape[-1], 0, h - out.shape[-2]))
    if tgt.shape[-2:] != (h, w):
        tgt = F.pad(tgt, (0, w - tgt.shape[-1], 0, h - tgt.shape[-2]))
    return out, tgt


def density_item(image: np.ndarray, points: np.ndarray, opts: DensityTrainOptions, stride: int):
    """``(image padded to the stride, target (h / s, w / s) float32 × density_scale)`` at training resolution."""
    from ..data.density import density_map, downsample_density

    f = scale_factor(image.shape[0], image.shape[1], opts.scale, opts.max_side)
    img, pts = resize_sample(image, points, f, min_side=stride)
    img = pad_to_multiple(img, stride)
    dens = density_map(pts, img.shape[:2], kernel=opts.kernel, sigma=opts.sigma)
    if stride > 1:
        dens = downsample_density(dens, stride)
    return np.ascontiguousarray(img), (dens * opts.density_scale).astype(np.float32)


def train_density_counter(counter: Any, train_refs: Sequence[SampleRef], val_refs: Sequence[SampleRef],
                          options: DensityTrainOptions, *, seed: int = 0, device: str = "cpu",
                          precision: str = "fp32", checkpoint_dir: str | Path | None = None,
                          log: logging.Logger | None = None, extras: EpochExtras | None = None,
                          on_checkpoint: Callable[[int], None] | None = None, workers: int = 0,
                          val_extras: Sequence[tuple[np.ndarray, float]] = ()) -> TrainResult:
    """Train a density counter on labelled source images; keep the weights with the lowest val MAE (or, with
    ``select: last``, the last epoch's).

    Args:
        counter: a :class:`harness.models.base.TorchDensityCounter`-like object (``model``: ``(B, C, H, W) ->
            (B, 1, H / stride, W / stride)``, ``stride``, ``preprocess``, ``predict``, ``to``); trained in place.
        train_refs: labelled training images (the source domain's ``train`` split).
        val_refs: labelled images for model selection (the source's ``val`` split — never a test split).
        options: :class:`DensityTrainOptions`.
        seed: the cell's seed.
        device: the cell's device (``cpu``, ``cuda``, ``cuda:1``).
        precision: the cell's precision (``fp32``, ``bf16``, ``fp16``).
        checkpoint_dir: the cell's checkpoint folder (this training writes ``<checkpoint_dir>/density/``).
        log: logger for per-epoch lines.
        extras: samples added every epoch (:class:`EpochExtras`).
        on_checkpoint: called with the step after every checkpoint (tests interrupt here).
        workers: image-decoding worker processes while the training images are prepared.
        val_extras: more validation images ``(image (H, W, 3) uint8, count)`` — e.g. pseudo-labelled synthetic ones
            (the report's validation set holds synthetic images at the training mix's ratio).

    Returns:
        :class:`TrainResult` with the best-val-MAE weights loaded into ``counter`` (wrapped in a
        :class:`ScaledCounter`).

    Raises:
        ConfigError: invalid options, empty train/val refs, or a checkpoint written under other options.
        DataError: unreadable images or annotations (from the dataset readers).
    """
    log = log or _log
    problems = options.validate()
    if not len(train_refs):
        problems.append("no training images (empty train split)")
    if not len(val_refs):
        problems.append("no validation images for model selection: pass the source domain's val split")
    if problems:
        raise ConfigError("train_density_counter: " + "; ".join(problems))
    stride = output_stride(counter, 1)
    train_refs = subset(train_refs, options.max_train_images, seed, 1)
    val_refs = subset(val_refs, options.max_val_images, seed, 2)
    counter.to(device)

    def make_item(image, points):
        return density_item(image, points, options, stride)

    from ..evaluation import load_ahead, load_samples

    train_items = [make_item(s.image, s.points) for s in load_samples(train_refs, workers, load_ahead(device))]
    val_items = []
    for s in load_samples(val_refs, workers, load_ahead(device)):
        f = scale_factor(s.image.shape[0], s.image.shape[1], options.scale, options.max_side)
        val_items.append((resize_sample(s.image, None, f, min_side=stride)[0], s.count))
    for image, count in val_extras:
        f = scale_factor(image.shape[0], image.shape[1], options.scale, options.max_side)
        val_items.append((resize_sample(image, None, f, min_side=stride)[0], float(count)))
    from ..options import to_dict

    fingerprint = {"options": to_dict(options), "stride": stride, "model": type(counter.model).__name__,
                   "train": [r.key for r in train_refs], "val": [r.key for r in val_refs],
                   "extras": None if extras is None else extras.per_epoch, "val_extras": len(val_extras)}
    task = DensityTask(counter, train_items, val_items, options, seed=seed, device=device, make_item=make_item,
                       extras=extras, fingerprint=fingerprint)
    spe = task.steps_per_epoch
    log.info("training on %d images (+%d extra per epoch), %d val images, %d steps per epoch, stride %d, crop %s",
             len(train_items), extras.per_epoch if extras else 0, len(val_items), spe, stride, task.crop)
    cfg = LoopConfig(steps=options.epochs * spe, eval_every=spe * options.eval_every_epochs, checkpoint_every=spe,
                     precision=precision, ema_decay=options.ema_decay, log_every=spe, select=options.select)
    if options.ema_decay is not None:
        task.ema = ("counter",)
    res = train(task, cfg, seed=seed, device=device, log=log, name="density",
                checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / "density",
                on_checkpoint=on_checkpoint)
    history = _per_epoch(res.history, spe)
    if res.best_step is None:
        log.warning("no epoch gave a finite val MAE; returning the last weights (try a lower lr)")
    wrapped = ScaledCounter(counter, scale=options.scale, max_side=options.max_side,
                            density_scale=options.density_scale, precision=precision)
    evals = [r["eval"] for r in res.history if "eval" in r]
    train_mae = None
    if options.train_mae:  # the real training images at the resolution the counter predicts at
        from ..stages import stage

        errors = []
        with stage("evaluate: train MAE", units=len(train_refs), unit="training image") as st:
            for s in load_samples(train_refs, workers, load_ahead(device)):
                if st.done:  # only in a dry run
                    break
                with st.unit():
                    errors.append(abs(wrapped.predict(s.image).count - s.count))
        train_mae = float(np.mean(errors)) if errors else None
        log.info("train MAE (real training images, returned weights): %s", train_mae)
    selected = res.best_step if options.select == "best" and res.best_step is not None else res.steps_done
    return TrainResult(counter=wrapped, best_epoch=selected // spe, best_val_mae=res.best_metric,
                       epochs_completed=res.steps_done // spe, resumed_from_epoch=res.resumed_from // spe,
                       history=history, seconds=res.seconds, last_val_mae=evals[-1] if evals else None,
                       train_mae=train_mae)


def _per_epoch(history: list[dict], spe: int) -> list[dict]:
    """Loop history (loss records and eval records) -> one record per epoch."""
    out: dict[int, dict] = {}
    for rec in history:
        epoch = rec["step"] // spe
        row = out.setdefault(epoch, {"epoch": epoch})
        if "eval" in rec:
            row["val_mae"] = rec["eval"]
        else:
            row["train_loss"], row["lr"] = rec.get("density"), rec.get("lr")
    return [out[e] for e in sorted(out)]


__all__ = ["DensityTrainOptions", "EpochExtras", "ScaledCounter", "TrainResult", "train_density_counter",
           "density_item", "subset", "DensityTask"]
