"""The source-only strategy and its methods, end to end on the synthetic source (tiny training)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from harness.data.synthetic import SyntheticCrowds
from harness import CellContext, ConfigError, CounterSpec, Provenance, parse_or_raise
from harness.default_plugins.strategies import SourceOnly, SourceOnlyOptions
from harness.models.base import TorchDensityCounter
from harness.plugins import get_registries
from harness.registry import Registry


class FakeRegistries:
    """Just the counter registry a strategy needs, with tiny stand-in counters."""

    def __init__(self):
        self.counters = Registry("counter")
        self.built = []

        def tiny(device="cpu", seed=None):
            torch.manual_seed(0 if seed is None else seed)
            model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 1, 1))
            c = TorchDensityCounter(model, name="tiny", stride=2, provenance=Provenance("random-init"), device=device)
            self.built.append(c)
            return c

        def pretrained(device="cpu"):
            c = tiny(device)
            c.provenance = Provenance("tiny-sha.pt", trained_on=frozenset({"SHA"}))
            return c

        self.counters.register(CounterSpec("tiny", tiny, build_args=("device", "seed")), "test")
        self.counters.register(CounterSpec("tiny-sha", pretrained, trained_on=frozenset({"SHA"})), "test")

    def by_kind(self, kind):
        assert kind == "counter"
        return self.counters


def source_only(**options) -> SourceOnly:
    return SourceOnly(parse_or_raise(SourceOnlyOptions, options))


def make_ctx(tmp_path, regs, source="SYN-SPARSE", seed=0):
    return CellContext(source=SyntheticCrowds(source), source_name=source, target_name="SYN-DENSE",
                       target_images=[r.unlabelled() for r in SyntheticCrowds("SYN-DENSE").samples("train")[:2]],
                       profile="smoke", seed=seed, device="cpu", workdir=tmp_path, cache=None, registries=regs,
                       options={}, log=logging.getLogger("test-cell"))


TINY_TRAIN = {"epochs": 2, "scale": 0.25, "crop_size": 32, "max_train_images": 3, "max_val_images": 2,
              "density_scale": 100.0}


def test_source_only_trains_on_source_and_selects_on_source_val(tmp_path):
    regs = FakeRegistries()
    ctx = make_ctx(tmp_path, regs)
    counter = source_only(counter="tiny", train=TINY_TRAIN).fit(ctx)
    notes = ctx.provenance_notes
    assert notes["selection_split"] == "source val" and notes["trained_in_run"] is True
    assert notes["epochs"] == 2 and notes["best_epoch"] in (1, 2) and np.isfinite(notes["best_val_mae"])
    assert counter.provenance.weights == "trained-in-run"
    assert counter.provenance.trained_on == frozenset({"SYN-SPARSE"})
    ckpts = sorted((tmp_path / "checkpoints" / "density").glob("step-*"))
    assert len(ckpts) == 2  # the last two epochs' checkpoints are kept
    for ref in SyntheticCrowds("SYN-DENSE").samples("test")[:2]:
        p = counter.predict(ref.load_image())
        assert np.isfinite(p.count) and p.count >= -1e3
        assert np.isfinite(p.density).all()
    # the counter was built through the cell and recorded as a component whose labels reach the counter
    assert ctx.components[0]["name"] == "tiny" and ctx.components[0]["labels_reach_counter"]


def test_rerun_of_finished_cell_does_not_train_again(tmp_path):
    regs = FakeRegistries()
    first = source_only(counter="tiny", train=TINY_TRAIN).fit(make_ctx(tmp_path, regs))
    ckpt = sorted((tmp_path / "checkpoints" / "density").glob("step-*"))[-1]
    stamp = ckpt.stat().st_mtime_ns
    ctx = make_ctx(tmp_path, regs)
    second = source_only(counter="tiny", train=TINY_TRAIN).fit(ctx)
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    assert ckpt.stat().st_mtime_ns == stamp  # no epoch was trained (a new one would write a checkpoint)
    assert ctx.provenance_notes["epochs"] == 2


def test_backbone_provenance_is_kept(tmp_path):
    regs = FakeRegistries()
    ctx = make_ctx(tmp_path, regs)
    counter = source_only(counter="tiny-sha", train=TINY_TRAIN).fit(ctx)
    assert counter.provenance.trained_on == frozenset({"SYN-SPARSE", "SHA"})
    assert ctx.provenance_notes["init_weights"] == "tiny-sha.pt"


def test_pretrained_path_trains_nothing(tmp_path):
    regs = FakeRegistries()
    ctx = make_ctx(tmp_path, regs)
    counter = source_only(counter="tiny-sha", pretrained=True).fit(ctx)
    assert counter is regs.built[-1]
    assert counter.provenance.trained_on == frozenset({"SHA"})
    assert ctx.provenance_notes["selection_split"] == "none (pretrained)"
    assert not (tmp_path / "checkpoints").exists()


def test_option_errors():
    with pytest.raises(ConfigError, match="option 'counter' is required"):
        source_only()
    with pytest.raises(ConfigError, match="option 'epochs' is required"):
        source_only(counter="tiny", train={"lr": 1e-3})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) seed"):
        source_only(counter="tiny", train={"epochs": 1, "seed": 3})
    with pytest.raises(ConfigError, match="pretrained=true"):
        source_only(counter="tiny", pretrained=True, train={"epochs": 1})
    with pytest.raises(ConfigError, match="train.epochs='1' must be an integer"):
        source_only(counter="tiny", train={"epochs": "1"})


def test_registered_strategy_and_methods():
    regs = get_registries()
    spec = regs.strategies.get("source-only")
    assert spec.uses_target_images is False
    for name in ("source-only-mcnn-sha", "source-only-mcnn-shb", "source-only-csrnet-sha"):
        m = regs.methods.get(name)
        assert m.strategy == "source-only"
        assert m.options("smoke") == m.options("paper") and m.options("paper")["pretrained"] is True
        assert m.options("smoke")["counter"] in regs.counters
    m = regs.methods.get("source-only-rescsrnet")
    paper = m.options("paper")["train"]
    assert (paper["epochs"], paper["lr"], paper["weight_decay"], paper["gamma"], paper["batch_size"]) == \
        (500, 1e-3, 1e-4, 0.99, 1)
    for profile in ("smoke", "paper"):  # the options build a valid strategy
        assert isinstance(spec.factory(parse_or_raise(spec.options, m.options(profile))), SourceOnly)
    with pytest.raises(ConfigError, match="no profile"):
        m.options("huge")


def test_smoke_profile_on_synthetic_source(tmp_path):
    """The real smoke options (real ResCSRNet) run on the synthetic source, with 1 epoch / few images."""
    regs = get_registries()
    opts = regs.methods.get("source-only-rescsrnet").options("smoke")
    opts["train"] = {**opts["train"], "epochs": 1, "max_train_images": 2, "max_val_images": 1}
    ctx = make_ctx(tmp_path, regs)
    counter = source_only(**opts).fit(ctx)
    img = SyntheticCrowds("SYN-DENSE").samples("test")[0].load_image()
    p = counter.predict(img)
    assert np.isfinite(p.count) and p.extras["input_factor"] == 1.0  # 320×240 ≤ max_side: not resized
    assert counter.provenance.trained_on == frozenset({"SYN-SPARSE"})
