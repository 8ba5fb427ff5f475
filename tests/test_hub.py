"""Model resolution and tiny builders in the core: the CLIP tokenizer built from open_clip's vocabulary, the tiny
Stable Diffusion generator (seeds, sizes, text and img2img requests), size rounding, and offline one-line errors."""
from __future__ import annotations

import numpy as np
import pytest

from harness import (ConfigError, GenerationRequest, StableDiffusionGenerator, WeightsError, clip_tokenizer_dir,
                     resolve_model)
from harness.models.diffusion import round_size, size_multiple


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


def req(seed, prompt="a crowd", **kw):
    return GenerationRequest(seed=seed, size=(768, 1024), prompt=prompt, **kw)


def test_tiny_generator_seeds_and_sizes(tiny_generator):
    g = tiny_generator
    assert g.multiple == 8 and g.output_size(768, 1024) == (48, 64)
    assert g._pipes == {} and g.key()["dtype"] == "float32"  # sizes and cache keys need no weights
    # on a GPU the pipeline runs at the precision the dry run projects it at (one fact, two uses)
    on_gpu = StableDiffusionGenerator("tiny", steps=2, max_side=64, device="cuda", cache_root=g.folder.parent.parent)
    assert on_gpu.gpu_precision == "fp16" and on_gpu.key()["dtype"] == "float16"
    a, b, c = g.generate([req(1), req(1), req(2)])
    assert a.image.shape == (48, 64, 3) and a.image.dtype == np.uint8
    assert np.array_equal(a.image, b.image)  # same prompt and seed: same image
    assert not np.array_equal(a.image, c.image)  # another seed: another image
    assert a.seed == 1 and c.seed == 2 and a.prompt == "a crowd" and a.request == req(1)
    d = g.generate([req(1, "fans cheer during the match")])[0]
    assert not np.array_equal(a.image, d.image)  # the prompt conditions the image
    e = g.generate([req(1, negative_prompt="people, crowds")])[0]
    assert not np.array_equal(a.image, e.image)  # so does the negative prompt


def test_tiny_generator_img2img(tiny_generator):
    """img2img (SYRAC's "emptied" pairs): the init image and the strength decide the output; same seed, same image."""
    g = tiny_generator
    init = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    a, b = g.generate([req(3, init_image=init, strength=0.5), req(3, init_image=init, strength=0.5)])
    assert a.image.shape == (48, 64, 3) and np.array_equal(a.image, b.image)
    c = g.generate([req(3, init_image=init, strength=1.0)])[0]
    assert not np.array_equal(a.image, c.image)
    other = g.generate([req(3, init_image=255 - init, strength=0.5)])[0]
    assert not np.array_equal(a.image, other.image)
    assert req(3, init_image=init, strength=0.5).key() != req(3, init_image=255 - init, strength=0.5).key()
    with pytest.raises(ConfigError, match="strength"):
        g.generate([req(3, init_image=init)])
    with pytest.raises(ConfigError, match=r"int\(steps × strength\) = 0 denoising steps"):
        g.generate([req(3, init_image=init, strength=0.2)])  # 2 steps x 0.2
    with pytest.raises(ConfigError, match="label masks"):
        g.generate([req(3, label_mask=np.zeros((8, 8), np.int32))])


@pytest.mark.parametrize("kind", ["unet2d", "vqmodel", "blip"])
def test_tiny_builders_load_with_from_pretrained(kind, tmp_path):
    import torch

    m = resolve_model("tiny:1", kind=kind, cache_root=tmp_path)
    assert m.tiny and m.folder.is_dir() and m.identity["kind"] == kind
    again = resolve_model("tiny:1", kind=kind, cache_root=tmp_path)
    assert again.folder == m.folder  # built once, reused
    if kind == "unet2d":
        from diffusers import UNet2DModel

        unet = UNet2DModel.from_pretrained(str(m.folder))
        out = unet(torch.zeros(1, 6, 16, 16), 10).sample
        assert out.shape == (1, 3, 16, 16)
    elif kind == "vqmodel":
        from diffusers import VQModel

        vq = VQModel.from_pretrained(str(m.folder))
        z = vq.encode(torch.zeros(1, 1, 32, 32)).latents
        assert z.shape == (1, 3, 8, 8)  # f = 4
        assert vq.decode(z).sample.shape == (1, 1, 32, 32)
    else:
        from transformers import BlipForConditionalGeneration

        assert BlipForConditionalGeneration.from_pretrained(str(m.folder)).config.vision_config.image_size == 32


def test_offline_model_gives_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsError) as exc:
        StableDiffusionGenerator("no-such-org/no-such-sd", cache_root=tmp_path)
    msg = str(exc.value)
    assert "\n" not in msg and "'no-such-org/no-such-sd'" in msg and "huggingface-cli download" in msg
    with pytest.raises(WeightsError, match="folder .*missing-folder does not exist"):
        StableDiffusionGenerator(str(tmp_path / "missing-folder"), cache_root=tmp_path)


