"""harness-spade's hook implementations (entry point ``spade`` in the ``harness`` group).

Registers (nothing heavy is imported here: torch loads when a component is built):

- segmenters ``head-mask`` (HM), ``crowd-segmentation`` (CM), ``surroundings-segmentation`` (SS)
  (:mod:`harness_spade.masks`);
- the generator ``gaugan`` (mode ``mask``; :mod:`harness_spade.generator`);
- the strategy ``spade`` (:mod:`harness_spade.strategy`) and the ``harness spade inspect`` command;
- ``spade-table4``: the report's GauGAN row of Table IV (SHA→SHA, 830 images, last of 200 epochs, synthetic images
  in validation, pseudo-labels from the annotator trained on the target: †).
- methods ``spade-r50`` / ``spade-r100`` / ``spade-r500``: r_mix = 50, 100, 500 % of the real training images per
  epoch, annotators CSRNet-SHA, MCNN-SHA and MCNN-SHB minus those trained on the target's labels, pseudo-labels from
  the annotator trained on the source — PromptMix's pool options, so the rows compare with ``promptmix-r*``.

Profiles:

- ``paper``: report Table II's SSU_V2 (SS + CM + HM, 23 labels, 512 × 512 crops; DeepLabV3 weights from torchvision's
  cache: ``segmenter_options``), GauGAN as Park et al. (ngf = ndf = 64, SPADE hidden 128, VAE z 256, 2 × 4-layer
  PatchGANs, hinge, feature matching × 10, KL × 0.05, VGG-19 perceptual loss × 10 (ImageNet weights), TTUR Adam
  1e-4 / 4e-4 β (0, 0.9), batch 1 as the reference's custom-dataset default, 200 epochs, a snapshot every 10),
  transfer-learned from NVlabs/SPADE's COCO-Stuff generator (every tensor but the label-map inputs and the VAE's
  ``fc``, which are re-initialised), k = 10 images per mask, at most 830 synthetic images (the
  report's SPADE set), the lightweight counter of PromptMix's paper profile (report Table III).
- ``smoke`` (CPU, minutes): SHTA_V2 masks (HM: no weights), a tiny GauGAN (ngf 8, ndf 16, SPADE hidden 32, z 64)
  trained 4 epochs on 60 source images with 128-px crops (batch 2), 20 masks × k = 2 images, the
  ``source-only-rescsrnet`` smoke training (as ``promptmix-r*`` smoke).
"""
from __future__ import annotations

from harness import (PAPER_TRAIN, SMOKE_TRAIN, TINY_TRAIN, CommandSpec, GeneratorSpec, MethodSpec, SegmenterSpec,
                     StrategySpec, hookimpl, table4_profiles)

#: the harness plugin API this plugin is written for (harness.hookspecs.API_VERSION)
HARNESS_API = 1

R_MIX = {"r50": 0.5, "r100": 1.0, "r500": 5.0}

SMOKE_GAN = {"crop_size": 128, "ngf": 8, "ndf": 16, "spade_hidden": 32, "z_dim": 64, "epochs": 4, "batch_size": 2,
             "max_train_images": 60}
#: the report's GauGAN: transfer-learned ("originally is trained to generate landscapes", §III-B) — NVIDIA released no
#: landscape model; the COCO-Stuff generator of NVlabs/SPADE (sky, grass, buildings … among its 182 classes) is the
#: closest public one (``$HARNESS_WEIGHTS/spade/coco_pretrained/latest_net_G.pth``) — with the paper's VGG-19
#: perceptual loss (ImageNet weights)
PAPER_GAN = {"crop_size": 512, "ngf": 64, "ndf": 64, "spade_hidden": 128, "z_dim": 256, "epochs": 200,
             "batch_size": 1, "checkpoint_every_epochs": 10, "init_generator": "coco_pretrained",
             "vgg_weights": "imagenet"}
SMOKE = {"counter": "rescsrnet", "counter_options": {"width": 0.125}, "train": dict(SMOKE_TRAIN), "masks": "SHTA_V2",
         "max_masks": 20, "images_per_mask": 2, "gan": SMOKE_GAN}
PAPER = {"counter": "rescsrnet", "counter_options": {"width": 1.0, "init": "imagenet"}, "train": dict(PAPER_TRAIN), "masks": "SSU_V2",
         "segmenter_options": {"crowd-segmentation": {"weights": "torchvision"},
                               "surroundings-segmentation": {"weights": "torchvision"}},
         "images_per_mask": 10, "gan": PAPER_GAN}
