"""Runner: matrix parsing, all-at-once validation, run layout, resume, failure isolation, determinism.

Uses its own tiny in-memory datasets, counter, strategy and methods (registered through a plugin object
passed to ``build_registries(extra_plugins=...)``), so it depends on no other engineer's components except
``harness.metrics`` (count metrics and localisation mAP).
"""
from __future__ import annotations

import json
import os
import random
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness import component, hookimpl
from harness.errors import ConfigError
from harness.plugins import build_registries
from harness.runner import PARTIAL_FILE, Cell, execute, parse_matrix, plan_run, read_partial
from harness import (CounterSpec, DatasetSpec, MethodSpec, Prediction, Provenance, Sample, SampleRef,
                           StrategySpec)

CALLS = {"fit": 0, "predict": 0}


# ------------------------------------------------------------------------------------------- fakes

class FakeDataset:
    """Images 24×32 with one bright pixel (255 in the red channel) per head point; ``n`` heads per image
    depends on the dataset and image index, so every image has its own count."""

    def __init__(self, name: str, base: int):
        self.name, self.root, self.base = name, None, base

    def _sample(self, ref: SampleRef) -> Sample:
        i = int(ref.id.split("-")[1]) + (100 if ref.split == "test" else 0)
        rng = np.random.default_rng(self.base * 1000 + i)
        n = self.base + i % 5
        xy = np.stack([rng.choice(32, n, replace=False), rng.integers(0, 24, n)], 1).astype(np.float64)
        img = np.zeros((24, 32, 3), np.uint8)
        img[xy[:, 1].astype(int), xy[:, 0].astype(int), 0] = 255
        return Sample(id=ref.id, image=img, points=xy, meta={"n_points_dropped": int(ref.id == "img-0")})

    def samples(self, split: str) -> list[SampleRef]:
        n = {"train": 4, "val": 2, "test": 5}[split]
        return [SampleRef(self.name, split, f"img-{i}", None, None, self._sample,
                          lambda r: self._sample(r).image) for i in range(n)]


class FakeCounter:
    name = "fake-counter"

    def __init__(self, offset: float, trained_on=(), interrupt_after=None):
        self.offset, self.interrupt_after, self.n = offset, interrupt_after, 0
        self.provenance = Provenance("trained-in-run", frozenset(trained_on))

    def predict(self, image):
        if self.interrupt_after is not None and self.n >= self.interrupt_after:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C in the middle of the evaluation
        self.n += 1
        CALLS["predict"] += 1
        ys, xs = np.nonzero(image[..., 0] == 255)
        pts = np.stack([xs, ys], 1).astype(float)
        return Prediction(count=len(pts) + self.offset, points=pts, scores=np.ones(len(pts)),
                          extras={"count_regression": len(pts) * 1.0})


@dataclass
class FakeOptions:
    fail: bool = False
    interrupt_after: int | None = None
    trained_on: tuple[str, ...] = ()
    select: str = "val"
    raises: str | None = None  # "exit" (sys.exit) or "interrupt" (a KeyboardInterrupt raised by plugin code)
    counter: str = component("counter", default="fake-counter")


class FakeStrategy:
    def __init__(self, options: FakeOptions):
        o = options
        self.fail, self.interrupt_after, self.trained_on, self.select = o.fail, o.interrupt_after, o.trained_on, o.select
        self.raises = o.raises

    def fit(self, ctx):
        CALLS["fit"] += 1
        assert ctx.workdir.joinpath("checkpoints").is_dir()
        assert all(not hasattr(r, "load") for r in ctx.target_images)  # labels hidden
        if self.fail:
            raise ValueError("fake strategy failed\non purpose")
        if self.raises == "exit":
            sys.exit(0)
        if self.raises == "interrupt":
            raise KeyboardInterrupt
        ctx.provenance_notes["selection_split"] = self.select
        ctx.log.info("fitting fake strategy")
        # global RNGs are seeded by the runner from the cell seed: same seed -> same offset
        offset = random.random() + np.random.rand() + float(__import__("torch").rand(1))
        return FakeCounter(offset, self.trained_on, self.interrupt_after)


