"""PromptMix stages 1–2: caption real images (eq. 1, p^i = f_cap(I_i)) and build the bag of prompts.

Captioners share one interface, ``caption(images) -> list[str]``; :func:`load_captioner` picks one by model id:

- ClipCap (Mokady et al. 2021; PromptMix's f_cap): the CLIP image embedding is mapped by an MLP to a prefix of
  ``prefix_length`` GPT-2 token embeddings and GPT-2 continues it greedily. Folder layout: ``clipcap.json``
  (``clip_dim``, ``gpt_dim``, ``prefix_length``), ``clip/`` (a transformers CLIPVisionModelWithProjection +
  image processor), ``gpt2/`` (GPT2LMHeadModel + tokenizer) and ``mapping.safetensors`` (the MLP).
  :func:`convert_clipcap_checkpoint` turns the original ClipCap ``.pt`` (keys ``clip_project.model.*``,
  ``gpt.*``) into that layout. ``"tiny"`` builds a random one (tests, ``smoke``).
- BLIP (any id or folder whose name contains ``blip``): transformers' ``BlipForConditionalGeneration``.

Prompts (Aarhus report §IV-A-1): each caption is suffixed with the size of the captioned image and whether it
is in colour or greyscale, e.g. ``"crowds gather to watch the parade, 1024x768 pixels, colour photo"``. A
prompt file (one prompt per line, ``#`` comments) adds prompts to, or replaces, the generated bag (stage 2).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch

from harness import ConfigError

from .prompts import clean_caption


class Captioner(Protocol):
    """``caption(images: list[(H, W, 3) uint8 RGB]) -> list[str]`` (one caption per image)."""

    model_id: str

    def caption(self, images: Sequence[np.ndarray]) -> list[str]: ...


class ClipCapMapping(torch.nn.Module):
    """ClipCap's MLP mapping network: ``(B, clip_dim) -> (B, prefix_length, gpt_dim)``
    (Linear → Tanh → Linear, hidden ``gpt_dim · prefix_length / 2``; Mokady et al. 2021, §3)."""

    def __init__(self, clip_dim: int, gpt_dim: int, prefix_length: int = 10):
        super().__init__()
        nn = torch.nn
        hidden = gpt_dim * prefix_length // 2
        self.prefix_length, self.gpt_dim = prefix_length, gpt_dim
        self.model = nn.Sequential(nn.Linear(clip_dim, hidden), nn.Tanh(), nn.Linear(hidden, gpt_dim * prefix_length))

    def forward(self, x):
        return self.model(x).view(x.shape[0], self.prefix_length, self.gpt_dim)


class ClipCapCaptioner:
    """ClipCap captioner loaded from a folder (see the module docstring); greedy decoding of up to
    ``max_tokens`` tokens after the prefix, stopping at the end-of-text token or a full stop."""

    def __init__(self, folder: str | Path, model_id: str | None = None, device: str = "cpu", max_tokens: int = 20):
        from safetensors.torch import load_file
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPVisionModelWithProjection, GPT2LMHeadModel

        folder = Path(folder)
        try:
            cfg = json.loads((folder / "clipcap.json").read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{folder / 'clipcap.json'} is missing or unreadable ({type(exc).__name__}): a "
                              f"ClipCap folder needs clipcap.json, clip/, gpt2/ and mapping.safetensors") from None
        self.model_id = model_id or str(folder)
        self.device = device
        self.max_tokens = int(max_tokens)
        self.clip = CLIPVisionModelWithProjection.from_pretrained(str(folder / "clip")).to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(str(folder / "clip"))
        self.gpt = GPT2LMHeadModel.from_pretrained(str(folder / "gpt2")).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder / "gpt2"))
        self.mapping = ClipCapMapping(cfg["clip_dim"], cfg["gpt_dim"], cfg["prefix_length"])
        self.mapping.load_state_dict(load_file(str(folder / "mapping.safetensors")))
        self.mapping.to(device).eval()
        self.eos = self.tokenizer.eos_token_id

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        out = []
        with torch.no_grad():
            for image in images:
                pixels = self.processor(images=image, return_tensors="pt")["pixel_values"].to(self.device)
                prefix = self.mapping(self.clip(pixel_values=pixels).image_embeds)
                embeds, tokens = prefix, []
                wte = self.gpt.get_input_embeddings()
                for _ in range(self.max_tokens):
                    logits = self.gpt(inputs_embeds=embeds).logits[:, -1]
                    token = int(logits.argmax(-1))
                    if token == self.eos:
                        break
                    tokens.append(token)
                    if self.tokenizer.decode([token]).strip() == ".":
                        break
                    embeds = torch.cat([embeds, wte(torch.tensor([[token]], device=self.device))], dim=1)
                out.append(clean_caption(self.tokenizer.decode(tokens, skip_special_tokens=True)))
        return out


class BlipCaptioner:
    """BLIP image captioning (Li et al. 2022) through transformers, greedy, up to ``max_tokens`` tokens."""

    def __init__(self, folder: str | Path, model_id: str | None = None, device: str = "cpu", max_tokens: int = 30):
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.model_id = model_id or str(folder)
        self.device = device
        self.max_tokens = int(max_tokens)
        self.processor = BlipProcessor.from_pretrained(str(folder))
        self.model = BlipForConditionalGeneration.from_pretrained(str(folder)).to(device).eval()

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        out = []
        with torch.no_grad():
            for image in images:
                inputs = self.processor(images=image, return_tensors="pt").to(self.device)
                ids = self.model.generate(**inputs, max_new_tokens=self.max_tokens, do_sample=False)
                out.append(clean_caption(self.processor.decode(ids[0], skip_special_tokens=True)))
        return out


def resolve_captioner(model_id: str, cache_root: Path):
    """The :class:`harness.ResolvedModel` of a captioner id (``"tiny[:seed]"`` builds a tiny ClipCap).

    Raises:
        WeightsError: the model is neither a local folder nor obtainable from the hub (one line)."""
    from harness import quiet_hf, resolve_model

    quiet_hf()
    return resolve_model(model_id, kind="clipcap", cache_root=cache_root, what="captioner", option="captioner")


def load_captioner(model_id: str, cache_root: Path, device: str = "cpu", resolved=None) -> tuple[Captioner, dict]:
    """``(captioner, identity)`` for ``model_id``: ``"tiny[:seed]"``, a BLIP id/folder, or a ClipCap folder.

    ``resolved``: the :class:`harness.ResolvedModel` from :func:`resolve_captioner`, when the caller has it.

    Raises:
        WeightsError: the model is neither a local folder nor obtainable from the hub (one line).
    """
    resolved = resolved or resolve_captioner(model_id, cache_root)
    folder, identity = resolved.folder, resolved.identity
    config = folder / "config.json"
    if "blip" in model_id.lower() or (config.exists() and "blip" in config.read_text(errors="ignore").lower()):
        return BlipCaptioner(folder, model_id, device), identity
    return ClipCapCaptioner(folder, model_id, device), identity


def convert_clipcap_checkpoint(checkpoint: str | Path, clip_folder: str | Path, gpt2_folder: str | Path,
                               out: str | Path, prefix_length: int = 10) -> Path:
    """Write an original ClipCap checkpoint (``clip_project.model.{0,2}.*`` + ``gpt.*``, MLP mapping) with a
    CLIP ViT-B/32 vision folder and a GPT-2 folder (tokenizer) as the folder :class:`ClipCapCaptioner` loads."""
    import shutil

    from harness import read_state_dict
    from safetensors.torch import save_file
    from transformers import GPT2LMHeadModel

    state = read_state_dict(checkpoint, "ClipCap checkpoint")
    out = Path(out)
    mapping = {k[len("clip_project."):]: v for k, v in state.items() if k.startswith("clip_project.")}
    gpt_state = {k[len("gpt."):]: v for k, v in state.items() if k.startswith("gpt.")}
    if not mapping or not gpt_state:
        raise ConfigError(f"{checkpoint} has no clip_project.* / gpt.* keys: pass an original ClipCap MLP checkpoint")
    gpt = GPT2LMHeadModel.from_pretrained(str(gpt2_folder))
    unexpected = gpt.load_state_dict(gpt_state, strict=False).unexpected_keys
    if unexpected:
        raise ConfigError(f"{checkpoint}: gpt.* keys {', '.join(unexpected[:3])} do not fit the GPT-2 in "
                          f"{gpt2_folder}; pass the GPT-2 the checkpoint was trained from")
    gpt.save_pretrained(str(out / "gpt2"))
    for name in ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (Path(gpt2_folder) / name).exists():
            shutil.copy(Path(gpt2_folder) / name, out / "gpt2" / name)
    shutil.copytree(clip_folder, out / "clip", dirs_exist_ok=True)
    save_file({k: v.contiguous() for k, v in mapping.items()}, str(out / "mapping.safetensors"))
    clip_dim = int(mapping["model.0.weight"].shape[1])
    gpt_dim = int(gpt.config.n_embd)
    (out / "clipcap.json").write_text(json.dumps({"clip_dim": clip_dim, "gpt_dim": gpt_dim,
                                                  "prefix_length": prefix_length}))
    return out
