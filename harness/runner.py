"""The library form of ``harness run``: :func:`run` = :func:`harness.planning.plan_run` then
:func:`harness.execution.execute` (docs/design.md §8).

The work is split by job: :mod:`harness.planning` (parse and validate everything up front),
:mod:`harness.cell` (one cell's directory, environment, fit and evaluation), :mod:`harness.evaluation` (the one
evaluation path) and :mod:`harness.execution` (running the cells with resume and failure isolation). This module
re-exports their public names for callers of the earlier single-module runner.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from .cell import PARTIAL_FILE, cell_config, run_cell
from .evaluation import MAP_DELTAS, output_metrics, points_and_scores, read_partial
from .execution import RunSummary, execute, resolve_device
from .planning import Cell, Plan, RunSpec, parse_list, parse_matrix, parse_seeds, plan_run


def run(matrix: str | Iterable | RunSpec, methods: str | Iterable[str] = (), out_dir: str | os.PathLike = "runs",
        seeds: str | Iterable[int] = (0,), profile: str = "smoke", device: str = "auto",
        data_root: str | os.PathLike | None = None, limit_test: int | None = None, registries: Any = None,
        precision: str = "fp32", **kw) -> RunSummary:
    """The library form of ``harness run``: plan, then execute every cell.

    ``harness.run("SHA→SHB", "source-only-mcnn-sha", "runs/x", data_root=...)`` or ``harness.run(RunSpec(...),
    out_dir="runs/x")`` (then the other planning arguments are ignored). ``kw`` go to :func:`execute`
    (``progress``, ``console``, ``cache``, ``force``, ``executor``, ``wait``).

    Raises:
        ConfigError: the run does not validate (one error listing every problem), or the folder holds cells of
            another configuration."""
    spec = matrix if isinstance(matrix, RunSpec) else RunSpec(matrix, methods, seeds, profile, data_root or None,
                                                              limit_test, precision)
    return execute(spec.plan(registries), out_dir, device, **kw)


__all__ = ["Cell", "Plan", "RunSpec", "RunSummary", "parse_matrix", "parse_list", "parse_seeds", "plan_run", "execute", "run",
           "run_cell", "resolve_device", "read_partial", "points_and_scores", "cell_config", "output_metrics",
           "PARTIAL_FILE", "MAP_DELTAS"]
