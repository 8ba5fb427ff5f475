"""Executing a plan: every cell through one idempotent cell function, with resume and failure isolation
(docs/design.md §8).

Resume rules: a cell whose ``metrics.json`` exists is never recomputed. Otherwise the strategy is fitted again
(strategies checkpoint under ``ctx.workdir`` to make this cheap) and evaluation continues after the last image in
``predictions.partial.jsonl``. Every file except the append-only progress file is written atomically.

Failures: any exception of a cell — including ``SystemExit`` or a ``KeyboardInterrupt`` raised by plugin code — is
recorded in its ``error.json`` and the other cells go on; a real Ctrl-C (SIGINT) stops the run after the current
cell's files are safe, with the summary so far. A full disk stops the run with one line naming the path and the
free space.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cell import cell_config, identity, identity_diff
from .conditions import resolve_device
from .errors import ConfigError
from .failures import DiskFullError, disk_full_message, record_failure
from .io import ArtifactCache
from .planning import Cell, Plan

if TYPE_CHECKING:
    from .executors import Executor


@dataclass
class RunSummary:
    """What :func:`execute` did: cells computed now, skipped (already finished, or finished by another driver),
    failed, held by another driver, and whether a Ctrl-C or SIGTERM stopped the run early (``signal``: which)."""

    out_dir: Path
    finished: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)  # (cell, "Type: one-line message")
    interrupted: bool = False
    signal: str = ""
    replaced: list[Path] = field(default_factory=list)  # cells of another configuration moved aside (--force)
    held: list[Cell] = field(default_factory=list)  # cells another driver was computing (with wait=False)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted and not self.held


def check_existing(plan: Plan, out_dir: Path, device: str, force: bool = False, threads: int | None = None) -> list[Path]:
    """Refuse an output folder holding cells of the same path but another configuration — other options, another
    data root, other dataset files (the data fingerprint: ids, image sizes, annotation bytes), another precision,
    device kind or CPU thread count (:mod:`harness.conditions`). With ``force`` such cells are moved aside
    (``<cell>.replaced-<time>``, nothing is deleted) and computed again.

    Returns:
        the cell folders moved aside.

    Raises:
        ConfigError: listing every such cell (without ``force``)."""
    import json

    from .rundir import damage

    problems, stale = [], []
    for cell in plan.cells:
        path = out_dir / cell.relpath / "config.json"
        if (path.parent / "metrics.json").exists():
            why = damage(path.parent)
            if why:
                problems.append(f"{path.parent} is damaged: {why}")
                stale.append(path.parent)
                continue
        if not path.exists():
            continue
        try:
            old = identity(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # unreadable config of an unfinished cell: rewritten when the cell runs
        new = identity(cell_config(plan, cell, device, threads=threads))
        diff = identity_diff(old, new)
        if diff:
            problems.append(f"{path.parent} was run with a different {', '.join(diff)}")
            stale.append(path.parent)
    if problems and not force:
        raise ConfigError("the output folder holds cells of another configuration or damaged cells ("
                          + "; ".join(problems) + "): use another --out, or --force to move them aside and compute "
                          "them again")
    moved = []
    for folder in stale:
        dest = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(folder, dest)
        moved.append(dest)
    return moved


class _SigintFlag:
    """Marks a real Ctrl-C (SIGINT) or SIGTERM (how Slurm and most schedulers stop or preempt a job) so it can be told
    apart from a KeyboardInterrupt raised by plugin code. Both stop the run cleanly: the cell being computed logs
    "interrupted by SIGTERM" in its log.txt, keeps its progress files, and is marked ``interrupted`` until resumed."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.hit = False
        self.signal_name = ""
        self._old: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            def handler(signum, frame):
                self.hit = True
                self.signal_name = signal.Signals(signum).name
                raise KeyboardInterrupt(f"interrupted by {self.signal_name}")

            for sig in self.SIGNALS:
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def execute(plan: Plan, out_dir: str | os.PathLike, device: str = "auto", *, progress: bool | None = None,
            console: Any = None, cache: ArtifactCache | None = None, force: bool = False, executor: "Executor | None" = None,
            wait: bool = True) -> RunSummary:
    """Run every cell of ``plan`` under ``out_dir`` (layout: :mod:`harness.cell`) and return a summary.

    Finished cells (``metrics.json`` present) are skipped, without importing torch. The others go to ``executor``
    (default :class:`harness.executors.LocalExecutor`; also Ray and Slurm), each through
    :func:`harness.jobs.run_cell_job`; a failing cell writes ``error.json`` and the others continue; failed cells are
    retried next run. Cells another driver holds are skipped, then (``wait``) waited for and computed if that driver
    did not finish them. ``progress``: a rich progress bar over cells (done / running / failed / pending) and, locally,
    over images (default: only on a terminal); ``progress.json`` in ``out_dir`` keeps the same states.

    Raises:
        ConfigError: ``out_dir`` holds cells of another configuration (without ``force``), or the device is
            unavailable.
        DiskFullError: the disk filled up (finished cells are kept).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .executors import LocalExecutor
    from .jobs import JobArgs, write_progress

    out = Path(out_dir)
    executor = executor or LocalExecutor()
    if executor.resolves_device_in_driver and any((out / c.relpath / "config.json").exists() for c in plan.cells):
        device = resolve_device(device)  # existing cells are compared with the device kind this run will use
    moved = check_existing(plan, out, device, force, threads=executor.threads)
    summary = RunSummary(out_dir=out, replaced=moved)
    from .rundir import is_done

    states = {str(c.relpath): ("done" if is_done(out / c.relpath) else "pending") for c in plan.cells}
    summary.skipped = [c for c in plan.cells if states[str(c.relpath)] == "done"]
    pending = [c for c in plan.cells if states[str(c.relpath)] == "pending"]
    if not pending:
        return summary  # nothing to compute: no device check, no torch import
    if executor.resolves_device_in_driver:
        device = resolve_device(device)
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or ArtifactCache()
    from .cell import git_commit

    args = JobArgs(plan.spec, str(out.resolve()), device, str(cache.root), executor.threads, git_commit())
    console = console or Console(stderr=True)
    show = console.is_terminal if progress is None else progress
    messages: dict[str, str] = {}
    by_rel = {str(c.relpath): c for c in plan.cells}
    write_progress(out, states)

    def label() -> str:
        n = {k: sum(v == k for v in states.values()) for k in ("done", "running", "failed", "pending", "held")}
        return (f"cells: {n['done']} done, {n['running']} running, {n['failed']} failed, {n['pending']} pending"
                + (f", {n['held']} held elsewhere" if n["held"] else ""))

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not show, transient=True) as bars, _SigintFlag() as sigint:
        cells_bar = bars.add_task(label(), total=len(plan.cells), completed=len(summary.skipped))

        def on_state(rel: str, state: str, message: str = "") -> None:
            states[rel] = state
            if message:
                messages[rel] = message
            write_progress(out, states, messages)
            bars.update(cells_bar, description=label(),
                        completed=sum(v in ("done", "failed", "skipped") for v in states.values()))
            if state == "failed" and show:
                console.print(f"[red]cell {by_rel[rel]} failed:[/red] {message}")

        try:
            executor.run(args, [str(c.relpath) for c in pending], on_state, plan=plan, sigint=sigint, bars=bars)
            held = [rel for rel in states if states[rel] == "held"]
            if held and wait:
                executor.wait_for_held(args, held, on_state, plan=plan, sigint=sigint, bars=bars)
        except KeyboardInterrupt:
            if not sigint.hit:
                raise
            summary.interrupted, summary.signal = True, sigint.signal_name
    for rel, state in states.items():
        cell = by_rel[rel]
        if state == "done" and cell not in summary.skipped:
            summary.finished.append(cell)
        elif state == "skipped" and cell not in summary.skipped:
            summary.skipped.append(cell)
        elif state == "failed":
            summary.failed.append((cell, messages.get(rel, "")))
        elif state == "held":
            summary.held.append(cell)
    return summary


__all__ = ["execute", "RunSummary", "resolve_device", "check_existing", "DiskFullError", "record_failure",
           "disk_full_message"]
