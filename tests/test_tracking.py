"""Experiment trackers (``harness run --log-with``): one run per cell with the training losses per step, the final
metrics, the flags and the overlays, read back from what each tracker wrote — TensorBoard's event files, MLflow's
local SQLite store (through ``MlflowClient``), W&B's offline run file (its protobuf records); a tracker that is not
installed is one line and never fails a cell."""
from __future__ import annotations

import logging
from pathlib import Path

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

    def make(name, run_name, folder, cpu=True):
        if name == missing:
            raise ModuleNotFoundError(f"No module named {missing!r}")
        return real(name, run_name, folder, cpu)

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
    assert made["MLflowTracker"][1] == {"experiment_name": "crowd-harness",
                                        "logging_dir": (tmp_path / "mlflow-artifacts").resolve().as_uri(),
                                        "run_name": "m__A-B__seed-0"}
    args, kwargs = made["WandBTracker"]
    assert args == ("crowd-harness",) and kwargs["name"] == "m__A-B__seed-0" and kwargs["mode"] == "offline"


def _tracked_run(tmp_path, monkeypatch, tracker: str):
    """The tiny tracked method and `zero` on one cell with ``--log-with tracker``; returns the run folder."""
    import harness.plugins
    from harness.cli import main
    from harness.plugins import build_registries

    monkeypatch.setattr(harness.plugins, "_REGISTRIES", build_registries(extra_plugins=[Tiny()]))
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["run", "--matrix", "SYN-SPARSE→SYN-DENSE", "--methods", "tracked-tiny,zero",
                                  "--limit-test", "3", "--device", "cpu", "--out", str(out), "--log-with", tracker])
    assert r.exit_code == 0, r.output
    return out


def _cell_metrics(out, method="tracked-tiny"):
    import json

    return json.loads((out / method / "SYN-SPARSE→SYN-DENSE" / "seed-0-n3" / "metrics.json").read_text())


def test_mlflow_run_per_cell_read_back_from_its_sqlite_store(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = _tracked_run(tmp_path, monkeypatch, "mlflow")
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{(out / 'trackers' / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("crowd-harness")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"tracked-tiny__SYN-SPARSE-SYN-DENSE__seed-0-n3", "zero__SYN-SPARSE-SYN-DENSE__seed-0-n3"}
    run = runs["tracked-tiny__SYN-SPARSE-SYN-DENSE__seed-0-n3"]
    assert run.data.params["method"] == "tracked-tiny" and run.data.params["target"] == "SYN-DENSE"
    metrics = _cell_metrics(out)
    assert run.data.metrics["final/mae"] == pytest.approx(metrics["mae"], rel=1e-6)
    loss = [k for k in run.data.metrics if k.startswith("train/") and k.endswith("/density")]
    history = client.get_metric_history(run.info.run_id, loss[0])
    assert len(history) > 1 and len({h.step for h in history}) == len(history)  # per optimiser step
    assert run.data.tags["flags/labels_used"] == str(metrics["labels_used"])
    assert run.data.tags["flags/target_labels_seen"] == "False" and "flags/dagger" not in run.data.tags
    artefacts = [a.path for a in client.list_artifacts(run.info.run_id)]
    assert "predictions.csv" in artefacts and "overlays" in artefacts
    csv = client.download_artifacts(run.info.run_id, "predictions.csv", str(tmp_path))
    cell = out / "tracked-tiny" / "SYN-SPARSE→SYN-DENSE" / "seed-0-n3"
    assert open(csv).read() == (cell / "predictions.csv").read_text()


def _wandb_records(run_file):
    """(kind, record) of every record of a W&B offline run file (``run-<id>.wandb``). W&B keeps its records in the
    LevelDB log format (32 KiB blocks; a 7-byte ``<IHB`` header — CRC-32 of type byte + data, length, type FULL /
    FIRST / MIDDLE / LAST — before each fragment), after a 7-byte ``:W&B`` file header; the Python reader left the
    wandb package with its Go core, so the test reads the format itself and checks every CRC."""
    import struct
    import zlib

    from wandb.proto import wandb_internal_pb2

    raw = Path(run_file).read_bytes()
    ident, magic, version = struct.unpack("<4sHB", raw[:7])
    assert ident == b":W&B" and magic == 0xBEE1 and version == 0, (ident, magic, version)
    pos, parts = 7, []
    while pos + 7 <= len(raw):
        left = 32768 - pos % 32768
        if left < 7:  # the block's tail is padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if length == 0 and kind == 0:
            break  # zero padding to the end of the file
        data = raw[pos + 7:pos + 7 + length]
        assert zlib.crc32(data, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF == crc, f"bad CRC at byte {pos}"
        pos += 7 + length
        parts.append(data)
        if kind in (1, 4):  # FULL, or the LAST fragment of a record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(parts))
            parts = []
            yield record.WhichOneof("record_type"), record


def test_wandb_offline_run_per_cell_read_back_from_its_run_file(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = _tracked_run(tmp_path, monkeypatch, "wandb")
    names, history, summary, artefacts = {}, {}, {}, {}
    for run_file in (out / "trackers" / "wandb").glob("offline-run-*/run-*.wandb"):
        for kind, record in _wandb_records(run_file):
            if kind == "run":
                name = record.run.display_name
                names[run_file] = name
            elif kind == "history":
                for item in record.history.item:
                    key = item.key or "/".join(item.nested_key)
                    history.setdefault((run_file, key), []).append(json.loads(item.value_json))
            elif kind == "summary":
                for item in record.summary.update:
                    summary[(run_file, item.key or "/".join(item.nested_key))] = json.loads(item.value_json)
            elif kind == "artifact":
                artefacts[run_file] = [m.path for m in record.artifact.manifest.contents]
    assert sorted(names.values()) == ["tracked-tiny__SYN-SPARSE-SYN-DENSE__seed-0-n3",
                                      "zero__SYN-SPARSE-SYN-DENSE__seed-0-n3"]
    run = next(f for f, n in names.items() if n.startswith("tracked-tiny"))
    metrics = _cell_metrics(out)
    assert history[(run, "final/mae")][-1] == pytest.approx(metrics["mae"], rel=1e-6)
    losses = [v for (f, k), v in history.items() if f == run and k.startswith("train/") and k.endswith("/density")]
    assert losses and len(losses[0]) > 1  # one value per logged optimiser step
    assert summary[(run, "flags/labels_used")] == str(metrics["labels_used"])
    assert "predictions.csv" in artefacts[run] and any(p.startswith("overlays/") for p in artefacts[run])
