"""The core's counter fits that strategies compose (docs/design.md §5): train a registered density counter on the
source domain (:func:`fit_density_counter`), optionally with a pool of pseudo-labelled synthetic images mixed into
every epoch (:func:`fit_with_synthetic`, the shared end of PromptMix's and SPADE's ``fit``), and the training
profiles of the lightweight counter (:data:`SMOKE_TRAIN`, :data:`PAPER_TRAIN`, :data:`TINY_TRAIN`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..types import Generator, GenerationRequest, Provenance
from .density import DensityTrainOptions, EpochExtras

if TYPE_CHECKING:
    from ..context import CellContext
    from ..synthetic_pool import PoolOptions

#: CPU smoke profile of the trained lightweight counter (about 7 minutes per cell on 2 cores). Why it learns where
#: the earlier 400-step profile (unscaled targets, 128-px crops, batch 1) predicted a constant: the density targets
#: are scaled by 100 (a stride-8 cell of a half-size ShanghaiTech B image holds ~0.04 people: the unscaled MSE
#: gradients vanish), 256-px crops of half-size images with 2 per step (BatchNorm sees a real batch), 1200 steps,
#: the learning rate × 0.95 per epoch, and the model selected on the EMA (0.99) of the weights, which smooths the
#: noisy batch-of-2 steps. Measured in docs/design.md §14 and leaderboards/shtech-source-only.md.
SMOKE_TRAIN = {"epochs": 40, "batch_size": 2, "crop_size": 256, "scale": 1.0, "max_side": 512,
               "max_train_images": 60, "max_val_images": 20, "density_scale": 100.0, "lr": 1e-3,
               "weight_decay": 1e-4, "gamma": 0.95, "ema_decay": 0.99}
#: PromptMix report Table III (batch 1, lr 1e-3, wd 1e-4, 500 epochs, AdamW, step 1, γ 0.99, MSE)
PAPER_TRAIN = {"epochs": 500, "lr": 1e-3, "weight_decay": 1e-4, "gamma": 0.99, "batch_size": 1}
#: the tiny options of the contract tests (seconds on the synthetic datasets)
TINY_TRAIN = {"epochs": 1, "crop_size": 64, "max_side": 128, "max_train_images": 2, "max_val_images": 1}


def fit_density_counter(ctx: Any, counter: str, counter_options: dict, train: DensityTrainOptions, *,
                        extras: EpochExtras | None = None) -> Any:
    """Build ``counter`` through the cell, train it on the source's train split (selected on its val split) with
    :func:`harness.training.train_density_counter`, and record the facts in ``ctx.provenance_notes``.

    Args:
        ctx: the :class:`harness.CellContext`.
        counter: registered counter name; ``counter_options`` its factory options (a counter that declares
            ``seed`` in its spec's ``build_args`` gets the cell seed unless the options give one: a seeded init).
        train: the training options.
        extras: samples added every epoch (e.g. pseudo-labelled synthetic images).

    Returns:
        the trained :class:`harness.training.ScaledCounter` with provenance ``trained-in-run``.
    """
    from .density import train_density_counter

    model = ctx.build("counter", counter, **counter_options)
    init = getattr(model, "provenance", None) or Provenance("random-init")
    result = train_density_counter(model, ctx.source.samples("train"), ctx.source.samples("val"), train,
                                   seed=ctx.seed, device=ctx.device, precision=ctx.precision,
                                   checkpoint_dir=Path(ctx.workdir) / "checkpoints", log=ctx.log, extras=extras,
                                   workers=ctx.workers)
    trained = result.counter
    trained.provenance = Provenance("trained-in-run", trained_on=frozenset({ctx.source_name}) | init.trained_on,
                                    licence=init.licence)
    ctx.provenance_notes.update({
        "selection_split": "source val", "trained_in_run": True, "init_weights": init.weights,
        "best_epoch": result.best_epoch, "best_val_mae": result.best_val_mae, "epochs": result.epochs_completed,
        "train_seconds": round(result.seconds, 2), "input_scale": train.scale, "max_side": train.max_side})
    return trained


def fit_with_synthetic(ctx: "CellContext", method: str, counter: str, counter_options: dict,
                       train: DensityTrainOptions, pool: "PoolOptions",
                       synthesise: Callable[[], tuple[Generator, Sequence[GenerationRequest], dict]]) -> Any:
    """Source-only training with synthetic images mixed in: the one way a generative method ends its ``fit``.

    With ``pool.r_mix == 0`` nothing is generated and the counter trains exactly as the ``source-only`` baseline.
    Otherwise ``synthesise()`` returns ``(generator, requests, about)``; the requests go through the shared
    synthetic-data pipeline (:func:`harness.build_pool`: generate (cached), annotate, q of eq. 4, filter,
    pseudo-label; ``about`` and ``{"method": method}`` are recorded with the pool), and
    ``r_mix × n_real`` synthetic samples join every epoch (:func:`harness.pool_extras`; ``n_real``: the source's
    train images, capped by ``train.max_train_images``).

    Args:
        ctx: the cell. method: the method's name (logs and the pool's record). counter, counter_options, train:
            as :func:`fit_density_counter`. pool: :class:`harness.PoolOptions` (annotators, q, filter, r_mix).
        synthesise: called only when ``r_mix > 0``.

    Returns:
        the trained counter (provenance ``trained-in-run``); ``ctx.provenance_notes["r_mix"]`` is recorded.
    """
    from ..synthetic_pool import build_pool, pool_extras

    ctx.provenance_notes["r_mix"] = pool.r_mix
    extras = None
    if pool.r_mix == 0:
        ctx.log.info("%s: r_mix = 0, no synthetic images (the baseline)", method)
    else:
        generator, requests, about = synthesise()
        built = build_pool(ctx, generator, requests, pool, about={"method": method, **about})
        n_train = len(ctx.source.samples("train"))
        cap = train.max_train_images
        extras = pool_extras(ctx, built, pool.r_mix, min(n_train, cap) if cap is not None else n_train)
    return fit_density_counter(ctx, counter, counter_options, train, extras=extras)


__all__ = ["fit_density_counter", "fit_with_synthetic", "SMOKE_TRAIN", "PAPER_TRAIN", "TINY_TRAIN"]
