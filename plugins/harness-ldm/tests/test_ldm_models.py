"""The networks: VQ round trip (shapes, scale), tiny models through harness.resolve_model, DDIM sampling driven by the
generator alone, fusion rules, options validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import ConfigError
from harness_ldm.config import TINY, parse_options
from harness_ldm.counter import LDMCounter, fuse, load_counter, save_model
from harness_ldm.crowdmap import render_crowd_map
from harness_ldm.models import LDMNet, ddim_sample, ddim_scheduler, reconstruct


def opts(**changes):
    d = {**TINY, **changes}
    return parse_options(d)


@pytest.fixture(scope="module")
def tiny_vq_net(tmp_path_factory):
    """An LDMNet whose first stage and denoiser come from the core's "tiny" builders (resolve_model)."""
    o = opts(crop_size=32, vq={**TINY["vq"], "init": "tiny"}, unet={**TINY["unet"], "init": "tiny"})
    return LDMNet(o, seed=0, cache_root=tmp_path_factory.mktemp("cache")), o


def test_vq_round_trip_shapes_and_latent_scale(tiny_vq_net):
    net, o = tiny_vq_net
    assert net.factor == 4 and net.vq.config.latent_channels == 3  # f = 4; the core's tiny VQModel has 3 channels
    pts = np.array([[5.5, 5.5], [20.2, 11.7], [30.0, 30.0]])
    x = torch.from_numpy(np.stack([render_crowd_map(pts, (32, 32), 0.5)] * 2))[:, None]
    z = net.encode_maps(x)
    assert z.shape == (2, 3, 8, 8)
    with torch.no_grad():
        raw = net.vq.encode(x).latents
        net.latent_scale.fill_(2.5)
        assert torch.allclose(net.encode_maps(x), 2.5 * raw)
        dec = net.decode(net.encode_maps(x))
        assert torch.allclose(dec, net.vq.decode(raw).sample.clamp(-1, 1), atol=1e-5)  # the scale cancels
        net.latent_scale.fill_(1.0)
    assert dec.shape == (2, 1, 32, 32) and dec.min() >= -1 and dec.max() <= 1
    rec = reconstruct(net, x)
    assert rec.shape == (2, 32, 32)


def test_init_models_with_wrong_channels_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="latent_channels"):
        LDMNet(opts(vq={**TINY["vq"], "init": "tiny", "latent_channels": 4}), cache_root=tmp_path)
    with pytest.raises(ConfigError, match="channels"):
        LDMNet(opts(cond_channels=4, unet={**TINY["unet"], "init": "tiny"}), cache_root=tmp_path)


def test_pixel_space_diffuses_the_map_itself():
    o = opts(space="pixel")
    net = LDMNet(o, seed=0)
    assert net.vq is None and net.factor == 1 and net.unet.config.in_channels == 4  # map + RGB (CrowdDiff)
    x = torch.rand(2, 1, 32, 32) * 4 - 2
    assert torch.equal(net.encode_maps(x), x) and net.decode(x).abs().max() <= 1


def test_ddim_sampling_uses_only_the_generator():
    o = opts()
    net = LDMNet(o, seed=0).eval()
    cond = torch.randn(3, 3, 8, 8)
    sched = ddim_scheduler(o)

    def run(seed, eta=0.0):
        torch.manual_seed(123 + seed * 7)  # the global RNG must not matter
        return ddim_sample(net, cond, sched, steps=3, eta=eta, generator=torch.Generator().manual_seed(seed),
                           batch_size=2)

    a, b, c = run(1), run(1), run(2)
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(run(5, eta=1.0), run(5, eta=1.0))


def test_fusion_rules_on_hand_made_hypotheses():
    o = opts()
    base = np.full((20, 20), -1.0, np.float32)
    maps = []
    for k, extra in enumerate([[], [(15, 15)], [(15, 15), (2, 17)]]):
        m = base.copy()
        m[5, 5] = m[10, 12] = 1.0  # two heads every hypothesis agrees on
        for x, y in extra:
            m[y, x] = 1.0
        maps.append(m)
    maps = np.stack(maps)
    def rule(name):
        return parse_options({**TINY, "sampling": {**TINY["sampling"], "fusion": name}})

    out = fuse(maps, rule("pixel-median"))
    assert out["counts"] == [2, 3, 4]
    assert out["count"] == 3 and out["by_rule"] == {"count-median": 3.0, "pixel-median": 3.0, "pixel-mean": 3.0}
    # the pixel mean at (15, 15) is 1/3 -> 0.67 in [0, 1] map units, above the 0.5 level; (2, 17) at 0.5 is not
    assert fuse(maps, rule("pixel-mean"))["count"] == 3
    # count median of [2, 3, 5]: 3, with the points of the hypothesis that has 3 heads
    maps[2, 0, 0] = 1.0
    cm = fuse(maps, rule("count-median"))
    assert cm["counts"] == [2, 3, 5] and cm["count"] == 3 and len(cm["heads"].points) == 3
    assert np.array_equal(cm["map"], maps[1])
    assert fuse(maps, rule("pixel-median"))["count"] == 3  # the median map ignores heads of a single hypothesis
    one = fuse(maps[:1], o)
    assert one["count"] == 2 and one["by_rule"] == {}


