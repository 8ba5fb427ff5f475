"""SYRAC's pieces on hand cases: the non-negativity projection after every optimiser step of the core loop, the
ranking loss, the NNLS probe, the patch-grid geometry and the counter's sum, augmentations, ImageNet loading, and
the cached, resumable generation of the noisy set and the ranking pairs."""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from harness import (CellContext, ConfigError, LoopConfig, Objective, OptimConfig, Provenance, WeightsError,
                     parse_or_raise, train)
from harness.io import ArtifactCache
from harness.plugins import get_registries
from harness_syrac.config import TINY, SyracOptions
from harness_syrac.data import ImageStore, build_noisy_set, build_pairs, crop_box, noisy_requests
from harness_syrac.model import (IMAGENET_MEAN, IMAGENET_STD, SyracCounter, SyracNet, augment, fit_probe,
                                 nonneg_projection, patch_grid, rank_loss)
from harness_syrac.strategy import Syrac

# ------------------------------------------------------------------------------ non-negativity projection


class PushNegative:
    """A task whose loss drives every head weight down (gradient +1 each), recording the weights each step sees."""

    def __init__(self):
        torch.manual_seed(0)
        self.head = nn.Linear(4, 1)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[0.5, 0.01, 2.0, 0.3]]))
        self.seen = []

    def modules(self):
        return {"head": self.head}

    def objectives(self):
        return [Objective("push", list(self.head.parameters()), self.loss, OptimConfig(name="sgd", lr=0.2,
                                                                                      momentum=0.0))]

    def batch(self, step, rng):
        return None

    def loss(self, batch, step):
        self.seen.append(self.head.weight.detach().clone())
        return self.head.weight.sum() + 0 * self.head.bias.sum()


def run_push(project: bool, steps: int = 6) -> PushNegative:
    task = PushNegative()
    cfg = LoopConfig(steps=steps, checkpoint_every=None, log_every=100)
    if project:
        with nonneg_projection(task.head.weight):
            train(task, cfg, seed=0)
    else:
        train(task, cfg, seed=0)
    return task


def test_nonneg_projection_holds_after_every_optimizer_step_of_the_core_loop():
    free = run_push(project=False)
    assert free.head.weight.min() < -0.5  # without it the loss drives the weights negative
    task = run_push(project=True)
    assert len(task.seen) == 6
    for w in task.seen[1:] + [task.head.weight.detach()]:  # what each later step (and the end) sees
        assert (w >= 0).all()
    # w_k = max(0, w_{k-1} - 0.2): 0.5 → 0.3 → 0.1 → 0; 2.0 keeps falling by 0.2 a step
    assert torch.allclose(task.seen[1], torch.tensor([[0.3, 0.0, 1.8, 0.1]]))
    assert torch.allclose(task.head.weight.detach(), torch.tensor([[0.0, 0.0, 0.8, 0.0]]))
    # the hook is gone once the context exits: an ordinary step goes negative again
    opt = torch.optim.SGD([task.head.weight], lr=1.0)
    task.head.weight.sum().backward()
    opt.step()
    assert task.head.weight.min() < 0


def test_nonneg_projection_leaves_other_parameters_and_optimizers_alone():
    a, b = nn.Parameter(torch.tensor([0.1, 0.2])), nn.Parameter(torch.tensor([0.1, 0.2]))
    with nonneg_projection(a):
        opt = torch.optim.SGD([a, b], lr=1.0)
        (a.sum() + b.sum()).backward()
        opt.step()
    assert torch.equal(a.detach(), torch.zeros(2)) and torch.allclose(b.detach(), torch.tensor([-0.9, -0.8]))


# ------------------------------------------------------------------------------ ranking loss


def test_rank_loss_hand_cases():
    t = torch.tensor
    assert float(rank_loss(t([3.0]), t([3.0]))) == pytest.approx(math.log(2))
    assert float(rank_loss(t([10.0]), t([0.0]))) == pytest.approx(math.log1p(math.exp(-10)), rel=1e-5)
    assert float(rank_loss(t([0.0]), t([10.0]))) == pytest.approx(10 + math.log1p(math.exp(-10)), rel=1e-6)
    # the mean over pairs of −log σ(ĉ_real − ĉ_syn); finite for huge gaps
    d = [1.0, -2.0, 0.5]
    assert float(rank_loss(t(d), t([0.0, 0.0, 0.0]))) == pytest.approx(np.mean([-math.log(1 / (1 + math.exp(-x)))
                                                                                 for x in d]))
    assert math.isfinite(float(rank_loss(t([-1e4]), t([1e4]))))
    real, syn = t([1.0], requires_grad=True), t([2.0], requires_grad=True)
    rank_loss(real, syn).backward()  # pushes the real score up and the synthetic one down
    assert real.grad.item() < 0 < syn.grad.item() and real.grad.item() == pytest.approx(-syn.grad.item())


