"""Training: the one loop (:mod:`harness.training.loop`) and its density-counter adapter
(:mod:`harness.training.density`). Importing this package does not import torch."""
from __future__ import annotations

from .density import (DensityTrainOptions, EpochExtras, ScaledCounter, TrainResult, subset,
                      train_density_counter)
from .loop import LoopConfig, LoopResult, Objective, OptimConfig, TrainTask, autocast, step_rng, train

__all__ = ["DensityTrainOptions", "EpochExtras", "ScaledCounter", "TrainResult", "subset", "train_density_counter",
           "LoopConfig", "LoopResult", "Objective", "OptimConfig", "TrainTask", "autocast", "step_rng",
           "train"]
