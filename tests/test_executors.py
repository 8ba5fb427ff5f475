"""Executors: the same 4-cell synthetic matrix on the local executor, on a local Ray cluster (2 CPUs, two cells at a
time, one worker SIGKILLed mid-training and retried) and as a submitit job array (local processes) — byte-identical
leaderboards; two concurrent local drivers compute every cell exactly once; `harness status` from the files alone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.executors import LocalExecutor, RayExecutor, SlurmExecutor
from harness.leaderboard import collect, leaderboard, render
from harness.plugins import build_registries, plugin_modules
from harness.runner import execute, plan_run

TESTS = Path(__file__).resolve().parent
MATRIX = "SYN-SPARSE→SYN-DENSE,SYN-DENSE→SYN-SPARSE"
METHODS = "slow-tiny,source-mean"
HARNESS = Path(sys.executable).parent / "harness"


@pytest.fixture(autouse=True)
def plugin_on_path(monkeypatch):
    """Workers (Ray, submitit) import the test plugin module: put its folder on their PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.syspath_prepend(str(TESTS))


def plan():
    regs = build_registries(plugin_modules(["slow_plugin"]))
    return plan_run(MATRIX, METHODS, "0", "smoke", regs, None, limit_test=4, plugins=["slow_plugin"])


def board(out) -> str:
    return render(leaderboard(collect(out)), "md")


def computations(out: Path) -> int:
    """How many times a cell was started (one "cell ..." line per run_cell call in the cells' logs)."""
    return sum(p.read_text().count(": strategy ") for p in out.glob("*/*/seed-*/log.txt"))


