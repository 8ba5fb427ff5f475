"""Built-in plugin: the ``source-only`` strategy, the trivial baselines, and their methods (leaderboard rows).

``source-only`` is the baseline of every cross-domain table: a counter trained on the labelled *source* domain
only (or used with its released weights), applied to the target domain unchanged; it never looks at the
target's images. :func:`harness.fit_density_counter` (core: :mod:`harness.training.fit`) is its training step, so strategies that add
training inputs (PromptMix's and SPADE's synthetic images) compose it instead of subclassing.

``constant`` gives every cell its trivial baselines: ``zero`` (predicts 0) and ``source-mean`` (predicts the mean
count of the source's official train split, train and held-out val together). A number is a result only if it
beats them (the leaderboard marks ‡ every cell whose MAE is not below the better of the two).

Methods:

- ``source-only-mcnn-sha`` / ``-mcnn-shb`` / ``-csrnet-sha``: the released weights as they are (no training).
- ``source-only-rescsrnet``: PromptMix's lightweight ResCSRNet trained in the run on the source's train split,
  selected on the source's val split. ``paper``: the PromptMix report's Table III (full-size images, batch 1, 500
  epochs, AdamW lr 1e-3 / wd 1e-4, × 0.99 per epoch, pixel MSE, full width). ``smoke``: :data:`SMOKE_TRAIN`
  (width 0.125, CPU; :mod:`harness.training.fit`).
- ``zero``, ``source-mean``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..hookspecs import hookimpl
from ..options import component
from ..specs import MethodSpec, StrategySpec
from ..training.density import DensityTrainOptions
from ..training.fit import PAPER_TRAIN, SMOKE_TRAIN, TINY_TRAIN, fit_density_counter
from ..types import Prediction, Provenance

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
            # the report's student: ResNet-18 head pretrained on ImageNet (§III-E), Table III training
            "paper": {"counter": "rescsrnet", "counter_options": {"width": 1.0, "init": "imagenet"},
                      "train": dict(PAPER_TRAIN)},
        },
        description="ResCSRNet trained on the source train split, selected on source val "
                    "(paper: PromptMix report Table III)"))
    for value, what in (("zero", "predicts 0 for every image"),
                        ("source-mean", "predicts the source train split's mean count for every image")):
        opts = {"value": value}
        register(MethodSpec(name=value, strategy="constant", profiles={"smoke": opts, "paper": opts},
                            description=f"trivial baseline: {what}"))
