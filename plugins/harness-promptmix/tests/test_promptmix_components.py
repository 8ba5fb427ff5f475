"""PromptMix components on hand cases and tiny models: quality score (eq. 4, eq. 10 / MAE), pseudo-label
points, prompts (suffix, greyscale on real SHA images, prompt files), the CLIP tokenizer built from
open_clip's vocabulary, the tiny Stable Diffusion generator (seeds, sizes) and offline errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from harness.errors import ConfigError, DataError, WeightsError
from harness.specs import PseudoLabel
from harness_promptmix.annotation import density_to_points, quality_score
from harness_promptmix.captioning import is_greyscale, load_captioner, prompt_suffix, read_prompt_file
from harness_promptmix.generation import StableDiffusionGenerator, round_size, size_multiple
from harness_promptmix.models import clip_tokenizer_dir


def lab(count, density=None, stride=1):
    return PseudoLabel(count=count, density=density, meta={"stride": stride})


# ------------------------------------------------------------------------------------- quality score

def test_quality_score_counts_eq4_eq10():
    # max pairwise |count difference| = |10 - 20| = 10, max count 20
    assert quality_score([lab(10.0), lab(12.0), lab(20.0)]) == pytest.approx(0.5)
    assert quality_score([lab(7.0), lab(7.0)]) == 0.0
    assert quality_score([lab(0.0), lab(0.0)]) == 0.0  # 0/0: the annotators agree
    assert quality_score([lab(0.0), lab(4.0)]) == pytest.approx(1.0)


def test_quality_score_mae_on_a_common_grid():
    # annotator 1 at stride 4 (4x4 map of a 16x16 image), annotator 2 at stride 8 (2x2 map)
    a = np.zeros((4, 4))
    a[0, 0] = 4.0  # all mass in the top-left 8x8 block after sum-pooling
    b = np.array([[2.0, 0.0], [0.0, 2.0]])
    q = quality_score([lab(4.0, a, 4), lab(4.0, b, 8)], "mae", (16, 16))
    # common grid (stride 8): A = [[4,0],[0,0]], B = [[2,0],[0,2]]; MAE(A,B) = (2+2)/4 = 1; max MAE(.,0) = 1
    assert q == pytest.approx(1.0)
    # counts agree, so the count distance sees nothing: the MAE distance sees the different layouts
    assert quality_score([lab(4.0, a, 4), lab(4.0, b, 8)], "count") == 0.0


def test_quality_score_errors():
    with pytest.raises(ConfigError, match="at least two annotators"):
        quality_score([lab(1.0)])
    with pytest.raises(ConfigError, match="unknown quality distance"):
        quality_score([lab(1.0), lab(2.0)], "rmse")
    with pytest.raises(ConfigError, match="needs every annotator's density map"):
        quality_score([lab(1.0), lab(2.0)], "mae", (8, 8))


# ----------------------------------------------------------------------------------- pseudo-labels

def test_density_to_points_keeps_count_and_layout():
    d = np.zeros((6, 8), dtype=np.float32)
    d[1, 2], d[4, 6], d[5, 0] = 3.2, 1.7, 0.4  # 5.3 people -> 5 points
    pts = density_to_points(d, 8, (48, 64), np.random.default_rng(0))
    assert pts.shape == (5, 2)
    cells = [(int(y // 8), int(x // 8)) for x, y in pts]
    # quotas 3.02 / 1.60 / 0.38 -> floors 3 / 1 / 0, the one left goes to the largest remainder (1.60)
    assert sorted(cells) == [(1, 2)] * 3 + [(4, 6)] * 2


def test_density_to_points_empty_and_clipped():
    assert density_to_points(np.zeros((3, 3)), 4, (12, 12), np.random.default_rng(0)).shape == (0, 2)
    d = np.full((2, 2), 2.0)
    pts = density_to_points(d, 10, (15, 15), np.random.default_rng(1))  # image smaller than the map's cover
    assert len(pts) == 8 and pts.max() < 15


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


def test_clip_tokenizer_matches_open_clip(tmp_path):
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(clip_tokenizer_dir(tmp_path)))
    text = "crowds gather to watch the parade, 1024x768 pixels, greyscale photo"
    ours = tok(text)["input_ids"]
    ref = SimpleTokenizer().encode(text)
    assert ours[0] == 49406 and ours[-1] == 49407 and ours[1:-1] == ref
    assert len(tok) == 49408


# ---------------------------------------------------------------------------------- generation

@pytest.fixture(scope="module")
def tiny_generator(tmp_path_factory):
    return StableDiffusionGenerator("tiny", steps=2, max_side=64, cache_root=tmp_path_factory.mktemp("pm"))


def test_size_multiple_of_sd15_configs(tmp_path):
    import json

    for part, blocks in (("vae", [128, 256, 512, 512]), ("unet", [320, 640, 1280, 1280])):  # SD 1.5's configs
        (tmp_path / part).mkdir()
        (tmp_path / part / "config.json").write_text(json.dumps({"block_out_channels": blocks}))
    assert size_multiple(tmp_path) == 64
    with pytest.raises(ConfigError, match="not a diffusers Stable Diffusion folder"):
        size_multiple(tmp_path / "vae")


def test_round_size():
    assert round_size(768, 1024, 64) == (768, 1024)
    assert round_size(700, 500, 64) == (704, 512)
    assert round_size(768, 1024, 8, max_side=256) == (192, 256)
    assert round_size(3, 3, 8) == (8, 8)


def test_tiny_generator_seeds_and_sizes(tiny_generator):
    g = tiny_generator
    assert g.multiple == 8 and g.output_size(768, 1024) == (48, 64)
    assert g._pipe is None and g.key()["dtype"] == "torch.float32"  # sizes and cache keys need no weights
    a, b, c = g.generate(["a crowd"] * 3, [1, 1, 2], [(48, 64)] * 3)
    assert a.image.shape == (48, 64, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image)  # same prompt and seed: same image
    assert not np.array_equal(a.image, c.image)  # another seed: another image
    assert a.seed == 1 and c.seed == 2 and a.prompt == "a crowd"
    d = g.generate(["fans cheer during the match"], [1], [(48, 64)])[0]
    assert not np.array_equal(a.image, d.image)  # the prompt conditions the image


def test_offline_model_gives_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsError) as exc:
        StableDiffusionGenerator("no-such-org/no-such-sd", cache_root=tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "'no-such-org/no-such-sd'" in msg and "huggingface-cli download" in msg
    with pytest.raises(WeightsError, match="folder .*missing-folder does not exist"):
        StableDiffusionGenerator(str(tmp_path / "missing-folder"), cache_root=tmp_path)


def test_tiny_captioner(tmp_path):
    cap, identity = load_captioner("tiny", tmp_path)
    img = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    out = cap.caption([img, img])
    assert len(out) == 2 and out[0] == out[1] and isinstance(out[0], str) and out[0]
    assert identity["model"] == "tiny"


def _tiny_blip(folder):
    """A tiny random BLIP captioner saved like a hub checkpoint (BERT word-piece vocabulary of a few words)."""
    from transformers import (BertTokenizerFast, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor,
                              BlipProcessor)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "crowd", "of", "people", "in", "the",
             "street", "stadium", "fans", "cheer", "."]
    (folder / "tok").mkdir(parents=True)
    (folder / "tok" / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(folder / "tok" / "vocab.txt"), bos_token="[DEC]")
    config = BlipConfig(
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        text_config={"vocab_size": len(words), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "encoder_hidden_size": 16, "max_position_embeddings": 32,
                     "bos_token_id": 5, "pad_token_id": 0, "sep_token_id": 3, "eos_token_id": 3})
    import torch

    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(str(folder / "blip"))
    BlipProcessor(BlipImageProcessor(size={"height": 32, "width": 32}), tok).save_pretrained(str(folder / "blip"))
    return folder / "blip"


def test_blip_captioner_loads_a_checkpoint_folder(tmp_path):
    folder = _tiny_blip(tmp_path)
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