class FakePlugin:
    @hookimpl
    def harness_register_datasets(self, register):
        register(DatasetSpec("FAKE-A", lambda root: FakeDataset("FAKE-A", 3), aliases=("fa",), needs_root=False))
        register(DatasetSpec("FAKE-B", lambda root: FakeDataset("FAKE-B", 6), needs_root=False))
        register(DatasetSpec("FAKE-DISK", lambda root: FakeDataset("FAKE-DISK", 1), needs_root=True))

    @hookimpl
    def harness_register_counters(self, register):
        register(CounterSpec("fake-counter", lambda device="cpu", **kw: FakeCounter(0.0)))

    @hookimpl
    def harness_register_strategies(self, register):
        register(StrategySpec("fake-strategy", FakeStrategy, options=FakeOptions))

    @hookimpl
    def harness_register_methods(self, register):
        register(MethodSpec("fake-method", "fake-strategy", {"smoke": {}, "paper": {}}))
        register(MethodSpec("fake-fail", "fake-strategy", {"smoke": {"fail": True}}))
        register(MethodSpec("fake-interrupt", "fake-strategy", {"smoke": {"interrupt_after": 2}}))
        register(MethodSpec("fake-leaky", "fake-strategy", {"smoke": {"trained_on": ["FAKE-B"]}}))
        register(MethodSpec("fake-orphan", "no-such-strategy", {"smoke": {}}))
        register(MethodSpec("fake-badref", "fake-strategy", {"smoke": {"counter": "fake-countr"}}))
        register(MethodSpec("fake-exit", "fake-strategy", {"smoke": {"raises": "exit"}}))
        register(MethodSpec("fake-raises-interrupt", "fake-strategy", {"smoke": {"raises": "interrupt"}}))


@pytest.fixture(scope="module")
def regs():
    return build_registries(extra_plugins=[FakePlugin()])


@pytest.fixture(autouse=True)
def _reset_calls():
    CALLS.update(fit=0, predict=0)


def _run(regs, out, methods="fake-method", matrix="FAKE-A→FAKE-B", seeds="0", **kw):
    plan = plan_run(matrix, methods, seeds, "smoke", regs, None, **kw)
    return execute(plan, out, "cpu", progress=False)


# ------------------------------------------------------------------------------------------- planning

def test_parse_matrix_both_arrows_and_spaces():
    assert parse_matrix("SHA→SHB,SHB->SHA") == [("SHA", "SHB"), ("SHB", "SHA")]
    assert parse_matrix(" SHA → SHB ,  SHB -> SHA , SHA→SHB") == [("SHA", "SHB"), ("SHB", "SHA")]
    assert parse_matrix([("A", "B")]) == [("A", "B")]
    with pytest.raises(ConfigError, match="bad matrix entry 'SHA SHB'.*bad matrix entry '→SHB'"):
        parse_matrix("SHA SHB,→SHB")


def test_parse_matrix_resolves_aliases(regs):
    assert parse_matrix("fa->fake_b", regs) == [("FAKE-A", "FAKE-B")]


def test_plan_lists_all_problems_at_once(regs, tmp_path):
    with pytest.raises(ConfigError) as err:
        plan_run("FAKE-A→FAKE-BB, FAKE-DISK→FAKE-A, nope", "fake-methd,fake-orphan,fake-fail,fake-badref",
                 "0,x", "paper", regs, None)
    msg = str(err.value)
    assert "\n" not in msg
    assert "unknown dataset 'FAKE-BB'; did you mean 'FAKE-B'" in msg
    assert "bad matrix entry 'nope'" in msg
    assert "unknown method 'fake-methd'; did you mean 'fake-method'" in msg
    assert "method 'fake-orphan' uses an unknown strategy: unknown strategy 'no-such-strategy'" in msg
    assert "method 'fake-fail' has no profile 'paper'" in msg
    assert "seed 'x' is not an integer" in msg
    assert "dataset 'FAKE-DISK' needs a data root" in msg
    # options naming a component are checked against the registry (only with a profile that has them)
    with pytest.raises(ConfigError, match=r"option counter='fake-countr': unknown counter .*did you mean "
                                          r"'fake-counter'"):
        plan_run("FAKE-A→FAKE-B", "fake-badref", "0", "smoke", regs, None)
    with pytest.raises(ConfigError, match="data root .*missing.* is not a folder"):
        plan_run("FAKE-DISK→FAKE-A", "fake-method", "0", "smoke", regs, tmp_path / "missing")


def test_plan_cells_and_limit_identity(regs):
    plan = plan_run("fa→FAKE-B,FAKE-B->FAKE-A", "fake-method", "0,1", "smoke", regs, None, limit_test=3)
    assert [str(c) for c in plan.cells][:2] == ["fake-method FAKE-A→FAKE-B seed-0-n3",
                                                 "fake-method FAKE-A→FAKE-B seed-1-n3"]
    assert len(plan.cells) == 4
    assert Cell("m", "A", "B", 0).relpath == Path("m/A→B/seed-0")


