"""Architecture-only models for the dry run: the real architecture with random weights, built from the
configuration files the harness ships (``harness/models/configs/<name>/``), saved as a model folder so that it
loads through the same ``from_pretrained`` path as the released weights (docs/design.md §14).

Used only while a dry run is metering (:func:`harness.stages.active_meter`) and the released weights do not
resolve; every use is recorded as "architecture only" in the dry run's report. The configurations are those of
the released checkpoints (``model_index.json`` / ``config.json`` of the hub repositories):

- ``stable-diffusion-v1-5/stable-diffusion-v1-5`` (SD 1.5: UNet 320-640-1280-1280, cross-attention 768, CLIP
  ViT-L/14 text encoder, AutoencoderKL f = 8, PNDM);
- ``stabilityai/stable-diffusion-2-1`` (SD 2.1 768-v: head dims 5-10-20-20, linear projections, cross-attention
  1024, OpenCLIP ViT-H/14 text encoder with 23 layers, v-prediction DDIM);
- ``Salesforce/blip-image-captioning-base`` (BLIP: ViT-B/16 at 384 px, BERT-base decoder, 30,524 tokens).

Tokenizers: Stable Diffusion's is the CLIP BPE vocabulary (:func:`harness.models.tiny.clip_tokenizer_dir`); BLIP's
word-piece vocabulary is not shipped, so a placeholder vocabulary of the real size with BERT's special-token ids
stands in (captions of a random model are placeholders anyway). Weights are saved in fp16 for Stable Diffusion
(half the disk; loaded in the pipeline's dtype) and fp32 for BLIP.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from .tiny import _finish, _start, clip_tokenizer_dir

CONFIGS = Path(__file__).parent / "configs"
#: version of the architecture-only builders (part of the folder name)
ARCHITECTURE_VERSION = 1
#: hub id -> (shipped configuration folder, builder)
KNOWN = {"stable-diffusion-v1-5/stable-diffusion-v1-5": "stable-diffusion-v1-5",
         "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5",
         "stabilityai/stable-diffusion-2-1": "stable-diffusion-2-1",
         "Salesforce/blip-image-captioning-base": "blip-image-captioning-base"}


def has_architecture(model_id: str) -> bool:
    """Whether a configuration of ``model_id`` ships with the harness."""
    return model_id in KNOWN


def build_architecture(model_id: str, cache_root: str | Path, seed: int = 0) -> Path:
    """The folder of ``model_id``'s architecture with random weights (built once into
    ``<cache_root>/architecture/<name>-v<version>``).

    Raises:
        KeyError: no configuration of ``model_id`` ships with the harness (:func:`has_architecture`)."""
    name = KNOWN[model_id]
    folder = Path(cache_root) / "architecture" / f"{name}-v{ARCHITECTURE_VERSION}"
    if name.startswith("stable-diffusion"):
        return _stable_diffusion(CONFIGS / name, folder, Path(cache_root), seed)
    return _blip(CONFIGS / name, folder, seed)


def _stable_diffusion(src: Path, folder: Path, cache_root: Path, seed: int) -> Path:
    tmp = _start(folder, "model_index.json")
    if tmp is None:
        return folder
    import diffusers
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    index = json.loads((src / "model_index.json").read_text())
    for part in ("unet", "vae"):
        cls = getattr(diffusers, index[part][1])
        cls.from_config(cls.load_config(str(src / part))).to(torch.float16).save_pretrained(str(tmp / part))
    CLIPTextModel(CLIPTextConfig.from_pretrained(str(src / "text_encoder"))).to(torch.float16).save_pretrained(
        str(tmp / "text_encoder"))
    shutil.copytree(src / "scheduler", tmp / "scheduler")
    shutil.copytree(clip_tokenizer_dir(cache_root), tmp / "tokenizer")
    shutil.copy(src / "model_index.json", tmp / "model_index.json")
    return _finish(tmp, folder)


def _blip(src: Path, folder: Path, seed: int) -> Path:
    tmp = _start(folder, "config.json")
    if tmp is None:
        return folder
    import torch
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    special = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
    (tmp / "vocab.txt").write_text("\n".join(special.get(i, f"[unused{i}]" if i < 999 else f"w{i}")
                                             for i in range(30522)) + "\n")
    tok = BertTokenizerFast(vocab_file=str(tmp / "vocab.txt"), bos_token="[DEC]")
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    torch.manual_seed(seed)
    BlipForConditionalGeneration(BlipConfig.from_pretrained(str(src))).save_pretrained(str(tmp))
    proc = json.loads((src / "preprocessor_config.json").read_text())
    proc.pop("image_processor_type", None)
    BlipProcessor(BlipImageProcessor(**proc), tok).save_pretrained(str(tmp))
    return _finish(tmp, folder)


__all__ = ["build_architecture", "has_architecture", "KNOWN", "CONFIGS", "ARCHITECTURE_VERSION"]
