"""Checkpoints of the training loop (docs/design.md §6): ``<folder>/step-<k>/`` written by
``accelerator.save_state`` into a temporary folder and renamed into place (atomic), with ``loop.json`` holding the
step and a fingerprint of the task's and the loop's options. The ``keep`` newest are kept; one that fails to load
is moved aside (``step-<k>.corrupt-<time>``) and the previous one used; a checkpoint of other options is refused.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..io import atomic_write_json, content_key

STATE_FILE = "loop.json"


class LoopState:
    """Loop bookkeeping saved with every checkpoint (``register_for_checkpointing``)."""

    def __init__(self):
        self.step, self.history, self.best_step, self.best_metric, self.best_state = 0, [], None, math.inf, None

    def state_dict(self) -> dict:
        return {"step": self.step, "history": self.history, "best_step": self.best_step,
                "best_metric": self.best_metric, "best_state": self.best_state}

    def load_state_dict(self, st: dict) -> None:
        self.step, self.history = int(st["step"]), list(st["history"])
        self.best_step, self.best_metric, self.best_state = st["best_step"], float(st["best_metric"]), st["best_state"]


def checkpoints(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-") and p.name[5:].isdigit()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def fingerprint(task: Any, cfg: Any, seed: int) -> str:
    task_fp = task.fingerprint() if hasattr(task, "fingerprint") else {}
    loop = {k: v for k, v in asdict(cfg).items() if k not in ("log_every", "keep_checkpoints", "checkpoint_every")}
    objectives = [{"name": o.name, **asdict(o.optim)} for o in task.objectives()]
    return content_key({"task": task_fp, "loop": loop, "objectives": objectives, "seed": int(seed)})


def save(accelerator, folder: Path, state: LoopState, fingerprint: str, keep: int) -> Path:
    final = folder / f"step-{state.step:08d}"
    tmp = folder / f".tmp-step-{state.step:08d}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.save_state(str(tmp), safe_serialization=True)
    atomic_write_json(tmp / STATE_FILE, {"step": state.step, "fingerprint": fingerprint,
                                        "best_step": state.best_step, "best_metric": _json_float(state.best_metric)})
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _json_float(x: float):
    return x if math.isfinite(x) else None


def load_latest(accelerator, folder: Path, fingerprint: str, log) -> Path | None:
    """Load the newest loadable checkpoint; a broken one is renamed ``*.corrupt`` and the previous one tried.

    Raises:
        ConfigError: the newest checkpoint was written under other options.
    """
    for ck in reversed(checkpoints(folder)):
        meta_path = ck / STATE_FILE
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError) as exc:
            _set_aside(ck, f"{meta_path} unreadable ({type(exc).__name__})", log)
            continue
        if meta.get("fingerprint") != fingerprint:
            raise ConfigError(f"checkpoint {ck} was written with other training options; delete {folder} to "
                              f"start over, or run with the options it was made with")
        try:
            accelerator.load_state(str(ck))
        except Exception as exc:  # a torn or corrupt file: fall back to the previous checkpoint
            _set_aside(ck, f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}", log)
            continue
        return ck
    return None


def _set_aside(ck: Path, why: str, log) -> None:
    dest = ck.with_name(ck.name + f".corrupt-{int(time.time())}")
    os.replace(ck, dest)
    log.warning("checkpoint %s cannot be loaded (%s): moved to %s; resuming from the previous one", ck, why, dest.name)


__all__ = ["LoopState", "checkpoints", "fingerprint", "save", "load_latest", "STATE_FILE"]