TINY = {"counter": "rescsrnet", "counter_options": {"width": 0.125}, "train": TINY_TRAIN, "masks": "SHTA_V2",
        "max_masks": 2, "images_per_mask": 1,
        "gan": {"crop_size": 64, "ngf": 2, "ndf": 4, "spade_hidden": 8, "z_dim": 8, "epochs": 1, "batch_size": 2,
                "max_train_images": 2},
        "pool": {"annotators": ["mcnn-sha", "mcnn-shb"], "r_mix": 1.0,
                 "annotator_options": {"mcnn-sha": {"weights": "random"}, "mcnn-shb": {"weights": "random"}}}}


#: Table IV's GauGAN row: the 830 generated images less the 20 % held out for validation, per 240 real images
TABLE4_R_MIX = round(830 * 0.8 / 240, 2)


def _profiles(**pool) -> dict:
    return {"smoke": {**SMOKE, "pool": dict(pool)}, "paper": {**PAPER, "pool": {"max_synthetic": 830, **pool}}}


def _strategy(options):
    from .strategy import Spade

    return Spade(options)


def _head_mask(device: str = "cpu", **options):
    """HM: the ground-truth density thresholded (options: threshold, kernel, sigma, beta, k)."""
    from .masks import HeadMaskSegmenter

    return HeadMaskSegmenter(**options)


def _crowd(device: str = "cpu", weights: str = "torchvision", arch: str = "deeplabv3_mobilenet_v3_large",
           crowd_classes=(15,), **options):
    """CM: a DeepLabV3's crowd classes (options: weights, arch, num_classes, crowd_classes, input_size)."""
    from .masks import DeepLabSegmenter

    return DeepLabSegmenter("crowd-segmentation", arch=arch, weights=weights, crowd_classes=crowd_classes,
                            device=device, **options)


def _surroundings(device: str = "cpu", weights: str = "torchvision", arch: str = "deeplabv3_resnet50", **options):
    """SS: a DeepLabV3's classes (options: weights, arch, num_classes, class_names, input_size)."""
    from .masks import DeepLabSegmenter

    return DeepLabSegmenter("surroundings-segmentation", arch=arch, weights=weights, device=device, **options)


def _gaugan(device: str = "cpu", weights: str = "tiny"):
    """GauGAN (option weights: a harness-spade weights file or 'tiny[:seed]')."""
    from .generator import GauGANGenerator

    return GauGANGenerator(weights, device=device)


@hookimpl
def harness_register_segmenters(register):
    register(SegmenterSpec("head-mask", _head_mask, aliases=("hm",),
                           description="HM: the ground-truth density map thresholded at 0.01 (needs head points)",
                           tiny_options={}))
    register(SegmenterSpec("crowd-segmentation", _crowd, aliases=("cm",),
                           description="CM: crowd pixels of a torchvision DeepLabV3 (VOC person; local weights)",
                           tiny_options={"weights": "tiny"}))
    register(SegmenterSpec("surroundings-segmentation", _surroundings, aliases=("ss",),
                           description="SS: the 21 VOC classes of a torchvision DeepLabV3 (local weights)",
                           tiny_options={"weights": "tiny", "arch": "deeplabv3_mobilenet_v3_large"}))


@hookimpl
def harness_register_generators(register):
    register(GeneratorSpec("gaugan", _gaugan, aliases=("spade",), modes=("mask",),
                           description="GauGAN / SPADE mask-to-image generator (Park et al. 2019), trained in run",
                           tiny_options={"weights": "tiny"}))


@hookimpl
def harness_register_strategies(register):
    from .strategy import SpadeOptions

    register(StrategySpec("spade", _strategy, options=SpadeOptions, uses_target_images=False, tiny_options=TINY,
                          description="SPADE: source masks -> GauGAN -> heavyweight annotation -> q filter -> "
                                      "per-epoch mixing with the real source images (Aarhus report §III-B)"))


@hookimpl
def harness_register_methods(register):
    for name, r in R_MIX.items():
        register(MethodSpec(f"spade-{name}", "spade", profiles=_profiles(r_mix=r),
                            description=f"SPADE/GauGAN synthetic images of source masks, {int(r * 100)} % per epoch, "
                                        f"annotators not trained on the target"))
    # the report's GauGAN row of Table IV: its 830 SSU_V2 images (§IV-C), split 80 / 20 like the real ones, all 664
    # training ones every epoch (664 = 2.77 × 240; the report gives no r_mix for this row), run on SHA→SHA
    register(MethodSpec("spade-table4", "spade",
                        profiles=table4_profiles(SMOKE, PAPER, r_mix=TABLE4_R_MIX, max_synthetic=830),
                        description="SPADE/GauGAN as the report's Table IV row: 830 images, SHA→SHA, last of 200 "
                                    "epochs, synthetic images in validation (†)"))


@hookimpl
def harness_register_commands(register):
    from .inspect import spade_cli

    register(CommandSpec("spade", spade_cli, description="SPADE tools: inspect RUN_DIR"))