def test_counter_predicts_points_in_image_pixels_and_saves(tmp_path):
    o = opts(max_side=48)
    net = LDMNet(o, seed=0)
    counter = LDMCounter(net, o.__class__(**{**o.__dict__}), seed=3)
    img = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    p = counter.predict(img, generator=torch.Generator().manual_seed(1))
    assert p.points.shape == (len(p.scores), 2) and p.count == len(p.points)
    if len(p.points):
        assert (p.points[:, 0] <= 90).all() and (p.points[:, 1] <= 60).all()
    assert p.density.shape == (32, 48) and p.density.sum() == pytest.approx(p.count, abs=1e-3)
    assert p.extras["count@0"] == p.count and "count:map-sum" in p.extras
    assert counter.predict(img).count == counter.predict(img).count  # no generator: seeded with `seed`
    path = tmp_path / "m.pt"
    save_model(path, net, o, {"trained_on": ["SHB"], "weights": "test"})
    again = load_counter(path, sampling={"hypotheses": 2})
    q = again.predict(img, generator=torch.Generator().manual_seed(1))
    assert q.extras["count@0"] == p.count and "count@1" in q.extras and "count:pixel-median" in q.extras
    assert again.provenance.trained_on == frozenset({"SHB"})
    with pytest.raises(ConfigError, match="not found"):
        load_counter(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_text("x")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_counter(tmp_path / "bad.pt")


@pytest.mark.parametrize("change,msg", [
    ({"crop_size": 36}, "crop_size must be a multiple of 8"),
    ({"sampling": {"overlap": 3}}, "overlap"),
    ({"sampling": {"ddim_steps": 2000}}, "ddim_steps"),
    ({"counting": {"threshold": 1.5}}, "threshold"),
    ({"unet": {"attention": [False]}}, "unet.attention"),
    ({"sampling": {"fusion": "oracle"}}, "fusion"),
])
def test_bad_options_are_one_line_config_errors(change, msg):
    d = dict(TINY)
    for k, v in change.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    with pytest.raises(ConfigError, match=msg) as exc:
        parse_options(d)
    assert "\n" not in str(exc.value)


def test_paper_profile_is_the_posters_latent_and_conditioning():
    """Poster §"Method": "z ∈ R^{1×1×64×64}" from a 256 × 256 crowd map (f = 4, one channel); T(y) ∈ R^{1×3×64×64};
    "channel-wise concatenated and further mapped to the intermediate layers of the U-Net via a cross-attention
    layer"."""
    from harness_ldm.config import PAPER

    o = parse_options(PAPER)
    assert o.crop_size == 256 and o.vq.factor == 4 and o.vq.latent_channels == 1 and o.cond_channels == 3
    assert o.unet.cross_attention and (o.crop_size // o.vq.factor) // o.unet.context_patch == 8  # 64 tokens
    assert o.sampling.ddim_steps == 500


def test_cross_attention_unet_attends_to_tokens_of_the_concatenation(tmp_path):
    from diffusers import UNet2DConditionModel

    o = opts(vq={**TINY["vq"], "latent_channels": 1},
             unet={**TINY["unet"], "attention": [False, True], "cross_attention": True, "context_dim": 16,
                   "context_patch": 4})
    net = LDMNet(o, seed=0)
    assert isinstance(net.unet, UNet2DConditionModel) and net.unet.config.cross_attention_dim == 16
    assert net.unet.config.in_channels == 1 + 3 and net.latent_shape(2) == (2, 1, 8, 8)
    z, cond, t = torch.randn(2, 1, 8, 8), torch.randn(2, 3, 8, 8), torch.tensor([3, 700])
    assert net.context(torch.cat([z, cond], 1)).shape == (2, 4, 16)  # (8 / 4)² tokens of width 16
    with torch.no_grad():
        base = net.eps(z, t, cond)
        net.context.embed.weight.mul_(3.0)  # the tokens reach the UNet: changing them changes ε
        assert not torch.allclose(net.eps(z, t, cond), base)
    # a saved model rebuilds the same class and weights without the options' init
    path = tmp_path / "model.pt"
    save_model(path, net, o, {})
    again = load_counter(path, "cpu", "fp32")
    assert isinstance(again.net.unet, UNet2DConditionModel)
    with torch.no_grad():
        assert torch.allclose(again.net.eps(z, t, cond), net.eps(z, t, cond), atol=1e-6)
    with pytest.raises(ConfigError, match="context_patch 3 must divide"):
        opts(vq={**TINY["vq"], "latent_channels": 1}, unet={**TINY["unet"], "cross_attention": True,
                                                            "context_patch": 3})
