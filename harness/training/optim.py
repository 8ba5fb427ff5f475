"""Optimisers and learning-rate schedules of the training loop (:func:`harness.training.loop.train`): one
:class:`OptimConfig` per objective, built into a torch optimiser and a ``LambdaLR`` schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("constant", "step", "cosine", "linear")


@dataclass
class OptimConfig:
    """One optimiser and its schedule.

    Attributes:
        name: ``adam`` | ``adamw`` | ``sgd``.
        lr: base learning rate (> 0).
        weight_decay: L2 (Adam, SGD) or decoupled (AdamW) weight decay (>= 0).
        betas: Adam's (β1, β2), each in [0, 1) (GauGAN's TTUR: (0, 0.9)).
        momentum: SGD momentum.
        scheduler: ``constant``; ``step`` (× ``gamma`` every ``step_size`` steps, torch ``StepLR``);
            ``cosine`` (to 0 over the run); ``linear`` (to 0 over the run). Any of them after ``warmup_steps``
            of linear warm-up; ``cosine`` and ``linear`` hold the rate until ``decay_start`` (GauGAN's ``niter``
            constant then ``niter_decay`` linear).
        step_size, gamma: the ``step`` scheduler's period (optimiser steps) and factor.
        warmup_steps: linear warm-up from 0.
        grad_clip: clip the global gradient norm of this objective's parameters (None: no clipping).
    """

    name: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9
    scheduler: str = "constant"
    step_size: int = 1
    gamma: float = 1.0
    warmup_steps: int = 0
    decay_start: int = 0
    grad_clip: float | None = None

    def validate(self) -> list[str]:
        problems = []
        if self.name not in OPTIMIZERS:
            problems.append(f"optimizer {self.name!r} is not one of {', '.join(OPTIMIZERS)}")
        if self.scheduler not in SCHEDULERS:
            problems.append(f"scheduler {self.scheduler!r} is not one of {', '.join(SCHEDULERS)}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            problems.append(f"betas must be two numbers in [0, 1), got {self.betas!r}")
        if self.step_size < 1 or self.warmup_steps < 0 or self.decay_start < 0:
            problems.append("step_size must be >= 1, warmup_steps and decay_start >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            problems.append(f"grad_clip must be > 0 or null, got {self.grad_clip!r}")
        return problems



def make_optimizer(params, cfg: OptimConfig):
    """The torch optimiser of ``cfg`` over ``params`` (Adam, AdamW with decoupled decay, SGD with momentum)."""
    import torch

    params = list(params)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def make_scheduler(opt, cfg: OptimConfig, total: int):
    """``LambdaLR`` of ``cfg``'s schedule over ``total`` optimiser steps: linear warm-up over ``warmup_steps``, then
    constant, ``step`` (× ``gamma`` every ``step_size``), ``cosine`` or ``linear`` to 0 (the last two held until
    ``decay_start``; GauGAN's ``niter`` / ``niter_decay``)."""
    import torch

    warm = int(cfg.warmup_steps)
    start = max(warm, int(cfg.decay_start)) if cfg.scheduler in ("cosine", "linear") else warm

    def factor(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if step < start:
            return 1.0
        s = step - start
        span = max(1, total - start)
        if cfg.scheduler == "step":
            return cfg.gamma ** (s // cfg.step_size)
        if cfg.scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, s / span)))
        if cfg.scheduler == "linear":
            return max(0.0, 1 - s / span)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


__all__ = ["OPTIMIZERS", "SCHEDULERS", "OptimConfig", "make_optimizer", "make_scheduler"]