# ------------------------------------------------------------------------------------------- execution

def test_run_writes_layout_and_metrics(regs, tmp_path):
    summary = _run(regs, tmp_path)
    assert summary.ok and len(summary.finished) == 1
    cell = tmp_path / "fake-method" / "FAKE-A→FAKE-B" / "seed-0"
    for name in ("config.json", "metrics.json", "predictions.csv", "log.txt", PARTIAL_FILE):
        assert (cell / name).is_file(), name
    assert (cell / "checkpoints").is_dir()
    config = json.loads((cell / "config.json").read_text())
    assert config["method"] == "fake-method" and config["strategy"] == "fake-strategy"
    assert config["seed"] == 0 and config["device"] == "cpu" and config["profile"] == "smoke"
    assert config["limit_test"] is None and "harness_version" in config and "git_commit" in config
    import importlib.metadata as md

    assert config["packages"]["torch"] == md.version("torch") and "numpy" in config["packages"]  # traceable numerics

    preds = pd.read_csv(cell / "predictions.csv")
    assert list(preds.columns[:4]) == ["image_id", "gt_count", "pred_count", "abs_error"]
    assert "count_regression" in preds.columns
    target = FakeDataset("FAKE-B", 6)
    gt = [target._sample(r).count for r in target.samples("test")]
    assert preds["gt_count"].tolist() == gt
    # the fake counter finds every head, plus a seeded offset in [0, 3)
    offset = preds["pred_count"] - preds["gt_count"]
    assert np.allclose(offset, offset[0]) and 0 <= offset[0] < 3
    m = json.loads((cell / "metrics.json").read_text())
    assert m["n_images"] == 5
    assert m["mae"] == pytest.approx(offset[0]) and m["mse"] == pytest.approx(offset[0])
    assert m["nae"] == pytest.approx(np.mean(offset[0] / np.array(gt)))
    assert m["map"] == pytest.approx(1.0) and m["ap@5"] == pytest.approx(1.0)  # exact points
    assert len(m["ap"]) == 100
    assert m["target_labels_seen"] is False and m["uses_target_images"] is False
    assert m["selection_split"] == "val" and m["n_points_dropped"] == 1
    assert m["provenance"]["weights"] == "trained-in-run"
    assert "fitting fake strategy" in (cell / "log.txt").read_text()


def test_rerun_recomputes_nothing(regs, tmp_path):
    _run(regs, tmp_path, seeds="0,1")
    assert CALLS == {"fit": 2, "predict": 10}
    before = (tmp_path / "fake-method" / "FAKE-A→FAKE-B" / "seed-1" / "metrics.json").read_text()
    summary = _run(regs, tmp_path, seeds="0,1")
    assert CALLS == {"fit": 2, "predict": 10}
    assert len(summary.skipped) == 2 and not summary.finished
    assert (tmp_path / "fake-method" / "FAKE-A→FAKE-B" / "seed-1" / "metrics.json").read_text() == before


def test_limited_run_is_a_separate_cell(regs, tmp_path):
    _run(regs, tmp_path, limit_test=2)
    m = json.loads((tmp_path / "fake-method/FAKE-A→FAKE-B/seed-0-n2/metrics.json").read_text())
    assert m["n_images"] == 2 and m["limit_test"] == 2
    summary = _run(regs, tmp_path)  # a full run does not reuse the limited cell
    assert len(summary.finished) == 1
    assert json.loads((tmp_path / "fake-method/FAKE-A→FAKE-B/seed-0/metrics.json").read_text())["n_images"] == 5


