"""PromptMix stage 3: text-to-image generation, I_i^g = f_dm(p_i, r_i^g) (eq. 2), with diffusers'
:class:`~diffusers.StableDiffusionPipeline`.

Every image has its own recorded seed ``r_i^g`` (a ``torch.Generator`` seeded with it), so any single image
can be regenerated. The PromptMix report generates at the size of the captioned image with SD v1.5 and 50
steps; sizes are rounded to the nearest multiple the model accepts (:func:`size_multiple`: 8 × 2^(UNet
down-samplings) for SD 1.5, i.e. 64).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.errors import ConfigError
from harness.io import default_cache_dir
from harness.specs import SyntheticImage


def size_multiple(folder: str | Path) -> int:
    """Image sides must be multiples of this, read from a pipeline folder's ``vae/`` and ``unet/`` configs: the
    VAE factor (diffusers' ``vae_scale_factor`` = 2^(VAE blocks − 1)) times 2 per UNet down-sampling, and 8 (the
    pipeline's own check); 64 for SD 1.5.

    Raises:
        ConfigError: the folder lacks ``vae/config.json`` or ``unet/config.json`` (not a diffusers pipeline).
    """
    folder = Path(folder)
    try:
        vae = json.loads((folder / "vae" / "config.json").read_text())
        unet = json.loads((folder / "unet" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder} is not a diffusers Stable Diffusion folder ({type(exc).__name__} reading "
                          f"vae/config.json, unet/config.json): pass a hub id or a folder saved by save_pretrained") \
            from None
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    return math.lcm(8, factor * 2 ** (len(unet["block_out_channels"]) - 1))


def round_size(height: int, width: int, multiple: int, max_side: int | None = None) -> tuple[int, int]:
    """``(h, w)``: ``(height, width)`` shrunk so the longer side is at most ``max_side`` (aspect kept), then
    rounded to the nearest multiple of ``multiple`` (at least one multiple)."""
    f = 1.0 if max_side is None else min(1.0, max_side / max(height, width))
    return tuple(max(multiple, int(round(s * f / multiple)) * multiple) for s in (height, width))


class StableDiffusionGenerator:
    """k images per prompt with diffusers' StableDiffusionPipeline.

    Args:
        model: hub id (default SD 1.5), local folder, or ``"tiny[:seed]"`` (random tiny pipeline).
        steps: denoising steps (PromptMix: 50).
        guidance_scale: classifier-free guidance weight (diffusers' default 7.5).
        max_side: optional cap on the longer side before rounding (the ``smoke`` profile's small images).
        device: ``"cpu"`` / ``"cuda"`` (fp16 on CUDA).
        cache_root: where tiny models are built (default: the harness cache, ``$HARNESS_CACHE``).

    Raises:
        WeightsError: the model cannot be found locally nor downloaded (one line; see
            :func:`harness_promptmix.models.resolve_model_dir`).
    """

    def __init__(self, model: str, *, steps: int = 50, guidance_scale: float = 7.5, max_side: int | None = None,
                 device: str = "cpu", cache_root: Path | None = None):
        from .models import model_identity

        if int(steps) < 1:
            raise ConfigError(f"generator steps must be >= 1, got {steps!r}")
        self.model_id = model
        self.steps, self.guidance_scale = int(steps), float(guidance_scale)
        self.max_side, self.device = max_side, device
        self.folder, self.identity = model_identity(model, cache_root or default_cache_dir(), "sd", "generator_model")
        self.multiple = size_multiple(self.folder)
        self.dtype = "torch.float16" if str(device).startswith("cuda") else "torch.float32"
        self._pipe = None  # loaded on the first generate(): a run whose images are all cached never loads it

    @property
    def pipe(self):
        """The :class:`diffusers.StableDiffusionPipeline` (loaded on first use)."""
        if self._pipe is None:
            import torch
            from diffusers import StableDiffusionPipeline

            from .models import quiet_hf

            quiet_hf()
            self._pipe = StableDiffusionPipeline.from_pretrained(
                str(self.folder), dtype=getattr(torch, self.dtype.split(".")[1]), safety_checker=None,
                requires_safety_checker=False).to(self.device)
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The generated size for a prompt captioned from an ``height × width`` image."""
        return round_size(height, width, self.multiple, self.max_side)

    def key(self) -> dict:
        """Everything of this generator that determines its images (for cache keys)."""
        return {**self.identity, "steps": self.steps, "guidance_scale": self.guidance_scale,
                "multiple": self.multiple, "dtype": self.dtype}

    def generate(self, prompts: Sequence[str], seeds: Sequence[int], sizes: Sequence[tuple[int, int]]
                 ) -> list[SyntheticImage]:
        """One image per ``(prompt, seed, (h, w))``: ``SyntheticImage.image`` is ``(h, w, 3) uint8`` RGB."""
        import torch

        out = []
        for prompt, seed, (h, w) in zip(prompts, seeds, sizes, strict=True):
            gen = torch.Generator(device="cpu").manual_seed(int(seed))
            result = self.pipe(prompt, height=int(h), width=int(w), num_inference_steps=self.steps,
                               guidance_scale=self.guidance_scale, generator=gen, output_type="np")
            img = np.clip(np.round(result.images[0] * 255), 0, 255).astype(np.uint8)
            out.append(SyntheticImage(image=img, prompt=prompt, seed=int(seed),
                                      meta={"model": self.model_id, "steps": self.steps, "size": [int(h), int(w)]}))
        return out
