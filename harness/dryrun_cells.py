"""One cell of a dry run (:mod:`harness.dryrun`), metered: in this process, or in a spawned one so that a cell the
operating system kills (a stage needing more memory than the machine has) is one failed cell naming its stage, and the
dry run goes on. The meter's records travel to the child and back (:func:`meter_state` / :func:`meter_from`)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .errors import HarnessError
from .stages import Meter, metering

__all__ = ["metered_cell", "cell_in_child", "meter_state", "meter_from"]


def metered_cell(plan: Any, cell: Any, cell_dir: Path, device: str, cache: Any, meter: Meter,
                  scope: str) -> str | None:
    """Run one cell with ``meter`` active; returns the error line of a stage that could not run (or None)."""
    from .cell import run_cell

    with metering(meter, scope):
        try:
            run_cell(plan, cell, cell_dir, device, cache=cache, commit=None)
        except HarnessError as exc:
            return str(exc).splitlines()[0]
        except Exception as exc:  # a stage that cannot run is the finding: one line, the next cell goes on
            return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def meter_state(meter: Meter) -> dict:
    return {"max_units": meter.max_units, "device": meter.device, "records": meter.records,
            "weights": meter.weights, "artefacts": meter.artefacts}


def meter_from(state: dict) -> Meter:
    meter = Meter(state["max_units"], state["device"])
    meter.records, meter.weights, meter.artefacts = state["records"], state["weights"], state["artefacts"]
    return meter


def _child(spec: Any, relpath: str, cell_dir: str, device: str, cache_root: str, state: dict, scope: str,
           result: str, trace: str, parent: int) -> None:
    """The body of an isolated dry-run cell (:func:`harness.dryrun.dry_run` with ``isolate``): plan from the spec,
    run the cell metered, pickle ``(meter state, error)`` to ``result``."""
    import pickle

    from .io import ArtifactCache, atomic_save
    from .plugins import build_registries, get_registries, plugin_modules

    _exit_with_parent(parent)
    regs = build_registries(plugin_modules(spec.plugins)) if spec.plugins else get_registries()
    plan = spec.plan(regs)
    cell = next(c for c in plan.cells if str(c.relpath) == relpath)
    meter = meter_from(state)
    meter.trace = Path(trace)
    error = metered_cell(plan, cell, Path(cell_dir), device, ArtifactCache(cache_root), meter, scope)
    meter.trace = None
    atomic_save(result, lambda tmp: tmp.write_bytes(pickle.dumps((meter_state(meter), error))))


def _exit_with_parent(parent: int, poll_s: float = 1.0) -> None:
    """End this (child) process when its parent (pid ``parent``, passed by the parent: it may be gone already) has
    died — killed, or stopped by a signal that skips Python's exit handlers — instead of computing on as an orphan:
    a daemon thread polls the parent's pid."""
    import os
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="harness-parent-watch", daemon=True).start()


def cell_in_child(plan: Any, cell: Any, cell_dir: Path, device: str, cache_root: Path, meter: Meter,
                   scope: str) -> tuple[Meter, str | None]:
    """One dry-run cell in a spawned process; ``(the meter with its records, error line or None)``. A child that
    dies without a result (killed, crashed) keeps the parent's meter and is reported with its signal or exit code
    and the stage it was in."""
    import multiprocessing
    import os
    import pickle
    import signal

    result, trace = cell_dir / "result.pickle", cell_dir / "stage.txt"
    proc = multiprocessing.get_context("spawn").Process(
        target=_child, name=f"harness-dry-run {scope}", daemon=True,
        args=(plan.spec, str(cell.relpath), str(cell_dir), device, str(cache_root), meter_state(meter), scope,
              str(result), str(trace), os.getpid()))
    proc.start()
    proc.join()
    if result.exists():
        state, error = pickle.loads(result.read_bytes())
        return meter_from(state), error
    stage_name = trace.read_text() if trace.exists() else "before its first stage"
    code = proc.exitcode
    if code is not None and code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = str(-code)
        why = f"killed by {sig}" + (" (on Linux usually the out-of-memory killer: the stage needs more memory than "
                                    "this machine has)" if -code == signal.SIGKILL else "")
    else:
        why = f"its process exited with code {code}"
    return meter, f"{why}, in stage '{stage_name}'"
