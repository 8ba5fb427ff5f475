"""PromptMix's own model: a tiny random ClipCap captioner (``"tiny"`` captioner of the tests and ``smoke``).

Model ids resolve through the core (:func:`harness.resolve_model`): a hub id, a local folder, or ``"tiny[:seed]"``,
for which :func:`build_tiny_clipcap` is registered (``harness_register_tiny_models``) as the tiny model builder of
kind ``"clipcap"``.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from harness import atomic_write_text, clip_tokenizer


def build_tiny_clipcap(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random ClipCap captioner (CLIP ViT 32 px / 2 layers, MLP mapping to a 4-token prefix, 2-layer
    GPT-2 over the CLIP vocabulary) in the folder layout :class:`~harness_promptmix.captioning.ClipCapCaptioner`
    loads; an existing folder is reused."""
    import torch
    from safetensors.torch import save_file
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection, GPT2Config,
                              GPT2LMHeadModel)

    from .captioning import ClipCapMapping

    folder = Path(folder)
    if (folder / "clipcap.json").exists():
        return folder
    torch.manual_seed(seed)
    tmp = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=16))
    clip.save_pretrained(str(tmp / "clip"))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(tmp / "clip"))
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=49408, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=49406, eos_token_id=49407))
    gpt.save_pretrained(str(tmp / "gpt2"))
    clip_tokenizer(folder.parent).save_pretrained(str(tmp / "gpt2"))
    save_file(ClipCapMapping(16, 16, prefix_length=4).state_dict(), str(tmp / "mapping.safetensors"))
    atomic_write_text(tmp / "clipcap.json", json.dumps({"clip_dim": 16, "gpt_dim": 16, "prefix_length": 4,
                                                        "seed": seed}))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder

