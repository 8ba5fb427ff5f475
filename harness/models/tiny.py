"""Tiny random models built from configs, for tests and ``smoke`` profiles (docs/design.md §9).

Each builder saves a randomly initialised model of the real architecture into ``folder`` (atomically: a
``.partial`` folder renamed into place) so that it loads through the same ``from_pretrained`` path as the real
weights, and returns ``folder``; a folder that exists is reused. Seconds on a CPU; no download.

- :func:`build_tiny_stable_diffusion`: a diffusers Stable Diffusion pipeline (UNet 8/16 channels, VAE ×2, a
  2-layer CLIP text encoder with the real CLIP byte-pair vocabulary from the ``open_clip_torch`` wheel, DDIM).
  Text-to-image and img2img pipelines load from the same folder.
- :func:`build_tiny_unet2d`, :func:`build_tiny_vqmodel`: diffusers ``UNet2DModel`` / ``VQModel`` (latent and
  pixel diffusion on crowd maps).
- :func:`build_tiny_blip`: a transformers BLIP captioner with a word-piece vocabulary of a few words.

torch, diffusers and transformers are imported inside the builders.
"""
from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

from ..io import atomic_write_text


def _finish(tmp: Path, folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return folder


def _start(folder: Path, marker: str) -> Path | None:
    """The temporary folder to build into, or None when ``folder / marker`` exists already."""
    folder = Path(folder)
    if (folder / marker).exists():
        return None
    tmp = folder.with_name(folder.name + f".partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def clip_tokenizer_dir(cache_root: Path) -> Path:
    """Folder with ``vocab.json`` / ``merges.txt`` / ``tokenizer_config.json`` of the CLIP BPE tokenizer (49,408
    tokens), converted once from open_clip's ``bpe_simple_vocab_16e6.txt.gz`` (Stable Diffusion 1.x's vocabulary)."""
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


def clip_tokenizer(cache_root: Path):
    """transformers ``CLIPTokenizer`` over :func:`clip_tokenizer_dir`."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir(cache_root)))


def build_tiny_stable_diffusion(folder: Path, seed: int = 0) -> Path:
    """A tiny random :class:`diffusers.StableDiffusionPipeline` in ``folder`` (see the module notes). Its VAE
    downsamples by 2 and its UNet once more, so image sides must be multiples of 8 (the pipeline's own check)."""
    tmp = _start(folder, "model_index.json")
    if tmp is None:
        return Path(folder)
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

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
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(Path(folder).parent),
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(str(tmp))
    return _finish(tmp, Path(folder))


def build_tiny_unet2d(folder: Path, seed: int = 0, *, in_channels: int = 6, out_channels: int = 3,
                      sample_size: int = 16) -> Path:
    """A tiny random diffusers ``UNet2DModel`` (channels 16/32, one attention-free down/up level each) predicting
    noise on ``out_channels`` from ``in_channels`` (noisy latent + condition, concatenated)."""
    tmp = _start(folder, "config.json")
    if tmp is None:
        return Path(folder)
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels, layers_per_block=1,
                block_out_channels=(16, 32), down_block_types=("DownBlock2D", "DownBlock2D"),
                up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=8).save_pretrained(str(tmp))
    return _finish(tmp, Path(folder))


def build_tiny_vqmodel(folder: Path, seed: int = 0, *, in_channels: int = 1, latent_channels: int = 3,
                       levels: int = 3) -> Path:
    """A tiny random diffusers ``VQModel`` with ``levels`` encoder blocks (down-sampling factor ``2**(levels-1)``;
    3 levels: f = 4 as the LDM counter's first stage), ``latent_channels`` latent channels, 64 codes."""
    tmp = _start(folder, "config.json")
    if tmp is None:
        return Path(folder)
    import torch
    from diffusers import VQModel

    torch.manual_seed(seed)
    VQModel(in_channels=in_channels, out_channels=in_channels, block_out_channels=(8,) * levels,
            down_block_types=("DownEncoderBlock2D",) * levels, up_block_types=("UpDecoderBlock2D",) * levels,
            latent_channels=latent_channels, num_vq_embeddings=64, vq_embed_dim=latent_channels, norm_num_groups=4,
            layers_per_block=1, sample_size=32).save_pretrained(str(tmp))
    return _finish(tmp, Path(folder))


def build_tiny_blip(folder: Path, seed: int = 0) -> Path:
    """A tiny random transformers BLIP captioner (``BlipForConditionalGeneration`` + ``BlipProcessor``, 32-px
    images, a word-piece vocabulary of a few crowd words)."""
    tmp = _start(folder, "config.json")
    if tmp is None:
        return Path(folder)
    import torch
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "crowd", "of", "people", "in", "the",
             "street", "stadium", "fans", "cheer", "."]
    (tmp / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(tmp / "vocab.txt"), bos_token="[DEC]")
    config = BlipConfig(
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config={"vocab_size": len(words), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "encoder_hidden_size": 16, "max_position_embeddings": 32,
                     "bos_token_id": 5, "pad_token_id": 0, "sep_token_id": 3, "eos_token_id": 3})
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(str(tmp))
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tok).save_pretrained(str(tmp))
    return _finish(tmp, Path(folder))


__all__ = ["build_tiny_stable_diffusion", "build_tiny_unet2d", "build_tiny_vqmodel", "build_tiny_blip",
           "clip_tokenizer_dir", "clip_tokenizer"]
