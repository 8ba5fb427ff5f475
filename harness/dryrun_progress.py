"""What a dry run keeps outside its cells (docs/design.md §14): its scratch folder, and its progress so that a dry run
that was interrupted goes on where it stopped.

A paper-scale dry run of a whole matrix takes hours of a CPU (an LDM or SYRAC cell at SHA's shapes: 5–15 minutes of
this 2-core machine each). After every cell the dry run writes its progress atomically to
``<harness cache>/dry-runs/<key>.pickle``: the cells measured so far and the meter's records that later cells borrow
(:mod:`harness.stages`). The same dry run started again goes on after the cells it measured; the key is everything
that decides the figures:

- every cell's identity, as a real run compares it (:func:`harness.cell.identity`: method, options, profile, data
  fingerprints, precision, device kind, thread count);
- units per stage and the device;
- the code: harness version, git commit and a hash of the working tree's uncommitted changes, and the installed
  packages' versions (so a change to a stage's code measures again).

A cell that failed (a stage that could not run, a process the OS killed) is measured again. A dry run that ends
removes its progress file: the next dry run measures afresh.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SCRATCH_PREFIX = "harness-dry-run-"

__all__ = ["scratch_folder", "DryRunProgress", "code_identity", "SCRATCH_PREFIX"]


def scratch_folder(base: Path | None = None) -> Path:
    """A new scratch folder for a dry run's cells and artefact cache: ``<tmp>/harness-dry-run-<pid>-<random>``
    (``base`` defaults to :func:`tempfile.gettempdir`, i.e. ``$TMPDIR``).

    A dry run removes its folder when it ends, but not when it is killed (SIGKILL, the out-of-memory killer): the
    folders of dry runs whose process is gone (a paper profile's leaves ~2.5 GB of generated images and weights)
    are removed here first. Only this user's folders are touched; a folder whose process may still live is kept."""
    base = Path(base or tempfile.gettempdir())
    for old in base.glob(f"{SCRATCH_PREFIX}*"):
        pid = old.name[len(SCRATCH_PREFIX):].split("-")[0]
        try:
            if not pid.isdigit() or old.lstat().st_uid != os.getuid() or not old.is_dir():
                continue
            os.kill(int(pid), 0)  # raises ProcessLookupError when the process is gone
        except ProcessLookupError:
            shutil.rmtree(old, ignore_errors=True)
        except OSError:  # not ours to signal (another user's pid): it may be alive
            continue
    return Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=base))


def code_identity() -> dict:
    """The code that measures: harness version, installed packages' versions and, in a git checkout, the commit and
    a hash of the uncommitted changes (``git diff HEAD`` and the untracked files' names; None when clean)."""
    from . import __version__
    from .cell import git_commit
    from .conditions import package_versions

    ident: dict[str, Any] = {"harness": __version__, "packages": package_versions(), "commit": git_commit()}
    if ident["commit"]:
        here = Path(__file__).resolve().parent
        h = hashlib.sha256()
        for cmd in (["git", "diff", "HEAD"], ["git", "status", "--porcelain", "--untracked-files=all"]):
            try:
                h.update(subprocess.run(cmd, cwd=here, capture_output=True, timeout=60).stdout)
            except (OSError, subprocess.SubprocessError):
                h.update(b"unknown")
        ident["changes"] = h.hexdigest()[:16] if h.digest() != hashlib.sha256().digest() else None
    return ident


class DryRunProgress:
    """The progress file of one dry run (see the module notes).

    Args:
        folder: where progress files live (``<harness cache>/dry-runs``).
        identity: what decides the figures (cells' identities, units per stage, device, code); hashed to the name.
    """

    def __init__(self, folder: Path, identity: dict):
        blob = json.dumps(identity, sort_keys=True, default=str).encode()
        self.path = Path(folder) / f"{hashlib.sha256(blob).hexdigest()[:20]}.pickle"

    def load(self) -> tuple[dict[int, Any], dict | None, float]:
        """``(cells measured earlier by index (CellCost), the meter's state after them, their dry-run seconds)``;
        empty when there is no progress (or it cannot be read: measured again)."""
        try:
            state = pickle.loads(self.path.read_bytes())
            return dict(state["cells"]), state["meter"], float(state["seconds"])
        except Exception:  # absent, truncated or from an incompatible harness: start afresh
            return {}, None, 0.0

    def save(self, cells: dict[int, Any], meter_state: dict, seconds: float) -> None:
        """Write the progress atomically (a dry run killed while writing keeps the previous progress)."""
        from .io import atomic_write_bytes

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, pickle.dumps({"cells": cells, "meter": meter_state, "seconds": seconds}))

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