def test_killed_evaluation_resumes_at_next_image(regs, tmp_path):
    summary = _run(regs, tmp_path, methods="fake-interrupt")
    assert summary.interrupted and not summary.ok and not summary.failed
    cell = tmp_path / "fake-interrupt" / "FAKE-A→FAKE-B" / "seed-0"
    assert not (cell / "metrics.json").exists() and not (cell / "error.json").exists()
    assert [r["image_id"] for r in read_partial(cell / PARTIAL_FILE)] == ["img-0", "img-1"]
    # a torn last line (killed mid-write) is dropped on resume
    with open(cell / PARTIAL_FILE, "a") as fh:
        fh.write('{"image_id": "img-2", "gt_')
    assert CALLS["predict"] == 2
    # second attempt interrupted again after 2 more predictions: progress keeps growing
    assert _run(regs, tmp_path, methods="fake-interrupt").interrupted
    assert CALLS["predict"] == 4
    assert [r["image_id"] for r in read_partial(cell / PARTIAL_FILE)] == [f"img-{i}" for i in range(4)]
    summary = _run(regs, tmp_path, methods="fake-interrupt")  # only img-4 is left: no interrupt now
    assert summary.ok and CALLS["predict"] == 5
    assert json.loads((cell / "metrics.json").read_text())["n_images"] == 5
    assert pd.read_csv(cell / "predictions.csv")["image_id"].tolist() == [f"img-{i}" for i in range(5)]


def test_failing_cell_is_isolated_and_retried(regs, tmp_path):
    summary = _run(regs, tmp_path, methods="fake-fail,fake-method")
    assert [str(c) for c in summary.finished] == ["fake-method FAKE-A→FAKE-B seed-0"]
    assert len(summary.failed) == 1
    cell, message = summary.failed[0]
    assert cell.method == "fake-fail" and message == "ValueError: fake strategy failed on purpose"
    err = json.loads((tmp_path / "fake-fail/FAKE-A→FAKE-B/seed-0/error.json").read_text())
    assert err["type"] == "ValueError" and err["message"] == "fake strategy failed on purpose"
    assert "Traceback" in (tmp_path / "fake-fail/FAKE-A→FAKE-B/seed-0/log.txt").read_text()
    # next run retries the failed cell (fit called again) and skips the finished one
    CALLS.update(fit=0)
    summary = _run(regs, tmp_path, methods="fake-fail,fake-method")
    assert CALLS["fit"] == 1 and len(summary.failed) == 1 and len(summary.skipped) == 1


def test_same_seed_same_result_other_seed_differs(regs, tmp_path):
    _run(regs, tmp_path / "a", seeds="0,1")
    _run(regs, tmp_path / "b", seeds="0")
    a0, a1 = (pd.read_csv(tmp_path / f"a/fake-method/FAKE-A→FAKE-B/seed-{s}/predictions.csv") for s in (0, 1))
    b0 = pd.read_csv(tmp_path / "b/fake-method/FAKE-A→FAKE-B/seed-0/predictions.csv")
    pd.testing.assert_frame_equal(a0, b0)
    assert not np.allclose(a0["pred_count"], a1["pred_count"])


def test_target_labels_flag_and_config_mismatch(regs, tmp_path):
    _run(regs, tmp_path, methods="fake-leaky", matrix="FAKE-A→FAKE-B,FAKE-B→FAKE-A")
    flags = {p.parent.parent.name: json.loads(p.read_text())["target_labels_seen"]
             for p in tmp_path.rglob("metrics.json")}
    assert flags == {"FAKE-A→FAKE-B": True, "FAKE-B→FAKE-A": False}
    # same cell path, other profile options -> refused before any work
    cell = tmp_path / "fake-method/FAKE-A→FAKE-B/seed-0"
    _run(regs, tmp_path)
    plan = plan_run("FAKE-A→FAKE-B", "fake-method", "0", "paper", regs, None)
    with pytest.raises(ConfigError, match="different profile"):
        execute(plan, tmp_path, "cpu", progress=False)
    assert (cell / "metrics.json").exists()


def test_progress_bars_on_a_terminal(regs, tmp_path):
    import io

    from rich.console import Console

    buf = io.StringIO()
    plan = plan_run("FAKE-A→FAKE-B", "fake-fail,fake-method", "0", "smoke", regs, None)
    console = Console(file=buf, force_terminal=True, color_system=None, width=120)
    summary = execute(plan, tmp_path, "cpu", console=console)
    assert len(summary.finished) == 1 and len(summary.failed) == 1
    assert "cell fake-fail FAKE-A→FAKE-B seed-0 failed: ValueError: fake strategy failed on purpose" in buf.getvalue()


def test_points_from_density_use_the_counter_stride_for_odd_image_sizes():
    """MCNN/CSRNet give (H // s, W // s) maps: for W = 1021 and s = 8 the width ratio is 8.06, not 8.
    The counter's declared stride must be used (and the rounded ratio when it declares none)."""
    from harness.runner import points_and_scores
    from harness import Prediction

    density = np.zeros((95, 127), dtype=np.float32)   # 765 x 1021 image, stride 8
    density[10, 20] = 1.0
    pts, scores = points_and_scores(Prediction(count=1.0, density=density), (765, 1021, 3), 8)
    assert pts.shape == (1, 2) and scores[0] == 1.0
    np.testing.assert_allclose(pts[0], [(20 + 0.5) * 8, (10 + 0.5) * 8])
    pts2, _ = points_and_scores(Prediction(count=1.0, density=density), (765, 1021, 3))
    np.testing.assert_allclose(pts2, pts)


