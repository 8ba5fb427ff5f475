"""One cell of a run: its directory, its environment, fit + evaluate (docs/design.md §8).

A cell (method, source→target, seed) lives in ``<out>/<method>/<source>→<target>/seed-<k>/``::

    config.json          resolved configuration (method, strategy, raw and parsed options, profile, seed, device,
                         precision, harness version, git commit, data root, limit_test, data fingerprint)
    predictions.partial.jsonl   evaluation progress, one flushed JSON line per image (resume)
    predictions.csv      image_id, gt_count, pred_count, abs_error (+ one column per prediction extra)
    metrics.json         MAE, MSE (root), NAE, mAP, AP@δ, flags, provenance; written last: marks the cell done
    error.json           written instead of metrics.json when the cell failed (retried next run)
    log.txt              the cell's log (tracebacks of failures included)
    overlays/            best-<r>-<id>.jpg / worst-<r>-<id>.jpg: the predicted density of the 2 best and 2 worst images
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .conditions import CONDITION_KEYS
from .context import CellContext
from .evaluation import evaluate_counter, predictions_csv
from .fingerprints import data_fingerprint, plan_fingerprints  # noqa: F401  (re-exported)
from .io import ArtifactCache, atomic_write_json, atomic_write_text
from .planning import Cell, Plan
from .types import counter_localises, dataset_folds, eval_split

PARTIAL_FILE = "predictions.partial.jsonl"
#: the folder of a cell's best / worst image overlays (for its report page), and how many of each
OVERLAYS = "overlays"
OVERLAY_IMAGES = 2
#: config keys that must match for an existing cell directory to be resumed
IDENTITY_KEYS = ("method", "strategy", "options", "profile", "source", "target", "seed", "limit_test", "precision",
                 "data_root", "data_content")


def git_commit() -> str | None:
    """The commit of the harness source tree (``git rev-parse HEAD``), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def cell_config(plan: Plan, cell: Cell, device: str, commit: str | None = None, threads: int | None = None) -> dict:
    """The resolved configuration recorded in ``config.json`` (with the data fingerprints of source and target and
    the conditions of :mod:`harness.conditions`: device kind and, on a CPU, the pinned thread count)."""
    from . import __version__
    from .conditions import conditions, package_versions
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
        "packages": package_versions(plan.registries.plugins),
        "data_content": plan_fingerprints(plan, cell), "command": plan.command, **conditions(device, threads),
    }


def identity(config: dict) -> dict:
    """The part of a ``config.json`` that decides whether an existing cell is the same cell (keys a cell written by
    an older harness lacks are not compared)."""
    ident = {k: config.get(k) for k in IDENTITY_KEYS + CONDITION_KEYS if k in config}
    ident["precision"] = ident.get("precision") or "fp32"  # cells written before --precision existed
    return json.loads(json.dumps(ident, default=str))


def identity_diff(old: dict, new: dict) -> list[str]:
    """The identity keys on which an existing cell's ``old`` identity differs from the ``new`` one (keys ``old``
    lacks are not compared; another ``data_root`` holding the same files — equal data fingerprints — is the same data,
    as on a cluster whose nodes mount the share elsewhere; a device kind known only by its type, or not yet resolved,
    matches its models:
    :func:`harness.conditions.same_device_kind`; thread counts are compared on a CPU only)."""
    from .conditions import same_device_kind

    diff = [k for k in old if k not in CONDITION_KEYS and old.get(k) != new.get(k)]
    if "data_root" in diff and old.get("data_content") and old.get("data_content") == new.get("data_content"):
        diff.remove("data_root")  # the same files reached through another path (a symlink, another mount point)
    if "device_kind" in old and not same_device_kind(old.get("device_kind"), new.get("device_kind")):
        diff.append("device kind")
    if "threads" in old and old.get("threads") and new.get("threads") and old["threads"] != new["threads"]:
        diff.append("thread count")
    return diff


class CellEnvironment:
    """Seed ``random``, numpy and torch with the cell seed on entry; restore torch's thread count, the RNG states and
    the determinism flags on exit. (Deterministic algorithms are switched on by the training loop, :func:`train`,
    for the span of a training: an evaluation-only cell does not pay for the switch.)"""

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
        return self

    def __exit__(self, *exc) -> bool:
        import torch

        py, npy, trng, threads, det, warn = self.saved
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(trng)
        torch.set_num_threads(threads)
        if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) \
                != (det, warn):  # the setter imports torch._inductor (1.6 s): only when a plugin changed the flags
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


@dataclass
class Fit:
    """One fit of a cell: the source it trains on, the target dataset whose unlabelled images it sees, the images
    it is scored on, its work folder and its progress file (a folded target has one per fold)."""

    tag: str
    source: Any
    target: Any
    refs: list
    workdir: Path
    partial: Path


