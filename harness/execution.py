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

import errno
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cell import cell_config, git_commit, identity, run_cell
from .errors import ConfigError, HarnessError
from .io import ArtifactCache, atomic_write_json
from .planning import Cell, Plan


@dataclass
class RunSummary:
    """What :func:`execute` did: cells computed now, skipped (already finished), failed, and whether a Ctrl-C
    stopped the run early."""

    out_dir: Path
    finished: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)  # (cell, "Type: one-line message")
    interrupted: bool = False
    replaced: list[Path] = field(default_factory=list)  # cells of another configuration moved aside (--force)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


class DiskFullError(HarnessError):
    """The disk filled up while a cell was writing (finished cells are kept; free space and run again)."""


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ``"cpu"``/``"cuda[:n]"`` pass through.

    Raises:
        ConfigError: ``cuda`` asked for but not available, or an unknown device string.
    """
    device = (device or "auto").strip().lower()
    if device == "cpu":
        return device
    if device == "auto" or device.startswith("cuda"):
        try:
            import torch
            has_cuda = torch.cuda.is_available()
        except ImportError:
            has_cuda = False
        if device == "auto":
            return "cuda" if has_cuda else "cpu"
        if not has_cuda:
            raise ConfigError(f"device {device!r} asked for but CUDA is not available; use --device cpu or auto")
        return device
    raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")


def check_existing(plan: Plan, out_dir: Path, device: str, force: bool = False) -> list[Path]:
    """Refuse an output folder holding cells of the same path but another configuration — other options, another
    data root, or other dataset files (the data fingerprint: ids, sizes, modification times). With ``force`` such
    cells are moved aside (``<cell>.replaced-<time>``, nothing is deleted) and computed again.

    Returns:
        the cell folders moved aside.

    Raises:
        ConfigError: listing every such cell (without ``force``)."""
    import json

    problems, stale = [], []
    for cell in plan.cells:
        path = out_dir / cell.relpath / "config.json"
        if not path.exists():
            continue
        try:
            old = identity(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # unreadable config of an unfinished cell: rewritten when the cell runs
        new = identity(cell_config(plan, cell, device))
        diff = [k for k in old if old.get(k) != new.get(k)]
        if diff:
            problems.append(f"{path.parent} was run with a different {', '.join(diff)}")
            stale.append(path.parent)
    if problems and not force:
        raise ConfigError("the output folder holds cells of another configuration (" + "; ".join(problems)
                          + "): use another --out, or --force to move them aside and compute them again")
    moved = []
    for folder in stale:
        dest = folder.with_name(f"{folder.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.replace(folder, dest)
        moved.append(dest)
    return moved


def _disk_full_message(exc: OSError, cell_dir: Path) -> str:
    where = exc.filename or cell_dir
    try:
        free = shutil.disk_usage(Path(where).parent if Path(where).is_file() else cell_dir).free
    except OSError:
        free = 0
    return (f"disk full while writing {where} ({free / 2**20:.0f} MiB free on that file system): free some space "
            f"(a cell needs its checkpoints and predictions, typically tens of MiB) and run the same command again; "
            f"finished cells are kept and the run resumes")


class _SigintFlag:
    """Marks a real Ctrl-C (SIGINT) so it can be told apart from a KeyboardInterrupt raised by plugin code."""

    def __init__(self):
        self.hit = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                self.hit = True
                raise KeyboardInterrupt

            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def execute(plan: Plan, out_dir: str | os.PathLike, device: str = "auto", *, progress: bool | None = None,
            console: Any = None, cache: ArtifactCache | None = None, force: bool = False) -> RunSummary:
    """Run every cell of ``plan`` under ``out_dir`` (layout: :mod:`harness.cell`) and return a summary.

    Finished cells (``metrics.json`` present) are skipped; a failing cell writes ``error.json`` (``type``,
    one-line ``message``; traceback in ``log.txt``) and the others continue; cells with an ``error.json`` are
    retried. ``progress``: rich progress bars for cells and images (default: only on a terminal). ``force``: cells
    of another configuration at the same paths are moved aside and computed again (see :func:`check_existing`).

    Raises:
        ConfigError: ``out_dir`` holds cells of another configuration (without ``force``), or the device is
            unavailable.
        DiskFullError: the disk filled up (finished cells are kept).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = Path(out_dir)
    device = resolve_device(device)
    moved = check_existing(plan, out, device, force)
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or ArtifactCache()
    commit = git_commit()
    console = console or Console(stderr=True)
    show = console.is_terminal if progress is None else progress
    summary = RunSummary(out_dir=out, replaced=moved)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not show, transient=True) as bars, _SigintFlag() as sigint:
        cells_bar = bars.add_task("cells", total=len(plan.cells))
        for cell in plan.cells:
            cell_dir = out / cell.relpath
            if (cell_dir / "metrics.json").exists():
                summary.skipped.append(cell)
                bars.advance(cells_bar)
                continue
            cell_dir.mkdir(parents=True, exist_ok=True)
            (cell_dir / "error.json").unlink(missing_ok=True)
            img_bar = bars.add_task(f"  {cell}", total=None)

            def on_image(i: int, n: int, _task=img_bar) -> None:
                bars.update(_task, completed=i, total=n)

            try:
                run_cell(plan, cell, cell_dir, device, cache=cache, commit=commit, on_image=on_image)
                summary.finished.append(cell)
            except KeyboardInterrupt as exc:
                if sigint.hit:  # a real Ctrl-C: stop here, the cell resumes next run
                    summary.interrupted = True
                    break
                _record_failure(summary, cell, cell_dir, exc, show, console)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise DiskFullError(_disk_full_message(exc, cell_dir)) from None
                _record_failure(summary, cell, cell_dir, exc, show, console)
            except (Exception, SystemExit) as exc:
                _record_failure(summary, cell, cell_dir, exc, show, console)
            finally:
                bars.remove_task(img_bar)
            bars.advance(cells_bar)
    return summary


def _record_failure(summary: RunSummary, cell: Cell, cell_dir: Path, exc: BaseException, show: bool,
                    console: Any) -> None:
    detail = " ".join(str(exc).split())
    if isinstance(exc, SystemExit):
        detail = f"plugin code called sys.exit({exc.code!r})"
    elif isinstance(exc, KeyboardInterrupt):
        detail = "plugin code raised KeyboardInterrupt"
    message = f"{type(exc).__name__}: {detail}"
    try:
        atomic_write_json(cell_dir / "error.json", {"type": type(exc).__name__, "message": detail, "cell": str(cell),
                                                    "traceback": "see log.txt",
                                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    except OSError as write_exc:
        if write_exc.errno == errno.ENOSPC:
            raise DiskFullError(_disk_full_message(write_exc, cell_dir)) from None
        raise
    summary.failed.append((cell, message))
    if show:
        console.print(f"[red]cell {cell} failed:[/red] {message}")


__all__ = ["execute", "RunSummary", "resolve_device", "check_existing", "DiskFullError"]
