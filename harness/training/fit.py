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
#: PromptMix report §IV-C / Table IV's protocol on top of a training profile: the 300 labelled ShanghaiTech A images
#: split 240 / 60, the model read after its last epoch ("after 200 epochs", no best-epoch selection), its train MAE
#: measured; with :data:`TABLE4_POOL` the synthetic images are split at the same ratio into training and validation
TABLE4_TRAIN = {"select": "last", "val_fraction": 0.2, "train_mae": True}
#: Table IV's pool: labels from the annotator trained on the target ("the one trained on SHTA", §IV-B-3: flagged †),
#: synthetic images in validation at the training mix's ratio
TABLE4_POOL = {"exclude_target_trained": False, "keep": "target", "synthetic_in_val": True}
#: Table IV's annotators: "two pre-trained SASNet architectures, where one is trained on SHTA and the other on SHTB"
#: (§IV-B-3); in ``smoke`` the released CSRNet-SHA and MCNN-SHB weights stand in (SASNet's files are not shipped)
TABLE4_ANNOTATORS = {"paper": ("sasnet-sha", "sasnet-shb"), "smoke": ("csrnet-sha", "mcnn-shb")}


def table4_profiles(smoke: dict, paper: dict, **pool: Any) -> dict:
    """A method's ``smoke`` and ``paper`` options under the PromptMix report's Table IV protocol (PromptMix and SPADE
    rows): :data:`TABLE4_TRAIN` (``paper``: 200 epochs), :data:`TABLE4_POOL` with :data:`TABLE4_ANNOTATORS`;
    ``pool`` adds or overrides pool options (``r_mix``, ``max_synthetic``)."""
    return {"smoke": {**smoke, "train": {**smoke["train"], **TABLE4_TRAIN},
                      "pool": {**TABLE4_POOL, "annotators": list(TABLE4_ANNOTATORS["smoke"]), **pool}},
            "paper": {**paper, "train": {**paper["train"], "epochs": 200, **TABLE4_TRAIN},
                      "pool": {**TABLE4_POOL, "annotators": list(TABLE4_ANNOTATORS["paper"]), **pool}}}


#: the tiny options of the contract tests (seconds on the synthetic datasets)
TINY_TRAIN = {"epochs": 1, "crop_size": 64, "max_side": 128, "max_train_images": 2, "max_val_images": 1}


def source_splits(ctx: Any, train: DensityTrainOptions) -> tuple[list, list]:
    """``(train refs, val refs)`` of the source: its own train / val splits, or (``train.val_fraction``) its
    labelled train + val images split again with that share held out (:func:`harness.data.splits.split_train_val`,
    seed 0: the split is part of the protocol, not of the cell's seed)."""
    train_refs, val_refs = list(ctx.source.samples("train")), list(ctx.source.samples("val"))
    if train.val_fraction is None:
        return train_refs, val_refs
    from ..data.splits import split_train_val

    return split_train_val(sorted(train_refs + val_refs, key=lambda r: r.key), train.val_fraction, seed=0)


