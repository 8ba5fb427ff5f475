"""The one idempotent cell function every executor calls, the per-cell locks, and the run's state from its files
(docs/design.md §8).

:func:`run_cell_job` can run anywhere that sees the run directory and the data: in the driver (``local``), in a Ray
worker or in a Slurm array task. It plans the run's :class:`~harness.planning.RunSpec` again (cheap: names and paths), takes the
cell's lock, skips a finished cell, runs :func:`harness.cell.run_cell` and records a failure in ``error.json``.
Results exist only as atomically renamed files, so retries, a dead driver and resume are all harmless.

Locks: ``<run>/.locks/<hash>.lock``, an OS file lock (``filelock.FileLock``: ``fcntl.flock``). The operating system
drops it when its process dies, so a crashed driver or worker never leaves a stale lock behind; a second driver
skips the cells another one holds. On a cluster the run directory and the cache must be on a file system every node
shares (with working POSIX locks, e.g. NFSv4 or Lustre).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .io import atomic_write_json
from .planning import RunSpec

LOCKS = ".locks"
WORKER_FILE = "worker.json"


@dataclass(frozen=True)
class JobArgs:
    """Everything a worker needs (picklable: names, numbers and paths only): the run's :class:`RunSpec`, which the
    worker plans again (cheap), and where and how to run its cells. ``commit``: the harness commit, read once by the
    driver; ``threads``: the intra-op thread count pinned for every cell (:mod:`harness.conditions`)."""

    spec: RunSpec
    out_dir: str
    device: str
    cache_root: str
    threads: int | None = None
    commit: str | None = None


_PLANS: dict = {}


def _plan(args: JobArgs) -> Any:
    """The plan of ``args.spec`` (built once per process)."""
    if args.spec not in _PLANS:
        from .plugins import build_registries, get_registries, plugin_modules

        regs = build_registries(plugin_modules(args.spec.plugins)) if args.spec.plugins else get_registries()
        _PLANS[args.spec] = args.spec.plan(regs)
    return _PLANS[args.spec]


def cell_lock(out_dir: str | Path, relpath: str | Path):
    """The OS file lock of one cell (see the module notes)."""
    from filelock import FileLock

    digest = hashlib.sha256(str(relpath).encode()).hexdigest()[:24]
    folder = Path(out_dir) / LOCKS
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f"{digest}.lock"))


def is_locked(out_dir: str | Path, relpath: str | Path) -> bool:
    """Whether a live process holds the cell's lock. Reads only: no lock file or folder is created (``harness
    status`` works on a read-only run folder), the lock is probed with a shared, non-blocking ``flock``."""
    import fcntl

    digest = hashlib.sha256(str(relpath).encode()).hexdigest()[:24]
    path = Path(out_dir) / LOCKS / f"{digest}.lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # never locked (or unreadable: nobody can be holding it through this path)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def run_cell_job(args: JobArgs, relpath: str, *, plan: Any = None, sigint: Any = None,
                 on_image: Any = None) -> dict:
    """Compute one cell unless it is finished or held; returns ``{"state": done|skipped|held|failed, "message"}``.

    ``sigint``: the driver's Ctrl-C flag; a ``KeyboardInterrupt`` is re-raised only when it came from a real SIGINT,
    otherwise (plugin code) it is the cell's failure, like any exception or ``SystemExit``.

    Raises:
        KeyboardInterrupt: a real Ctrl-C in the driver (the cell resumes next run).
        DiskFullError: the disk filled up (one line naming the path and the free space).
    """
    from filelock import Timeout

    from .cell import run_cell
    from .failures import DiskFullError, disk_full_message, record_failure
    from .io import ArtifactCache

    plan = plan or _plan(args)
    cell = next(c for c in plan.cells if str(c.relpath) == str(relpath))
    out = Path(args.out_dir)
    cell_dir = out / cell.relpath
    lock = cell_lock(out, cell.relpath)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return {"state": "held", "message": "being computed by another driver or worker"}
    try:
        if (cell_dir / "metrics.json").exists():
            return {"state": "skipped", "message": ""}
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "error.json").unlink(missing_ok=True)
        atomic_write_json(cell_dir / WORKER_FILE, {"pid": os.getpid(), "host": socket.gethostname(),
                                                   "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                   **_slurm_job()})
        device = args.device
        if device == "auto":
            from .conditions import resolve_device
            device = resolve_device(device)
        try:
            with pinned_threads(args.threads):
                run_cell(plan, cell, cell_dir, device, cache=ArtifactCache(args.cache_root), commit=args.commit,
                         on_image=on_image)
            return {"state": "done", "message": ""}
        except KeyboardInterrupt as exc:
            if sigint is not None and sigint.hit:
                raise
            return record_failure(cell, cell_dir, exc)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise DiskFullError(disk_full_message(exc, cell_dir)) from None
            return record_failure(cell, cell_dir, exc)
        except (Exception, SystemExit) as exc:
            return record_failure(cell, cell_dir, exc)
    finally:
        lock.release()


def _slurm_job() -> dict:
    """``{"slurm_job": "<array>_<task>" | "<job>"}`` inside a Slurm job (what ``scancel`` / ``sacct`` take), else {}."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return {"slurm_job": f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"}
    return {"slurm_job": env["SLURM_JOB_ID"]} if env.get("SLURM_JOB_ID") else {}


