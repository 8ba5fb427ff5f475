"""SYRAC's trainings on the core loop (:func:`harness.train`): rank pre-training (§4.1) and the end-to-end regression
baseline (Table 3 "No Pre-training").

Both are :class:`harness.training.loop.TrainTask` s with one :class:`harness.Objective` (Adam): the loop owns device
placement, precision, step seeding, evaluation with model selection, checkpoints and resume. A step's batch is a
pure function of the step: the epoch's permutation comes from ``default_rng([seed, 5, epoch])`` and the
augmentations from the step's generator, so a resumed training draws what an uninterrupted one draws.

- :class:`RankTask`: ``pairs_per_batch`` pairs; real and synthetic images are augmented independently and go
  through the encoder **in one batch** (real first, then synthetic; the authors' ``Concatenate(axis=0)``); loss
  :func:`harness_syrac.model.rank_loss`; the head's weights are projected onto w ≥ 0 after every optimiser step
  (:func:`harness_syrac.model.nonneg_projection`, active for the whole :func:`train_rank` call); ``evaluate()`` is
  the ranking loss on the held-out pairs (never a real label).
- :class:`RegressionTask`: MSE between the head's output and count / ``scale`` on the noisy set; ``evaluate()`` is
  the RMSE (in people) on its held-out part.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness import LoopConfig, Objective, OptimConfig, content_key, derive_seed, train

from .config import SyracTrainOptions
from .data import ImageStore, NoisyImage, Pair
from .model import SyracNet, augment, nonneg_projection, normalise, rank_loss, to_unit


def _device(net) -> torch.device:
    return next(net.parameters()).device


class _EpochBatches:
    """Indices of step ``k``'s batch: the epoch's seeded permutation of ``n`` items, cut into batches of ``size``."""

    def __init__(self, n: int, size: int, seed: int):
        self.n, self.size, self.seed = n, size, seed
        self.per_epoch = max(1, math.ceil(n / size))

    def __call__(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.per_epoch)
        perm = np.random.default_rng([self.seed, 5, epoch]).permutation(self.n)
        return perm[i * self.size:(i + 1) * self.size]


class RankTask:
    """Siamese rank pre-training (see the module notes)."""

    def __init__(self, net: SyracNet, store: ImageStore, train_pairs: Sequence[Pair], val_pairs: Sequence[Pair],
                 opts: SyracTrainOptions, *, normalisation: str, seed: int, fingerprint: dict | None = None):
        self.net, self.store, self.opts = net, store, opts
        self.train_pairs, self.val_pairs = list(train_pairs), list(val_pairs)
        self.normalisation, self.seed = normalisation, int(seed)
        self.batches = _EpochBatches(len(self.train_pairs), opts.pairs_per_batch, self.seed)
        self._fingerprint = fingerprint or {}

    def modules(self) -> dict:
        return {"syrac-rank": self.net}

    def objectives(self) -> list:
        return [Objective("rank", list(self.net.parameters()), self.loss,
                          OptimConfig(name="adam", lr=self.opts.lr, weight_decay=self.opts.weight_decay))]

    def images(self, pairs: Sequence[Pair], rng: np.random.Generator | None) -> torch.Tensor:
        """``(2B, 3, H, W)`` normalised: the B real images, then their B synthetic partners (augmented if ``rng``)."""
        real = to_unit([self.store.get(p.real) for p in pairs])
        syn = to_unit([self.store.get(p.synthetic) for p in pairs])
        if rng is not None and self.opts.augment:
            real, syn = augment(real, rng, self.opts.augment_factor), augment(syn, rng, self.opts.augment_factor)
        return normalise(torch.cat([real, syn]), self.normalisation).to(_device(self.net))

    def batch(self, step: int, rng: np.random.Generator) -> torch.Tensor:
        return self.images([self.train_pairs[i] for i in self.batches(step)], rng)

    def loss(self, x: torch.Tensor, step: int):
        s = self.net(x).float()
        real, syn = s.chunk(2)
        return rank_loss(real, syn), {"accuracy": float((real > syn).float().mean())}

    def scores(self, pairs: Sequence[Pair], batch: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Rank scores ``(real (n,), synthetic (n,))`` of ``pairs`` without augmentation (eval mode)."""
        real, syn = [], []
        for i in range(0, len(pairs), batch):
            s = self.net(self.images(pairs[i:i + batch], None)).float().cpu()
            a, b = s.chunk(2)
            real.append(a.numpy())
            syn.append(b.numpy())
        return (np.concatenate(real), np.concatenate(syn)) if real else (np.zeros(0), np.zeros(0))

    def evaluate(self) -> float:
        """Ranking loss on the held-out synthetic pairs (model selection; lower is better)."""
        real, syn = self.scores(self.val_pairs)
        return float(rank_loss(torch.from_numpy(real), torch.from_numpy(syn)))

    def fingerprint(self) -> dict:
        return self._fingerprint

    def cost_key(self) -> dict:
        """What fixes the work of one step and one selection pass (the dry run's stage key: harness.stages)."""
        first = self.store.get(self.train_pairs[0].real).shape if self.train_pairs else None
        return {"backbone": self.net.backbone, "pairs_per_batch": self.opts.pairs_per_batch,
                "val_pairs": len(self.val_pairs), "image": first}


