"""Where the cells run: in the driver (``local``), on a Ray cluster (one core task per cell), or as a Slurm job
array (submitit) — existing engines, not a home-made scheduler (docs/design.md §8).

Every executor sends each pending cell through the same idempotent :func:`harness.jobs.run_cell_job` and reports
its state back (``on_state(relpath, state, message)``): ``running``, then ``done``, ``failed``, ``skipped`` or
``held`` (another driver has it). Ray and submitit are optional extras (``pip install 'crowd-harness[ray]'`` /
``'[slurm]'``), imported only when chosen. The run directory and the cache must be on a file system every node
shares; Ray and Slurm runs check that a worker sees the run directory before dispatching anything.
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from .errors import ConfigError, HarnessError

if TYPE_CHECKING:
    from .jobs import JobArgs
    from .planning import Plan

#: ``on_state(relpath, state, message)``: a cell's new state (running, done, failed, skipped, held, interrupted)
OnState = Callable[[str, str, str], None]


@runtime_checkable
class Executor(Protocol):
    """Where the cells of a run are computed (:func:`harness.execution.execute` drives it).

    ``threads``: the intra-op thread count pinned for every cell (part of a cell's identity:
    :mod:`harness.conditions`). ``resolves_device_in_driver``: True when cells run in the driver's process (the
    driver resolves ``--device auto`` once for all of them); False when each worker resolves it on its node.

    :meth:`run` computes ``rels`` (cell paths relative to the run folder) through
    :func:`harness.jobs.run_cell_job` and reports every state change via ``on_state``; ``plan`` is the driver's
    plan (an executor that computes in the driver may reuse it; remote workers plan ``args.spec`` again);
    ``sigint`` the driver's Ctrl-C flag; ``bars`` a rich ``Progress`` for per-image bars (or None).
    :meth:`wait_for_held` waits until another driver releases each held cell, then computes it unless that driver
    finished it."""

    threads: int
    resolves_device_in_driver: bool

    def run(self, args: "JobArgs", rels: list[str], on_state: OnState, *, plan: "Plan | None" = None,
            sigint: Any = None, bars: Any = None) -> None: ...

    def wait_for_held(self, args: "JobArgs", rels: list[str], on_state: OnState, *, plan: "Plan | None" = None,
                      sigint: Any = None, bars: Any = None) -> None: ...


class LocalExecutor:
    """Cells one after another in this process (the default): Ctrl-C stops cleanly, a per-image progress bar."""

    resolves_device_in_driver = True

    def __init__(self, threads: int | None = None):
        from .conditions import default_threads

        #: intra-op threads pinned for every cell (harness.conditions)
        self.threads = max(1, int(threads)) if threads else default_threads()

    def run(self, args, rels: list[str], on_state: OnState, *, plan=None, sigint=None, bars=None) -> None:
        from .jobs import run_cell_job

        for rel in rels:
            on_state(rel, "running", "")
            task = bars.add_task(f"  {rel}", total=None) if bars is not None else None

            def on_image(i: int, n: int, _t=task) -> None:
                if bars is not None:
                    bars.update(_t, completed=i, total=n)

            try:
                result = run_cell_job(args, rel, plan=plan, sigint=sigint, on_image=on_image)
            except KeyboardInterrupt:
                why = getattr(sigint, "signal_name", "") or "SIGINT"
                on_state(rel, "interrupted", f"interrupted by {why}: run again to resume")
                raise
            finally:
                if bars is not None:
                    bars.remove_task(task)
            on_state(rel, result["state"], result["message"])

    def wait_for_held(self, args, rels: list[str], on_state: OnState, *, plan=None, sigint=None, bars=None,
                      poll: float = 2.0) -> None:
        """Wait until another driver releases each held cell, then compute it unless that driver finished it."""
        from .jobs import is_locked

        for rel in rels:
            while is_locked(args.out_dir, rel):
                time.sleep(poll)
            self.run(args, [rel], on_state, plan=plan, sigint=sigint, bars=bars)


def check_shared(run_dir: str | Path, probe: Callable[[str, str], bool], what: str) -> None:
    """Write a marker in ``run_dir`` and ask ``probe(run_dir, marker)`` (run on a worker) whether it sees it.

    Raises:
        ConfigError: the worker does not see the run directory (one line: it must be on a shared file system)."""
    marker = f".probe-{uuid.uuid4().hex}"
    path = Path(run_dir) / marker
    path.write_text("harness")
    try:
        ok = probe(str(Path(run_dir).resolve()), marker)
    finally:
        path.unlink(missing_ok=True)
    if not ok:
        raise ConfigError(f"{what} workers cannot see the run directory {run_dir}: put --out (and HARNESS_CACHE) on "
                          f"a file system every node shares")


def _sees(run_dir: str, marker: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, marker))


class RayExecutor:
    """Every cell a Ray core task (``num_gpus=gpus_per_cell``, ``num_cpus=cpus_per_cell``; Ray sets
    ``CUDA_VISIBLE_DEVICES`` per task). A worker or node lost mid-cell is retried up to ``max_retries`` times (the
    cell resumes from its checkpoints and progress file); a Python exception is the cell's recorded failure and is
    not retried.

    Args:
        address: ``"auto"`` (a running cluster), a ``ray://host:10001`` address, or None (start a local Ray).
        gpus_per_cell: GPUs of one task.
        cpus_per_cell: CPUs of one task (also its pinned thread count).
        max_retries: retries after a lost worker.
        num_cpus: CPUs of a local Ray started here (None: all).

    Raises (from :meth:`run`):
        ConfigError: Ray is not installed, the cluster has fewer GPUs than a cell asks for (Ray would leave the task
            pending forever), or the workers do not see the run directory.
    """

    resolves_device_in_driver = False

    def __init__(self, address: str | None = "auto", gpus_per_cell: float = 0, cpus_per_cell: float = 1,
                 max_retries: int = 3, num_cpus: int | None = None):
        self.address, self.gpus, self.cpus = address, float(gpus_per_cell), float(cpus_per_cell)
        self.max_retries, self.num_cpus = int(max_retries), num_cpus
        self.threads = max(1, int(cpus_per_cell))

    def _init(self):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'crowd-harness[ray]'") from None
        if not ray.is_initialized():
            kw = {"num_cpus": self.num_cpus} if self.address is None and self.num_cpus else {}
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, **kw)
        have = float(ray.cluster_resources().get("GPU", 0))
        if self.gpus > have:
            raise ConfigError(f"a cell asks for {self.gpus:g} GPU(s) but the Ray cluster has {have:g}: lower "
                              f"--gpus-per-cell or add GPU nodes (Ray would keep the tasks pending forever)")
        return ray

    def run(self, args, rels: list[str], on_state: OnState, *, plan=None, sigint=None, bars=None) -> None:
        ray = self._init()
        probe = ray.remote(num_cpus=0)(_sees)
        check_shared(args.out_dir, lambda d, m: ray.get(probe.remote(d, m)), "Ray")
        task = ray.remote(_ray_cell).options(num_gpus=self.gpus, num_cpus=self.cpus, max_retries=self.max_retries,
                                             retry_exceptions=False)
        refs = {task.remote(args, rel): rel for rel in rels}
        for rel in rels:
            on_state(rel, "running", "")
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            rel = refs[done[0]]
            try:
                result = ray.get(done[0])
            except Exception as exc:  # the task died more than max_retries times
                result = {"state": "failed", "message": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
            on_state(rel, result["state"], result["message"])

    def wait_for_held(self, args, rels, on_state, **kw) -> None:
        LocalExecutor().wait_for_held(args, rels, on_state, **kw)


def _ray_cell(args, rel: str) -> dict:
    from .jobs import run_cell_job

    return run_cell_job(args, rel)


class SlurmExecutor:
    """One submitit job array per run (``slurm_array_parallelism`` tasks at a time), each task one cell; a task
    preempted or timed out is requeued (submitit checkpointing) and resumes its cell. submitit's own logs go to
    ``<run>/.slurm/``; each cell keeps its ``log.txt``. ``cluster="local"`` runs the same array as local processes
    (tests, a workstation).

    A job that ends without a result — cancelled (``scancel``), killed for memory, its node lost — is found with or
    without Slurm accounting (:mod:`harness.slurm_watch`: ``squeue``, then ``sacct`` or ``scontrol``), recorded in
    the cell's ``error.json`` with Slurm's state (``harness status`` shows it failed) and resubmitted by the next run.

    Args:
        partition: Slurm partition (None: the cluster's default).
        time_min: minutes per cell (requeued when preempted or timed out).
        gpus_per_task: GPUs per cell.
        cpus_per_task: CPUs per cell (also its pinned thread count).
        array_parallelism: cells running at once.
        mem_gb: memory per cell (None: the partition's default).
        cluster: None (Slurm, or whatever submitit detects), ``"slurm"`` or ``"local"``.
        poll_s: seconds between two looks at the jobs. grace_s: how long a job that left the queue as COMPLETED,
            or that no command knows any more, may take for its result file to appear (shared file systems lag).
        notice: where one-line notices go (default stderr), e.g. that the cluster has no accounting.
    """

    resolves_device_in_driver = False

    def __init__(self, partition: str | None = None, time_min: int = 240, gpus_per_task: int = 0,
                 cpus_per_task: int = 2, array_parallelism: int = 16, mem_gb: float | None = None,
                 cluster: str | None = None, poll_s: float = 5.0, grace_s: float = 60.0,
                 notice: Callable[[str], None] | None = None):
        self.partition, self.time_min, self.gpus, self.cpus = partition, int(time_min), int(gpus_per_task), int(
            cpus_per_task)
        self.parallelism, self.mem_gb, self.cluster = int(array_parallelism), mem_gb, cluster
        self.poll_s, self.grace_s, self.notice = float(poll_s), float(grace_s), notice
        self.threads = max(1, int(cpus_per_task))

    def executor(self, folder: Path):
        try:
            import submitit
        except ImportError:
            raise ConfigError("--executor slurm needs submitit: pip install 'crowd-harness[slurm]'") from None
        ex = submitit.AutoExecutor(folder=str(folder / "%j"), cluster=self.cluster)
        params = {"timeout_min": self.time_min, "cpus_per_task": self.cpus, "slurm_array_parallelism": self.parallelism}
        if self.gpus:
            params["gpus_per_node"] = self.gpus
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.mem_gb:
            params["mem_gb"] = self.mem_gb
        ex.update_parameters(**{k: v for k, v in params.items() if ex.cluster == "slurm" or not k.startswith("slurm")})
        return ex

    def run(self, args, rels: list[str], on_state: OnState, *, plan=None, sigint=None, bars=None) -> None:
        from .failures import record_failure
        from .slurm_watch import SlurmStates

        ex = self.executor(Path(args.out_dir) / ".slurm")
        states = SlurmStates(self.notice) if ex.cluster == "slurm" else None

        def probe(d: str, m: str) -> bool:
            job = ex.submit(_sees, d, m)
            kind, value = self.collect([job], states)[0]
            if kind != "result":
                raise ConfigError(f"the Slurm job {job.job_id} that checks what workers see ended "
                                  f"{value if kind == 'ended' else 'with an error'} before running: see its log "
                                  f"{job.paths.stderr}")
            return value is True

        check_shared(args.out_dir, probe, "Slurm")
        jobs = ex.map_array(SlurmCell(), [args] * len(rels), rels)
        by_job = dict(zip((j.job_id for j in jobs), rels))
        for rel in rels:
            on_state(rel, "running", "")

        def on_end(job, kind: str, value: Any) -> None:
            rel = by_job[job.job_id]
            if kind == "result":
                on_state(rel, value["state"], value["message"])
                return
            cell_dir = Path(args.out_dir) / rel
            cell_dir.mkdir(parents=True, exist_ok=True)
            if kind == "error":  # an exception outside the cell function (submitit wrote its traceback)
                last = [line for line in str(value).strip().splitlines() if line.strip()][-1:] or ["(no traceback)"]
                exc = SlurmJobError(f"Slurm job {job.job_id} failed outside the cell: {last[0].strip()} "
                                    f"(job log: {job.paths.stderr})")
                failed = record_failure(rel, cell_dir, exc, slurm_job=job.job_id)
                on_state(rel, failed["state"], failed["message"])
                return
            exc = SlurmJobEnded(f"Slurm job {job.job_id} ended {value} without a result (cancelled, killed, out of "
                                f"memory or its node lost); run the same command again to resubmit the cell "
                                f"(job log: {job.paths.stderr})")
            _append_log(cell_dir, f"slurm: {exc}")
            failed = record_failure(rel, cell_dir, exc, slurm_job=job.job_id, slurm_state=value)
            on_state(rel, failed["state"], failed["message"])

        self.collect(jobs, states, on_end)

    def collect(self, jobs: list, states: Any, on_end: Callable[[Any, str, Any], None] | None = None) -> list:
        """Wait until every job has a result or has ended without one; returns ``[(kind, value)]`` in job order
        (``("result", value)``, ``("error", traceback)``, ``("ended", slurm_state)``), calling ``on_end(job, kind,
        value)`` as each one comes in. ``states``: a :class:`harness.slurm_watch.SlurmStates` on Slurm, None for
        submitit's local processes (their own ``done()``)."""
        from .slurm_watch import LIVE, ended

        out: dict[int, tuple[str, Any]] = {}
        out_of_queue: dict[int, float] = {}  # job index -> when it was first seen out of the queue

        def take(i: int, got: tuple[str, Any]) -> None:
            out[i] = got
            if on_end is not None:
                on_end(jobs[i], *got)

        while True:
            for i in [i for i in range(len(jobs)) if i not in out]:
                got = _result_of(jobs[i])
                if got is not None:
                    take(i, got)
            waiting = [i for i in range(len(jobs)) if i not in out]
            if not waiting:
                return [out[i] for i in range(len(jobs))]
            now = time.time()
            if states is None:  # submitit's local processes
                slurm = {i: (jobs[i].state if jobs[i].done() else "RUNNING") for i in waiting}
            else:
                seen = states([jobs[i].job_id for i in waiting])
                slurm = {i: seen[jobs[i].job_id] for i in waiting}
            for i, state in slurm.items():
                if state in LIVE:
                    out_of_queue.pop(i, None)
                    continue
                since = out_of_queue.setdefault(i, now)
                got = _result_of(jobs[i])
                if got is not None:
                    take(i, got)
                elif (states is None and now - since >= self.poll_s) or (
                        states is not None and ended(state, now - since, self.poll_s, self.grace_s)):
                    take(i, ("ended", state or "UNKNOWN (no longer known to squeue, sacct or scontrol)"))
            if len(out) < len(jobs):
                time.sleep(self.poll_s)

    def wait_for_held(self, args, rels, on_state, **kw) -> None:
        LocalExecutor().wait_for_held(args, rels, on_state, **kw)


class SlurmJobEnded(HarnessError):
    """A Slurm job ended without a result (cancelled, killed, out of memory, node lost)."""


class SlurmJobError(HarnessError):
    """A Slurm job failed outside the cell function (submitit recorded the traceback)."""


def _result_of(job) -> tuple[str, Any] | None:
    """``("result", value)`` or ``("error", traceback)`` once submitit's result file is there (written atomically
    by the job), else None."""
    path = job.paths.result_pickle
    if not path.exists():
        return None
    from submitit.core.utils import pickle_load

    try:
        tag, value = pickle_load(path)
    except (EOFError, OSError, ValueError):
        return None  # still being moved into place
    return ("result", value) if tag == "success" else ("error", value)


def _append_log(cell_dir: Path, line: str) -> None:
    try:
        with open(cell_dir / "log.txt", "a", encoding="utf-8") as f:
            f.write(time.strftime("%Y-%m-%d %H:%M:%S ") + line + "\n")
    except OSError:
        pass


class SlurmCell:
    """The submitit callable of one cell; requeued with the same arguments when preempted or timed out (the cell
    resumes from its checkpoints)."""

    def __call__(self, args, rel: str) -> dict:
        from .jobs import run_cell_job

        return run_cell_job(args, rel)

    def checkpoint(self, args, rel: str):
        import submitit

        return submitit.helpers.DelayedSubmission(SlurmCell(), args, rel)


def make_executor(name: str, **options: Any) -> Executor:
    """``local`` | ``ray`` | ``slurm`` with their options (see the classes).

    Raises:
        ConfigError: an unknown executor name."""
    if name == "local":
        return LocalExecutor(**options)
    if name == "ray":
        return RayExecutor(**options)
    if name == "slurm":
        return SlurmExecutor(**options)
    raise ConfigError(f"unknown executor {name!r}; use local, ray or slurm")


__all__ = ["Executor", "OnState", "LocalExecutor", "RayExecutor", "SlurmExecutor", "SlurmCell", "SlurmJobEnded", "SlurmJobError", "make_executor", "check_shared"]
