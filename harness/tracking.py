"""Experiment trackers (``harness run --log-with tensorboard|mlflow|wandb``) through accelerate's tracker classes.

One tracked run per cell, named ``<method>__<source>-<target>__seed-<k>``: its configuration (method, strategy,
profile, source, target, seed, precision, device kind, threads, commit) at the start; every training loop's logged
losses, learning rate and selection metric under ``train/<loop name>/<key>`` at its optimiser step; at the end the
cell's MAE / MSE / NAE / r / mAP under ``final/…``, its flags (labels used, uses target images, selection split,
target labels seen) as text, and the best / worst overlays as images. A tracker that is not installed or cannot start
is one line in the cell's log and is skipped: a tracker never fails a cell.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import math
from pathlib import Path
from typing import Any, Iterator

#: the tracker names ``--log-with`` accepts (accelerate's)
TRACKERS = ("tensorboard", "mlflow", "wandb")

_CURRENT: contextvars.ContextVar["CellTracker | None"] = contextvars.ContextVar("harness_tracker", default=None)


def _make(name: str, run_name: str, folder: Path):
    from accelerate import tracking

    if name == "tensorboard":
        tracker = tracking.TensorBoardTracker(run_name, str(folder / "tensorboard"))
    elif name == "mlflow":
        tracker = tracking.MLflowTracker(experiment_name="crowd-harness", logging_dir=str(folder / "mlruns"),
                                         run_name=run_name)
    elif name == "wandb":  # the project is WandBTracker's first argument; offline unless WANDB_MODE says otherwise
        import os

        tracker = tracking.WandBTracker("crowd-harness", dir=str(folder), name=run_name, reinit=True,
                                        mode=os.environ.get("WANDB_MODE", "offline"))
    else:
        raise ValueError(name)
    if hasattr(tracker, "start"):
        tracker.start()
    return tracker


class CellTracker:
    """The trackers of one cell (see the module notes); every call is best effort."""

    def __init__(self, names: tuple[str, ...], run_name: str, folder: str | Path, config: dict,
                 log: logging.Logger | None = None):
        self.log_ = log or logging.getLogger("harness.tracking")
        self.trackers = []
        for name in names:
            try:
                tracker = _make(name, run_name, Path(folder))
                tracker.store_init_configuration({k: v for k, v in config.items()
                                                  if isinstance(v, (str, int, float, bool))})
                self.trackers.append(tracker)
            except Exception as exc:  # not installed, not reachable: one line, the cell goes on
                self.log_.warning("tracker %s unavailable (%s: %s); pip install 'crowd-harness[trackers]' — the "
                                  "cell is not tracked there", name, type(exc).__name__, str(exc).splitlines()[0]
                                  if str(exc) else "")

    def log(self, values: dict, step: int | None = None) -> None:
        clean = {k: v for k, v in values.items()
                 if isinstance(v, str) or (isinstance(v, (int, float)) and not isinstance(v, bool)
                                           and math.isfinite(float(v)))}
        for tracker in self.trackers:
            try:
                tracker.log(clean, step=step)
            except Exception as exc:
                self.log_.warning("tracker %s: log failed (%s)", tracker.name, exc)

    def log_images(self, images: dict, step: int = 0) -> None:
        for tracker in self.trackers:
            try:
                if tracker.name == "tensorboard":
                    tracker.log_images(images, step=step, dataformats="HWC")
                elif hasattr(tracker, "log_images"):
                    tracker.log_images(images, step=step)
            except Exception as exc:
                self.log_.warning("tracker %s: images not logged (%s)", tracker.name, exc)

    def finish(self) -> None:
        for tracker in self.trackers:
            try:
                tracker.finish()
            except Exception as exc:
                self.log_.warning("tracker %s: finish failed (%s)", tracker.name, exc)


@contextlib.contextmanager
def tracking(tracker: CellTracker | None) -> Iterator[CellTracker | None]:
    """Make ``tracker`` the one training loops of this cell log to (None: no tracking); finished on exit."""
    token = _CURRENT.set(tracker)
    try:
        yield tracker
    finally:
        _CURRENT.reset(token)
        if tracker is not None:
            tracker.finish()


def log_training(loop: str, record: dict) -> None:
    """Called by the training loop with each logged record (``{"step", <loss>: …, "lr", "eval"}``)."""
    tracker = _CURRENT.get()
    if tracker is not None and "step" in record:
        tracker.log({f"train/{loop}/{k}": v for k, v in record.items() if k != "step" and v is not None},
                    step=int(record["step"]))


def run_name(method: str, source: str, target: str, seed_dir: str) -> str:
    """ASCII run name of a cell: ``<method>__<source>-<target>__<seed dir>``."""
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{method}__{source}-{target}__{seed_dir}")


def final_values(metrics: dict) -> dict[str, Any]:
    """What a cell's tracked run gets at the end: ``final/<metric>`` numbers and ``flags/<name>`` texts."""
    out: dict[str, Any] = {f"final/{k}": metrics[k] for k in ("mae", "mse", "nae", "r", "map", "n_images")
                           if isinstance(metrics.get(k), (int, float))}
    for k in ("labels_used", "uses_target_images", "selection_split", "target_labels_seen", "eval_split"):
        if metrics.get(k) is not None:
            out[f"flags/{k}"] = str(metrics[k])
    return out


__all__ = ["TRACKERS", "CellTracker", "tracking", "log_training", "run_name", "final_values"]
