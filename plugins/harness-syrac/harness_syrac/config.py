"""Options of the ``syrac`` strategy and the ``smoke`` / ``paper`` / tiny profiles.

Sizes are ``(height, width)`` in pixels. The paper's values (SYRAC §3, §5 "Implementation"; the authors'
``config/baseline.params.json`` and ``src/experiment.py``) are the defaults; ``smoke`` shrinks everything to run in
minutes on a CPU with the tiny random Stable Diffusion (its images are noise, so a smoke number checks the
plumbing, not the method).

Importing this module does not import torch (the plugin registers its options at start-up).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from harness import SD21_ID, component

#: §3.1: img2img prompt and negative prompt that "empty" a real image
RANK_PROMPT = "An empty outside space. Nobody around. High resolution DSLR photography."
RANK_NEGATIVE = "people, crowds, pedestrians, humans, 3d, cartoon, anime, painting"
#: §3.2: the noisy counting set
NOISY_PROMPT = "A group of {N} people. High angle"
NOISY_NEGATIVE = "B&W, cartoon, anime, 3D, watercolor, artistic, geometric"
NOISY_COUNTS = (1, 5, 10, 50, 100, 200)
EMPTY_PROMPT = "an empty urban environment"
EMPTY_NEGATIVE = "Humans, people, pedestrians, crowds, B&W, cartoon, anime, 3D, watercolor, artistic, geometric"
#: the authors' input size (``input_shape [640, 853, 3]``; bilinear, aspect ratio not kept)
PAPER_INPUT = (640, 853)

PRETRAINS = ("synthetic-rank", "intra-image-rank", "none", "imagenet")


@dataclass
class SyracTrainOptions:
    """Rank pre-training (§4.1) or, for ``pretrain: none``, end-to-end count regression on the noisy set.

    Attributes:
        epochs: passes over the training pairs (authors' config: 15; the paper's text says 40).
        pairs_per_batch: ranking pairs per step; both images of every pair go through the encoder in one batch
            (authors: 3). images_per_batch: noisy images per step of the end-to-end regression.
        lr / weight_decay: Adam (authors: 5e-5, no decay).
        val_fraction: share of the real images whose pairs (or of the noisy images, for the regression) are held out
            for model selection (paper §5: 15 % of the synthetic ranking data).
        augment: the authors' augmentations (flip, zoom-out, blur, colour, contrast, noise).
        augment_factor: the authors' ``augment`` divisor of every magnitude (2: zoom-out ≤ 30 %, blur σ 0.5 with
            p 0.5, brightness ± 0.2, colour jitter ± 0.075, contrast ± 0.3, uniform noise ± 0.05).
        evals_per_epoch: model-selection evaluations per epoch (a checkpoint is written at each).
        max_cached_gb: decoded images kept in memory (GB); beyond it they are re-read from disk.
    """

    epochs: int = 15
    pairs_per_batch: int = 3
    images_per_batch: int = 6
    lr: float = 5e-5
    weight_decay: float = 0.0
    val_fraction: float = 0.15
    augment: bool = True
    augment_factor: float = 2.0
    evals_per_epoch: int = 1
    max_cached_gb: float = 8.0

    def validate(self) -> list[str]:
        p = []
        for name in ("epochs", "pairs_per_batch", "images_per_batch", "evals_per_epoch"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            p.append(f"lr must be > 0, got {self.lr}")
        if not 0 < self.val_fraction < 1:
            p.append(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if not self.augment_factor > 0:
            p.append(f"augment_factor must be > 0, got {self.augment_factor}")
        return p


@dataclass
class SyracOptions:
    """Options of ``syrac``.

    Attributes:
        pretrain: ``synthetic-rank`` (SYRAC: img2img ranking pairs), ``intra-image-rank`` (Table 3: pairs image ⊃
            its own crop), ``none`` (Table 3 "No Pre-training": the encoder and a linear layer trained end to end on
            the noisy set), ``imagenet`` (Table 3 "ImageNet": the probe on ImageNet features, no pre-training).
        grid: g of the g × g inference grid (§4.3, Table 2; the paper's default 2).
        real_images: whose unlabelled train images make the ranking pairs: ``target`` (SYRAC's own protocol; the
            cell is flagged "uses target images") or ``source`` (images only, never their labels).
        max_real_images: use at most this many real images (seeded subset; None: all).
        synthetic_per_image: img2img images per real image, each with its own seed (§3.1: 4).
        crop_range: ``intra-image-rank`` crops: side fraction range of the crop (same fraction for height and
            width), one crop per pair.
        generator, generator_model, steps, guidance_scale, max_side: the registered generator and its options
            (paper: Stable Diffusion 2.1, 50 steps, guidance 7.5; ``max_side`` caps the generated images' longer
            side). strength: img2img strength (0.45: 22 of 50 denoising steps).
        rank_prompt / rank_negative_prompt: §3.1's prompts.
        noisy_counts, noisy_per_count, noisy_prompt (``{N}`` is replaced), noisy_negative_prompt, empty_prompt
            (None: no empty scenes), empty_negative_prompt, noisy_size: §3.2's noisy counting set; an empty scene
            counts 0.
        backbone: timm model name of the encoder (paper: ``resnet50``; GAP features).
        input_size: the network input ``(H, W)`` (paper: 640 × 853; images are resized, aspect not kept).
        generation_size: ``(H, W)`` every real image is resized to before img2img generation (paper §4.1: "we
            resize all images to a uniform size of (640, 853, 3)": a 4000-px QNRF/JHU image would not fit a GPU);
            None: the image's own size (capped by ``max_side``).
        normalisation: ``imagenet`` (mean/std of the torchvision/timm ResNet weights, the only initialisation this
            plugin loads) or ``symmetric`` (the authors' [-1, 1] scaling).
        init_weights: the encoder's initialisation: ``"imagenet"`` (torchvision's ImageNet-1k file of ``backbone``,
            found by the core's :func:`harness.pretrained_backbone`: ``$HARNESS_WEIGHTS/imagenet/<file>`` or torch's
            hub cache; §4.1 "ResNet-50 pre-trained on ImageNet"), a local state-dict file (torchvision/timm naming;
            a relative path is also looked up under ``$HARNESS_WEIGHTS``), or None: random init (``pretrain:
            imagenet`` then uses ``"imagenet"``). Absent weights are refused in one line; nothing is downloaded.
        train: :class:`SyracTrainOptions`.
    """

    pretrain: Literal["synthetic-rank", "intra-image-rank", "none", "imagenet"] = "synthetic-rank"
    grid: int = 2
    real_images: Literal["target", "source"] = "target"
    max_real_images: int | None = None
    synthetic_per_image: int = 4
    crop_range: tuple[float, float] = (0.5, 0.9)
    generator: str = component("generator", default="stable-diffusion")
    generator_model: str = SD21_ID
    steps: int = 50
    guidance_scale: float = 7.5
    max_side: int | None = None
    generation_size: tuple[int, int] | None = None
    strength: float = 0.45
    rank_prompt: str = RANK_PROMPT
    rank_negative_prompt: str = RANK_NEGATIVE
    noisy_counts: tuple[int, ...] = NOISY_COUNTS
    noisy_per_count: int = 60
    noisy_prompt: str = NOISY_PROMPT
    noisy_negative_prompt: str = NOISY_NEGATIVE
    empty_prompt: str | None = EMPTY_PROMPT
    empty_negative_prompt: str = EMPTY_NEGATIVE
    noisy_size: tuple[int, int] = PAPER_INPUT
    backbone: str = "resnet50"
    input_size: tuple[int, int] = PAPER_INPUT
    normalisation: Literal["imagenet", "symmetric"] = "imagenet"
    init_weights: str | None = None
    train: SyracTrainOptions = field(default_factory=SyracTrainOptions)

    @property
    def uses_pairs(self) -> bool:
        """Whether this variant pre-trains on ranking pairs made from real images."""
        return self.pretrain in ("synthetic-rank", "intra-image-rank")

    def validate(self) -> list[str]:
        p = []
        if self.grid < 1:
            p.append(f"grid must be >= 1, got {self.grid}")
        if self.synthetic_per_image < 1:
            p.append(f"synthetic_per_image must be >= 1, got {self.synthetic_per_image}")
        if self.max_real_images is not None and self.max_real_images < 2:
            p.append(f"max_real_images must be >= 2 (one is held out for model selection) or null, "
                     f"got {self.max_real_images}")
        if not 0 < self.strength <= 1:
            p.append(f"strength must lie in (0, 1], got {self.strength}")
        if self.steps < 1:
            p.append(f"steps must be >= 1, got {self.steps}")
        elif self.pretrain == "synthetic-rank" and int(self.steps * self.strength) < 1:
            p.append(f"img2img runs int(steps × strength) = int({self.steps} × {self.strength}) = 0 denoising steps: "
                     f"raise steps or strength")
        lo, hi = self.crop_range
        if not 0 < lo <= hi < 1:
            p.append(f"crop_range must satisfy 0 < low <= high < 1, got {list(self.crop_range)}")
        if not self.noisy_counts or any(n < 0 for n in self.noisy_counts):
            p.append(f"noisy_counts must be non-negative integers, got {list(self.noisy_counts)}")
        if self.noisy_per_count < 1:
            p.append(f"noisy_per_count must be >= 1, got {self.noisy_per_count}")
        if "{N}" not in self.noisy_prompt:
            p.append(f"noisy_prompt must contain {{N}} (replaced by the count), got {self.noisy_prompt!r}")
        if self.generation_size is not None and min(self.generation_size) < 32:
            p.append(f"generation_size sides must be >= 32 px, got {list(self.generation_size)}")
        for name in ("input_size", "noisy_size"):
            if min(getattr(self, name)) < 32:
                p.append(f"{name} sides must be >= 32 px, got {list(getattr(self, name))}")
        if self.grid > 1 and min(self.input_size) // self.grid < 4:
            p.append(f"grid {self.grid} leaves patches under 4 px of input_size {list(self.input_size)}")
        if self.init_weights not in (None, "imagenet"):
            try:
                resolve_checkpoint(self.init_weights)
            except FileNotFoundError as exc:
                p.append(str(exc))
        return p

    @property
    def encoder_init(self) -> str | None:
        """The initialisation actually used: ``init_weights``, or ``"imagenet"`` for ``pretrain: imagenet``."""
        return self.init_weights or ("imagenet" if self.pretrain == "imagenet" else None)


def resolve_checkpoint(path: str) -> Path:
    """The local file ``path`` names: as given (``~`` expanded), else relative to ``$HARNESS_WEIGHTS``.

    Raises:
        FileNotFoundError: neither exists (one line naming what was tried and how to provide it)."""
    tried = [Path(path).expanduser()]
    root = os.environ.get("HARNESS_WEIGHTS")
    if root and not tried[0].is_absolute():
        tried.append(Path(root).expanduser() / path)
    for cand in tried:
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"init_weights {path!r} not found (tried {', '.join(map(str, tried))}): pass a "
                            f"local state dict of the backbone (torchvision/timm .pth or .safetensors) or "
                            f"'imagenet'; nothing is downloaded")


#: the paper's profile (§4.1 "Implementation"): ImageNet ResNet-50, 40 epochs of Adam at 5e-5, every image resized
#: to 640 × 853 (generation and training), Stable Diffusion 2.1 (strength 0.45, guidance 7.5, 50 steps), 15 % of the
#: ranking data held out for selection. GPU; needs the SD 2.1 and ImageNet ResNet-50 weights.
PAPER = {"generator_model": SD21_ID, "steps": 50, "guidance_scale": 7.5, "strength": 0.45, "synthetic_per_image": 4,
         "noisy_per_count": 60, "noisy_size": list(PAPER_INPUT), "input_size": list(PAPER_INPUT),
         "generation_size": list(PAPER_INPUT), "backbone": "resnet50", "grid": 2, "init_weights": "imagenet",
         "train": {"epochs": 40, "pairs_per_batch": 3, "images_per_batch": 6, "lr": 5e-5, "val_fraction": 0.15}}
#: where the authors' code differs from the paper (method ``syrac-authors-code``, paper profile only): 15 epochs
#: and the [-1, 1] input scaling of their loader
AUTHORS_CODE = {"train": {"epochs": 15}, "normalisation": "symmetric"}
#: CPU minutes per cell: tiny random Stable Diffusion, ResNet-18 on 72 × 96 inputs, a few pairs and epochs
SMOKE = {"generator_model": "tiny", "steps": 10, "max_side": 96, "max_real_images": 24, "synthetic_per_image": 2,
         "noisy_per_count": 6, "noisy_size": [72, 96], "input_size": [72, 96], "backbone": "resnet18",
         "train": {"epochs": 6, "pairs_per_batch": 4, "images_per_batch": 8, "lr": 3e-4, "val_fraction": 0.15,
                   "max_cached_gb": 1.0}}
#: seconds on the built-in synthetic datasets (contract tests)
TINY = {"generator_model": "tiny", "steps": 3, "max_side": 32, "max_real_images": 3, "synthetic_per_image": 1,
        "noisy_counts": [1, 10], "noisy_per_count": 2, "noisy_size": [32, 32], "input_size": [32, 48],
        "backbone": "test_resnet", "train": {"epochs": 1, "pairs_per_batch": 2, "images_per_batch": 2,
                                             "lr": 1e-3, "max_cached_gb": 0.1}}


__all__ = ["SyracOptions", "SyracTrainOptions", "PAPER", "AUTHORS_CODE", "SMOKE", "TINY", "RANK_PROMPT", "RANK_NEGATIVE",
           "NOISY_PROMPT", "NOISY_NEGATIVE", "NOISY_COUNTS", "EMPTY_PROMPT", "EMPTY_NEGATIVE", "PRETRAINS",
           "resolve_checkpoint"]
