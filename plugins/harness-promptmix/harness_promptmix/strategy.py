"""The ``promptmix`` strategy: PromptMix (Bakhtiarnia et al. 2023, as reproduced in the Aarhus report §III-A, §IV)
composed from the core's pieces — a caption pool and the Stable Diffusion generator feed the shared synthetic-data
pipeline (:mod:`harness.synthetic_pool`: annotate, q of eq. 4, filter, pseudo-label, per-epoch mixing), whose samples
join the core's source-only training (:func:`harness.fit_with_synthetic`).

1. caption real images (eq. 1) — the source's labelled train images, or (``caption_from: target``, a cross-domain
   variant recorded as *uses target images*) the target's unlabelled train images; captions are cached per
   captioner and image file (``promptmix/caption``);
2. suffix size and colour/greyscale; add or replace prompts from a prompt file; ``prompts.txt`` is written to the
   cell folder (edit it and pass it back as ``prompt_file``);
3. k images per prompt with distinct recorded seeds (eq. 2): one :class:`harness.GenerationRequest` each;
4. then the shared pipeline (leakage rules and caches there).

``r_mix = 0`` generates nothing and trains exactly as ``source-only-rescsrnet``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness import (DensityTrainOptions, GenerationRequest, PoolOptions, atomic_write_json, atomic_write_text,
                     component, file_sha256, fit_with_synthetic, params_of, stage)

from .prompts import prompt_suffix, read_prompt_file

PROMPTS_FILE = "prompts.txt"


@dataclass
class PromptMixOptions:
    """Options of ``promptmix``.

    Attributes:
        train: the lightweight counter's training (:class:`harness.DensityTrainOptions`; required).
        counter, counter_options: the lightweight counter (PromptMix: ResCSRNet).
        captioner: captioner model id (``"tiny"``, a BLIP id/folder, or a ClipCap folder).
        caption_from: ``source`` (labelled train images) or ``target`` (the target's unlabelled train images).
        max_captioned_images: caption at most this many images (seeded subset; None: all).
        prompt_file / prompt_file_mode: a text file of prompts (one per line) ``add``-ed to the captions or
            ``replace``-ing them (report stage 2).
        images_per_prompt: k (report: 10 for SHA/SHB).
        generator: the registered generator (``stable-diffusion``); generator_model, steps, guidance_scale,
            max_side: its options (report: SD 1.5, 50 steps, the captioned image's size).
        pool: :class:`harness.PoolOptions` (annotators, q, filter, pseudo-labels, r_mix).
    """

    train: DensityTrainOptions | None = None
    counter: str = component("counter", default="rescsrnet")
    counter_options: dict = field(default_factory=dict)
    captioner: str = "tiny"
    caption_from: Literal["source", "target"] = "source"
    max_captioned_images: int | None = None
    prompt_file: str | None = None
    prompt_file_mode: Literal["add", "replace"] = "add"
    images_per_prompt: int = 10
    generator: str = component("generator", default="stable-diffusion")
    generator_model: str = "tiny"
    steps: int = 50
    guidance_scale: float = 7.5
    max_side: int | None = None
    pool: PoolOptions = field(default_factory=PoolOptions)

    def validate(self) -> list[str]:
        p = []
        if self.train is None:
            p.append("option 'train' (with 'epochs') is required")
        if self.images_per_prompt < 1:
            p.append(f"images_per_prompt must be >= 1, got {self.images_per_prompt}")
        if self.steps < 1:
            p.append(f"steps must be >= 1, got {self.steps}")
        if self.prompt_file is not None:
            try:
                read_prompt_file(self.prompt_file)
            except Exception as exc:  # DataError: one line naming the file
                p.append(str(exc))
        return p


class PromptMix:
    """PromptMix: train a lightweight counter on real source images plus pseudo-labelled synthetic ones.

    Raises (per cell): ConfigError for an impossible annotator choice; WeightsError for a model that cannot be
    loaded (one line naming it)."""

    def __init__(self, options: PromptMixOptions):
        self.opts = options

    def _images_to_caption(self, ctx) -> list[Any]:
        """Refs (``load_image()``, ``image_path``) of the images to caption (seeded subset when capped)."""
        o = self.opts
        refs = list(ctx.target_images) if o.caption_from == "target" else list(ctx.source.samples("train"))
        if o.max_captioned_images is not None and o.max_captioned_images < len(refs):
            idx = np.sort(np.random.default_rng([ctx.seed, 7]).choice(len(refs), o.max_captioned_images,
                                                                     replace=False))
            refs = [refs[i] for i in idx]
        return refs

    def build_prompts(self, ctx) -> list[tuple[str, tuple[int, int]]]:
        """Stages 1–2: ``[(prompt, (H, W) of the captioned image)]``; captions are cached per captioner and
        image file. Prompt-file prompts take the size of the first captioned image, or 512 × 512."""
        from .captioning import load_captioner, resolve_captioner

        o = self.opts
        prompts: list[tuple[str, tuple[int, int]]] = []
        if not (o.prompt_file and o.prompt_file_mode == "replace"):
            resolved = resolve_captioner(o.captioner, ctx.cache.root)
            captioner = None  # loaded only when a caption is missing from the cache
            refs = self._images_to_caption(ctx)
            made: list[str] = []
            with stage(f"caption: {o.captioner}", units=len(refs), unit="image", key=resolved.identity) as st:
                for ref in refs:
                    path = ref.image_path
                    key = {"captioner": resolved.identity, "image": {
                        "dataset": ref.dataset, "split": ref.split, "id": ref.id,
                        "sha256": file_sha256(path) if path else None}}
                    cpath = ctx.cache.path("promptmix/caption", key, ".json")
                    image = ref.load_image()
                    if cpath.exists():
                        caption = json.loads(cpath.read_text(encoding="utf-8"))["caption"]
                    elif st.done and made:  # a dry run (harness.stages): captions made here stand in for the rest
                        caption = made[len(prompts) % len(made)]
                    else:
                        if captioner is None:
                            captioner, _ = load_captioner(o.captioner, ctx.cache.root, ctx.device, resolved)
                            st.set_params(params_of(captioner))
                        with st.unit():
                            caption = captioner.caption([image])[0]
                        made.append(caption)
                        atomic_write_json(cpath, {"caption": caption, "key": key})
                    prompts.append((caption + prompt_suffix(image), tuple(image.shape[:2])))
        if o.prompt_file:
            size = prompts[0][1] if prompts else (512, 512)
            prompts += [(p, size) for p in read_prompt_file(o.prompt_file)]
        return prompts

    def requests(self, ctx, prompts: list[tuple[str, tuple[int, int]]]) -> list[GenerationRequest]:
        """Stage 3: k requests per prompt, each with its own seed (eq. 2's r_i^g)."""
        k = self.opts.images_per_prompt
        return [GenerationRequest(seed=1_000_000 * int(ctx.seed) + i * k + g, size=size, prompt=prompt,
                                  meta={"prompt_index": i})
                for i, (prompt, size) in enumerate(prompts) for g in range(k)]

    def fit(self, ctx):
        o = self.opts
        if o.caption_from == "target":
            ctx.provenance_notes["uses_target_images"] = True
        return fit_with_synthetic(ctx, "promptmix", o.counter, o.counter_options, o.train, o.pool,
                                  lambda: self.synthesise(ctx))

    def synthesise(self, ctx):
        """``(generator, requests, about)`` of this cell: captions -> prompts (written to the cell's
        ``prompts.txt``) -> ``images_per_prompt`` Stable Diffusion requests each."""
        o = self.opts
        prompts = self.build_prompts(ctx)
        atomic_write_text(Path(ctx.workdir) / PROMPTS_FILE, "# PromptMix prompts of this cell (edit and pass as "
                          "prompt_file)\n" + "\n".join(p for p, _ in prompts) + "\n")
        ctx.log.info("promptmix: %d prompts (%s captions by %s)", len(prompts), o.caption_from, o.captioner)
        generator = ctx.build("generator", o.generator, model=o.generator_model, steps=o.steps,
                              guidance_scale=o.guidance_scale, max_side=o.max_side)
        return generator, self.requests(ctx, prompts), {"caption_from": o.caption_from, "captioner": o.captioner}


__all__ = ["PromptMix", "PromptMixOptions", "PROMPTS_FILE"]