@contextlib.contextmanager
def pinned_threads(threads: int | None):
    """Run with torch's intra-op thread count set to ``threads`` (the cell's pinned count, part of its identity:
    :mod:`harness.conditions`); the caller's count is restored afterwards. None leaves it as it is."""
    if not threads:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cell_states(out_dir: str | Path) -> list[dict]:
    """Every cell of a run and its state from the files alone: ``done`` (metrics.json, files intact), ``damaged``
    (metrics.json, but its files disagree: :func:`harness.rundir.damage`), ``failed`` (error.json, with
    its one-line message), ``running`` (its lock is held), ``pending`` (listed in progress.json or begun, not held)."""
    out = Path(out_dir)
    listed = {}
    progress = out / "progress.json"
    if progress.exists():
        try:
            listed = {c["cell"]: c for c in json.loads(progress.read_text()).get("cells", [])}
        except (OSError, ValueError):
            listed = {}
    from .rundir import cell_dirs

    found = {str(d.relative_to(out)) for d in cell_dirs(out, with_file="config.json")}
    states = []
    for rel in sorted(set(listed) | found):
        d = out / rel
        from .rundir import cell_state

        state, msg = cell_state(d)
        if state in ("done", "damaged"):
            pass
        elif listed.get(rel, {}).get("state") == "interrupted" and not is_locked(out, rel):
            state, msg = "interrupted", listed[rel].get("message", "")
        elif is_locked(out, rel):
            state, msg = "running", ""
        elif (d / "error.json").exists():
            try:
                err = json.loads((d / "error.json").read_text())
                state, msg = "failed", f"{err.get('type')}: {err.get('message')}"
            except (OSError, ValueError):
                state, msg = "failed", "error.json unreadable"
        else:
            state, msg = "pending", ""
        states.append({"cell": rel, "state": state, "message": msg})
    return states


def write_progress(out_dir: str | Path, states: dict[str, str], messages: dict[str, str] | None = None) -> None:
    """``<run>/progress.json``: every cell's state as the driver sees it, and the counts."""
    messages = messages or {}
    counts: dict[str, int] = {}
    for s in states.values():
        counts[s] = counts.get(s, 0) + 1
    atomic_write_json(Path(out_dir) / "progress.json", {
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"), "counts": counts,
        "cells": [{"cell": c, "state": s, "message": messages.get(c, "")} for c, s in states.items()]})


__all__ = ["JobArgs", "run_cell_job", "cell_lock", "is_locked", "cell_states", "write_progress"]
