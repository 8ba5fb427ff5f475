"""Built-in plugin: the ``source-only`` strategy and its methods (leaderboard rows).

``source-only`` is the baseline of every cross-domain table: a counter trained on the labelled *source* domain
only (or used with its released weights), applied to the target domain unchanged; it never looks at the
target's images (``uses_target_images=False``).

Methods:

- ``source-only-mcnn-sha`` / ``source-only-mcnn-shb`` / ``source-only-csrnet-sha``: the released weights
  as they are (no training; same options in both profiles). Their labels come from SHA / SHB, which the
  results flag when the target is that dataset.
- ``source-only-rescsrnet``: PromptMix's lightweight ResCSRNet trained in the run on the source's train
  split, selected on the source's val split.

  * ``paper``: the PromptMix report's Table III (Biørirth et al.): full-size images, batch 1, 500 epochs,
    AdamW lr 1e-3 / wd 1e-4, StepLR step 1 γ 0.99, pixel MSE; full width.
  * ``smoke`` (CPU, minutes): back-end width 0.125, images shrunk so the longer side is at most 512 px
    (ShanghaiTech 1024×768 → 512×384, i.e. scale 0.5; the 320×240 synthetic images keep scale 1, so the
    same options suit both), random 128-px crops, 40 train / 8 val images (seeded subsets), 10 epochs,
    unscaled targets as in the paper (400 optimiser steps). Prediction applies the same resize (count unchanged).
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..specs import MethodSpec, Provenance, StrategySpec

#: train_density_counter options the strategy takes from the cell, not from the method's options
_FROM_CELL = ("seed", "device", "checkpoint_dir", "log")

SMOKE_TRAIN = {"epochs": 10, "crop_size": 128, "scale": 1.0, "max_side": 512, "max_train_images": 40,
               "max_val_images": 8, "density_scale": 1.0, "lr": 1e-3, "weight_decay": 1e-4, "gamma": 0.99,
               "batch_size": 1}
#: PromptMix report Table III (batch 1, lr 1e-3, wd 1e-4, 500 epochs, AdamW, step 1, γ 0.99, MSE)
PAPER_TRAIN = {"epochs": 500, "lr": 1e-3, "weight_decay": 1e-4, "gamma": 0.99, "batch_size": 1}


class SourceOnly:
    """Train (or load) a counter on the source domain only.

    Args:
        counter: registry name of the counter (e.g. ``"rescsrnet"``, ``"csrnet-sha"``).
        pretrained: use the counter's weights as they are, no training (the selection split is then
            ``"none (pretrained)"``).
        counter_options: keyword options for the counter's factory (e.g. ``{"width": 0.25}``).
        train: keyword options of :func:`harness.training.train_density_counter` (``epochs`` required);
            ``seed``, ``device``, ``checkpoint_dir`` and ``log`` come from the cell.

    Raises:
        ConfigError: missing/unknown options, or ``train`` given together with ``pretrained=True``.
    """

    def __init__(self, counter: str | None = None, pretrained: bool = False,
                 counter_options: dict | None = None, train: dict | None = None):
        if not counter or not isinstance(counter, str):
            raise ConfigError("strategy source-only needs option 'counter' (a registered counter name, "
                              "e.g. 'rescsrnet')")
        self.counter = counter
        self.pretrained = bool(pretrained)
        self.counter_options = dict(counter_options or {})
        self.train = dict(train or {})
        if self.pretrained and self.train:
            raise ConfigError(f"strategy source-only: 'train' options given with pretrained=true for counter "
                              f"{counter!r}; drop 'train' or set pretrained=false")
        if not self.pretrained:
            from ..training import train_density_counter

            allowed = set(inspect.signature(train_density_counter).parameters) - {
                "counter", "train_refs", "val_refs", *_FROM_CELL}
            unknown = sorted(set(self.train) - allowed)
            if unknown:
                raise ConfigError(f"strategy source-only: unknown train option(s) {', '.join(unknown)}; "
                                  f"allowed: {', '.join(sorted(allowed))} (seed/device/checkpoints come from the cell)")
            if "epochs" not in self.train:
                raise ConfigError(f"strategy source-only: counter {counter!r} is trained, so option "
                                  f"'train' needs 'epochs' (or set pretrained=true)")

    def _build(self, ctx) -> Any:
        factory = ctx.registries.counters.get(self.counter).factory
        options = dict(self.counter_options)
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):
            params = {}
        if not self.pretrained and "seed" in params and "seed" not in options:
            options["seed"] = ctx.seed  # seeded random init, independent of the global RNG
        return factory(device=ctx.device, **options)

    def extra_training(self, ctx) -> tuple[dict, frozenset]:
        """Hook for strategies built on this one (e.g. PromptMix's data mixing): extra keyword arguments for
        :func:`harness.training.train_density_counter` (e.g. ``extra_samples``) and the datasets whose labels
        reach the counter through them (merged into its provenance). Source-only adds nothing."""
        return {}, frozenset()

    def fit(self, ctx) -> Any:
        """Return the source-only counter for ``ctx`` (trains when not ``pretrained``).

        Records in ``ctx.provenance_notes``: ``selection_split`` (``"source val"`` or ``"none
        (pretrained)"``), and when trained ``best_epoch``, ``best_val_mae``, ``epochs``, ``train_seconds``,
        ``init_weights``, ``input_scale``/``max_side``.
        """
        counter = self._build(ctx)
        if self.pretrained:
            ctx.provenance_notes["selection_split"] = "none (pretrained)"
            ctx.provenance_notes["trained_in_run"] = False
            return counter
        from ..training import train_density_counter

        init = getattr(counter, "provenance", None) or Provenance("random-init")
        extra_kwargs, extra_labels = self.extra_training(ctx)
        result = train_density_counter(
            counter, ctx.source.samples("train"), ctx.source.samples("val"), seed=ctx.seed, device=ctx.device,
            checkpoint_dir=Path(ctx.workdir) / "checkpoints", log=ctx.log, **self.train, **extra_kwargs)
        trained = result.counter
        trained.provenance = Provenance(
            "trained-in-run", trained_on=frozenset({ctx.source_name}) | init.trained_on | frozenset(extra_labels),
            licence=init.licence)
        ctx.provenance_notes.update({
            "selection_split": "source val", "trained_in_run": True, "init_weights": init.weights,
            "best_epoch": result.best_epoch, "best_val_mae": result.best_val_mae,
            "epochs": result.epochs_completed, "train_seconds": round(result.seconds, 2),
            "input_scale": result.scale, "max_side": result.max_side})
        return trained


@hookimpl
def harness_register_strategies(register):
    register(StrategySpec(
        name="source-only", factory=SourceOnly, aliases=("source_only", "sourceonly"),
        uses_target_images=False,
        description="train (or load) a counter on the labelled source domain only; apply it to the target as is"))


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