def test_output_metrics_per_named_output_by_hand():
    from harness.runner import output_metrics

    records = [{"gt_count": 10.0, "extras": {"count:regression": 12.0, "count:detection": 7.0}},
               {"gt_count": 20.0, "extras": {"count:regression": 16.0, "count:detection": None}},
               {"gt_count": 5.0, "extras": {"count_other": 1.0}}]
    m = output_metrics(records)
    assert set(m) == {"mae:regression", "mse:regression", "mae:detection", "mse:detection"}
    assert m["mae:regression"] == pytest.approx(3.0) and m["mse:regression"] == pytest.approx(np.sqrt(10.0))
    assert m["mae:detection"] == pytest.approx(3.0) and m["mse:detection"] == pytest.approx(3.0)  # one image
    assert output_metrics([{"gt_count": 1.0, "extras": {}}]) == {}


def test_cells_without_named_outputs_have_no_output_metrics(regs, tmp_path):
    _run(regs, tmp_path / "run")
    metrics = json.loads(next((tmp_path / "run").glob("*/*/seed-0/metrics.json")).read_text())
    assert not any(k.startswith(("mae:", "mse:")) for k in metrics)


def test_plugin_sys_exit_or_keyboard_interrupt_fails_only_its_cell(regs, tmp_path):
    """sys.exit() or a KeyboardInterrupt raised by plugin code is that cell's failure; the other cells run and
    the run is not reported as interrupted (a real Ctrl-C is a SIGINT, see the resume test)."""
    summary = _run(regs, tmp_path, methods="fake-exit,fake-raises-interrupt,fake-method")
    assert not summary.interrupted and [c.method for c in summary.finished] == ["fake-method"]
    failed = {c.method: m for c, m in summary.failed}
    assert failed == {"fake-exit": "SystemExit: plugin code called sys.exit(0)",
                      "fake-raises-interrupt": "KeyboardInterrupt: plugin code raised KeyboardInterrupt"}
    assert json.loads((tmp_path / "fake-exit/FAKE-A→FAKE-B/seed-0/error.json").read_text())["type"] == "SystemExit"


def test_a_cell_never_leaves_thread_or_rng_settings_behind(regs, tmp_path, monkeypatch):
    """A strategy that changes torch's thread count, determinism flag and global RNG affects only its cell."""
    import torch

    def meddling_fit(self, ctx):
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(False)
        torch.manual_seed(1234)
        return FakeCounter(0.0)

    monkeypatch.setattr(FakeStrategy, "fit", meddling_fit)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    rng = torch.get_rng_state()
    torch.set_num_threads(2)
    try:
        assert _run(regs, tmp_path).ok
        assert torch.get_num_threads() == 2
        assert torch.are_deterministic_algorithms_enabled() == det and torch.equal(torch.get_rng_state(), rng)
    finally:
        torch.set_num_threads(threads)


def test_thread_count_and_device_kind_are_part_of_a_cells_identity(regs, tmp_path):
    """A CPU cell is pinned to its thread count and records it with the device kind; a run under another thread
    count or on another kind of device refuses the finished cell in one line instead of reporting it as done."""
    from harness.executors import LocalExecutor

    plan = plan_run("FAKE-A→FAKE-B", "fake-method", "0", "smoke", regs, None)
    assert execute(plan, tmp_path, "cpu", progress=False, executor=LocalExecutor(threads=1)).ok
    cfg_path = tmp_path / "fake-method/FAKE-A→FAKE-B/seed-0/config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["threads"] == 1 and cfg["device_kind"] == "cpu"
    summary = execute(plan, tmp_path, "cpu", progress=False, executor=LocalExecutor(threads=1))
    assert summary.skipped and not summary.finished
    with pytest.raises(ConfigError, match="different thread count") as err:
        execute(plan, tmp_path, "cpu", progress=False, executor=LocalExecutor(threads=2))
    assert "\n" not in str(err.value)
    cfg_path.write_text(json.dumps({**cfg, "device_kind": "cuda:NVIDIA H100 80GB HBM3", "threads": None}))
    from harness.rundir import file_record  # as if the cell had been made on that GPU: its files agree

    mpath = cfg_path.with_name("metrics.json")
    mpath.write_text(json.dumps({**json.loads(mpath.read_text()), "files": file_record(cfg_path.parent)}))
    with pytest.raises(ConfigError, match="different device kind"):
        execute(plan, tmp_path, "cpu", progress=False, executor=LocalExecutor(threads=1))
    # --force moves it aside and computes the cell under this run's conditions
    summary = execute(plan, tmp_path, "cpu", progress=False, executor=LocalExecutor(threads=2), force=True)
    assert summary.replaced and summary.finished
    assert json.loads(cfg_path.read_text())["threads"] == 2


