"""The run folder's layout and a cell's integrity, owned in one place (docs/design.md §8).

A cell lives in ``<run>/<method>/<source>→<target>/seed-<k>[-n<N>]/`` (:data:`CELL_GLOB`). It is **done** only when
its files agree: ``metrics.json`` readable, ``config.json`` readable, and — for cells that record them (every cell
since this module) — ``predictions.csv`` with the row count and SHA-256 and ``config.json`` with the SHA-256 that
``metrics.json`` lists under ``"files"``; older cells are checked by row count against ``n_images``. A cell whose
files disagree is **damaged**: never a result (the leaderboard, report, compare and submit refuse it in one line
naming the file), shown as such by ``harness status``, and computed again by ``harness run --force`` (its files
moved aside, nothing deleted).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

#: the cells of a run, relative to the run folder
CELL_GLOB = "*/*/seed-*"
METRICS, CONFIG, PREDICTIONS = "metrics.json", "config.json", "predictions.csv"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rows(text: str) -> int:
    """Data rows of a predictions.csv (header excluded; a torn last line without its newline counts as a row)."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return max(0, len(lines) - 1)


def file_record(cell_dir: str | Path) -> dict:
    """``{"predictions.csv": {"rows", "sha256"}, "config.json": {"sha256"}}`` of a cell's files as they are now
    (written into ``metrics.json`` when the cell finishes)."""
    d = Path(cell_dir)
    pred = d / PREDICTIONS
    return {PREDICTIONS: {"rows": _rows(pred.read_text(encoding="utf-8")), "sha256": _sha256(pred)},
            CONFIG: {"sha256": _sha256(d / CONFIG)}}


def damage(cell_dir: str | Path) -> str | None:
    """Why a cell with a ``metrics.json`` is not a clean result (one line naming the file), or None when its files
    agree (see the module notes)."""
    d = Path(cell_dir)
    try:
        metrics = json.loads((d / METRICS).read_text(encoding="utf-8"))
        if not isinstance(metrics, dict):
            raise ValueError("not an object")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{d / METRICS} is unreadable ({type(exc).__name__})"
    try:
        json.loads((d / CONFIG).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return f"{d / CONFIG} is missing"
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        return f"{d / CONFIG} is unreadable ({type(exc).__name__})"
    try:
        text = (d / PREDICTIONS).read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{d / PREDICTIONS} is missing"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{d / PREDICTIONS} is unreadable ({type(exc).__name__})"
    files = metrics.get("files")
    if isinstance(files, dict):
        want = files.get(PREDICTIONS) or {}
        if want.get("rows") is not None and _rows(text) != want["rows"]:
            return f"{d / PREDICTIONS} has {_rows(text)} rows, {METRICS} records {want['rows']}"
        if want.get("sha256") and _sha256(d / PREDICTIONS) != want["sha256"]:
            return f"{d / PREDICTIONS} differs from the file {METRICS} was computed from (SHA-256)"
        cfg = (files.get(CONFIG) or {}).get("sha256")
        if cfg and _sha256(d / CONFIG) != cfg:
            return f"{d / CONFIG} differs from the configuration the cell ran with (SHA-256)"
    elif metrics.get("n_images") is not None and _rows(text) != int(metrics["n_images"]):
        return f"{d / PREDICTIONS} has {_rows(text)} rows, {METRICS} records {metrics['n_images']} images"
    return None


def cell_state(cell_dir: str | Path) -> tuple[str, str]:
    """``("done" | "damaged" | "unfinished", message)`` of a cell from its files (locks and error.json are the
    executors' business)."""
    d = Path(cell_dir)
    if not (d / METRICS).exists():
        return "unfinished", ""
    why = damage(d)
    return ("damaged", why) if why else ("done", "")


def is_done(cell_dir: str | Path) -> bool:
    """A finished cell whose files agree (:func:`damage` is None)."""
    return cell_state(cell_dir)[0] == "done"


def cell_dirs(run_dir: str | Path, *, with_file: str | None = None) -> list[Path]:
    """The cell folders of a run (sorted), optionally only those holding ``with_file``; folders moved aside by
    ``--force`` (``seed-0.replaced-…``) are not cells."""
    root = Path(run_dir)
    out = [p for p in root.glob(CELL_GLOB) if p.is_dir() and ".replaced-" not in p.name]
    if with_file:
        out = [p for p in out if (p / with_file).exists()]
    return sorted(out)


def cells_of_strategy(run_dir: str | Path, strategy: str) -> list[Path]:
    """The cell folders of a run whose ``config.json`` names ``strategy`` (plugin reports: ``harness rdbt
    iterations``, ``harness ldm steps``); cells without a readable config are left out."""
    out = []
    for d in cell_dirs(run_dir, with_file=CONFIG):
        try:
            if json.loads((d / CONFIG).read_text(encoding="utf-8")).get("strategy") == strategy:
                out.append(d)
        except (OSError, ValueError, AttributeError):
            continue
    return out


def damaged_cells(run_dir: str | Path) -> list[str]:
    """One line per damaged cell of a run (see :func:`damage`)."""
    return [why for d in cell_dirs(run_dir, with_file=METRICS) if (why := damage(d))]


__all__ = ["CELL_GLOB", "file_record", "damage", "cell_state", "is_done", "cell_dirs", "cells_of_strategy",
           "damaged_cells"]
