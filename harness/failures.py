"""A cell's failure as files: ``error.json`` with one line, and the full disk as one line (docs/design.md §8).

Kept apart from the run layer's driver (:mod:`harness.execution`) and workers (:mod:`harness.jobs`), which both use
it, so the run layer has no import cycle (a test checks it).
"""
from __future__ import annotations

import errno
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import HarnessError
from .io import atomic_write_json


class DiskFullError(HarnessError):
    """The disk filled up while a cell was writing (finished cells are kept; free space and run again)."""


def disk_full_message(exc: OSError, cell_dir: Path) -> str:
    """One line: the path being written, the free space left on its file system, what to do."""
    where = exc.filename or cell_dir
    try:
        free = shutil.disk_usage(Path(where).parent if Path(where).is_file() else cell_dir).free
    except OSError:
        free = 0
    return (f"disk full while writing {where} ({free / 2**20:.0f} MiB free on that file system): free some space "
            f"(a cell needs its checkpoints and predictions, typically tens of MiB) and run the same command again; "
            f"finished cells are kept and the run resumes")


def record_failure(cell: Any, cell_dir: Path, exc: BaseException, **extra: Any) -> dict:
    """Write the cell's ``error.json`` (type, one-line message; the traceback is in its log.txt; ``extra`` fields,
    e.g. a Slurm job's id and state) and return the failure ``{"state": "failed", "message": "Type: message"}``."""
    detail = " ".join(str(exc).split())
    if isinstance(exc, SystemExit):
        detail = f"plugin code called sys.exit({exc.code!r})"
    elif isinstance(exc, KeyboardInterrupt):
        detail = "plugin code raised KeyboardInterrupt"
    try:
        atomic_write_json(cell_dir / "error.json", {"type": type(exc).__name__, "message": detail, "cell": str(cell),
                                                    "traceback": "see log.txt",
                                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})
    except OSError as write_exc:
        if write_exc.errno == errno.ENOSPC:
            raise DiskFullError(disk_full_message(write_exc, cell_dir)) from None
        raise
    return {"state": "failed", "message": f"{type(exc).__name__}: {detail}"}


__all__ = ["DiskFullError", "disk_full_message", "record_failure"]
