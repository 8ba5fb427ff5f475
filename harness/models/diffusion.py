"""The Stable Diffusion generator: text-to-image and img2img with diffusers (docs/design.md §9).

One :class:`~harness.types.GenerationRequest` -> one image: ``prompt`` and ``negative_prompt`` (classifier-free
guidance), the image's own ``seed`` (a ``torch.Generator`` seeded with it, so any single image can be regenerated),
``size`` (rounded to the model's multiple, :func:`size_multiple`), and for img2img an ``init_image`` with
``strength`` (diffusers runs ``int(steps · strength)`` denoising steps; SYRAC: 0.45 of 50 → 22). Text-to-image and
img2img share the pipeline's components (``StableDiffusionImg2ImgPipeline(**pipe.components)``).

PromptMix: SD v1.5, 50 steps, the captioned image's size; SYRAC: SD 2.1, strength 0.45, guidance 7.5, 50 steps.
"""
from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..io import default_cache_dir
from ..training.precision import DTYPE_NAMES
from ..types import GenerationRequest, Provenance, SyntheticImage

#: Stable Diffusion v1.5 (PromptMix) — the community mirror of runwayml/stable-diffusion-v1-5
SD15_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: Stable Diffusion 2.1 (SYRAC)
SD21_ID = "stabilityai/stable-diffusion-2-1"


