"""PromptMix's own components: prompts (suffix, greyscale on real SHA images, prompt files) and the captioners
(tiny ClipCap, BLIP from a checkpoint folder, conversion of an original ClipCap checkpoint)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness import ConfigError, DataError, resolve_model
from harness_promptmix.captioning import load_captioner
from harness_promptmix.prompts import is_greyscale, prompt_suffix, read_prompt_file


# ----------------------------------------------------------------------------------------- prompts

def _sha_train_images(data_root):
    return sorted((data_root / "ShanghaiTech" / "part_A" / "train_data" / "images").glob("IMG_*.jpg"),
                  key=lambda p: int(p.stem.split("_")[1]))


def test_prompt_suffix_on_real_greyscale_and_colour_images(data_root):
    grey = colour = None
    for path in _sha_train_images(data_root):
        with Image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im.convert("RGB"))
        if mode == "L" and grey is None:
            grey = arr
        elif mode == "RGB" and colour is None and not is_greyscale(arr):
            colour = arr
        if grey is not None and colour is not None:
            break
    assert grey is not None and colour is not None
    h, w = grey.shape[:2]
    assert prompt_suffix(grey) == f", {w}x{h} pixels, greyscale photo"
    assert prompt_suffix(colour).endswith("colour photo")


def test_prompt_file(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("# my prompts\n\n  a   dense crowd at a concert  \n# off\nfans in a stadium\n", encoding="utf-8")
    assert read_prompt_file(f) == ["a dense crowd at a concert", "fans in a stadium"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(DataError, match="holds no prompt"):
        read_prompt_file(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="cannot be read"):
        read_prompt_file(tmp_path / "missing.txt")


def test_tiny_captioner(tmp_path):
    cap, identity = load_captioner("tiny", tmp_path)
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    out = cap.caption([img, img])
    assert len(out) == 2 and out[0] == out[1] and isinstance(out[0], str) and out[0]
    assert identity["model"] == "tiny"


def test_blip_captioner_loads_a_checkpoint_folder(tmp_path):
    folder = resolve_model("tiny", kind="blip", cache_root=tmp_path).folder  # the core's tiny BLIP
    cap, identity = load_captioner(str(folder), tmp_path)
    assert type(cap).__name__ == "BlipCaptioner" and identity["model"] == str(folder)
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    out = cap.caption([img])
    vocab = {"a", "crowd", "of", "people", "in", "the", "street", "stadium", "fans", "cheer"}
    assert len(out) == 1 and set(out[0].split()) <= vocab


def test_original_clipcap_checkpoint_converts_to_the_same_captioner(tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import GPT2LMHeadModel

    from harness_promptmix.captioning import ClipCapCaptioner, convert_clipcap_checkpoint
    from harness_promptmix.models import build_tiny_clipcap

    tiny = build_tiny_clipcap(tmp_path / "tiny", seed=3)
    # the original ClipCap layout: one state dict with clip_project.model.{0,2}.* and gpt.* keys
    state = {f"clip_project.{k}": v for k, v in load_file(str(tiny / "mapping.safetensors")).items()}
    state.update({f"gpt.{k}": v for k, v in GPT2LMHeadModel.from_pretrained(str(tiny / "gpt2")).state_dict().items()})
    torch.save(state, tmp_path / "coco_prefix.pt")
    other = build_tiny_clipcap(tmp_path / "other", seed=4)  # a GPT-2 folder with other weights: overwritten
    out = convert_clipcap_checkpoint(tmp_path / "coco_prefix.pt", tiny / "clip", other / "gpt2", tmp_path / "conv",
                                     prefix_length=4)
    img = np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    assert ClipCapCaptioner(out).caption([img]) == ClipCapCaptioner(tiny).caption([img])
    assert ClipCapCaptioner(other).caption([img]) != ClipCapCaptioner(tiny).caption([img])
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="no clip_project"):
        convert_clipcap_checkpoint(tmp_path / "bad.pt", tiny / "clip", tiny / "gpt2", tmp_path / "x")
