"""harness-dmap's hook implementations (entry point ``dmap`` of the ``harness`` group).

Strategy ``dmap`` (:mod:`harness_dmap.strategy`). Methods (one leaderboard row per system of the report):

- ``dmap-nopool``: the report's latest model (§8, the no-pooling network) on circle maps — its results (§13);
- ``dmap-vgg``: its first model (§7, ImageNet VGG-16 layers + × 4 up-sampling) on circle maps — reported as
  predicting empty maps;
- ``dmap-nopool-gaussian``: the latest model on the Gaussian maps the report proposes as the fix (§11).

Profiles: ``paper`` — the report's sizes (224 × 224, width 1, regressor 4028 × 3, 2000 training images, §9);
optimiser, batch and epochs are not given (ours). ``smoke`` — CPU minutes: 64 × 64 inputs, quarter-width networks,
a 128-unit regressor, 60 training images (stated departures; the architecture is the report's).
"""
from __future__ import annotations

from harness import MethodSpec, StrategySpec, hookimpl

#: the harness plugin API this plugin is written for (harness.hookspecs.API_VERSION)
HARNESS_API = 1

PAPER = {"width": 1.0, "input_size": 224, "regressor_hidden": 4028, "regressor_layers": 3, "train_images": 2000,
         "val_images": None, "batch_size": 8, "map_epochs": 20, "regressor_epochs": 20, "map_lr": 1e-3,
         "regressor_lr": 1e-4, "radius": 2.0, "sigma": 2.0, "checkpoint_every": 500}
SMOKE = {"width": 0.25, "vgg_init": "random", "input_size": 64, "radius": 1.0, "sigma": 1.0,
         "regressor_hidden": 128, "regressor_layers": 3, "train_images": 60, "val_images": 20, "batch_size": 8,
         "map_epochs": 15, "regressor_epochs": 40, "map_lr": 1e-3, "regressor_lr": 1e-4, "checkpoint_every": 100}
TINY = {**SMOKE, "input_size": 16, "width": 0.125, "regressor_hidden": 8, "train_images": 2, "val_images": 1,
        "map_epochs": 1, "regressor_epochs": 1, "batch_size": 2}
#: Gaussian maps hold ~1/(2πσ²) per head pixel: scaled so the map network sees values near the circle maps' 1
GAUSSIAN = {"maps": "gaussian", "map_scale": 25.0}


def _strategy(options):
    from .strategy import Dmap

    return Dmap(options)


def _profiles(network: str, **extra) -> dict:
    paper = {**PAPER, "network": network, **extra}
    smoke = {**SMOKE, "network": network, **extra}
    if network == "vgg":
        paper["vgg_init"] = "imagenet"  # the report: Keras' ImageNet VGG16 layers
    return {"smoke": smoke, "paper": paper}


@hookimpl
def harness_register_strategies(register):
    from .config import DmapOptions

    register(StrategySpec("dmap", _strategy, options=DmapOptions, uses_target_images=False,
                          tiny_options={**TINY, "network": "nopool"},
                          description="density-map report (seed 003): 224×224 circle maps, a map network, a fully "
                                      "connected count regressor"))


@hookimpl
def harness_register_methods(register):
    register(MethodSpec("dmap-nopool", "dmap", _profiles("nopool"),
                        description="seed 003 latest model: seven 3×3 convs without pooling on PIL circle maps"))
    register(MethodSpec("dmap-vgg", "dmap", _profiles("vgg"),
                        description="seed 003 first model: VGG-16 layers 1-10 + 2 convs + ×4 up-sampling on circle "
                                    "maps"))
    register(MethodSpec("dmap-nopool-gaussian", "dmap", _profiles("nopool", **GAUSSIAN),
                        description="seed 003 latest model on the Gaussian maps the report proposes (§11)"))
