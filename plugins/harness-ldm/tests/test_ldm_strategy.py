"""The ldm strategy end to end with tiny networks: fit on a few source images (ShanghaiTech B when HARNESS_DATA is
set, else the synthetic pair), predict, the shared cached training of ldm / ldm-k4, no label read in predict, a
killed-and-resumed evaluation equal to an uninterrupted one, and ``harness ldm steps``."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from harness import CellContext, evaluate_counter
from harness.io import ArtifactCache
from harness.plugins import get_registries
from harness_ldm.config import TINY, parse_options
from harness_ldm.strategy import LDMStrategy


def make_ctx(domains, tmp_path, name="cell"):
    source, target, data_root = domains
    regs = get_registries()
    src = regs.datasets.get(source).factory(data_root)
    tgt = regs.datasets.get(target).factory(data_root)
    workdir = tmp_path / name
    (workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
    return CellContext(source=src, source_name=source, target_name=target,
                       target_images=[r.unlabelled() for r in tgt.samples("train")], profile="smoke", seed=0,
                       device="cpu", workdir=workdir, cache=ArtifactCache(tmp_path / "cache"), registries=regs,
                       options={}, log=logging.getLogger("test-ldm")), tgt


def options(**sampling):
    return parse_options({**TINY, "max_side": 96, "sampling": {**TINY["sampling"], **sampling}})


@pytest.fixture(scope="module")
def fitted(domains, tmp_path_factory):
    """One tiny fit (2 source images, a few steps of each stage), shared by the tests below."""
    tmp = tmp_path_factory.mktemp("ldm")
    ctx, tgt = make_ctx(domains, tmp)
    counter = LDMStrategy(options()).fit(ctx)
    return ctx, tgt, counter, tmp


def test_fit_and_predict_on_a_target_image(fitted):
    ctx, tgt, counter, _ = fitted
    sample = tgt.samples("test")[0].load()
    p = counter.predict(sample.image, generator=torch.Generator().manual_seed(5))
    H, W = sample.image.shape[:2]
    assert p.points.shape == (len(p.scores), 2) and p.count == len(p.points) == p.extras["count@0"]
    if len(p.points):
        assert (p.points >= 0).all() and (p.points[:, 0] <= W).all() and (p.points[:, 1] <= H).all()
    assert p.density.ndim == 2 and p.density.sum() == pytest.approx(p.count, abs=1e-3)
    q = counter.predict(sample.image, generator=torch.Generator().manual_seed(5))
    assert q.count == p.count and np.array_equal(q.points, p.points)
    notes = ctx.provenance_notes
    assert notes["selection_split"] == "source val" and notes["cached_model"] is False
    for k in ("gt_map_count_mae_val", "vq_recon_count_mae_val", "diffusion_best_val_mae", "latent_scale"):
        assert np.isfinite(notes[k]), k
    assert counter.provenance.trained_on == frozenset({ctx.source_name})
    assert (ctx.workdir / "checkpoints" / "ldm-model.pt").is_file()
    ck = ctx.workdir / "checkpoints"
    assert (ck / "ldm-vq").is_dir() and (ck / "ldm-diffusion").is_dir()


def test_ldm_k4_reuses_the_cached_training_and_keeps_every_hypothesis(fitted, domains):
    ctx, tgt, counter, tmp = fitted
    ctx4, _ = make_ctx(domains, tmp, name="cell-k4")
    k4 = LDMStrategy(options(hypotheses=4, fusion="pixel-median")).fit(ctx4)
    assert ctx4.provenance_notes["cached_model"] is True
    assert ctx4.provenance_notes["model_key"] == ctx.provenance_notes["model_key"]
    for a, b in zip(counter.net.state_dict().values(), k4.net.state_dict().values()):
        assert torch.equal(a, b)
    p = k4.predict(tgt.samples("test")[0].load().image, generator=torch.Generator().manual_seed(5))
    counts = [p.extras[f"count@{k}"] for k in range(4)]
    assert "count@4" not in p.extras and all(c == int(c) >= 0 for c in counts)
    assert {"count:pixel-median", "count:pixel-mean", "count:count-median"} <= set(p.extras)
    assert p.extras["count:count-median"] == float(np.median(counts))
    assert p.count == p.extras["count:pixel-median"]


def test_predict_reads_no_label(fitted, monkeypatch):
    """Refs whose annotation loading raises: predict works on their images (it is given the pixels only), and no
    reader of labels runs while it predicts."""
    from harness import SampleRef

    _, tgt, counter, _ = fitted
    real = tgt.samples("test")[:2]

    def no_labels(ref):
        raise AssertionError(f"label of {ref.key} read")

    refs = [SampleRef(r.dataset, r.split, r.id, r.image_path, None, loader=no_labels,
                      image_loader=r.image_loader) for r in real]
    monkeypatch.setattr(SampleRef, "load", no_labels)
    import scipy.io

    monkeypatch.setattr(scipy.io, "loadmat", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loadmat")))
    for ref in refs:
        p = counter.predict(ref.load_image(), generator=torch.Generator().manual_seed(0))
        assert np.isfinite(p.count)
    with pytest.raises(AssertionError, match="label of"):
        refs[0].load()


class Killer:
    """Wraps a stochastic counter and raises after ``k`` predictions (a kill mid-evaluation)."""

    stochastic = True

    def __init__(self, inner, k):
        self.inner, self.k, self.n = inner, k, 0
        self.name, self.provenance = inner.name, inner.provenance

    def predict(self, image, generator=None):
        if self.n == self.k:
            raise KeyboardInterrupt("killed")
        self.n += 1
        return self.inner.predict(image, generator=generator)


def test_killed_and_resumed_evaluation_gives_identical_predictions(fitted, tmp_path):
    _, tgt, counter, _ = fitted
    c = counter.with_sampling(hypotheses=2, eta=1.0)  # stochastic at every step, not only at the start
    refs = tgt.samples("test")[:4]
    whole = evaluate_counter(c, refs, seed=7, partial_path=tmp_path / "whole.jsonl").records
    part = tmp_path / "part.jsonl"
    with pytest.raises(KeyboardInterrupt):
        evaluate_counter(Killer(c, 2), refs, seed=7, partial_path=part)
    assert len(part.read_text().splitlines()) == 2
    resumed = evaluate_counter(c, refs, seed=7, partial_path=part)
    assert resumed.resumed == 2
    keys = ("image_id", "pred_count", "pred_points", "scores", "extras")
    assert [{k: r[k] for k in keys} for r in resumed.records] == [{k: r[k] for k in keys} for r in whole]
    # the predictions do depend on the generator (so the equality above is not vacuous)
    img = refs[0].load().image
    small, _ = c.resize(img)
    a = c.sample_maps(small, torch.Generator().manual_seed(1))
    b = c.sample_maps(small, torch.Generator().manual_seed(2))
    assert not np.array_equal(a, b)


def test_steps_report_command(tmp_path):
    """A tiny run on the synthetic pair through the runner, then `harness ldm steps RUN_DIR`."""
    from click.testing import CliRunner

    from harness import MethodSpec, hookimpl
    from harness.cli import main
    from harness.plugins import build_registries
    from harness.runner import execute, plan_run

    class Tiny:
        @hookimpl
        def harness_register_methods(self, register):
            register(MethodSpec("tiny-ldm", "ldm", {"smoke": dict(TINY)}))

    regs = build_registries(extra_plugins=[Tiny()])
    plan = plan_run("SYN-SPARSE→SYN-DENSE", "tiny-ldm", "0", "smoke", regs, None, limit_test=2)
    summary = execute(plan, tmp_path / "run", "cpu", progress=False, cache=ArtifactCache(tmp_path / "cache"))
    assert not summary.failed, summary.failed
    metrics = json.loads(next((tmp_path / "run").rglob("metrics.json")).read_text())
    assert metrics["map"] is not None and metrics["selection_split"] == "source val"
    res = CliRunner().invoke(main, ["ldm", "steps", str(tmp_path / "run"), "--steps", "1,2", "--limit-test", "2"])
    assert res.exit_code == 0, res.output
    cell = next((tmp_path / "run").rglob("ldm-steps.json")).parent
    rows = json.loads((cell / "ldm-steps.json").read_text())["rows"]
    assert [r["ddim_steps"] for r in rows] == [1, 2] and all(r["n_images"] == 2 for r in rows)
    assert all(r["seconds_per_image"] > 0 and r["mae"] >= 0 for r in rows)
    assert "| DDIM steps |" in (cell / "ldm-steps.md").read_text()
    bad = CliRunner().invoke(main, ["ldm", "steps", str(tmp_path / "nothing")])
    assert bad.exit_code != 0 and "not a folder" in bad.output


def test_dry_run_counts_validation_and_test_sampling_as_separate_stages(tmp_path):
    """The validation sampler of training and the test-time sampler are separate dry-run stages, each nested in its
    caller: the test-time DDIM steps scale with the test images (they were once merged into the validation stage,
    which left the sampling of every test image but one out of the projection)."""
    from click.testing import CliRunner

    from harness.cli import main

    r = CliRunner().invoke(main, ["run", "--matrix", "SYN-PARK→SYN-STREET", "--methods", "ldm", "--dry-run", "--json",
                                  "--device", "cpu", "--out", str(tmp_path / "run")],
                           env={"HARNESS_CACHE": str(tmp_path / "cache")}, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    (cell,) = json.loads(r.stdout)["cells"]
    stages = {s["name"]: s for s in cell["stages"]}
    assert stages["validate: DDIM step"]["parent"] == "select: ldm diffusion"
    test_steps, predict = stages["sample: DDIM step"], stages["evaluate: predict"]
    assert test_steps["parent"] == "evaluate: predict" and stages["sample: decode"]["parent"] == "evaluate: predict"
    # the smoke sampler: 10 DDIM steps, every crop of a built-in test image in one U-Net call; 30 test images
    assert predict["units"] == 30 and test_steps["units"] == 30 * 10
    assert not (tmp_path / "run").exists()
