"""The run folder's layout and a cell's integrity, owned in one place (docs/design.md §8).

A cell lives in ``<run>/<method>/<source>→<target>/seed-<k>[-n<N>]/`` (:data:`CELL_GLOB`). It is **done** only when
its files agree: ``metrics.json`` readable, ``config.json`` readable, and — for cells that record them (every cell
since this module) — ``predictions.csv`` with the row count and SHA-256 and ``config.json`` with the SHA-256 that
``metrics.json`` lists under ``"files"``; older cells are checked by row count against ``n_images``. A cell whose
files disagree is **damaged**: never a result (the leaderboard, report, compare and submit refuse it in one line
naming the file), shown as such by ``harness status``, and computed again by ``harness run --force`` (its files
moved aside, nothing deleted).

:class:`RunDir` and :class:`CellDir` are the public readers of a run folder: the leaderboard, report, status, compare,
submit and every plugin report read runs through them (the functions below are their building blocks).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def _read_json(path: Path) -> dict:
    from .errors import DataError

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} not found: pass a cell folder of a `harness run` (or run the cell first)") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is unreadable ({type(exc).__name__}): run the same `harness run` with --force to "
                        f"compute the cell again") from None
    if not isinstance(value, dict):
        raise DataError(f"{path} is not a JSON object: run the same `harness run` with --force")
    return value


@dataclass(frozen=True)
class CellResult:
    """A finished cell's ``metrics.json``, typed (the leaderboard's columns; :mod:`harness.cell` writes it).

    ``mae`` / ``mse`` (root mean squared error) / ``nae``: counting errors over ``n_images`` images of the target's
    ``eval_split``; ``map``: localisation mAP over AP@δ (None for count-only counters); ``flags``: the cell's
    leakage and protocol flags; ``raw``: the whole file (per-output metrics such as ``mae:regression``,
    provenance, timings); ``path``: the cell folder."""

    method: str
    source: str
    target: str
    seed: int
    mae: float
    mse: float
    nae: float | None
    map: float | None
    n_images: int
    eval_split: str = "test"
    limit_test: int | None = None
    profile: str | None = None
    target_labels_seen: bool = False
    uses_target_images: bool = False
    raw: dict = field(default_factory=dict, compare=False, repr=False)
    path: Path | None = field(default=None, compare=False)  # the cell folder it was read from

    @classmethod
    def from_json(cls, m: dict, path: Path | None = None) -> "CellResult":
        def num(key):
            return None if m.get(key) is None else float(m[key])

        return cls(method=str(m.get("method")), source=str(m.get("source")), target=str(m.get("target")),
                   seed=int(m.get("seed") or 0), mae=float(m["mae"]), mse=float(m["mse"]), nae=num("nae"),
                   map=num("map"), n_images=int(m.get("n_images") or 0), eval_split=m.get("eval_split") or "test",
                   limit_test=m.get("limit_test"), profile=m.get("profile"),
                   target_labels_seen=bool(m.get("target_labels_seen")),
                   uses_target_images=bool(m.get("uses_target_images")), raw=dict(m), path=path)


class CellDir:
    """One cell folder of a run (``<run>/<method>/<source>→<target>/seed-<k>[-n<N>]``)."""

    def __init__(self, path: str | Path, run: str | Path | None = None):
        self.path = Path(path)
        self.run = Path(run) if run is not None else self.path.parents[2]

    @property
    def relpath(self) -> str:
        return str(self.path.relative_to(self.run))

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def config(self) -> dict:
        """``config.json``. Raises: DataError (one line naming the file) when missing or unreadable."""
        return _read_json(self.path / CONFIG)

    def state(self) -> tuple[str, str]:
        """``("done" | "damaged" | "unfinished", message)`` (:func:`cell_state`)."""
        return cell_state(self.path)

    def result(self) -> CellResult:
        """The typed ``metrics.json`` of a done cell.

        Raises:
            DataError: the cell is unfinished or damaged (one line naming the file and the fix)."""
        from .errors import DataError

        state, why = self.state()
        if state == "unfinished":
            raise DataError(f"{self.path} has no {METRICS}: the cell has not finished; run it first")
        if state == "damaged":
            raise DataError(f"{why} — run the same `harness run` with --force to compute the cell again")
        return CellResult.from_json(_read_json(self.path / METRICS), self.path)

    def eval_refs(self, *, registries: Any = None, data_root: str | Path | None = None,
                  limit_test: int | None = None) -> list:
        """The images this cell is scored on, by the core's rule: the target's evaluation split
        (:func:`harness.types.eval_split`: NWPU's ``val``, else ``test``), first ``limit_test`` of them (default: the
        cell's own ``limit_test``).

        Args:
            registries: where the target dataset is registered (default: the process-wide registries).
            data_root: the data root (default: the one the cell ran with).

        Raises:
            DataError: no config.json, or the target cannot be opened under the data root (one line)."""
        from .errors import DataError, HarnessError
        from .types import eval_split

        config = self.config()
        if registries is None:
            from .plugins import get_registries
            registries = get_registries()
        root = data_root or config.get("data_root")
        try:
            ds = registries.datasets.get(config["target"]).factory(Path(root) if root else None)
        except HarnessError as exc:
            raise DataError(f"{self.path}: the target {config.get('target')!r} cannot be opened: {exc} (pass "
                            f"--data-root)") from None
        refs = ds.samples(eval_split(ds))
        limit = limit_test if limit_test is not None else config.get("limit_test")
        return refs[:int(limit)] if limit else refs

    def __repr__(self) -> str:
        return f"CellDir({str(self.path)!r})"


class RunDir:
    """A run folder (``harness run --out``): its cells, by state or strategy.

    Raises (constructor):
        DataError: ``path`` is not a folder (one line)."""

    def __init__(self, path: str | Path):
        from .errors import DataError

        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"run directory {str(self.path)!r} not found (not a folder): pass the --out folder of a "
                            f"`harness run`")

    def cells(self, *, with_file: str | None = None) -> list[CellDir]:
        """Every cell folder (sorted), optionally only those holding ``with_file``."""
        return [CellDir(d, self.path) for d in cell_dirs(self.path, with_file=with_file)]

    def finished(self) -> list[CellDir]:
        """Cells with a ``metrics.json`` (done or damaged: see :meth:`damaged`)."""
        return self.cells(with_file=METRICS)

    def of_strategy(self, strategy: str) -> list[CellDir]:
        """Cells whose ``config.json`` names ``strategy`` (plugin reports)."""
        return [CellDir(d, self.path) for d in cells_of_strategy(self.path, strategy)]

    def damaged(self) -> list[str]:
        """One line per damaged cell."""
        return damaged_cells(self.path)

    def results(self) -> list[CellResult]:
        """The typed results of every done cell.

        Raises:
            DataError: a damaged cell (one line naming it: damaged cells are never results)."""
        from .errors import DataError

        bad, out = [], []
        for cell in self.finished():  # each cell's files are checked once
            state, why = cell.state()
            if state == "damaged":
                bad.append(why)
            elif not bad:
                out.append(CellResult.from_json(_read_json(cell.path / METRICS), cell.path))
        if bad:
            raise DataError(f"{len(bad)} damaged cell(s) are not results: {'; '.join(bad[:3])}"
                            + (" …" if len(bad) > 3 else "") + " — run the same `harness run` with --force to "
                            "compute them again")
        return out


__all__ = ["RunDir", "CellDir", "CellResult", "CELL_GLOB", "file_record", "damage", "cell_state", "is_done", "cell_dirs", "cells_of_strategy",
           "damaged_cells"]