def plan_fits(plan: Plan, cell: Cell, cell_dir: Path, uses_target_images: bool) -> list[Fit]:
    """The fits of a cell (docs/design.md §8).

    - A target that declares ``folds`` (UCF_CC_50) is scored on all its images, pooled over the folds: when the
      method trains on it (``source == target``: k-fold cross-validation) or looks at its unlabelled images, there is
      one fit per fold (train and target images of fold k, scored on fold k's test images); otherwise one fit,
      scored on every image.
    - A source that is also the target scored on its ``val`` split (NWPU-Crowd) selects its model on a held-out part
      of its train split instead, so the evaluation images never choose the weights.
    """
    from .data.splits import HeldOutVal

    source, target = plan.datasets[cell.source], plan.datasets[cell.target]
    split = eval_split(target)
    refs = target.samples(split)
    refs = refs[:cell.limit_test] if cell.limit_test else refs
    folds = dataset_folds(target)
    if not folds or not (cell.source == cell.target or uses_target_images):
        if cell.source == cell.target and split == "val":
            source = HeldOutVal(source)
        return [Fit("", source, target, refs, cell_dir, cell_dir / PARTIAL_FILE)]
    keep = {r.id for r in refs}
    out = []
    for k, fold in enumerate(folds, 1):
        fold_refs = [r for r in fold.samples("test") if r.id in keep]
        if fold_refs:
            out.append(Fit(f"fold-{k}", fold if cell.source == cell.target else source, fold, fold_refs,
                           cell_dir / f"fold-{k}", cell_dir / f"predictions.fold-{k}.partial.jsonl"))
    return out


def make_context(plan: Plan, cell: Cell, fit: Fit, device: str, cache: ArtifactCache, options: Any,
                 log: logging.Logger) -> CellContext:
    """The :class:`~harness.context.CellContext` of one fit of a cell (the target's train images unlabelled)."""
    return CellContext(source=fit.source, source_name=cell.source, target_name=cell.target,
                       target_images=[ref.unlabelled() for ref in fit.target.samples("train")], profile=plan.profile,
                       seed=cell.seed, device=device, precision=plan.precision, workdir=fit.workdir, cache=cache,
                       registries=plan.registries, options=options, log=log, workers=plan.workers)


def run_cell(plan: Plan, cell: Cell, cell_dir: Path, device: str, *, cache: ArtifactCache,
             commit: str | None, on_image: Callable[[int, int], None] | None = None) -> dict:
    """Fit and evaluate one cell in ``cell_dir`` (see the module notes); returns the metrics written. With
    ``--log-with`` the cell is one tracked run (:mod:`harness.tracking`).

    Exceptions propagate (the caller records them); an interruption leaves the progress files for resume.
    """
    from .tracking import CellTracker, run_name, tracking

    tracker = None
    if plan.spec.trackers:
        folder = Path(plan.spec.tracker_dir) if plan.spec.tracker_dir else cell_dir.parents[2] / "trackers"
        tracker = CellTracker(plan.spec.trackers, run_name(cell.method, cell.source, cell.target, cell.seed_dir),
                              folder, {"method": cell.method, "source": cell.source, "target": cell.target,
                                       "seed": cell.seed, "profile": plan.profile, "precision": plan.precision,
                                       "device": device, "commit": commit or ""})
    with tracking(tracker):
        metrics = _run_cell(plan, cell, cell_dir, device, cache=cache, commit=commit, on_image=on_image)
        if tracker is not None:
            tracker.final(metrics, cell_dir, sorted((cell_dir / OVERLAYS).glob("*.jpg")))
    return metrics


