"""One cell of a run: its directory, its environment, fit + evaluate (docs/design.md §8).

A cell (method, source→target, seed) lives in ``<out>/<method>/<source>→<target>/seed-<k>/``::

    config.json          resolved configuration (method, strategy, raw and parsed options, profile, seed, device,
                         precision, harness version, git commit, data root, limit_test, data fingerprint)
    predictions.partial.jsonl   evaluation progress, one flushed JSON line per image (resume)
    predictions.csv      image_id, gt_count, pred_count, abs_error (+ one column per prediction extra)
    metrics.json         MAE, MSE (root), NAE, mAP, AP@δ, flags, provenance; written last: marks the cell done
    error.json           written instead of metrics.json when the cell failed (retried next run)
    log.txt              the cell's log (tracebacks of failures included)
    checkpoints/         the strategy's (``ctx.workdir / "checkpoints"``)

:class:`CellEnvironment` seeds every RNG with the cell seed before ``fit`` and restores torch's thread count, RNG
states and determinism flags afterwards, so one cell never leaks settings into the next.
"""
from __future__ import annotations

import copy
import json
import logging
import platform
import random
import subprocess
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .context import CellContext
from .evaluation import evaluate_counter, predictions_csv
from .io import ArtifactCache, atomic_write_json, atomic_write_text
from .planning import Cell, Plan

PARTIAL_FILE = "predictions.partial.jsonl"
#: config keys that must match for an existing cell directory to be resumed
IDENTITY_KEYS = ("method", "strategy", "options", "profile", "source", "target", "seed", "limit_test", "precision",
                 "data_root", "data")


def git_commit() -> str | None:
    """The commit of the harness source tree (``git rev-parse HEAD``), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def eval_split(dataset: Any) -> str:
    """The split a target dataset is scored on: its ``eval_split`` (e.g. NWPU's ``"val"``), else ``"test"``."""
    return getattr(dataset, "eval_split", "test")


def data_fingerprint(dataset: Any, splits: tuple[str, ...]) -> str:
    """A cheap fingerprint of a dataset's files: per split the image ids and, for files on disk, the sizes and
    modification times of image and annotation (a stat call each, no reading)."""
    from .io import content_key

    def stat(path):
        if path is None:
            return None
        try:
            st = Path(path).stat()
        except OSError:
            return "missing"
        return [st.st_size, st.st_mtime_ns]

    return content_key({split: [[r.id, stat(r.image_path), stat(r.annotation_path)] for r in dataset.samples(split)]
                        for split in splits})


def cell_config(plan: Plan, cell: Cell, device: str, commit: str | None = None) -> dict:
    """The resolved configuration recorded in ``config.json`` (with the data fingerprints of source and target)."""
    from . import __version__
    from .options import to_dict

    spec = plan.registries.methods.get(cell.method)
    parsed = plan.strategy_options.get(cell.method)
    return {
        "method": cell.method, "strategy": spec.strategy, "options": plan.options(cell.method),
        "resolved_options": to_dict(parsed) if parsed is not None else None,
        "profile": plan.profile, "source": cell.source, "target": cell.target, "seed": cell.seed,
        "limit_test": cell.limit_test, "device": device, "precision": plan.precision,
        "harness_version": __version__, "git_commit": commit,
        "data_root": str(plan.data_root) if plan.data_root else None, "python": platform.python_version(),
        "data": plan_fingerprints(plan, cell),
    }


def plan_fingerprints(plan: Plan, cell: Cell) -> dict:
    """``{"source": ..., "target": ...}`` data fingerprints of a cell (cached on the plan: one per dataset)."""
    cache = plan.__dict__.setdefault("_fingerprints", {})
    out = {}
    for role, name, splits in (("source", cell.source, ("train", "val")),
                               ("target", cell.target, ("train", eval_split(plan.datasets[cell.target])))):
        key = (name, splits)
        if key not in cache:
            cache[key] = data_fingerprint(plan.datasets[name], splits)
        out[role] = cache[key]
    return out


def identity(config: dict) -> dict:
    """The part of a ``config.json`` that decides whether an existing cell is the same cell (keys a cell written by
    an older harness lacks are not compared)."""
    ident = {k: config.get(k) for k in IDENTITY_KEYS if k in config}
    ident["precision"] = ident.get("precision") or "fp32"  # cells written before --precision existed
    return json.loads(json.dumps(ident, default=str))


class CellEnvironment:
    """Seed ``random``, numpy and torch with the cell seed (deterministic algorithms on CPU, warn-only) on entry;
    restore torch's thread count, the RNG states and the determinism flags on exit."""

    def __init__(self, seed: int, device: str = "cpu"):
        self.seed, self.device = int(seed), device

    def __enter__(self) -> "CellEnvironment":
        import torch

        self.saved = (random.getstate(), np.random.get_state(), torch.get_rng_state(), torch.get_num_threads(),
                      torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled())
        random.seed(self.seed)
        np.random.seed(self.seed)
        torch.manual_seed(self.seed)
        if self.device == "cpu":
            torch.use_deterministic_algorithms(True, warn_only=True)
        return self

    def __exit__(self, *exc) -> bool:
        import torch

        py, npy, trng, threads, det, warn = self.saved
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(trng)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn)
        if str(self.device).startswith("cuda") and torch.cuda.is_available():
            torch.cuda.empty_cache()
        return False


#: library loggers whose records also go to the running cell's log.txt (e.g. points dropped by the readers)
FORWARDED_LOGGERS = ("harness.data", "harness.training")


