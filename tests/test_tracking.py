"""Experiment trackers (``harness run --log-with``): one TensorBoard run per cell with the training losses per step,
the final metrics, the flags and the overlays, read back from the event files; a tracker that is not installed is
one line and never fails a cell."""
from __future__ import annotations

import logging

import pytest
from click.testing import CliRunner

from harness import MethodSpec, TINY_TRAIN, hookimpl

pytest.importorskip("tensorboard")


class Tiny:
    @hookimpl
    def harness_register_methods(self, register):
        register(MethodSpec("tracked-tiny", "source-only",
                            {"smoke": {"counter": "rescsrnet", "counter_options": {"width": 0.125},
                                       "train": {**TINY_TRAIN, "epochs": 2}}}))


def scalars(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_tensorboard_run_per_cell_read_back(tmp_path, monkeypatch, caplog):
    import harness.plugins
    from harness.cli import main
    from harness.plugins import build_registries

    monkeypatch.setattr(harness.plugins, "_REGISTRIES", build_registries(extra_plugins=[Tiny()]))
    monkeypatch.setattr("harness.tracking._make", _without("mlflow"))
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="harness.tracking"):
        r = CliRunner().invoke(main, ["run", "--matrix", "SYN-SPARSE→SYN-DENSE", "--methods", "tracked-tiny,zero",
                                      "--limit-test", "3", "--device", "cpu", "--out", str(out),
                                      "--log-with", "tensorboard", "--log-with", "mlflow"])
    assert r.exit_code == 0, r.output
    assert any("tracker mlflow unavailable" in m for m in caplog.messages)  # one line, the cells finished
    runs = sorted(p.name for p in (out / "trackers" / "tensorboard").iterdir())
    assert runs == ["tracked-tiny__SYN-SPARSE-SYN-DENSE__seed-0-n3", "zero__SYN-SPARSE-SYN-DENSE__seed-0-n3"]
    acc = scalars(out / "trackers" / "tensorboard" / runs[0])
    tags = acc.Tags()
    train = [t for t in tags["scalars"] if t.startswith("train/")]
    assert any(t.endswith("/density") for t in train) and any(t.endswith("/eval") for t in train), train
    import json

    metrics = json.loads((out / "tracked-tiny" / "SYN-SPARSE→SYN-DENSE" / "seed-0-n3" / "metrics.json").read_text())
    assert acc.Scalars("final/mae")[0].value == pytest.approx(metrics["mae"], rel=1e-6)
    assert any(t.startswith("overlays/") for t in tags["images"])
    assert any(t.startswith("flags/labels_used") for t in tags["tensors"])  # text summaries are tensors
    config = json.loads((out / "tracked-tiny" / "SYN-SPARSE→SYN-DENSE" / "seed-0-n3" / "config.json").read_text())
    assert "--log-with tensorboard --log-with mlflow" in config["command"]


def _without(missing):
    from harness import tracking

    real = tracking._make

    def make(name, run_name, folder):
        if name == missing:
            raise ModuleNotFoundError(f"No module named {missing!r}")
        return real(name, run_name, folder)

    return make


def test_tracker_constructors_follow_accelerate_signatures(tmp_path, monkeypatch):
    """The three trackers are built with the arguments accelerate's classes take (the W&B project first, the run
    name as `name`; MLflow's experiment, folder and run name), checked without starting them."""
    from accelerate import tracking as acc

    from harness import tracking

    made = {}

    def fake(cls):
        class Fake:
            def __init__(self, *args, **kwargs):
                made[cls] = (args, kwargs)

        return Fake

    for cls in ("TensorBoardTracker", "MLflowTracker", "WandBTracker"):
        monkeypatch.setattr(acc, cls, fake(cls))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    for name in tracking.TRACKERS:
        tracking._make(name, "m__A-B__seed-0", tmp_path)
    assert made["TensorBoardTracker"][0] == ("m__A-B__seed-0", str(tmp_path / "tensorboard"))
    assert made["MLflowTracker"][1] == {"experiment_name": "crowd-harness", "logging_dir": str(tmp_path / "mlruns"),
                                        "run_name": "m__A-B__seed-0"}
    args, kwargs = made["WandBTracker"]
    assert args == ("crowd-harness",) and kwargs["name"] == "m__A-B__seed-0" and kwargs["mode"] == "offline"