def fit_density_counter(ctx: Any, counter: str, counter_options: dict, train: DensityTrainOptions, *,
                        extras: EpochExtras | None = None, val_extras: Sequence[tuple[Any, float]] = (),
                        splits: tuple[list, list] | None = None) -> Any:
    """Build ``counter`` through the cell, train it on the source's train split (selected on its val split, or the
    last epoch with ``train.select: last``) with :func:`harness.training.train_density_counter`, and record the
    facts in ``ctx.provenance_notes`` (the val MAE of the last evaluation, the train MAE where measured).

    Args:
        ctx: the :class:`harness.CellContext`.
        counter: registered counter name; ``counter_options`` its factory options (a counter that declares
            ``seed`` in its spec's ``build_args`` gets the cell seed unless the options give one: a seeded init).
        train: the training options.
        extras: samples added every epoch (e.g. pseudo-labelled synthetic images).
        val_extras: validation images added to the source's ``(image, count)`` (e.g. held-out synthetic ones).
        splits: the ``(train, val)`` refs (default :func:`source_splits`).

    Returns:
        the trained :class:`harness.training.ScaledCounter` with provenance ``trained-in-run``.
    """
    from .density import train_density_counter

    model = ctx.build("counter", counter, **counter_options)
    init = getattr(model, "provenance", None) or Provenance("random-init")
    train_refs, val_refs = splits or source_splits(ctx, train)
    result = train_density_counter(model, train_refs, val_refs, train,
                                   seed=ctx.seed, device=ctx.device, precision=ctx.precision,
                                   checkpoint_dir=Path(ctx.workdir) / "checkpoints", log=ctx.log, extras=extras,
                                   workers=ctx.workers, val_extras=val_extras)
    trained = result.counter
    trained.provenance = Provenance("trained-in-run", trained_on=frozenset({ctx.source_name}) | init.trained_on,
                                    licence=init.licence)
    selection = "source val" if train.val_fraction is None else f"source val ({len(val_refs)} held out of " \
        f"{len(train_refs) + len(val_refs)})"
    if val_extras:
        selection += f" + {len(val_extras)} synthetic"
    if train.select == "last":
        selection = f"none (last epoch; val: {selection})"
    ctx.provenance_notes.update({
        "selection_split": selection, "trained_in_run": True, "init_weights": init.weights,
        "last_val_mae": result.last_val_mae, "train_mae": result.train_mae,
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
    train images, capped by ``train.max_train_images``). With ``pool.synthetic_in_val`` the usable pool is split at
    the real split's ratio (seeded) and ``r_mix × n_val`` of the held-out part join the validation images (the
    PromptMix report's 80 / 20 split "with the real-to-synthetic ratio kept the same for both").

    Args:
        ctx: the cell. method: the method's name (logs and the pool's record). counter, counter_options, train:
            as :func:`fit_density_counter`. pool: :class:`harness.PoolOptions` (annotators, q, filter, r_mix).
        synthesise: called only when ``r_mix > 0``.

    Returns:
        the trained counter (provenance ``trained-in-run``); ``ctx.provenance_notes["r_mix"]`` is recorded.

    Raises:
        ConfigError: the pool's annotators cannot serve the cell (:func:`harness.synthetic_pool.choose_annotators`),
            raised before ``synthesise()`` captions or builds anything.
    """
    from ..synthetic_pool import build_pool, choose_annotators, pool_extras, pool_val_images, split_pool

    ctx.provenance_notes["r_mix"] = pool.r_mix
    extras, val_extras = None, []
    splits = source_splits(ctx, train)
    if pool.r_mix == 0:
        ctx.log.info("%s: r_mix = 0, no synthetic images (the baseline)", method)
    else:
        chosen = choose_annotators(ctx, pool)  # an impossible pool (keep: target, none trained on it) before captioning
        generator, requests, about = synthesise()
        built = build_pool(ctx, generator, requests, pool, about={"method": method, **about}, chosen=chosen)
        n_train, n_val = len(splits[0]), len(splits[1])
        if train.max_train_images is not None:
            n_train = min(n_train, train.max_train_images)
        if train.max_val_images is not None:
            n_val = min(n_val, train.max_val_images)
        held = []
        if pool.synthetic_in_val:
            built, held = split_pool(built, len(splits[1]) / (len(splits[0]) + len(splits[1])), seed=ctx.seed)
            val_extras = pool_val_images(held, pool.r_mix, n_val, seed=ctx.seed)
            ctx.provenance_notes["synthetic_in_val"] = len(val_extras)
        extras = pool_extras(ctx, built, pool.r_mix, n_train)
    return fit_density_counter(ctx, counter, counter_options, train, extras=extras, val_extras=val_extras,
                               splits=splits)


__all__ = ["fit_density_counter", "fit_with_synthetic", "source_splits", "TABLE4_TRAIN", "TABLE4_POOL",
           "TABLE4_ANNOTATORS", "table4_profiles", "SMOKE_TRAIN", "PAPER_TRAIN", "TINY_TRAIN"]