def cell_logger(cell_dir: Path) -> logging.Logger:
    """A logger appending to ``cell_dir / "log.txt"``; while it is open, the records of
    :data:`FORWARDED_LOGGERS` (e.g. the readers' "dropped N points" warnings) are written there too. Close it with
    :func:`close_logger`."""
    logger = logging.getLogger(f"harness.cell.{abs(hash((str(cell_dir), time.time())))}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(cell_dir / "log.txt", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    for name in FORWARDED_LOGGERS:
        logging.getLogger(name).addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        for name in FORWARDED_LOGGERS:
            logging.getLogger(name).removeHandler(h)
        h.close()
        logger.removeHandler(h)


def run_cell(plan: Plan, cell: Cell, cell_dir: Path, device: str, *, cache: ArtifactCache,
             commit: str | None, on_image: Callable[[int, int], None] | None = None) -> dict:
    """Fit and evaluate one cell in ``cell_dir`` (see the module notes); returns the metrics written.

    Exceptions propagate (the caller records them); an interruption leaves the progress files for resume.
    """
    registries = plan.registries
    method = registries.methods.get(cell.method)
    strategy_spec = registries.strategies.get(method.strategy)
    options = copy.deepcopy(plan.strategy_options[cell.method])
    atomic_write_json(cell_dir / "config.json", cell_config(plan, cell, device, commit))
    (cell_dir / "checkpoints").mkdir(exist_ok=True)
    log = cell_logger(cell_dir)
    try:
        t0 = time.perf_counter()
        log.info("cell %s: strategy %s options %s profile %s device %s precision %s", cell, method.strategy,
                 plan.options(cell.method), plan.profile, device, plan.precision)
        source, target = plan.datasets[cell.source], plan.datasets[cell.target]
        ctx = CellContext(source=source, source_name=cell.source, target_name=cell.target,
                          target_images=[ref.unlabelled() for ref in target.samples("train")],
                          profile=plan.profile, seed=cell.seed, device=device, precision=plan.precision,
                          workdir=cell_dir, cache=cache, registries=registries, options=options, log=log)
        with CellEnvironment(cell.seed, device):
            counter = strategy_spec.factory(options).fit(ctx)
            fit_s = time.perf_counter() - t0
            log.info("fit done in %.1f s; counter %s, provenance %s", fit_s, getattr(counter, "name", "?"),
                     counter.provenance.to_dict())
            split = eval_split(target)
            refs = target.samples(split)[:cell.limit_test] if cell.limit_test else target.samples(split)
            result = evaluate_counter(counter, refs, seed=cell.seed, partial_path=cell_dir / PARTIAL_FILE,
                                      on_image=on_image, log=log)
        atomic_write_text(cell_dir / "predictions.csv", predictions_csv(result.records))
        metrics = dict(result.metrics)
        if metrics.get("map") is None:
            log.info("no localisation metrics: the counter %s", "does not localise"
                     if not getattr(counter, "localises", True) else "gave neither points nor a density map")
        metrics.update(cell_flags(cell, strategy_spec, counter, ctx, split))
        n_dropped = int(sum(r.get("n_points_dropped", 0) for r in result.records))
        if n_dropped:
            log.info("%d annotated points outside their images were dropped from the %s split", n_dropped, split)
        metrics.update({"n_points_dropped": n_dropped, "fit_s": round(fit_s, 3), "eval_s": round(result.seconds, 3),
                        "duration_s": round(time.perf_counter() - t0, 3)})
        atomic_write_json(cell_dir / "metrics.json", metrics)  # last: marks the cell finished
        log.info("done: MAE %.3f MSE %.3f NAE %s mAP %s (%d images, %.1f s)", metrics["mae"], metrics["mse"],
                 metrics.get("nae"), metrics.get("map"), metrics["n_images"], metrics["duration_s"])
        return metrics
    except (Exception, SystemExit):
        log.error("cell failed:\n%s", traceback.format_exc())
        raise
    except BaseException:
        log.warning("cell interrupted; run again with the same --out to resume")
        raise
    finally:
        close_logger(log)


def cell_flags(cell: Cell, strategy_spec: Any, counter: Any, ctx: CellContext, split: str) -> dict:
    """Provenance and leakage flags of a finished fit (what the leaderboard shows beside the numbers)."""
    notes = dict(ctx.provenance_notes)
    provenance = counter.provenance
    labels = frozenset(provenance.trained_on) | ctx.labels_seen()
    return {
        "method": cell.method, "strategy": strategy_spec.name, "source": cell.source, "target": cell.target,
        "seed": cell.seed, "profile": ctx.profile, "limit_test": cell.limit_test, "eval_split": split,
        "target_labels_seen": bool(provenance.saw_labels_of(cell.target) or cell.target.upper() in
                                   {d.upper() for d in labels}),
        "labels_used": sorted(labels),
        "uses_target_images": bool(strategy_spec.uses_target_images or notes.get("uses_target_images")),
        "selection_split": str(notes.get("selection_split", "none")), "localises": bool(getattr(counter, "localises",
                                                                                                True)),
        "provenance": provenance.to_dict(), "provenance_notes": notes, "components": ctx.components,
    }


__all__ = ["run_cell", "cell_config", "identity", "CellEnvironment", "cell_logger", "close_logger", "git_commit",
           "eval_split", "cell_flags", "PARTIAL_FILE", "IDENTITY_KEYS"]
