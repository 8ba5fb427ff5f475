"""What a dry run keeps outside its cells (docs/design.md §14): its progress and its artefact cache, so that a dry run
that was interrupted goes on where it stopped, and a scratch folder for its cells.

A paper-scale dry run of a whole matrix takes hours of a CPU (an LDM or SYRAC cell at SHA's shapes: 5–15 minutes of
this 2-core machine each). It works in ``<harness cache>/dry-runs/<key>/``: ``progress.pickle``, written atomically
after every cell (the cells measured so far and the meter's records that later cells borrow, :mod:`harness.stages`),
and ``cache/``, the dry run's own artefact cache (generated images, cached fits that later cells find). The same dry
run started again goes on after the cells it measured, with the same cache, so borrowing works as in one run; the
key is everything that decides the figures:

- every cell's identity, as a real run compares it (:func:`harness.cell.identity`: method, options, profile, data
  fingerprints, precision, device kind, thread count);
- units per stage and the device;
- the code that measures: harness version, installed packages, and in a git checkout the commit and a hash of the
  uncommitted changes under ``harness/`` and ``plugins/`` (untracked ``.py`` files there included), and the source of
  modules loaded with ``--plugin`` (so a change to a stage's code measures afresh; a change to the README does not).

A cell that failed is measured again. A dry run that ends removes its folder. The folder is locked while its dry run
runs (``filelock``: an OS lock the kernel drops when the process dies), so two identical dry runs do not share it:
the second keeps no progress.

Each dry run also has a scratch folder for its cells, ``<tmp>/harness-dry-run-<pid>-<random>``, removed when it ends;
the scratch folders of dry runs that were killed (their lock is free) are removed by the next dry run.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

SCRATCH_PREFIX = "harness-dry-run-"
_LOCK = ".lock"

__all__ = ["scratch_folder", "DryRunProgress", "code_identity", "SCRATCH_PREFIX"]


def _lock(folder: Path) -> Any:
    """The OS lock of ``folder`` taken without waiting, or None when another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(folder / _LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def scratch_folder(base: Path | None = None) -> tuple[Path, Any]:
    """``(folder, its lock)``: a new scratch folder for a dry run's cells, ``<base>/harness-dry-run-<pid>-<random>``
    (``base`` defaults to :func:`tempfile.gettempdir`, i.e. ``$TMPDIR``), locked until the lock is released.

    A dry run removes its folder when it ends, but not when it is killed (SIGKILL, the out-of-memory killer): this
    user's scratch folders whose lock is free (their dry run is gone) are removed here first."""
    base = Path(base or tempfile.gettempdir())
    for old in base.glob(f"{SCRATCH_PREFIX}*"):
        try:
            if old.is_symlink() or not old.is_dir() or old.stat().st_uid != os.getuid():
                continue
            lock = _lock(old)
        except OSError:  # not ours to lock: it may be alive
            continue
        if lock is not None:
            shutil.rmtree(old, ignore_errors=True)
            lock.release()
    # made and locked under a name the sweep does not match, then renamed: another dry run starting at the same
    # moment cannot take a new folder's lock before its owner does
    starting = Path(tempfile.mkdtemp(prefix=f".{SCRATCH_PREFIX}starting-", dir=base))
    lock = _lock(starting)
    folder = starting.with_name(f"{SCRATCH_PREFIX}{os.getpid()}-{starting.name.rsplit('-', 1)[1]}")
    starting.rename(folder)  # mkdtemp's random part: unique while its own folder exists
    return folder, lock


def _git(args: list[str], here: Path) -> bytes:
    try:
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=here, capture_output=True,
                              timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return b"unknown"


def code_identity(plugin_modules: tuple[str, ...] = ()) -> dict:
    """The code that measures (see the module notes): harness version, installed packages' versions, the git commit
    and a hash of the uncommitted changes under ``harness/`` and ``plugins/`` (None when clean), and a hash of each
    ``--plugin`` module's source."""
    from . import __version__
    from .cell import git_commit
    from .conditions import package_versions

    ident: dict[str, Any] = {"harness": __version__, "packages": package_versions(), "commit": git_commit()}
    if ident["commit"]:
        repo = Path(__file__).resolve().parent.parent
        h = hashlib.sha256(_git(["diff", "HEAD", "--", "harness", "plugins"], repo))
        for name in sorted(_git(["ls-files", "--others", "--exclude-standard", "--", "harness", "plugins"],
                                repo).decode(errors="replace").splitlines()):
            if name.endswith(".py"):
                h.update(name.encode() + (repo / name).read_bytes())
        ident["changes"] = None if h.digest() == hashlib.sha256().digest() else h.hexdigest()[:16]
    for name in plugin_modules:
        spec = importlib.util.find_spec(name)
        origin = Path(spec.origin) if spec is not None and spec.origin else None
        ident.setdefault("plugins", {})[name] = (hashlib.sha256(origin.read_bytes()).hexdigest()[:16]
                                                 if origin is not None and origin.is_file() else None)
    return ident


class DryRunProgress:
    """The folder of one dry run in the harness cache (see the module notes).

    Args:
        root: where dry runs keep their folders (``<harness cache>/dry-runs``).
        identity: what decides the figures (cells' identities, units per stage, device, code); hashed to the name.
    """

    def __init__(self, root: Path, identity: dict):
        blob = json.dumps(identity, sort_keys=True, default=str).encode()
        self.folder = Path(root) / hashlib.sha256(blob).hexdigest()[:20]
        self.path = self.folder / "progress.pickle"
        self.cache = self.folder / "cache"
        self._lock: Any = None

    def acquire(self) -> bool:
        """Lock the folder for this dry run; False when another process runs the same dry run (this one then keeps
        no progress and uses a cache of its own)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.folder)
        return self._lock is not None

    def load(self) -> tuple[dict[int, tuple[float, str | None]], dict | None, float]:
        """``({cell index: (seconds, error line or None)} measured earlier, the meter's state after them, the
        earlier dry-run seconds)``; empty when there is no progress (or it cannot be read: measured again)."""
        try:
            state = pickle.loads(self.path.read_bytes())
            return dict(state["cells"]), state["meter"], float(state["seconds"])
        except Exception:  # absent, truncated or from an incompatible harness: start afresh
            return {}, None, 0.0

    def save(self, cells: dict, meter_state: dict, seconds: float) -> str | None:
        """Write the progress atomically (a dry run killed while writing keeps the previous progress); returns the
        error line when it cannot be written (a full disk, a read-only cache: the dry run goes on without)."""
        from .io import atomic_write_bytes

        try:
            atomic_write_bytes(self.path, pickle.dumps({"cells": cells, "meter": meter_state, "seconds": seconds}))
        except OSError as exc:
            return f"the dry run's progress could not be written to {self.path} ({exc.strerror or exc})"
        return None

    def remove(self) -> None:
        """Remove the folder (progress and cache): the dry run ended."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self.release()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None
