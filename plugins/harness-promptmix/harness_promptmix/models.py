"""Loading the pretrained models PromptMix uses (captioner, Stable Diffusion) and building tiny random ones.

Real weights are taken as-is from a Hugging Face hub id (already in the local Hugging Face cache, or
downloadable where the hub is reachable) or from a local folder. When neither works — e.g. offline — the
loader raises :class:`harness.errors.WeightsError` with one line that names the model and how to provide it.

``"tiny"`` (optionally ``"tiny:<seed>"``) builds a tiny, randomly initialised model of the same architecture
from a config instead (seconds on a CPU): the test suite and the ``smoke`` profile use it, so the whole
pipeline runs without any download. Its tokenizer is the real CLIP byte-pair vocabulary shipped in the
``open_clip_torch`` wheel (``bpe_simple_vocab_16e6.txt.gz``), converted to the Hugging Face CLIPTokenizer
files, so prompts are tokenised exactly as SD 1.5's tokenizer does.
"""
from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from harness.errors import WeightsError
from harness.io import atomic_write_text, content_key

#: default Stable Diffusion (PromptMix: SD v1.5) — the community mirror of runwayml/stable-diffusion-v1-5
SD15_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
#: default captioner of the ``paper`` profile (BLIP, loadable as-is by transformers)
BLIP_ID = "Salesforce/blip-image-captioning-base"

#: version of the tiny builders' configs (part of every cache key that involves a tiny model)
TINY_VERSION = 1


def quiet_hf() -> None:
    """Silence diffusers'/transformers' progress bars and info logs (the harness has its own progress)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()


def parse_tiny(model_id: str) -> int | None:
    """The seed of a ``"tiny"`` / ``"tiny:<seed>"`` model id, or None for any other id."""
    if model_id == "tiny":
        return 0
    if model_id.startswith("tiny:") and model_id[5:].isdigit():
        return int(model_id[5:])
    return None


def resolve_model_dir(model_id: str, what: str, option: str) -> Path:
    """A local folder holding ``model_id``: the folder itself, or the hub snapshot in the Hugging Face cache.

    Tries the local cache first and the hub only when ``HF_HUB_OFFLINE`` is not set.

    Raises:
        WeightsError: neither a folder nor an obtainable hub id (one line: the model and how to provide it).
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") > 1:
        raise WeightsError(f"{what} folder {model_id} does not exist: pass an existing folder or a hub id "
                           f"as option {option!r}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            return Path(snapshot_download(model_id))
        except Exception as exc:
            reason = type(exc).__name__
    raise WeightsError(f"{what} {model_id!r} is not in the local Hugging Face cache and cannot be downloaded "
                       f"({reason}): run `huggingface-cli download {model_id}` where the hub is reachable, or "
                       f"pass a local folder as option {option!r} (or 'tiny' for a random test model)")


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a model folder for cache keys: relative paths and sizes of its files (a hub
    snapshot's path also carries the commit hash)."""
    files = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in Path(folder).rglob("*") if p.is_file())
    return content_key({"folder": str(Path(folder).resolve()), "files": files})


# ----------------------------------------------------------------------------------- CLIP tokenizer


def clip_tokenizer_dir(cache_root: Path) -> Path:
    """Folder with ``vocab.json`` / ``merges.txt`` / ``tokenizer_config.json`` of the CLIP BPE tokenizer
    (49,408 tokens), converted once from open_clip's ``bpe_simple_vocab_16e6.txt.gz``."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    out = Path(cache_root) / "clip-tokenizer"
    if (out / "tokenizer_config.json").exists():
        return out
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    atomic_write_text(out / "vocab.json", json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    atomic_write_text(out / "merges.txt", "#version: 0.2\n" + "\n".join(merges) + "\n")
    atomic_write_text(out / "special_tokens_map.json", json.dumps(
        {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
         "pad_token": "<|endoftext|>"}))
    atomic_write_text(out / "tokenizer_config.json", json.dumps(
        {"model_max_length": 77, "tokenizer_class": "CLIPTokenizer", "bos_token": "<|startoftext|>",
         "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    return out


def _clip_tokenizer(cache_root: Path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir(cache_root)))


# --------------------------------------------------------------------------------- tiny diffusion


def build_tiny_stable_diffusion(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random :class:`diffusers.StableDiffusionPipeline` (UNet 8/16 channels, VAE ×2, 2-layer CLIP
    text encoder with the real CLIP vocabulary, DDIM scheduler) to ``folder``; returns ``folder``.

    It loads through the same ``from_pretrained`` path as SD 1.5. Its VAE downsamples by 2 and its UNet once
    more, so image sides must be multiples of 4 (:func:`harness_promptmix.generation.size_multiple`).
    """
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    if (folder / "model_index.json").exists():
        return folder
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, block_out_channels=(8, 16), latent_channels=4, norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=_clip_tokenizer(folder.parent),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    tmp = folder.with_name(folder.name + ".partial")
    pipe.save_pretrained(str(tmp))
    os.replace(tmp, folder)
    return folder


# ----------------------------------------------------------------------------------- tiny ClipCap


def build_tiny_clipcap(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random ClipCap captioner (CLIP ViT 32 px / 2 layers, MLP mapping to a 4-token prefix,
    2-layer GPT-2 over the CLIP vocabulary) in the folder layout :class:`ClipCapCaptioner` loads."""
    import torch
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection, GPT2Config,
                              GPT2LMHeadModel)

    folder = Path(folder)
    if (folder / "clipcap.json").exists():
        return folder
    torch.manual_seed(seed)
    tmp = folder.with_name(folder.name + ".partial")
    clip = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=32,
        patch_size=8, projection_dim=16))
    clip.save_pretrained(str(tmp / "clip"))
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        str(tmp / "clip"))
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=49408, n_positions=64, n_embd=16, n_layer=2, n_head=2,
                                     bos_token_id=49406, eos_token_id=49407))
    gpt.save_pretrained(str(tmp / "gpt2"))
    _clip_tokenizer(folder.parent).save_pretrained(str(tmp / "gpt2"))
    from .captioning import ClipCapMapping

    mapping = ClipCapMapping(16, 16, prefix_length=4)
    from safetensors.torch import save_file

    save_file(mapping.state_dict(), str(tmp / "mapping.safetensors"))
    atomic_write_text(tmp / "clipcap.json", json.dumps(
        {"clip_dim": 16, "gpt_dim": 16, "prefix_length": 4, "tiny_version": TINY_VERSION, "seed": seed}))
    os.replace(tmp, folder)
    return folder


def tiny_folder(cache_root: Path, kind: str, seed: int) -> Path:
    """Where the tiny ``kind`` (``"sd"`` or ``"clipcap"``) model of ``seed`` is kept in the cache."""
    return Path(cache_root) / "promptmix-tiny" / f"{kind}-v{TINY_VERSION}-seed{seed}"


def model_identity(model_id: str, cache_root: Path, kind: str, option: str) -> tuple[Path, dict]:
    """``(folder, identity)`` of a model id: tiny models are built on first use; identity (for cache keys)
    holds the id and a fingerprint of the files."""
    quiet_hf()
    seed = parse_tiny(model_id)
    if seed is not None:
        builder = build_tiny_stable_diffusion if kind == "sd" else build_tiny_clipcap
        folder = builder(tiny_folder(cache_root, kind, seed), seed)
        return folder, {"model": model_id, "tiny_version": TINY_VERSION}
    what = "Stable Diffusion model" if kind == "sd" else "captioner"
    folder = resolve_model_dir(model_id, what, option)
    return folder, {"model": model_id, "files": folder_fingerprint(folder)}