class RegressionTask:
    """End-to-end count regression on the noisy set (see the module notes)."""

    def __init__(self, net: SyracNet, store: ImageStore, train_set: Sequence[NoisyImage],
                 val_set: Sequence[NoisyImage], opts: SyracTrainOptions, *, normalisation: str, seed: int,
                 scale: float, fingerprint: dict | None = None):
        self.net, self.store, self.opts = net, store, opts
        self.train_set, self.val_set = list(train_set), list(val_set)
        self.normalisation, self.seed, self.scale = normalisation, int(seed), float(scale)
        self.batches = _EpochBatches(len(self.train_set), opts.images_per_batch, self.seed)
        self._fingerprint = fingerprint or {}

    def modules(self) -> dict:
        return {"syrac-regression": self.net}

    def objectives(self) -> list:
        return [Objective("count", list(self.net.parameters()), self.loss,
                          OptimConfig(name="adam", lr=self.opts.lr, weight_decay=self.opts.weight_decay))]

    def images(self, items: Sequence[NoisyImage], rng: np.random.Generator | None):
        x = to_unit([self.store.get(it.path) for it in items])
        if rng is not None and self.opts.augment:
            x = augment(x, rng, self.opts.augment_factor)
        y = torch.tensor([it.count / self.scale for it in items], dtype=torch.float32)
        dev = _device(self.net)
        return normalise(x, self.normalisation).to(dev), y.to(dev)

    def batch(self, step: int, rng: np.random.Generator):
        return self.images([self.train_set[i] for i in self.batches(step)], rng)

    def loss(self, batch, step: int):
        x, y = batch
        return F.mse_loss(self.net(x).float(), y)

    def evaluate(self) -> float:
        """RMSE (people) on the held-out noisy images (model selection)."""
        err = []
        for i in range(0, len(self.val_set), 8):
            x, y = self.images(self.val_set[i:i + 8], None)
            err.append(((self.net(x).float() - y) * self.scale).cpu().numpy())
        return float(np.sqrt(np.mean(np.concatenate(err) ** 2))) if err else 0.0

    def fingerprint(self) -> dict:
        return self._fingerprint

    def cost_key(self) -> dict:
        """What fixes the work of one step and one selection pass (the dry run's stage key: harness.stages)."""
        first = self.store.get(self.train_set[0].path).shape if self.train_set else None
        return {"backbone": self.net.backbone, "images_per_batch": self.opts.images_per_batch,
                "val_images": len(self.val_set), "image": first}


