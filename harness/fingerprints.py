"""Data fingerprints: what a cell's ``config.json`` records of its source's and target's files
(``data_content``), so that a finished cell is reused only on the same data (docs/design.md §5)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .io import atomic_write_json, content_key, default_cache_dir
from .types import eval_split

if TYPE_CHECKING:
    from .planning import Cell, Plan

__all__ = ["data_fingerprint", "plan_fingerprints"]


def data_fingerprint(dataset: Any, splits: tuple[str, ...], memo_dir: str | Path | None = "default") -> str:
    """A fingerprint of a dataset's files that survives copying (``cp``, ``rsync`` without ``-t``, a fresh mount
    on a cluster node): per split the image ids, each image file's size (a stat call, no reading) and the SHA-256 of
    each annotation file's bytes (annotations are small: a few KiB each). Modification times are not part of it:
    copying changes them and would make every finished cell look stale.

    Reading thousands of annotation files for every cell is what this costs (NWPU-Crowd: 5 109), so the value is
    memoised in ``memo_dir`` (default ``$HARNESS_CACHE/fingerprints``; None: always read) under the files' stat
    signature — ids, paths, sizes, modification and status-change times (ns), inode and device, as git's index does:
    an unchanged listing reuses it; any write to an annotation file (its status-change time moves even when the
    modification time is put back) or a copy recomputes it from the bytes, to the same value when the bytes are the
    same. A memo that cannot be read or written is recomputed, never an error.

    Returns:
        a 64-character hex SHA-256 (:func:`harness.io.content_key`).
    """

    def size(path):
        if path is None:
            return None
        try:
            return Path(path).stat().st_size
        except OSError:
            return "missing"

    def signature(path):
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return "missing"
        return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]

    def digest(path):
        if path is None:
            return None
        try:
            return hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            return "missing"

    refs = {split: list(dataset.samples(split)) for split in splits}
    memo = None
    if memo_dir is not None and any(r.annotation_path is not None for rs in refs.values() for r in rs):
        root = default_cache_dir() / "fingerprints" if memo_dir == "default" else Path(memo_dir)
        stat = content_key({"version": 1, "dataset": getattr(dataset, "name", None), "splits": {
            split: [[r.id, str(r.image_path), size(r.image_path), str(r.annotation_path),
                     signature(r.annotation_path)] for r in rs] for split, rs in refs.items()}})
        memo = root / f"{stat}.json"
        try:
            return str(json.loads(memo.read_text())["fingerprint"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    value = content_key({split: [[r.id, size(r.image_path), digest(r.annotation_path)] for r in rs]
                         for split, rs in refs.items()})
    if memo is not None:
        try:
            atomic_write_json(memo, {"fingerprint": value})
        except OSError:
            pass  # a read-only cache: the value is recomputed next time
    return value


def plan_fingerprints(plan: Plan, cell: Cell) -> dict:
    """``{"source": ..., "target": ...}`` data fingerprints of a cell (memoised in ``plan.fingerprints``: one per
    dataset and splits)."""
    cache = plan.fingerprints
    out = {}
    for role, name, splits in (("source", cell.source, ("train", "val")),
                               ("target", cell.target, ("train", eval_split(plan.datasets[cell.target])))):
        key = (name, splits)
        if key not in cache:
            cache[key] = data_fingerprint(plan.datasets[name], splits)
        out[role] = cache[key]
    return out
