"""`harness run --executor slurm` on a real Slurm cluster (the single node `.ci/start-slurm` brings up: Debian's
slurm-wlm + munge, no accounting): one job array, a job cancelled from outside its cell (`scancel`) is found without
`sacct`, recorded in that cell's error.json with Slurm's state, shown failed by `harness status`, and the next run
resubmits only that cell. Skipped where no Slurm controller answers."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
HARNESS = Path(sys.executable).parent / "harness"
MATRIX = "SYN-SPARSE→SYN-DENSE"


def _slurm_up() -> bool:
    if not shutil.which("sbatch") or not shutil.which("scontrol"):
        return False
    p = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    return p.returncode == 0 and "UP" in p.stdout


pytestmark = pytest.mark.skipif(not _slurm_up(), reason="no Slurm controller answers (.ci/start-slurm starts one)")


def _queued() -> dict[str, str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%j"], capture_output=True, text=True).stdout
    return {line.split("|")[0]: line.split("|")[1] for line in out.split()}


def _cells_computed(out: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(out)): p.read_text().count(": strategy ") for p in out.glob("*/*/seed-*/log.txt")}


def test_a_cancelled_job_is_a_failed_cell_and_the_next_run_resubmits_it(tmp_path):
    out, hold = tmp_path / "run", tmp_path / "hold"
    hold.write_text("the slow-tiny cell trains while this file exists")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
           "SLOW_PLUGIN_HOLD": str(hold)}
    cmd = [str(HARNESS), "run", "--matrix", MATRIX, "--methods", "slow-tiny,source-mean,zero", "--limit-test", "4",
           "--device", "cpu", "--plugin", "slow_plugin", "--out", str(out), "--executor", "slurm",
           "--slurm-gpus-per-task", "0", "--slurm-cpus-per-task", "1", "--slurm-time", "10"]
    driver = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    victim = out / "slow-tiny" / "SYN-SPARSE→SYN-DENSE" / "seed-0-n4"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (victim / "worker.json").exists():
            time.sleep(0.5)  # the cell's job is running its cell
        assert (victim / "worker.json").exists(), driver.stderr.read() if driver.poll() is not None else "no start"
        victim_job = json.loads((victim / "worker.json").read_text())["slurm_job"]  # <array>_<task>
        assert _queued().get(victim_job) == "RUNNING"
        subprocess.run(["scancel", victim_job], check=True)
        _, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
        hold.unlink(missing_ok=True)
    assert driver.returncode == 1, err
    assert err.count("Slurm: no job accounting here (sacct: ") == 1, err  # one line, once
    assert "Bypassing sacct error" not in err
    error = json.loads((victim / "error.json").read_text())
    assert error["type"] == "SlurmJobEnded" and error["slurm_state"] == "CANCELLED", error
    assert error["slurm_job"] == victim_job and f"Slurm job {victim_job} ended CANCELLED" in error["message"]
    assert "ended CANCELLED without a result" in (victim / "log.txt").read_text()
    status = subprocess.run([str(HARNESS), "status", str(out)], capture_output=True, text=True)
    assert "3 cell(s): 2 done, 0 running, 1 failed, 0 pending" in status.stdout, status.stdout
    assert "SlurmJobEnded: Slurm job" in status.stdout
    config = json.loads((out / "zero" / "SYN-SPARSE→SYN-DENSE" / "seed-0-n4" / "config.json").read_text())
    assert "--executor slurm" in config["command"] and "--slurm-cpus-per-task 1" in config["command"]

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "finished 1, already done 2, failed 0" in again.stderr
    assert not (victim / "error.json").exists() and (victim / "metrics.json").exists()
    counts = _cells_computed(out)
    assert counts[str(victim.relative_to(out))] == 2 and sum(counts.values()) == 4, counts  # only it ran again