def _loop(task: Any, n_train: int, per_batch: int, opts: SyracTrainOptions, *, seed: int, salt: int, device: str,
          precision: str, checkpoint_dir: Path | None, log, name: str):
    per_epoch = max(1, math.ceil(n_train / per_batch))
    every = max(1, per_epoch // opts.evals_per_epoch)
    cfg = LoopConfig(steps=per_epoch * opts.epochs, eval_every=every,
                     checkpoint_every=every if checkpoint_dir is not None else None, precision=precision,
                     log_every=every)
    return train(task, cfg, seed=derive_seed(seed, salt), device=device, checkpoint_dir=checkpoint_dir, log=log,
                 name=name)


def train_rank(net: SyracNet, store: ImageStore, pairs: Sequence[Pair], opts: SyracTrainOptions, *,
               normalisation: str, seed: int, device: str = "cpu", precision: str = "fp32",
               checkpoint_dir: Path | None = None, log=None, about: dict | None = None) -> dict:
    """Rank pre-training of ``net`` on the ``train`` pairs, selected by the ranking loss on the ``val`` pairs; the
    head's weights stay ≥ 0 after every step. ``net`` ends with the selected weights (eval mode).

    Returns ``{"steps", "best_step", "best_val_rank_loss", "val_rank_accuracy", "train_pairs", "val_pairs",
    "seconds", "history"}``."""
    train_pairs = [p for p in pairs if p.split == "train"]
    val_pairs = [p for p in pairs if p.split == "val"] or train_pairs
    fp = {"train": asdict(opts), "normalisation": normalisation, **(about or {}),
          "pairs": content_key([[p.real, p.synthetic, p.split] for p in pairs])}
    task = RankTask(net, store, train_pairs, val_pairs, opts, normalisation=normalisation, seed=seed, fingerprint=fp)
    with nonneg_projection(net.head.weight):
        res = _loop(task, len(train_pairs), opts.pairs_per_batch, opts, seed=seed, salt=1, device=device,
                    precision=precision, checkpoint_dir=checkpoint_dir, log=log, name="syrac rank")
    net.eval()
    with torch.no_grad():
        real, syn = task.scores(val_pairs)
    return {"steps": res.steps_done, "best_step": res.best_step, "best_val_rank_loss": res.best_metric,
            "val_rank_accuracy": float(np.mean(real > syn)) if len(real) else None,
            "train_pairs": len(train_pairs), "val_pairs": len(val_pairs), "seconds": round(res.seconds, 2),
            "history": res.history}


def train_regression(net: SyracNet, store: ImageStore, noisy: Sequence[NoisyImage], opts: SyracTrainOptions, *,
                     normalisation: str, seed: int, scale: float, device: str = "cpu", precision: str = "fp32",
                     checkpoint_dir: Path | None = None, log=None, about: dict | None = None) -> dict:
    """End-to-end regression of ``net`` on the noisy set's ``train`` images, selected by RMSE on its ``val`` images.

    Returns ``{"steps", "best_step", "best_val_rmse", "train_images", "val_images", "seconds", "history"}``."""
    tr = [n for n in noisy if n.split == "train"]
    va = [n for n in noisy if n.split == "val"] or tr
    fp = {"train": asdict(opts), "normalisation": normalisation, "scale": scale, **(about or {}),
          "noisy": content_key([[n.path, n.count, n.split] for n in noisy])}
    task = RegressionTask(net, store, tr, va, opts, normalisation=normalisation, seed=seed, scale=scale,
                          fingerprint=fp)
    res = _loop(task, len(tr), opts.images_per_batch, opts, seed=seed, salt=2, device=device, precision=precision,
                checkpoint_dir=checkpoint_dir, log=log, name="syrac regression")
    net.eval()
    return {"steps": res.steps_done, "best_step": res.best_step, "best_val_rmse": res.best_metric,
            "train_images": len(tr), "val_images": len(va), "seconds": round(res.seconds, 2), "history": res.history}


__all__ = ["RankTask", "RegressionTask", "train_rank", "train_regression"]