def test_device_kinds_match_by_type_where_the_model_is_unknown():
    from harness.conditions import conditions, same_device_kind

    assert same_device_kind("cuda", "cuda:NVIDIA A100-SXM4-80GB") and same_device_kind(None, "cpu")
    assert not same_device_kind("cuda:NVIDIA A100-SXM4-80GB", "cuda:NVIDIA H100 80GB HBM3")
    assert not same_device_kind("cpu", "cuda")
    assert conditions("cpu", 4) == {"device_kind": "cpu", "threads": 4}
    assert conditions("auto", 4) == {"device_kind": None, "threads": 4}


@pytest.mark.parametrize("harm", ["truncate-predictions", "garble-predictions", "drop-config", "garble-config"])
def test_a_damaged_cell_is_never_a_result(regs, tmp_path, harm):
    """A finished cell whose files disagree (truncated or edited predictions.csv, missing or garbled config.json) is
    'damaged': status says so naming the file, the leaderboard refuses it in one line, a run refuses it, and
    --force computes it again (the old files moved aside)."""
    from click.testing import CliRunner

    from harness.cli import main
    from harness.errors import DataError
    from harness.leaderboard import collect

    assert _run(regs, tmp_path).ok
    cell = tmp_path / "fake-method/FAKE-A→FAKE-B/seed-0"
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["files"]["predictions.csv"]["rows"] == metrics["n_images"]
    pred, cfg = cell / "predictions.csv", cell / "config.json"
    if harm == "truncate-predictions":
        pred.write_text("\n".join(pred.read_text().splitlines()[:-2]) + "\n")
        named = "predictions.csv"
    elif harm == "garble-predictions":
        lines = pred.read_text().splitlines()
        pred.write_text("\n".join(lines[:-1] + ["garbage,x,y,z"]) + "\n")
        named = "predictions.csv"
    elif harm == "drop-config":
        cfg.unlink()
        named = "config.json is missing"
    else:
        cfg.write_text("{not json")
        named = "config.json is unreadable"
    res = CliRunner().invoke(main, ["status", str(tmp_path)])
    assert "damaged" in res.output and named in res.output
    with pytest.raises(DataError, match="damaged cell") as err:
        collect(tmp_path)
    assert named in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="is damaged"):
        _run(regs, tmp_path)
    plan = plan_run("FAKE-A→FAKE-B", "fake-method", "0", "smoke", regs, None)
    summary = execute(plan, tmp_path, "cpu", progress=False, force=True)
    assert summary.replaced and summary.finished
    assert len(collect(tmp_path)) == 1


def test_same_data_through_another_path_is_the_same_cell_and_status_writes_nothing(regs, tmp_path):
    """A data root reached through another path (a symlink; on a cluster, another mount point) with the same files
    is accepted: the data fingerprint decides. ``harness status`` reads the run without creating any file."""
    from click.testing import CliRunner

    from harness.cli import main

    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    plan = plan_run("FAKE-A→FAKE-B", "fake-method", "0", "smoke", regs, data)
    assert execute(plan, tmp_path / "run", "cpu", progress=False).ok
    plan2 = plan_run("FAKE-A→FAKE-B", "fake-method", "0", "smoke", regs, tmp_path / "link")
    summary = execute(plan2, tmp_path / "run", "cpu", progress=False)
    assert summary.skipped and not summary.finished
    import shutil
    shutil.rmtree(tmp_path / "run" / ".locks")
    before = sorted(p for p in (tmp_path / "run").rglob("*"))
    res = CliRunner().invoke(main, ["status", str(tmp_path / "run")])
    assert res.exit_code == 0 and "1 done" in res.output
    assert sorted(p for p in (tmp_path / "run").rglob("*")) == before
