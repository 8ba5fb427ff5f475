"""harness-promptmix's hook implementations (entry point ``promptmix`` in the ``harness`` group).

Registers the ``promptmix`` strategy, the ``harness promptmix`` commands, the tiny random ClipCap captioner
(``"tiny"`` captioner ids: tiny model kind ``clipcap``), and the methods (leaderboard rows):

- ``promptmix-r0`` / ``-r50`` / ``-r100`` / ``-r500`` / ``-r1000``: r_mix = 0, 50, 100, 500, 1000 % of the real
  training images per epoch; captions of the source's train images; annotators CSRNet-SHA, MCNN-SHA and
  MCNN-SHB minus those trained on the target's labels; pseudo-labels from the annotator trained on the source.
- ``promptmix-report-r100``: the report's own choice — all three annotators, pseudo-labels from the one
  trained on the *target* (leakage: flagged † "target labels seen").
- ``promptmix-target-captions-r100``: captions of the target's unlabelled train images ("uses target images").
- ``promptmix-table4-r0`` / ``-r50`` / ``-r100`` / ``-r500`` / ``-r1000``: the report's Table IV rows (§V-B; protocol §IV-C), run
  in-domain on ``SHA→SHA``: 200 epochs read at the last one, the 240 / 60 split with synthetic images in validation
  at the same ratio, train / validation / test MAE; pseudo-labels from the annotator trained on the target (SASNet-SHA
  in ``paper``; CSRNet-SHA stands in for it in ``smoke``): flagged †, as the report's are.

Profiles:

- ``paper``: report Table III (ResCSRNet full width, batch 1, AdamW 1e-3 / 1e-4, × 0.99 per epoch, 500 epochs,
  MSE), k = 10 images per prompt, SD 1.5 with 50 steps at the captioned image's size, BLIP captions (ClipCap weights
  convert with :func:`harness_promptmix.captioning.convert_clipcap_checkpoint`), at most 3000 synthetic images, no q
  filter (the report's limit 10 000 exceeds any q).
- ``smoke`` (CPU, minutes): the ``source-only-rescsrnet`` smoke training (so ``promptmix-r0`` is that baseline),
  tiny random captioner and Stable Diffusion built from configs, 20 captioned images, k = 2, 10 steps, images at
  most 256 px on the longer side.
"""
from __future__ import annotations

from harness import (PAPER_TRAIN, SD15_ID, SMOKE_TRAIN, TINY_TRAIN, CommandSpec, MethodSpec, StrategySpec,
                     TinyModelSpec, hookimpl, table4_profiles)

#: the harness plugin API this plugin is written for (harness.hookspecs.API_VERSION)
HARNESS_API = 1

BLIP_ID = "Salesforce/blip-image-captioning-base"
R_MIX = {"r0": 0.0, "r50": 0.5, "r100": 1.0, "r500": 5.0, "r1000": 10.0}

SMOKE = {"counter": "rescsrnet", "counter_options": {"width": 0.125}, "train": dict(SMOKE_TRAIN),
         "captioner": "tiny", "max_captioned_images": 20, "images_per_prompt": 2, "generator_model": "tiny",
         "steps": 10, "max_side": 256}
PAPER = {"counter": "rescsrnet", "counter_options": {"width": 1.0, "init": "imagenet"}, "train": dict(PAPER_TRAIN),
         "captioner": BLIP_ID, "images_per_prompt": 10, "generator_model": SD15_ID, "steps": 50}
TINY = {"counter": "rescsrnet", "counter_options": {"width": 0.125}, "train": TINY_TRAIN, "captioner": "tiny",
        "max_captioned_images": 2, "images_per_prompt": 1, "generator_model": "tiny", "steps": 2, "max_side": 32,
        "pool": {"annotators": ["mcnn-sha", "mcnn-shb"], "r_mix": 1.0,
                 "annotator_options": {"mcnn-sha": {"weights": "random"}, "mcnn-shb": {"weights": "random"}}}}


def _profiles(**pool) -> dict:
    return {"smoke": {**SMOKE, "pool": dict(pool)}, "paper": {**PAPER, "pool": {"max_synthetic": 3000, **pool}}}


def _strategy(options):
    from .strategy import PromptMix

    return PromptMix(options)


@hookimpl
def harness_register_strategies(register):
    from .strategy import PromptMixOptions

    register(StrategySpec("promptmix", _strategy, options=PromptMixOptions, uses_target_images=False, tiny_options=TINY,
                          description="PromptMix: captions -> Stable Diffusion -> heavyweight annotation -> "
                                      "q filter -> per-epoch mixing with the real source images"))


@hookimpl
def harness_register_methods(register):
    for name, r in R_MIX.items():
        register(MethodSpec(f"promptmix-{name}", "promptmix", profiles=_profiles(r_mix=r),
                            description=f"PromptMix, {int(r * 100)} % synthetic images per epoch, source captions, "
                                        f"annotators not trained on the target"))
    register(MethodSpec("promptmix-report-r100", "promptmix",
                        profiles=_profiles(exclude_target_trained=False, keep="target", r_mix=1.0),
                        description="PromptMix as in the report: pseudo-labels from the annotator trained on the "
                                    "target (target labels seen)"))
    for name, r in R_MIX.items():
        register(MethodSpec(f"promptmix-table4-{name}", "promptmix",
                            profiles=table4_profiles(SMOKE, PAPER, r_mix=r, max_synthetic=3000),
                            description=f"PromptMix as the report's Table IV: {int(r * 100)} % synthetic, run on "
                                        f"SHA→SHA, last of 200 epochs, synthetic images in validation (†)"))
    target = _profiles(r_mix=1.0)
    for p in target.values():
        p["caption_from"] = "target"
    register(MethodSpec("promptmix-target-captions-r100", "promptmix", profiles=target,
                        description="PromptMix with prompts captioned from the target's unlabelled train images"))


@hookimpl
def harness_register_commands(register):
    from .inspect import promptmix_cli

    register(CommandSpec("promptmix", promptmix_cli, description="PromptMix tools: inspect RUN_DIR"))


def _tiny_clipcap(folder, seed: int = 0):
    from .models import build_tiny_clipcap

    return build_tiny_clipcap(folder, seed)


@hookimpl
def harness_register_tiny_models(register):
    register(TinyModelSpec("clipcap", _tiny_clipcap, description="tiny random ClipCap captioner (CLIP ViT, MLP "
                                                                 "mapping, GPT-2 over the CLIP vocabulary)"))
