"""Built-in plugin: the ``source-only`` strategy, the trivial baselines, and their methods (leaderboard rows).

``source-only`` is the baseline of every cross-domain table: a counter trained on the labelled *source* domain
only (or used with its released weights), applied to the target domain unchanged; it never looks at the
target's images. :func:`fit_density_counter` is its training step as a function, so strategies that add
training inputs (PromptMix's and SPADE's synthetic images) compose it instead of subclassing.

``constant`` gives every cell its trivial baselines: ``zero`` (predicts 0) and ``source-mean`` (predicts the mean
count of the source's official train split, train and held-out val together). A number is a result only if it
beats them (the leaderboard marks ‡ every cell whose MAE is not below the better of the two).

Methods:

- ``source-only-mcnn-sha`` / ``-mcnn-shb`` / ``-csrnet-sha``: the released weights as they are (no training).
- ``source-only-rescsrnet``: PromptMix's lightweight ResCSRNet trained in the run on the source's train split,
  selected on the source's val split. ``paper``: the PromptMix report's Table III (full-size images, batch 1, 500
  epochs, AdamW lr 1e-3 / wd 1e-4, × 0.99 per epoch, pixel MSE, full width). ``smoke``: :data:`SMOKE_TRAIN`
  (width 0.125, CPU).
- ``zero``, ``source-mean``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..hookspecs import hookimpl
from ..options import component
from ..specs import MethodSpec, StrategySpec
from ..training.density import DensityTrainOptions, EpochExtras
from ..types import Prediction, Provenance

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


@dataclass
class SourceOnlyOptions:
    """Options of ``source-only``.

    Attributes:
        counter: registry name of the counter (e.g. ``rescsrnet``, ``csrnet-sha``).
        pretrained: use the counter's weights as they are, no training (selection split ``none (pretrained)``).
        counter_options: keyword options of the counter's factory (e.g. ``{"width": 0.25}``).
        train: :class:`~harness.training.density.DensityTrainOptions` (required unless ``pretrained``).
    """

    counter: str = component("counter")
    pretrained: bool = False
    counter_options: dict = field(default_factory=dict)
    train: DensityTrainOptions | None = None

    def validate(self) -> list[str]:
        if self.pretrained and self.train is not None:
            return [f"'train' given with pretrained=true for counter {self.counter!r}; drop 'train' or set "
                    f"pretrained=false"]
        if not self.pretrained and self.train is None:
            return [f"counter {self.counter!r} is trained, so option 'train' (with 'epochs') is required "
                    f"(or set pretrained=true)"]
        return []


def fit_density_counter(ctx: Any, counter: str, counter_options: dict, train: DensityTrainOptions, *,
                        extras: EpochExtras | None = None, seed_init: bool = True) -> Any:
    """Build ``counter`` through the cell, train it on the source's train split (selected on its val split) with
    :func:`harness.training.train_density_counter`, and record the facts in ``ctx.provenance_notes``.

    Args:
        ctx: the :class:`harness.CellContext`.
        counter: registered counter name; ``counter_options`` its factory options (``seed`` defaults to the
            cell seed when the factory takes one, for a seeded random init).
        train: the training options.
        extras: samples added every epoch (e.g. pseudo-labelled synthetic images).

    Returns:
        the trained :class:`harness.training.ScaledCounter` with provenance ``trained-in-run``.
    """
    import inspect

    from ..training.density import train_density_counter

    opts = dict(counter_options)
    factory = ctx.registries.counters.get(counter).factory
    if seed_init and "seed" in inspect.signature(factory).parameters and "seed" not in opts:
        opts["seed"] = ctx.seed
    model = ctx.build("counter", counter, **opts)
    init = getattr(model, "provenance", None) or Provenance("random-init")
    result = train_density_counter(model, ctx.source.samples("train"), ctx.source.samples("val"), train,
                                   seed=ctx.seed, device=ctx.device, precision=ctx.precision,
                                   checkpoint_dir=Path(ctx.workdir) / "checkpoints", log=ctx.log, extras=extras,
                                   workers=getattr(ctx, "workers", 0))
    trained = result.counter
    trained.provenance = Provenance("trained-in-run", trained_on=frozenset({ctx.source_name}) | init.trained_on,
                                    licence=init.licence)
    ctx.provenance_notes.update({
        "selection_split": "source val", "trained_in_run": True, "init_weights": init.weights,
        "best_epoch": result.best_epoch, "best_val_mae": result.best_val_mae, "epochs": result.epochs_completed,
        "train_seconds": round(result.seconds, 2), "input_scale": train.scale, "max_side": train.max_side})
    return trained


class SourceOnly:
    """Train (or load) a counter on the source domain only (options: :class:`SourceOnlyOptions`)."""

    def __init__(self, options: SourceOnlyOptions):
        self.opts = options

    def fit(self, ctx) -> Any:
        """The source-only counter for ``ctx`` (trained unless ``pretrained``); records ``selection_split``."""
        o = self.opts
        if o.pretrained:
            counter = ctx.build("counter", o.counter, **o.counter_options)
            ctx.provenance_notes.update({"selection_split": "none (pretrained)", "trained_in_run": False})
            return counter
        return fit_density_counter(ctx, o.counter, o.counter_options, o.train)


@dataclass
class ConstantOptions:
    """Options of ``constant``: ``value`` is ``zero`` or ``source-mean`` (the source train split's mean count)."""

    value: Literal["zero", "source-mean"] = "zero"


class ConstantCounter:
    """Predicts the same count for every image; count-only (``localises = False``: no mAP)."""

    localises = False

    def __init__(self, count: float, name: str, provenance: Provenance):
        self.count, self.name, self.provenance = float(count), name, provenance

    def predict(self, image: np.ndarray) -> Prediction:
        return Prediction(count=self.count)


class Constant:
    """The trivial baselines (options: :class:`ConstantOptions`)."""

    def __init__(self, options: ConstantOptions):
        self.opts = options

    def fit(self, ctx) -> ConstantCounter:
        ctx.provenance_notes["selection_split"] = "none (constant)"
        if self.opts.value == "zero":
            return ConstantCounter(0.0, "zero", Provenance("constant 0"))
        refs = list(ctx.source.samples("train")) + list(ctx.source.samples("val"))
        counts = [ref.load().count for ref in refs]
        mean = float(np.mean(counts))
        ctx.provenance_notes.update({"source_mean_count": mean, "source_images": len(counts)})
        ctx.log.info("source-mean: %.3f people per image over %d %s train images", mean, len(counts), ctx.source_name)
        return ConstantCounter(mean, "source-mean", Provenance(f"mean count of {ctx.source_name} train",
                                                               trained_on=frozenset({ctx.source_name})))


@hookimpl
def harness_register_strategies(register):
    register(StrategySpec(
        name="source-only", factory=SourceOnly, options=SourceOnlyOptions, aliases=("source_only", "sourceonly"),
        description="train (or load) a counter on the labelled source domain only; apply it to the target as is",
        tiny_options={"counter": "rescsrnet", "counter_options": {"width": 0.125}, "train": TINY_TRAIN}))
    register(StrategySpec(
        name="constant", factory=Constant, options=ConstantOptions,
        description="trivial baselines: predict 0, or the source train split's mean count",
        tiny_options={"value": "source-mean"}))


@hookimpl
def harness_register_methods(register):
    for counter, trained_on in (("mcnn-sha", "SHA"), ("mcnn-shb", "SHB"), ("csrnet-sha", "SHA")):
        opts = {"counter": counter, "pretrained": True}
        register(MethodSpec(
            name=f"source-only-{counter}", strategy="source-only", profiles={"smoke": opts, "paper": opts},
            description=f"{counter} with its released weights (trained on {trained_on} labels), no adaptation"))
    register(MethodSpec(
        name="source-only-rescsrnet", strategy="source-only",
        profiles={
            "smoke": {"counter": "rescsrnet", "counter_options": {"width": 0.125}, "train": dict(SMOKE_TRAIN)},
            "paper": {"counter": "rescsrnet", "counter_options": {"width": 1.0}, "train": dict(PAPER_TRAIN)},
        },
        description="ResCSRNet trained on the source train split, selected on source val "
                    "(paper: PromptMix report Table III)"))
    for value, what in (("zero", "predicts 0 for every image"),
                        ("source-mean", "predicts the source train split's mean count for every image")):
        opts = {"value": value}
        register(MethodSpec(name=value, strategy="constant", profiles={"smoke": opts, "paper": opts},
                            description=f"trivial baseline: {what}"))