def _run_cell(plan: Plan, cell: Cell, cell_dir: Path, device: str, *, cache: ArtifactCache,
              commit: str | None, on_image: Callable[[int, int], None] | None = None) -> dict:
    from .evaluation import metrics_from_records

    method = plan.registries.methods.get(cell.method)
    strategy_spec = plan.registries.strategies.get(method.strategy)
    options = copy.deepcopy(plan.strategy_options[cell.method])
    import torch

    atomic_write_json(cell_dir / "config.json", cell_config(plan, cell, device, commit, torch.get_num_threads()))
    (cell_dir / "checkpoints").mkdir(exist_ok=True)
    log = cell_logger(cell_dir)
    try:
        t0 = time.perf_counter()
        log.info("cell %s: strategy %s options %s profile %s device %s precision %s", cell, method.strategy,
                 plan.options(cell.method), plan.profile, device, plan.precision)
        strategy = strategy_spec.factory(options)
        uses_target = bool(getattr(strategy, "uses_target_images", strategy_spec.uses_target_images))
        fits = plan_fits(plan, cell, cell_dir, uses_target)
        records, ctxs, counters, fit_s, eval_s, predictors, densities = [], [], [], 0.0, 0.0, {}, {}
        total = sum(len(f.refs) for f in fits)
        for f in fits:
            if f.tag:
                log.info("%s: train on %s, score %d images of %s", f.tag, f.source.name, len(f.refs), f.target.name)
                (f.workdir / "checkpoints").mkdir(parents=True, exist_ok=True)
            ctx = make_context(plan, cell, f, device, cache, options, log)
            done = len(records)
            with CellEnvironment(cell.seed, device):
                t1 = time.perf_counter()
                counter = strategy.fit(ctx)
                fit_s += time.perf_counter() - t1
                log.info("fit done in %.1f s; counter %s, provenance %s", time.perf_counter() - t1,
                         getattr(counter, "name", "?"), counter.provenance.to_dict())
                result = evaluate_counter(counter, f.refs, seed=cell.seed, partial_path=f.partial, log=log,
                                          workers=plan.workers, keep_extremes=OVERLAY_IMAGES,
                                          on_image=None if on_image is None else
                                          (lambda i, n, d=done: on_image(d + i, total)))
            records += result.records
            predictors.update({ref.id: (counter, ref) for ref in f.refs})
            densities.update(result.extra.get("densities", {}))
            eval_s += result.seconds
            ctxs.append(ctx)
            counters.append(counter)
            if len(fits) > 1:
                strategy = strategy_spec.factory(copy.deepcopy(plan.strategy_options[cell.method]))
        order = {r.id: i for i, r in enumerate(r for f in fits for r in f.refs)}
        records.sort(key=lambda r: order[r["image_id"]])
        atomic_write_text(cell_dir / "predictions.csv", predictions_csv(records))
        with CellEnvironment(cell.seed, device):
            from .visualize import save_cell_overlays

            save_cell_overlays(records, predictors, cell_dir / OVERLAYS, cell.seed, OVERLAY_IMAGES, densities)
        counter = counters[-1]
        # one fit: its evaluation already scored these records in this order; several (folds): pool them
        metrics = dict(result.metrics) if len(fits) == 1 else \
            metrics_from_records(records, localises=counter_localises(counter))
        if metrics.get("map") is None:
            log.info("no localisation metrics: the counter %s", "does not localise"
                     if not counter_localises(counter) else "gave neither points nor a density map")
        split = eval_split(plan.datasets[cell.target])
        metrics.update(cell_flags(cell, strategy_spec, counters, ctxs, split))
        protocol = getattr(plan.datasets[cell.target], "protocol", None)
        if protocol:
            metrics.update({"protocol": protocol, "fits": [f.tag or "all" for f in fits]})
        n_dropped = int(sum(r.get("n_points_dropped", 0) for r in records))
        if n_dropped:
            log.info("%d annotated points outside their images were dropped from the %s split", n_dropped, split)
        metrics.update({"n_points_dropped": n_dropped, "fit_s": round(fit_s, 3), "eval_s": round(eval_s, 3),
                        "duration_s": round(time.perf_counter() - t0, 3)})
        from .rundir import file_record

        metrics["files"] = file_record(cell_dir)  # what the cell's other files must be (harness.rundir.damage)
        atomic_write_json(cell_dir / "metrics.json", metrics)  # last: marks the cell finished
        log.info("done: MAE %.3f MSE %.3f NAE %s mAP %s (%d images, %.1f s)", metrics["mae"], metrics["mse"],
                 metrics.get("nae"), metrics.get("map"), metrics["n_images"], metrics["duration_s"])
        return metrics
    except (Exception, SystemExit):
        log.error("cell failed:\n%s", traceback.format_exc())
        raise
    except BaseException as exc:
        why = str(exc) if isinstance(exc, KeyboardInterrupt) and str(exc) else "interrupted"
        log.warning("cell %s; run again with the same --out to resume", why)
        raise
    finally:
        close_logger(log)


def cell_flags(cell: Cell, strategy_spec: Any, counters: list, ctxs: list[CellContext], split: str) -> dict:
    """Provenance and leakage flags of a cell's fits (what the leaderboard shows beside the numbers); several fits
    (folds) contribute the union of their labels, the last one its notes."""
    ctx, provenance = ctxs[-1], counters[-1].provenance
    notes = dict(ctx.provenance_notes)
    if len(ctxs) > 1:
        notes["folds"] = [dict(c.provenance_notes) for c in ctxs]
    labels = frozenset().union(*(frozenset(c.provenance.trained_on) for c in counters),
                               *(c.labels_seen() for c in ctxs))
    return {
        "method": cell.method, "strategy": strategy_spec.name, "source": cell.source, "target": cell.target,
        "seed": cell.seed, "profile": ctx.profile, "limit_test": cell.limit_test, "eval_split": split,
        "in_domain": cell.source == cell.target,
        "target_labels_seen": cell.target.upper() in {d.upper() for d in labels},
        "labels_used": sorted(labels),
        "uses_target_images": bool(strategy_spec.uses_target_images
                                   or any(c.provenance_notes.get("uses_target_images") for c in ctxs)),
        "selection_split": str(notes.get("selection_split", "none")),
        "localises": bool(counter_localises(counters[-1])),
        "provenance": provenance.to_dict(), "provenance_notes": notes,
        "components": [c for x in ctxs for c in x.components],
    }


__all__ = ["run_cell", "cell_config", "identity", "identity_diff", "CellEnvironment", "cell_logger", "close_logger", "git_commit",
           "eval_split", "cell_flags", "PARTIAL_FILE", "IDENTITY_KEYS"]