# ------------------------------------------------------------------------------ probe


def test_nnls_probe_hand_cases():
    w, stats = fit_probe(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), np.array([1.0, 2.0, 3.0]))
    assert np.allclose(w, [1.0, 2.0]) and stats["residual"] == pytest.approx(0, abs=1e-9) and stats["nonzero"] == 2
    # unconstrained least squares would give w2 = -1; NNLS clamps it at 0
    w, stats = fit_probe(np.eye(2), np.array([2.0, -1.0]))
    assert np.allclose(w, [2.0, 0.0]) and stats["nonzero"] == 1 and stats["mae"] == pytest.approx(0.5)
    # no intercept: y = 2x + 1 on x = 1, 2 is fitted through the origin, w = (1·3 + 2·5) / (1 + 4) = 2.6
    w, _ = fit_probe(np.array([[1.0], [2.0]]), np.array([3.0, 5.0]))
    assert w == pytest.approx([2.6])
    with pytest.raises(ValueError):
        fit_probe(np.ones((3, 2)), np.ones(2))


# ------------------------------------------------------------------------------ patch grid and the counter


def quadrants(h, w, values) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for k, v in enumerate(values):
        i, j = divmod(k, 2)
        img[i * h // 2:(i + 1) * h // 2, j * w // 2:(j + 1) * w // 2] = v
    return img


def test_patch_grid_geometry():
    x = torch.arange(3 * 40 * 60, dtype=torch.float32).reshape(3, 40, 60)
    assert torch.equal(patch_grid(x, 1), x[None])
    p = patch_grid(x, 2)
    assert p.shape == (4, 3, 40, 60)  # g·g patches, each at the full input size
    q = torch.from_numpy(quadrants(40, 60, [10, 20, 30, 40])).permute(2, 0, 1).float()
    assert [float(v) for v in patch_grid(q, 2).mean(dim=(1, 2, 3))] == pytest.approx([10, 20, 30, 40])  # row-major
    p3 = patch_grid(x, 3)  # 13 × 20 patches (the last row dropped, as the authors' patchify), resized to 40 × 60
    assert p3.shape == (9, 3, 40, 60)
    ref = torch.nn.functional.interpolate(x[None, :, 13:26, 40:60], size=(40, 60), mode="bilinear",
                                          align_corners=False)[0]
    assert torch.allclose(p3[5], ref)


class CentreValue(nn.Module):
    """Stub head: the raw (un-normalised) red value × 255 at each image's centre; records its input shapes."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def forward(self, x):
        self.shapes.append(tuple(x.shape))
        h, w = x.shape[-2:]
        return (x[:, 0, h // 2, w // 2] * IMAGENET_STD[0] + IMAGENET_MEAN[0]) * 255


def test_counter_counts_each_full_size_patch_and_sums():
    stub = CentreValue()
    counter = SyracCounter(stub, (40, 60), 2, "imagenet", provenance=Provenance("stub"))
    assert counter.localises is False
    pred = counter.predict(quadrants(40, 60, [0, 50, 100, 150]))
    assert stub.shapes == [(4, 3, 40, 60)]
    assert pred.count == pytest.approx(300, abs=0.01) and pred.density is None and pred.points is None
    assert counter.patch_counts(quadrants(40, 60, [7, 0, 0, 1])) == pytest.approx([7, 0, 0, 1], abs=0.01)
    # any image is first resized to the input size (aspect not kept), then cut: same patches, same sum
    big = quadrants(160, 120, [0, 50, 100, 150])
    assert counter.predict(big).count == pytest.approx(300, abs=0.5) and stub.shapes[-1] == (4, 3, 40, 60)
    g1 = SyracCounter(stub, (40, 60), 1, "imagenet", provenance=Provenance("stub"))
    assert g1.predict(quadrants(40, 60, [0, 0, 0, 90])).count == pytest.approx(90, abs=0.01)  # centre pixel
    assert stub.shapes[-1] == (1, 3, 40, 60)


def test_augment_is_deterministic_per_generator_and_stays_in_range():
    x = torch.rand(3, 3, 24, 32)
    a = augment(x, np.random.default_rng(1))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, augment(x, np.random.default_rng(1)))
    assert not torch.equal(a, augment(x, np.random.default_rng(2)))
    assert not torch.allclose(a, x)


def test_syrac_net_head_starts_non_negative_and_features_are_non_negative():
    torch.manual_seed(0)
    net = SyracNet("test_resnet")
    assert (net.head.weight >= 0).all() and net.head.weight.shape == (1, net.num_features)
    z = net.features(torch.randn(2, 3, 32, 48))
    assert z.shape == (2, net.num_features) and (z >= 0).all() and net(torch.randn(2, 3, 32, 48)).shape == (2,)
    with pytest.raises(ConfigError, match="not a timm model"):
        SyracNet("no-such-net")


def test_encoder_init_through_the_core_loader(tmp_path, monkeypatch):
    """SYRAC §4.1: "a ResNet-50 pre-trained on ImageNet". The encoder starts from torchvision's ImageNet file found by
    the core (real torchvision key layout, classifier dropped); a local file works too; absent weights are refused in
    one line before any generation."""
    import torchvision
    from harness import pretrained_backbone

    monkeypatch.setenv("HARNESS_WEIGHTS", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)  # torchvision's layout: conv1, bn1, layer1..4, fc
    (tmp_path / "imagenet").mkdir()
    torch.save(tv.state_dict(), tmp_path / "imagenet" / "resnet18-f37072fd.pth")
    net = SyracNet("resnet18")
    init = pretrained_backbone(net.encoder, "resnet18", "imagenet", option="init_weights")
    assert init.trained_on == ("ImageNet",) and len(init.sha256) == 64 and init.report["initialised_keys"] == 0
    assert all(torch.equal(v, tv.state_dict()[k]) for k, v in net.encoder.state_dict().items())
    # the paper profile asks for ImageNet; without the file it is refused in one line naming file, URL and place
    opts = parse_or_raise(SyracOptions, {**TINY, "backbone": "resnet50", "init_weights": "imagenet"})
    with pytest.raises(WeightsError) as err:
        Syrac(opts)._init_weights()
    msg = str(err.value)
    assert "\n" not in msg and "resnet50-0676ba61.pth" in msg and "download.pytorch.org" in msg
    assert str(tmp_path / "imagenet" / "resnet50-0676ba61.pth") in msg
    # pretrain: imagenet implies init_weights imagenet
    assert parse_or_raise(SyracOptions, {**TINY, "pretrain": "imagenet"}).encoder_init == "imagenet"
    # a local file (relative to HARNESS_WEIGHTS) of another architecture is refused when loaded
    torch.save({"state_dict": {f"module.{k}": v for k, v in SyracNet("test_resnet").encoder.state_dict().items()}},
               tmp_path / "test_resnet.pth")
    assert Syrac(parse_or_raise(SyracOptions, {**TINY, "init_weights": "test_resnet.pth"}))._init_weights() == \
        str(tmp_path / "test_resnet.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        pretrained_backbone(SyracNet("resnet10t").encoder, "resnet10t", tmp_path / "test_resnet.pth")
    with pytest.raises(ConfigError, match="init_weights 'nowhere.pth' not found"):
        parse_or_raise(SyracOptions, {**TINY, "init_weights": "nowhere.pth"})


def test_options_are_checked():
    bad = {**TINY, "grid": 0, "strength": 1.5, "noisy_prompt": "a crowd", "crop_range": [0.9, 0.5]}
    with pytest.raises(ConfigError) as err:
        parse_or_raise(SyracOptions, bad)
    for part in ("grid must be >= 1", "strength must lie in", "must contain {N}", "crop_range"):
        assert part in str(err.value)
    with pytest.raises(ConfigError, match="0 denoising steps"):  # diffusers img2img would run no step at all
        parse_or_raise(SyracOptions, {**TINY, "steps": 2, "strength": 0.45})
    parse_or_raise(SyracOptions, {**TINY, "steps": 2, "strength": 0.45, "pretrain": "intra-image-rank"})
    with pytest.raises(ConfigError, match="val_fraction must lie in"):
        parse_or_raise(SyracOptions, {**TINY, "train": {"val_fraction": 1.0}})


# ------------------------------------------------------------------------------ generation: cache and resume


def make_ctx(tmp_path, n_target=4):
    from harness.data.synthetic import SyntheticCrowds

    target = SyntheticCrowds("SYN-DENSE")
    return CellContext(source=SyntheticCrowds("SYN-SPARSE"), source_name="SYN-SPARSE", target_name="SYN-DENSE",
                       target_images=[r.unlabelled() for r in target.samples("train")[:n_target]], profile="smoke",
                       seed=0, device="cpu", workdir=tmp_path, cache=ArtifactCache(tmp_path / "cache"),
                       registries=get_registries(), options=None, log=logging.getLogger("syrac-test"))


class Recording:
    """Delegates to a generator; records the seeds it generates and interrupts after ``stop_after`` images."""

    def __init__(self, inner, stop_after=None):
        self.inner, self.stop_after, self.seeds = inner, stop_after, []
        self.provenance = inner.provenance

    def key(self):
        return self.inner.key()

    def output_size(self, h, w):
        return self.inner.output_size(h, w)

    def generate(self, requests):
        if self.stop_after is not None and len(self.seeds) >= self.stop_after:
            raise KeyboardInterrupt  # killed mid-generation
        self.seeds += [r.seed for r in requests]
        return self.inner.generate(requests)


def test_generation_is_cached_and_a_killed_generation_resumes(tmp_path):
    ctx = make_ctx(tmp_path)
    o = parse_or_raise(SyracOptions, {**TINY, "synthetic_per_image": 2, "max_real_images": None})
    gen = ctx.build("generator", "stable-diffusion", model="tiny", steps=3, max_side=32)
    # the noisy set: (1, 10) × 2 + 2 empty scenes; prompts and counts as §3.2
    reqs = noisy_requests(o, 0)
    assert [(n, r.prompt) for n, r in reqs[::2]] == [(1, "A group of 1 people. High angle"),
                                                    (10, "A group of 10 people. High angle"),
                                                    (0, "an empty urban environment")]
    assert len({r.seed for _, r in reqs}) == 6
    store = ImageStore(o.input_size, 1e8)
    first = Recording(gen, stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        build_noisy_set(ctx, o, first, store)
    again = Recording(gen)
    noisy = build_noisy_set(ctx, o, again, store)
    assert len(first.seeds) == 3 and len(again.seeds) == 3 and not set(first.seeds) & set(again.seeds)
    assert [n.count for n in noisy] == [1, 1, 10, 10, 0, 0] and sum(n.split == "val" for n in noisy) == 1
    assert store.get(noisy[0].path).shape == (32, 48, 3)
    third = Recording(gen)
    assert [n.path for n in build_noisy_set(ctx, o, third, store)] == [n.path for n in noisy] and not third.seeds

    # ranking pairs: 2 img2img images per real image, distinct recorded seeds, resumed the same way
    first = Recording(gen, stop_after=5)
    with pytest.raises(KeyboardInterrupt):
        build_pairs(ctx, o, first, ImageStore(o.input_size, 1e8))
    again = Recording(gen)
    pairs = build_pairs(ctx, o, again, store)
    assert len(first.seeds) == 5 and len(again.seeds) == 3 and not set(first.seeds) & set(again.seeds)
    assert len(pairs) == 8 and len({p.seed for p in pairs}) == 8
    assert [p.real for p in pairs[::2]] == [r.key for r in ctx.target_images]
    assert all(p.synthetic.endswith(".png") for p in pairs)
    val = {p.real for p in pairs if p.split == "val"}
    assert len(val) == 1 and all(p.split == "val" for p in pairs if p.real in val)  # held out per real image
    third = Recording(gen)
    assert [p.synthetic for p in build_pairs(ctx, o, third, store)] == [p.synthetic for p in pairs]
    assert not third.seeds


def test_intra_image_pairs_are_crops_of_their_image(tmp_path):
    ctx = make_ctx(tmp_path, n_target=3)
    o = parse_or_raise(SyracOptions, {**TINY, "pretrain": "intra-image-rank", "synthetic_per_image": 2,
                                      "max_real_images": None})
    store = ImageStore(o.input_size, 1e8)
    pairs = build_pairs(ctx, o, None, store)  # no generator needed
    assert len(pairs) == 6 and all(p.synthetic.startswith(f"crop:{p.real}:") for p in pairs)
    image = ctx.target_images[0].load_image()
    x0, y0, x1, y1 = pairs[0].meta["crop"]
    assert 0 <= x0 < x1 <= image.shape[1] and 0 <= y0 < y1 <= image.shape[0]
    assert (x1 - x0) / image.shape[1] == pytest.approx((y1 - y0) / image.shape[0], abs=0.02)
    assert 0.5 - 0.02 <= (x1 - x0) / image.shape[1] <= 0.9 + 0.02
    assert store.get(pairs[0].synthetic).shape == (32, 48, 3)
    assert crop_box((100, 200), 0.5, 0.5, 7) == crop_box((100, 200), 0.5, 0.5, 7)


def test_dry_run_pairs_one_image_and_count_every_image_once(tmp_path):
    """A dry run generates the pairs of one real image and lets them stand in for each of the others once: 12 real
    images × 2 = 24 pairs (the copies were once copied again per image, 2^N pairs: the SHA→SHB paper dry run's
    400 images filled 20 GB and the OOM killer took the cell)."""
    from harness.stages import Meter, metering

    ctx = make_ctx(tmp_path, n_target=12)
    o = parse_or_raise(SyracOptions, {**TINY, "synthetic_per_image": 2, "max_real_images": None})
    gen = Recording(ctx.build("generator", "stable-diffusion", model="tiny", steps=3, max_side=32))
    meter = Meter(1)
    with metering(meter, "cell"):
        pairs = build_pairs(ctx, o, gen, ImageStore(o.input_size, 1e8))
    assert len(gen.seeds) == 1  # one img2img image generated, standing in for the other requests
    assert len(pairs) == 24 and {p.real for p in pairs} == {ctx.target_images[0].key}
    assert {p.split for p in pairs} == {"train", "val"}
    rec = meter.records[("cell", "pairs: real image")]
    assert rec.units_declared == 12 and rec.units_run == 1
    gen_rec = next(r for (_, name), r in meter.records.items() if name.endswith(" img2img"))
    assert gen_rec.parent == "pairs: real image" and meter.full_units(gen_rec) == 12 * 2  # every real image's images


def test_probe_features_encode_one_batch_in_a_dry_run():
    """The linear probe's features: all images outside a dry run; in one, the first batch only, whose features stand
    in for the others (the paper's 660 noisy images at 640 × 853 were all encoded, minutes per cell on a CPU)."""
    from harness.stages import Meter, metering
    from harness_syrac.model import encode

    net = SyracNet("test_resnet")
    images = [np.full((32, 48, 3), 10 * i, np.uint8) for i in range(20)]
    full = encode(net, images, "imagenet", batch_size=8)
    meter = Meter(1)
    with metering(meter, "cell"):
        dry = encode(net, images, "imagenet", batch_size=8)
    assert full.shape == dry.shape and full.shape[0] == 20
    np.testing.assert_allclose(dry[:8], full[:8], rtol=1e-5, atol=1e-6)  # the batch run is the real one
    np.testing.assert_array_equal(dry[8:16], dry[:8])
    assert not np.allclose(full[8:16], full[:8])
    rec = meter.records[("cell", "probe: features")]
    assert rec.units_declared == 3 and rec.units_run == 1 and rec.flops_per_unit > 0


def test_dry_run_generates_the_noisy_set_once_and_counts_it_in_every_cell(tmp_path):
    """The noisy set is the same for every cell of a seed: the dry run generates it once (the second cell borrows the
    figures) and counts it in every cell that uses it, as cached fits are counted — each cell's cost is what it costs
    alone; a real run with one shared cache pays it once (docs/design.md §14)."""
    from harness.stages import Meter, metering

    ctx = make_ctx(tmp_path)
    o = parse_or_raise(SyracOptions, {**TINY, "max_real_images": None})
    gen = Recording(ctx.build("generator", "stable-diffusion", model="tiny", steps=3, max_side=32))
    meter = Meter(1)
    sets = {}
    for scope in ("syrac A→B", "syrac B→A"):
        with metering(meter, scope):
            sets[scope] = build_noisy_set(ctx, o, gen, ImageStore(o.input_size, 1e8))
    assert len(gen.seeds) == 1 and [len(s) for s in sets.values()] == [6, 6]
    name = next(n for (s, n) in meter.records if s == "syrac A→B" and n.startswith("generate: "))
    first, second = meter.records[("syrac A→B", name)], meter.records[("syrac B→A", name)]
    assert meter.full_units(first) == 6 and meter.full_units(second) == 6
    assert second.units_run == 0 and second.reused_from == "syrac A→B"