def size_multiple(folder: str | Path) -> int:
    """Image sides must be multiples of this, read from a pipeline folder's ``vae/`` and ``unet/`` configs: the
    VAE factor (2^(VAE blocks − 1)) times 2 per UNet down-sampling, and 8 (the pipeline's own check); 64 for SD 1.5.

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
    """Stable Diffusion behind the :class:`~harness.types.Generator` contract.

    Args:
        model: hub id (default SD 1.5), local folder, or ``"tiny[:seed]"`` (random tiny pipeline).
        steps: denoising steps (PromptMix and SYRAC: 50).
        guidance_scale: classifier-free guidance weight (diffusers' default 7.5).
        max_side: cap on the longer side before rounding (``smoke`` profiles' small images).
        device: ``"cpu"`` / ``"cuda[:n]"`` (fp16 on CUDA).
        cache_root: where tiny models are built (default: the harness cache).

    Raises:
        WeightsError: the model cannot be found locally nor downloaded (one line).
    """

    modes = ("text", "image")
    #: the pipeline's precision on a GPU, whatever the run's (the dry run projects its stages at that peak)
    gpu_precision = "fp16"

    def __init__(self, model: str = SD15_ID, *, steps: int = 50, guidance_scale: float = 7.5,
                 max_side: int | None = None, device: str = "cpu", cache_root: Path | None = None):
        from .hub import quiet_hf, resolve_model

        if int(steps) < 1:
            raise ConfigError(f"generator steps must be >= 1, got {steps!r}")
        quiet_hf()
        self.model_id = model
        self.steps, self.guidance_scale = int(steps), float(guidance_scale)
        self.max_side, self.device = max_side, device
        resolved = resolve_model(model, kind="stable-diffusion", cache_root=cache_root or default_cache_dir(),
                                 what="Stable Diffusion model", option="generator_model")
        self.folder, self.identity = resolved.folder, resolved.identity
        self.multiple = size_multiple(self.folder)
        self.dtype = DTYPE_NAMES[self.gpu_precision if str(device).startswith("cuda") else "fp32"]
        self.provenance = Provenance(weights=f"diffusers:{model}", trained_on=frozenset())
        self._pipes: dict[str, object] = {}

    def pipe(self, mode: str = "text"):
        """The diffusers pipeline for ``mode`` (``text`` or ``image``), loaded on first use (a run whose images are
        all cached never loads it)."""
        if mode not in self._pipes:
            import torch
            from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionPipeline

            if "text" not in self._pipes:
                p = StableDiffusionPipeline.from_pretrained(
                    str(self.folder), dtype=getattr(torch, self.dtype), safety_checker=None,
                    requires_safety_checker=False).to(self.device)
                p.set_progress_bar_config(disable=True)
                self._pipes["text"] = p
            if mode == "image":
                p = StableDiffusionImg2ImgPipeline(**self._pipes["text"].components)
                p.set_progress_bar_config(disable=True)
                self._pipes["image"] = p
        return self._pipes[mode]

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The generated size for a request of ``height × width``."""
        return round_size(height, width, self.multiple, self.max_side)

    def key(self) -> dict:
        """Everything of this generator that determines its images (for cache keys)."""
        return {**self.identity, "steps": self.steps, "guidance_scale": self.guidance_scale,
                "multiple": self.multiple, "max_side": self.max_side, "dtype": self.dtype}

    def generate(self, requests: Sequence[GenerationRequest]) -> list[SyntheticImage]:
        """One ``(h, w, 3) uint8`` RGB image per request (``h, w`` = :meth:`output_size` of the request's size).

        Raises:
            ConfigError: a request with a label mask (not a mask-to-image model), or a bad strength."""
        import torch
        from PIL import Image

        out = []
        for req in requests:
            if req.label_mask is not None:
                raise ConfigError("stable-diffusion does not take label masks: use a mask-to-image generator")
            h, w = self.output_size(*req.size)
            gen = torch.Generator(device="cpu").manual_seed(int(req.seed))
            common = dict(prompt=req.prompt, negative_prompt=req.negative_prompt or None,
                          num_inference_steps=self.steps, guidance_scale=self.guidance_scale, generator=gen,
                          output_type="np")
            if req.init_image is not None:
                if req.strength is None or not 0 < req.strength <= 1:
                    raise ConfigError(f"img2img strength must lie in (0, 1], got {req.strength!r}")
                if int(self.steps * req.strength) < 1:
                    raise ConfigError(f"img2img with {self.steps} steps and strength {req.strength} runs "
                                      f"int(steps × strength) = 0 denoising steps: raise steps or strength")
                init = Image.fromarray(np.asarray(req.init_image, np.uint8)).resize((w, h), Image.BICUBIC)
                pipe = self.pipe("image")
                with _denoising_stage(pipe, int(self.steps * req.strength), (h, w), self.key(), "img2img ") as cb:
                    result = pipe(image=init, strength=float(req.strength), callback_on_step_end=cb, **common)
            else:
                pipe = self.pipe("text")
                with _denoising_stage(pipe, self.steps, (h, w), self.key()) as cb:
                    result = pipe(height=int(h), width=int(w), callback_on_step_end=cb, **common)
            img = np.clip(np.round(result.images[0] * 255), 0, 255).astype(np.uint8)
            out.append(SyntheticImage(image=img, request=req,
                                      meta={"model": self.model_id, "steps": self.steps, "size": [int(h), int(w)]}))
        return out


@contextlib.contextmanager
def _denoising_stage(pipe: Any, steps: int, size: tuple[int, int], key: dict, mode: str = ""):
    """The U-Net steps of one image as a dry-run stage (:mod:`harness.stages`; ``"generate: U-Net step"``, with
    ``mode`` ``"img2img "``: ``"generate: img2img U-Net step"``): each U-Net call (the guided batch) is a unit; in a
    dry run the pipeline is interrupted (diffusers' ``interrupt``) after the stage's units and decodes what it has.
    Yields the ``callback_on_step_end`` to pass (None outside a dry run)."""
    from ..stages import active_meter, count_params, stage

    if active_meter() is None:
        yield None
        return
    with stage(f"generate: {mode}U-Net step", units=steps, unit="denoising step", params=count_params(pipe.unet),
               key={**key, "size": list(size)}, precision=StableDiffusionGenerator.gpu_precision) as st:
        open_units: list = []

        def pre(module, args, kwargs):
            cm = st.unit()
            cm.__enter__()
            open_units.append(cm)

        def post(module, args, kwargs, output):
            open_units.pop().__exit__(None, None, None)

        def on_step_end(p, i, t, kw):
            if st.done:
                p._interrupt = True
            return kw

        hooks = [pipe.unet.register_forward_pre_hook(pre, with_kwargs=True),
                 pipe.unet.register_forward_hook(post, with_kwargs=True)]
        try:
            yield on_step_end
        finally:
            for h in hooks:
                h.remove()


__all__ = ["StableDiffusionGenerator", "size_multiple", "round_size", "SD15_ID", "SD21_ID"]
