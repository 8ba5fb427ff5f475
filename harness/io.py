"""Atomic writes and the content-addressed artefact cache (docs/design.md §8).

Every result file is written to a temporary file in the same folder and renamed into place, so a run killed
at any moment leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _honour_umask(fd_or_path) -> None:
    """Give a temporary file the mode a plain ``open()`` would (0666 minus the umask): ``mkstemp`` makes 0600
    files, which colleagues sharing a runs folder could not read."""
    mode = 0o666 & ~_umask()
    if isinstance(fd_or_path, int):
        os.fchmod(fd_or_path, mode)
    else:
        os.chmod(fd_or_path, mode)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file in the same folder, fsync, rename; mode per umask)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        _honour_umask(fd)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_writable_dir(path: str | os.PathLike, what: str) -> Path:
    """Check that ``path`` is, or can be created as, a folder this process can write into.

    Walks up to the nearest existing ancestor: it must be a folder (not a file) and writable.

    Raises:
        HarnessError: one line naming the path at fault and what to do.
    """
    from .errors import HarnessError

    path = Path(path).expanduser()
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is" if probe == path else f"is below {probe}, which is"
        raise HarnessError(f"{what} {path} {where} a file, not a folder: choose another path")
    if not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == path else f" (its parent {probe} exists)"
        raise HarnessError(f"{what} {path} is not writable{where}: choose a folder you can write to, or fix its "
                           f"permissions")
    return path


def _json_default(obj: Any):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def to_json(obj: Any, **kw) -> str:
    return json.dumps(obj, default=_json_default, **kw)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, to_json(obj, indent=2, sort_keys=True) + "\n")


def atomic_save(path: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call ``writer(tmp_path)`` (e.g. ``torch.save``/``np.save``) then rename ``tmp_path`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        writer(Path(tmp))
        _honour_umask(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def content_key(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj`` (sorted keys): the cache key of everything that determines
    an artefact."""
    return hashlib.sha256(to_json(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def array_sha256(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (cache keys of images and label masks)."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """``$HARNESS_CACHE`` or ``~/.cache/crowd-harness``."""
    env = os.environ.get("HARNESS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crowd-harness"


class ArtifactCache:
    """Content-addressed store: ``cache.path(kind, key_obj, suffix)`` is ``root/kind/ab/abcdef...suffix``.

    The key object must hold *everything* that determines the artefact (model id, weights hash, seed,
    sizes, ...). Use :meth:`get_or_create` to compute an artefact once, atomically.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, kind: str, key_obj: Any, suffix: str = "") -> Path:
        key = content_key(key_obj)
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def get_or_create(self, kind: str, key_obj: Any, suffix: str, create: Callable[[Path], None]) -> Path:
        """Return the artefact's path, calling ``create(tmp_path)`` first if it is not cached yet."""
        path = self.path(kind, key_obj, suffix)
        if not path.exists():
            atomic_save(path, create)
            atomic_write_json(path.with_name(path.name + ".key.json"), key_obj)
        return path
