"""Benchmark: the fixed costs of one ``harness run`` process against a process that only imports torch.

What one ``harness run`` process pays whatever its model: start-up (click, rich, the plugins, the readers, torch),
planning, the data fingerprints and ``config.json``, the metrics and ``predictions.csv``, the leaderboard and the exit.
The cell is the built-in ``zero`` baseline on 2 test images of the built-in synthetic pair (no model, no data root);
the reference is ``python -c "import torch"``, which every torch program pays (group "process"; compare the means):

    .venv/bin/pytest tests/test_bench_startup.py --benchmark-enable

With ``--benchmark-disable`` (the project's default) each runs once as a plain test and checks the process did its
work. The process-to-process comparison with a model (``scripts/overhead.py``) is in the README, "Fixed costs".
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = str(Path(sys.executable).parent / "harness")


@pytest.mark.benchmark(group="process")
def test_bench_import_torch_process(benchmark):
    r = benchmark(subprocess.run, [sys.executable, "-c", "import torch; print(torch.__version__)"],
                  capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip()


@pytest.mark.benchmark(group="process")
def test_bench_harness_run_process(benchmark, tmp_path):
    runs = (tmp_path / f"run-{i}" for i in itertools.count())
    env = {**os.environ, "HARNESS_CACHE": str(tmp_path / "cache")}

    def one_run() -> Path:
        out = next(runs)
        r = subprocess.run([HARNESS, "run", "--matrix", "SYN-PARK→SYN-STREET", "--methods", "zero", "--limit-test",
                            "2", "--device", "cpu", "--out", str(out)], capture_output=True, text=True, env=env,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        return out

    out = benchmark(one_run)
    metrics = json.loads(next(out.glob("zero/*/seed-0-n2/metrics.json")).read_text())
    assert metrics["n_images"] == 2 and metrics["method"] == "zero"
    assert (out / "leaderboard.md").read_text().count("zero") >= 1
