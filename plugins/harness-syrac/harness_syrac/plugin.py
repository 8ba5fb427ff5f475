"""harness-syrac's hook implementations (entry point ``syrac`` in the ``harness`` group).

Registers the ``syrac`` strategy, the ``harness syrac`` commands and the methods (leaderboard rows, SYRAC
Tables 1–3); none of them uses any dataset's labels:

- ``syrac``: img2img ranking pairs from the target's unlabelled train images, rank pre-training, NNLS probe on the
  noisy counts, 2 × 2 grid (Table 1 "Ours (2x2)"); ``syrac-g1`` / ``-g3`` / ``-g4``: the 1 × 1, 3 × 3, 4 × 4 grids
  (Table 2);
- ``syrac-intra-image-rank``: pairs image ⊃ its own random crop (Table 3 "Intra-image Rank");
- ``syrac-no-pretrain``: encoder + linear layer trained end to end on the noisy set (Table 3 "No Pre-training");
- ``syrac-imagenet``: the probe on ImageNet features (Table 3 "ImageNet"); needs torchvision's ImageNet file (in
  ``$HARNESS_WEIGHTS/imagenet/`` or the torch hub cache, or option ``init_weights``) and refuses in one line without;
- ``syrac-source-images``: ``syrac`` with the ranking pairs made from the *source's* train images (labels unread),
  so the target's images are never looked at.

Profiles (:mod:`harness_syrac.config`): ``paper`` (SD 2.1, strength 0.45, guidance 7.5, 50 steps, 4 images per real
image, 60 noisy images per N, ResNet-50 at 640 × 853, Adam 5e-5, 3 pairs per batch, 15 epochs; GPU) and ``smoke``
(tiny random SD, ResNet-18 at 72 × 96, 24 real images, a few epochs; CPU minutes).

No torch import here (``harness plugins`` stays light).
"""
from __future__ import annotations

from harness import CommandSpec, MethodSpec, StrategySpec, hookimpl

from .config import AUTHORS_CODE, PAPER, SMOKE, TINY, SyracOptions

#: the harness plugin API this plugin is written for (harness.hookspecs.API_VERSION)
HARNESS_API = 1


def _strategy(options: SyracOptions):
    from .strategy import Syrac

    return Syrac(options)


@hookimpl
def harness_register_strategies(register):
    register(StrategySpec(
        "syrac", _strategy, options=SyracOptions, uses_target_images=False, tiny_options=TINY,
        description="SYRAC: diffusion-made ranking pairs -> Siamese rank pre-training -> non-negative linear probe "
                    "on noisy synthetic counts -> patch-grid counting (no labels)"))


def _profiles(paper_only: dict | None = None, **extra) -> dict:
    def merge(base: dict, more: dict) -> dict:
        out = {**base, **more}
        if "train" in more:
            out["train"] = {**base.get("train", {}), **more["train"]}
        return out

    return {"smoke": merge(SMOKE, extra), "paper": merge(merge(PAPER, extra), paper_only or {})}


METHODS = {
    "syrac": ({}, "SYRAC (2 x 2 grid): img2img ranking pairs from the target's unlabelled images, rank pre-training, "
                  "NNLS probe on noisy synthetic counts; no labels"),
    "syrac-g1": ({"grid": 1}, "SYRAC with a 1 x 1 grid (Table 2)"),
    "syrac-g3": ({"grid": 3}, "SYRAC with a 3 x 3 grid (Table 2)"),
    "syrac-g4": ({"grid": 4}, "SYRAC with a 4 x 4 grid (Table 2)"),
    "syrac-intra-image-rank": ({"pretrain": "intra-image-rank"},
                               "SYRAC pre-trained on intra-image ranking pairs (image ⊃ its crop; Table 3)"),
    "syrac-no-pretrain": ({"pretrain": "none"},
                          "end-to-end regression on the noisy synthetic counts, no pre-training (Table 3)"),
    "syrac-imagenet": ({"pretrain": "imagenet"},
                       "NNLS probe on ImageNet features (Table 3); needs a local ImageNet state dict"),
    "syrac-authors-code": ({"paper_only": AUTHORS_CODE},
                           "SYRAC as the authors' code runs it where it differs from the paper: 15 epochs (paper: 40), "
                           "[-1, 1] input scaling"),
    "syrac-source-images": ({"real_images": "source"},
                            "SYRAC with ranking pairs from the source's train images (labels unread)"),
}


@hookimpl
def harness_register_methods(register):
    for name, (extra, description) in METHODS.items():
        register(MethodSpec(name, "syrac", profiles=_profiles(**extra), description=description))


@hookimpl
def harness_register_commands(register):
    from .inspect import syrac_cli

    register(CommandSpec("syrac", syrac_cli, description="SYRAC tools: inspect RUN_DIR"))
