"""Experiment trackers (``harness run --log-with tensorboard|mlflow|wandb``) through accelerate's tracker classes.

One tracked run per cell, named ``<method>__<source>-<target>__seed-<k>``: its configuration (method, strategy,
profile, source, target, seed, precision, device kind, threads, commit) at the start; every training loop's logged
losses, learning rate and selection metric under ``train/<loop name>/<key>`` at its optimiser step; at the end the
cell's MAE / MSE / NAE / r / mAP under ``final/…``, its flags (labels used, uses target images, selection split,
target labels seen, the leaderboard's † where the target's labels were seen, the commit) as tags (MLflow tags, W&B
summary fields, TensorBoard text), the best / worst overlays as images, and ``predictions.csv`` with the overlays as
artefacts (MLflow artefacts; one W&B artefact per cell). MLflow writes to a SQLite store ``<tracker dir>/mlflow.db``
unless ``MLFLOW_TRACKING_URI`` names another; W&B runs offline under the tracker folder unless ``WANDB_MODE`` says
otherwise. A tracker that is not installed or cannot start is one line in the cell's log and is skipped: a tracker
never fails a cell.
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


def _make(name: str, run_name: str, folder: Path, cpu: bool = True):
    import os

    from accelerate import PartialState, tracking

    if not PartialState._shared_state:  # accelerate's trackers log through its logger, which needs the state
        PartialState(cpu=cpu)
    if name == "tensorboard":
        tracker = tracking.TensorBoardTracker(run_name, str(folder / "tensorboard"))
    elif name == "mlflow":  # a local SQLite store under the tracker folder unless MLFLOW_TRACKING_URI names a server
        import mlflow

        folder.mkdir(parents=True, exist_ok=True)
        mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(folder / 'mlflow.db').resolve()}")
        tracker = tracking.MLflowTracker(experiment_name="crowd-harness",
                                         logging_dir=(folder / "mlflow-artifacts").resolve().as_uri(),
                                         run_name=run_name)
    elif name == "wandb":  # the project is WandBTracker's first argument; offline unless WANDB_MODE says otherwise
        tracker = tracking.WandBTracker("crowd-harness", dir=str(folder), name=run_name,
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
        self.run_name = run_name
        self.last_step = 0  # W&B keeps only steps that do not go back: the end is logged at the last step
        self.trackers = []
        self.commit = str(config.get("commit") or "")
        cpu = not str(config.get("device", "cpu")).startswith("cuda")
        for name in names:
            try:
                tracker = _make(name, run_name, Path(folder), cpu)
                tracker.store_init_configuration({k: v for k, v in config.items()
                                                  if isinstance(v, (str, int, float, bool))})
                self.trackers.append(tracker)
            except Exception as exc:  # not installed, not reachable: one line, the cell goes on
                self.log_.warning("tracker %s unavailable (%s: %s); pip install 'crowd-harness[trackers]' — the "
                                  "cell is not tracked there", name, type(exc).__name__, str(exc).splitlines()[0]
                                  if str(exc) else "")

    def log(self, values: dict, step: int | None = None) -> None:
        """Numbers (finite) to every tracker; texts only to TensorBoard (as text summaries: MLflow and W&B metrics are
        numbers, their texts go through :meth:`tag`)."""
        numbers = {k: v for k, v in values.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))}
        texts = {k: v for k, v in values.items() if isinstance(v, str)}
        self.last_step = max(self.last_step, step or 0)
        for tracker in self.trackers:
            try:
                tracker.log({**numbers, **texts} if tracker.name == "tensorboard" else numbers, step=step)
            except Exception as exc:
                self.log_.warning("tracker %s: log failed (%s)", tracker.name, exc)

    def tag(self, tags: dict[str, str]) -> None:
        """Texts that identify the run: MLflow tags, W&B summary fields, TensorBoard text summaries."""
        for tracker in self.trackers:
            try:
                if tracker.name == "mlflow":
                    import mlflow

                    mlflow.set_tags(tags)
                elif tracker.name == "wandb":
                    tracker.tracker.summary.update(tags)
                else:
                    tracker.log(tags, step=self.last_step)
            except Exception as exc:
                self.log_.warning("tracker %s: tags not logged (%s)", tracker.name, exc)

    def artifacts(self, files: list[Path]) -> None:
        """Files of the cell (its ``predictions.csv``, overlays) as artefacts of the run: MLflow artefacts, one W&B
        artefact ``cell-<run name>`` of type ``cell``; TensorBoard has none (the overlays go there as images)."""
        for tracker in self.trackers:
            try:
                if tracker.name == "mlflow":
                    import mlflow

                    for f in files:
                        picture = f.suffix in (".jpg", ".png")
                        mlflow.log_artifact(str(f), artifact_path="overlays" if picture else None)
                elif tracker.name == "wandb":
                    import wandb

                    art = wandb.Artifact(f"cell-{self.run_name}", type="cell")
                    for f in files:
                        art.add_file(str(f), name=f.name if f.suffix not in (".jpg", ".png") else f"overlays/{f.name}")
                    tracker.tracker.log_artifact(art)
            except Exception as exc:
                self.log_.warning("tracker %s: artefacts not logged (%s)", tracker.name, exc)

    def final(self, metrics: dict, cell_dir: Path, overlays: list[Path]) -> None:
        """The end of a cell: ``final/<metric>`` numbers, the flags as tags, overlays as images, ``predictions.csv``
        and the overlays as artefacts."""
        values = final_values(metrics)
        self.log({k: v for k, v in values.items() if not isinstance(v, str)}, step=self.last_step)
        self.tag({**{k: v for k, v in values.items() if isinstance(v, str)},
                  **({"flags/commit": self.commit} if self.commit else {})})
        if overlays:
            import numpy as np
            from PIL import Image

            self.log_images({f"overlays/{p.stem}": np.asarray(Image.open(p).convert("RGB")) for p in overlays},
                            step=self.last_step)
        self.artifacts([f for f in [cell_dir / "predictions.csv", *overlays] if f.exists()])

    def log_images(self, images: dict, step: int = 0) -> None:
        for tracker in self.trackers:
            try:
                if tracker.name == "tensorboard":
                    tracker.log_images(images, step=step, dataformats="HWC")
                elif tracker.name == "wandb":  # accelerate's W&B tracker takes a list of images per key
                    tracker.log_images({k: [v] for k, v in images.items()}, step=step)
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
    for k in ("labels_used", "uses_target_images", "selection_split", "target_labels_seen", "eval_split", "in_domain"):
        if metrics.get(k) is not None:
            out[f"flags/{k}"] = str(metrics[k])
    if metrics.get("target_labels_seen"):  # the leaderboard's † (the weights saw the target's labels)
        out["flags/dagger"] = "† the weights saw the target's labels"

    return out


__all__ = ["TRACKERS", "CellTracker", "tracking", "log_training", "run_name", "final_values"]