@pytest.fixture(scope="module")
def local_board(tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("local") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray and submitit workers (one CPU per cell): the same float reductions
    try:
        summary = execute(plan(), out, "cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert summary.ok and len(summary.finished) == 4
    return board(out)


def test_ray_retries_a_killed_worker_and_matches_the_local_executor(tmp_path, local_board):
    out = tmp_path / "run"
    ex = RayExecutor(address=None, num_cpus=2, cpus_per_cell=1, max_retries=2)
    result = {}
    t0 = time.perf_counter()
    runner = threading.Thread(target=lambda: result.setdefault("summary", execute(plan(), out, "cpu", progress=False,
                                                                                  executor=ex)))
    runner.start()
    try:
        victim = out / "slow-tiny" / "SYN-SPARSE→SYN-DENSE" / "seed-0-n4"
        deadline = time.time() + 180
        while time.time() < deadline and not list((victim / "checkpoints" / "density").glob("step-*")):
            time.sleep(0.1)  # wait until that cell has written its first checkpoint
        pid = json.loads((victim / "worker.json").read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        while time.time() < deadline and json.loads((victim / "worker.json").read_text())["pid"] == pid:
            time.sleep(0.05)
        retry = time.perf_counter() - killed
        runner.join(timeout=300)
        summary = result["summary"]
        assert summary.ok and len(summary.finished) == 4, summary
        assert "resuming at step" in (victim / "log.txt").read_text()  # the retry resumed from the checkpoint
        assert board(out) == local_board
        print(f"ray: 4 cells in {time.perf_counter() - t0:.1f} s; worker killed -> retried in {retry:.1f} s")
    finally:
        import ray

        ray.shutdown()
        runner.join(timeout=60)
    states = subprocess.run([str(HARNESS), "status", str(out)], capture_output=True, text=True)
    assert states.returncode == 0 and "4 cell(s): 4 done, 0 running, 0 failed, 0 pending" in states.stdout


def test_submitit_job_array_matches_the_local_executor(tmp_path, local_board):
    out = tmp_path / "run"
    summary = execute(plan(), out, "cpu", progress=False,
                      executor=SlurmExecutor(cluster="local", cpus_per_task=1, array_parallelism=2, time_min=10))
    assert summary.ok and len(summary.finished) == 4, summary.failed
    assert board(out) == local_board
    assert list((out / ".slurm").rglob("*.out"))  # submitit's per-job logs live in the run directory


def test_two_concurrent_drivers_compute_every_cell_once(tmp_path):
    out = tmp_path / "run"
    cmd = [str(HARNESS), "run", "--matrix", MATRIX, "--methods", METHODS, "--limit-test", "4", "--device", "cpu",
           "--plugin", "slow_plugin", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(0.5)
    b = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    (_, err_a), (_, err_b) = a.communicate(timeout=600), b.communicate(timeout=600)
    assert a.returncode == 0 and b.returncode == 0, err_a + err_b
    assert len(list(out.rglob("metrics.json"))) == 4
    assert computations(out) == 4  # every cell computed exactly once, by one of the two drivers


def test_status_reports_failed_and_pending_cells_from_the_files(tmp_path):
    from harness.jobs import cell_lock, write_progress

    out = tmp_path / "run"
    (out / "m/A→B/seed-0").mkdir(parents=True)
    (out / "m/A→B/seed-0/config.json").write_text("{}")
    (out / "m/A→B/seed-0/error.json").write_text(json.dumps({"type": "ValueError", "message": "boom"}))
    (out / "m/B→A/seed-0").mkdir(parents=True)
    (out / "m/B→A/seed-0/config.json").write_text("{}")
    write_progress(out, {"m/A→B/seed-0": "failed", "m/B→A/seed-0": "running", "m/C→A/seed-0": "pending"})
    lock = cell_lock(out, "m/B→A/seed-0")
    with lock:  # a live process computing that cell
        r = subprocess.run([str(HARNESS), "status", str(out)], capture_output=True, text=True)
    assert "3 cell(s): 0 done, 1 running, 1 failed, 1 pending" in r.stdout
    assert "failed   m/A→B/seed-0  ValueError: boom" in r.stdout and "running  m/B→A/seed-0" in r.stdout
    r = subprocess.run([str(HARNESS), "status", str(out)], capture_output=True, text=True)
    assert "running" not in r.stdout.split("\n", 1)[1]  # the lock died with its holder: no stale "running"


def test_ray_refuses_more_gpus_than_the_cluster_has(tmp_path):
    from harness.errors import ConfigError

    try:
        with pytest.raises(ConfigError, match="asks for 1 GPU.*cluster has 0"):
            execute(plan(), tmp_path / "run", "cpu", progress=False,
                    executor=RayExecutor(address=None, num_cpus=1, gpus_per_cell=1))
    finally:
        import ray

        ray.shutdown()


def test_local_executor_is_the_default():
    assert isinstance(__import__("harness.executors").executors.make_executor("local"), LocalExecutor)


def test_sigterm_stops_cleanly_logs_and_marks_the_cell_interrupted(tmp_path):
    """SIGTERM (how Slurm preempts) ends the run like Ctrl-C: exit 143, a line in the cell's log.txt, the cell shown
    as interrupted by `harness status` until the same command resumes and finishes it."""
    import signal as _signal

    out = tmp_path / "run"
    cmd = [str(HARNESS), "run", "--matrix", "SYN-SPARSE→SYN-DENSE", "--methods", "slow-tiny", "--limit-test", "4",
           "--device", "cpu", "--plugin", "slow_plugin", "--out", str(out), "--threads", "1"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cell = out / "slow-tiny/SYN-SPARSE→SYN-DENSE/seed-0-n4"
    deadline = time.time() + 120
    while not (cell / "log.txt").exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    p.send_signal(_signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "interrupted by SIGTERM" in (cell / "log.txt").read_text()
    r = subprocess.run([str(HARNESS), "status", str(out)], capture_output=True, text=True)
    assert "1 interrupted" in r.stdout and "interrupted by SIGTERM" in r.stdout, r.stdout
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and (cell / "metrics.json").exists(), r.stderr


def test_every_executor_implements_the_executor_protocol():
    from harness.executors import Executor, make_executor

    for ex in (LocalExecutor(threads=2), RayExecutor(cpus_per_cell=3), SlurmExecutor(cpus_per_task=4),
               make_executor("local")):
        assert isinstance(ex, Executor), type(ex).__name__
    assert [LocalExecutor(threads=2).threads, RayExecutor(cpus_per_cell=3).threads,
            SlurmExecutor(cpus_per_task=4).threads] == [2, 3, 4]
    assert LocalExecutor().resolves_device_in_driver and not RayExecutor().resolves_device_in_driver

    class NoWait:  # lacks wait_for_held
        threads, resolves_device_in_driver = 1, True

        def run(self, args, rels, on_state, **kw):
            pass

    assert not isinstance(NoWait(), Executor)


def test_workers_receive_the_frozen_run_spec_and_plan_it_identically(tmp_path):
    """What a Ray/Slurm worker gets is the spec (pickled), and planning it again gives the driver's cells."""
    import dataclasses
    import pickle

    from harness.jobs import JobArgs, _plan

    p = plan()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.spec = p.spec  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.spec.workers = 3  # type: ignore[misc]
    args = JobArgs(p.spec, str(tmp_path), "cpu", str(tmp_path / "cache"), threads=1, commit="abc")
    again = pickle.loads(pickle.dumps(args))
    assert again == args and hash(again.spec) == hash(p.spec)
    assert again.spec.plugins == ("slow_plugin",) and again.spec.limit_test == 4
    worker_plan = _plan(again)
    assert worker_plan.cells == p.cells and worker_plan.spec == p.spec
    assert worker_plan.strategy_options == p.strategy_options


def test_slurm_states_use_sacct_where_accounting_works_and_scontrol_where_not():
    from types import SimpleNamespace

    from harness.slurm_watch import SlurmStates, ended

    calls, notices = [], []

    def cluster(accounting: bool):
        def run(cmd, **kw):
            calls.append(cmd[0])
            if cmd[0] == "squeue":
                return SimpleNamespace(returncode=0, stdout="7_0|RUNNING\n7_2|REQUEUED\n", stderr="")
            if cmd[0] == "sacct":
                if not accounting:
                    return SimpleNamespace(returncode=1, stdout="", stderr="Slurm accounting storage is disabled\n")
                return SimpleNamespace(returncode=0, stdout="7_1|CANCELLED by 0\n7_3|OUT_OF_MEMORY\n", stderr="")
            job = cmd[-1]
            known = {"7_1": "CANCELLED", "7_3": "NODE_FAIL"}
            if job in known:
                return SimpleNamespace(returncode=0, stdout=f"JobId=7 ArrayTaskId=1 JobState={known[job]} Reason=None",
                                       stderr="")
            return SimpleNamespace(returncode=1, stdout="", stderr="slurm_load_jobs error: Invalid job id specified")
        return run

    with_acct = SlurmStates(notices.append, run=cluster(True))
    assert with_acct(["7_0", "7_1", "7_2", "7_3", "7_4"]) == {"7_0": "RUNNING", "7_1": "CANCELLED", "7_2": "REQUEUED",
                                                             "7_3": "OUT_OF_MEMORY", "7_4": None}
    assert with_acct.accounting is True and not notices
    without = SlurmStates(notices.append, run=cluster(False))
    for _ in range(2):
        assert without(["7_0", "7_1", "7_3", "7_4"]) == {"7_0": "RUNNING", "7_1": "CANCELLED", "7_3": "NODE_FAIL",
                                                        "7_4": None}
    assert without.accounting is False and len(notices) == 1 and "Slurm accounting storage is disabled" in notices[0]
    assert calls.count("sacct") == 2  # once per cluster: a cluster without accounting is not asked again
    # a failure state ends after two polls; COMPLETED or unknown only after the grace period (file system lag)
    assert not ended("REQUEUED", 1000, 5, 60) and not ended("RUNNING", 1000, 5, 60)
    assert not ended("CANCELLED", 0, 5, 60) and ended("CANCELLED", 5, 5, 60)
    assert not ended("COMPLETED", 30, 5, 60) and ended("COMPLETED", 60, 5, 60) and ended(None, 60, 5, 60)
