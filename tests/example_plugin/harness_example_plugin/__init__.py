"""Example crowd-harness plugin: the *mean-count* baseline.

The simplest honest cross-domain baseline: predict, for every target image, the mean head count of the
source domain's labelled train images (a count-only counter: no density map, no points, so the runner
skips localisation metrics). It shows the three pieces a method plugin provides:

- a counter (``example-mean-counter``): ``factory(device="cpu", count=0.0) -> Counter``;
- a strategy (``example-mean``) with its options dataclass (``MeanCountOptions``, parsed and checked when a run is
  planned): ``fit(ctx)`` reads ``n_train`` source train labels and returns the counter, recording that its
  "weights" were trained on the source's labels (``Provenance.trained_on``);
- a method (``example-mean``, a leaderboard row): the strategy plus per-profile options.

Registered through ``[project.entry-points.harness] example = "harness_example_plugin"``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from harness import CounterSpec, MethodSpec, Prediction, Provenance, StrategySpec, hookimpl

__version__ = "0.1.0"


class MeanCounter:
    """Predicts the same count for every image: ``count`` people (count-only: ``localises = False``)."""

    name = "example-mean-counter"
    localises = False

    def __init__(self, count: float = 0.0, trained_on: frozenset[str] = frozenset()):
        self.count = float(count)
        self.provenance = Provenance(weights="mean-count", trained_on=frozenset(trained_on))

    def predict(self, image: np.ndarray) -> Prediction:
        """``image``: ``(H, W, 3) uint8`` RGB (only checked, not used)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        return Prediction(count=self.count)


@dataclass
class MeanCountOptions:
    """``n_train``: how many source train images to average (None: all of them)."""

    n_train: int | None = None

    def validate(self) -> list[str]:
        return [] if self.n_train is None or self.n_train >= 1 else [f"n_train must be >= 1, got {self.n_train}"]


class MeanCountStrategy:
    """Fits :class:`MeanCounter` on the mean count of the first ``n_train`` source train images. Uses no target
    images."""

    def __init__(self, options: MeanCountOptions):
        self.n_train = options.n_train

    def fit(self, ctx) -> MeanCounter:
        refs = ctx.source.samples("train")
        refs = refs[: self.n_train] if self.n_train else refs
        counts = [ref.load().count for ref in refs]
        mean = float(np.mean(counts)) if counts else 0.0
        ctx.log.info("example-mean: mean count %.2f over %d %s train images", mean, len(counts), ctx.source_name)
        ctx.provenance_notes["selection_split"] = "none"
        return MeanCounter(mean, frozenset({ctx.source_name}))


@hookimpl
def harness_register_counters(register):
    register(CounterSpec("example-mean-counter", lambda device="cpu", count=0.0: MeanCounter(count),
                         description="constant count (example plugin)", tiny_options={"count": 1.0}))


@hookimpl
def harness_register_strategies(register):
    register(StrategySpec("example-mean", MeanCountStrategy, options=MeanCountOptions, tiny_options={"n_train": 2},
                          description="mean source count (example plugin)"))


@hookimpl
def harness_register_methods(register):
    register(MethodSpec("example-mean", "example-mean", profiles={"smoke": {"n_train": 5}, "paper": {}},
                        description="mean-count baseline (example plugin)"))
