"""``harness run … --dry-run``: every stage of every cell at its real architecture and shapes, a few units each,
with measured memory, FLOPs and a projected GPU-hour bill (docs/design.md §14).

Each cell of the plan (the first seed; the others cost the same) runs through the same code as a real cell
(:func:`harness.cell.run_cell`) with a :class:`~harness.stages.Meter` active, in a temporary folder with a
temporary artefact cache shared by the dry run's cells, so nothing is written into the run folder and no cell is
ever marked done. Every stage (:mod:`harness.stages`) stops after ``max_units`` units. Pretrained weights that do
not resolve are replaced by random weights of the same architecture, built from the configuration the harness
ships (``harness/models/configs``), and the cell is marked "architecture only".

Projection of one stage onto a GPU (:func:`project_seconds`): ``units × max(FLOPs per unit / (peak FLOP/s of the
GPU at the run's precision, or at the stage's own (``stage(…, precision=…)``: Stable Diffusion runs fp16 on CUDA) ×
efficiency), ATen operator calls per unit × GPU_OP_SECONDS)``: arithmetic bounds large work, and the launch and
dispatch of each operator bounds small work (a training step of a small network is a few hundred to a few thousand
operator calls; :mod:`harness.meter_count`). Stages without FLOPs (image decoding, drawing, CRF in numpy…) are
counted at this machine's measured time per unit. Peak figures
are NVIDIA's dense (no sparsity) datasheet numbers; ``fp32`` uses the plain FP32 rate
(TF32 tensor cores not assumed). The efficiency (default :data:`DEFAULT_EFFICIENCY`) and the time per operator call
(:data:`GPU_OP_SECONDS`) were measured on one GPU (an H200, bf16; ``leaderboards/paper-costs.md`` § Calibration);
both are stated in every output, and the efficiency is set with ``--gpu-efficiency``.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .dryrun_cells import cell_in_child, meter_from, meter_state, metered_cell
from .dryrun_progress import DryRunProgress, code_identity, scratch_folder
from .stages import Meter

#: peak dense FLOP/s per precision (NVIDIA datasheets: V100 SXM2, A100 SXM4, H100 SXM5, H200 SXM, L40S, RTX 4090;
#: fp16/bf16 with FP32 accumulate on tensor cores; fp32 without TF32)
GPUS: dict[str, dict[str, float]] = {
    "v100": {"fp32": 15.7e12, "fp16": 125e12, "bf16": 15.7e12},  # no bf16 tensor cores: bf16 runs at the fp32 rate
    "a100": {"fp32": 19.5e12, "fp16": 312e12, "bf16": 312e12},
    "h100": {"fp32": 67e12, "fp16": 989e12, "bf16": 989e12},
    "h200": {"fp32": 67e12, "fp16": 989e12, "bf16": 989e12},
    "l40s": {"fp32": 91.6e12, "fp16": 362e12, "bf16": 362e12},
    "rtx4090": {"fp32": 82.6e12, "fp16": 165.2e12, "bf16": 165.2e12},
}
#: fraction of the dense peak a large stage sustains (override with --gpu-efficiency). Measured on an H200 in bf16
#: (leaderboards/paper-costs.md § Calibration on a GPU): stages over 1 TFLOP per unit ran at 0.010–0.344 of it,
#: median 0.075; with GPU_OP_SECONDS, 0.1 puts the measured methods within a factor of 2 (measured / projected
#: 0.60–1.97, all but the two smallest cells; fitted on those same measurements)
DEFAULT_EFFICIENCY = 0.1
#: seconds per ATen operator call of a unit on a GPU (launch and dispatch, eager PyTorch). Measured there: the training
#: steps under 1 % of the peak took 10.6–57.4 µs per call, median 17
GPU_OP_SECONDS = 20e-6


@dataclass
class StageCost:
    """One stage of one dry-run cell and its projection (see the module notes)."""

    name: str
    unit: str
    params: int | None
    peak_bytes: int
    flops_per_unit: float | None
    seconds_per_unit: float | None
    units_run: int
    units: float
    device_hours: float
    gpu_hours: float
    parent: str | None = None
    timed_with_counter: bool = False
    reused_from: str | None = None
    precision: str | None = None  # the stage's own GPU precision when not the run's (projected at that peak)
    ops_per_unit: int | None = None  # ATen operator calls of one unit (None: not counted, as in older dry runs)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class CellCost:
    """A dry-run cell: its stages, how its weights were obtained, its wall time here and its error (one line)."""

    method: str
    source: str
    target: str
    seconds: float
    stages: list[StageCost] = field(default_factory=list)
    weights: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def architecture_only(self) -> bool:
        return any(w.startswith("architecture only") for w in self.weights.values())

    @property
    def gpu_hours(self) -> float:
        return sum(s.gpu_hours for s in self.stages)

    @property
    def device_hours(self) -> float:
        return sum(s.device_hours for s in self.stages)

    def to_dict(self) -> dict:
        return {"method": self.method, "source": self.source, "target": self.target, "dry_run_seconds":
                round(self.seconds, 2), "weights": self.weights, "architecture_only": self.architecture_only,
                "error": self.error, "gpu_hours": self.gpu_hours, "device_hours": self.device_hours,
                "stages": [s.to_dict() for s in self.stages]}


@dataclass
class DryRunReport:
    """The dry run of a plan: per cell, per stage; totals per method and for the matrix (× seeds)."""

    profile: str
    precision: str
    device: str
    gpu: str
    efficiency: float
    seeds: int
    max_units: int
    cells: list[CellCost]
    seconds: float
    resumed: int = 0  # cells measured by an earlier run of this dry run that was interrupted (their time included)
    op_seconds: float | None = GPU_OP_SECONDS  # per operator call of a unit; None: FLOPs only (older dry runs)

    def method_totals(self) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for c in self.cells:
            t = out.setdefault(c.method, {"gpu_hours": 0.0, "device_hours": 0.0, "largest_stage": None,
                                          "largest_gpu_hours": 0.0})
            t["gpu_hours"] += c.gpu_hours * self.seeds
            t["device_hours"] += c.device_hours * self.seeds
            for s in c.stages:
                if s.gpu_hours >= t["largest_gpu_hours"]:
                    t["largest_stage"], t["largest_gpu_hours"] = s.name, s.gpu_hours
        return out

    @property
    def gpu_hours(self) -> float:
        return sum(c.gpu_hours for c in self.cells) * self.seeds

    def to_dict(self) -> dict:
        return {"profile": self.profile, "precision": self.precision, "device": self.device, "gpu": self.gpu,
                "gpu_peak_flops": GPUS[self.gpu][self.precision], "efficiency": self.efficiency,
                "gpu_op_seconds": self.op_seconds,
                "seeds": self.seeds, "max_units": self.max_units, "dry_run_seconds": round(self.seconds, 1),
                "cells_measured_earlier": self.resumed,
                "gpu_hours": self.gpu_hours, "methods": self.method_totals(),
                "cells": [c.to_dict() for c in self.cells]}


def report_from_dict(d: dict) -> DryRunReport:
    """A :class:`DryRunReport` back from its ``to_dict()`` / ``--json`` form (e.g. to merge several dry runs)."""
    cells = [CellCost(c["method"], c["source"], c["target"], c["dry_run_seconds"],
                      [StageCost(**s) for s in c["stages"]], dict(c["weights"]), c["error"]) for c in d["cells"]]
    return DryRunReport(d["profile"], d["precision"], d["device"], d["gpu"], d["efficiency"], d["seeds"],
                        d["max_units"], cells, d["dry_run_seconds"], d.get("cells_measured_earlier", 0),
                        d.get("gpu_op_seconds"))


def project_seconds(flops: float | None, ops: int | None, flops_per_s: float,
                    op_seconds: float = GPU_OP_SECONDS) -> float | None:
    """Projected GPU seconds of one unit: ``max(flops / flops_per_s, ops × op_seconds)`` (the larger of its
    arithmetic and its operator calls; ``flops_per_s`` = peak × efficiency); None for a unit without FLOPs (no GPU
    work counted: the caller uses the measured time)."""
    if not flops:
        return None
    return max(flops / flops_per_s, (ops or 0) * op_seconds)


def _costs(meter: Meter, scope: str, gpu: str, precision: str, efficiency: float) -> list[StageCost]:
    """The stages of ``scope`` projected onto ``gpu``: at the run's ``precision``, or at the stage's own (a Stable
    Diffusion pipeline runs fp16 on CUDA whatever the run's precision)."""
    out = []
    for rec in meter.scope_records(scope):
        units = meter.full_units(rec)
        per_s = rec.seconds_per_unit or 0.0
        device_s = units * per_s
        own = rec.precision if rec.precision != precision else None
        unit_s = project_seconds(rec.flops_per_unit, rec.ops_per_unit, GPUS[gpu][own or precision] * efficiency)
        gpu_s = units * unit_s if unit_s is not None else device_s
        out.append(StageCost(rec.name, rec.unit, rec.params, rec.peak_bytes, rec.flops_per_unit, rec.seconds_per_unit,
                             rec.units_run, units, device_s / 3600, gpu_s / 3600, rec.parent, rec.timed_with_counter,
                             rec.reused_from, own, rec.ops_per_unit))
    return out


def dry_run(plan: Any, device: str, *, gpu: str = "a100", efficiency: float = DEFAULT_EFFICIENCY,
            max_units: int = 2, on_cell: Any = None, isolate: bool = False, progress_root: Path | None = None,
            notify: Any = None) -> DryRunReport:
    """Run every cell of ``plan`` (first seed) under a :class:`~harness.stages.Meter` (see the module notes).

    Args:
        plan: a :class:`harness.planning.Plan`.
        device: the resolved device (``cpu`` / ``cuda[:n]``).
        gpu: the GPU the projection is for (a key of :data:`GPUS`).
        efficiency: sustained fraction of the GPU's peak, in (0, 1].
        max_units: units each stage entry runs.
        on_cell: ``on_cell(i, n, cell)`` before each cell measured now (progress).
        isolate: run each cell in a fresh process (``spawn``; ``harness run --dry-run`` does): a cell that the
            operating system kills — the out-of-memory killer when a stage needs more memory than the machine has —
            is one failed cell naming its stage and the signal, and the other cells go on (in-process, the whole dry
            run would die with it). The meter's records travel to the child and back, so figures measured in one
            cell are still borrowed by the next.
        progress_root: where dry runs keep their progress and artefact cache (:mod:`harness.dryrun_progress`;
            default ``<harness cache>/dry-runs``): the same dry run started again after an interruption measures
            only the cells it had not (or that failed).
        notify: ``notify(line)`` for notices (cells measured earlier, progress that could not be kept) and each cell's
            projected total when it ends.

    Raises:
        ConfigError: unknown GPU or an efficiency outside (0, 1].
    """
    from .cell import cell_config, identity
    from .conditions import default_threads
    from .io import ArtifactCache, default_cache_dir

    if gpu not in GPUS:
        raise ConfigError(f"unknown GPU {gpu!r}: choose one of {', '.join(GPUS)}")
    if not 0 < efficiency <= 1:
        raise ConfigError(f"--gpu-efficiency must lie in (0, 1], got {efficiency}")
    say = notify or (lambda line: None)
    first = plan.seeds[0]
    cells = [c for c in plan.cells if c.seed == first]
    scopes = [f"{c.method} {c.pair}" for c in cells]  # the meter's scope of each cell
    progress = DryRunProgress(progress_root or default_cache_dir() / "dry-runs", {
        "cells": [identity(cell_config(plan, c, device, threads=default_threads())) for c in cells],
        "max_units": max_units, "device": device, "code": code_identity(tuple(plan.spec.plugins or ()))})
    keep = owned = progress.acquire()
    if not owned:
        say(f"another process runs this same dry run ({progress.folder}): this one keeps no progress")
    done, state, earlier_s = progress.load() if keep else ({}, None, 0.0)  # {index: (seconds, error)}
    meter = Meter(max_units, device) if state is None else meter_from(state)
    done = {i: v for i, v in done.items() if v[1] is None}  # a failed cell is measured again
    resumed = len(done)
    if resumed:
        say(f"going on with an interrupted dry run of the same cells and code: {resumed} of {len(cells)} cell(s) "
            "measured earlier (their figures and time are kept)")
    tmp, tmp_lock = scratch_folder()
    t_all = time.perf_counter()
    try:
        cache = ArtifactCache(progress.cache if keep else tmp / "cache")
        for i, cell in enumerate(cells):
            if i in done:
                continue
            if on_cell is not None:
                on_cell(i, len(cells), cell)
            scope = scopes[i]
            meter.records = {k: r for k, r in meter.records.items() if k[0] != scope}  # a failed earlier attempt's
            meter.weights.pop(scope, None)
            cell_dir = tmp / "cells" / f"{i:04d}"
            cell_dir.mkdir(parents=True)
            t0 = time.perf_counter()
            if isolate:
                meter, error = cell_in_child(plan, cell, cell_dir, device, cache.root, meter, scope)
            else:
                error = metered_cell(plan, cell, cell_dir, device, cache, meter, scope)
            done[i] = (time.perf_counter() - t0, error)
            gpu_h = sum(c.gpu_hours for c in _costs(meter, scope, gpu, plan.precision, efficiency))
            say(f"  {_hours(gpu_h)} on {gpu} projected, {done[i][0]:.0f} s here"
                + (f"; failed: {error}" if error else ""))
            if keep and (why := progress.save(done, meter_state(meter), earlier_s + time.perf_counter() - t_all)):
                say(f"{why}: an interruption from here on starts afresh")
                keep = False
            shutil.rmtree(cell_dir, ignore_errors=True)
        out = [CellCost(c.method, c.source, c.target, done[i][0],
                        _costs(meter, scopes[i], gpu, plan.precision, efficiency),
                        dict(meter.weights.get(scopes[i], {})), done[i][1]) for i, c in enumerate(cells)]
        if owned:
            progress.remove()  # ended: the next dry run measures afresh
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if tmp_lock is not None:
            tmp_lock.release()
        progress.release()
    return DryRunReport(plan.profile, plan.precision, device, gpu, efficiency, len(plan.seeds), max_units, out,
                        earlier_s + time.perf_counter() - t_all, resumed)


def _si(x: float | None, unit: str = "") -> str:
    if x is None:
        return "—"
    for f, p in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= f:
            return f"{x / f:.3g} {p}{unit}"
    return f"{x:.3g} {unit}".rstrip()


def _hours(h: float) -> str:
    """A duration given in hours, in the unit that reads best (s, min, h, d)."""
    sec = h * 3600
    if sec == 0:
        return "0"
    for limit, div, unit in ((60, 1, "s"), (3600, 60, "min"), (48 * 3600, 3600, "h")):
        if sec < limit:
            return f"{sec / div:.2g} {unit}" if sec / div < 10 else f"{sec / div:.0f} {unit}"
    return f"{sec / 86400:.3g} d"


def render(report: DryRunReport) -> Any:
    """A rich renderable: one table of stages per cell, then the totals per method (see :func:`dry_run`)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    gpu_name = f"{report.gpu.upper()} {report.precision} at {report.efficiency:.0%} of peak"
    t = Table(title=f"dry run: profile {report.profile}, measured on {report.device}, projected on {gpu_name}",
              title_justify="left", show_lines=False)
    for col, just in (("cell", "left"), ("stage", "left"), ("unit", "left"), ("params", "right"),
                      ("peak mem", "right"), ("FLOPs/unit", "right"), ("calls/unit", "right"),
                      (f"s/unit ({report.device})", "right"),
                      ("units", "right"), ("GPU time", "right")):
        t.add_column(col, justify=just)
    for c in report.cells:
        label = f"{c.method}\n{c.source}→{c.target}" + ("\n(architecture only)" if c.architecture_only else "")
        first = True
        for s in c.stages:
            t.add_row(label if first else "", ("  " if s.parent else "") + s.name + _own(s), s.unit, _si(s.params),
                      _si(s.peak_bytes, "B"), _si(s.flops_per_unit), _si(s.ops_per_unit),
                      "—" if s.seconds_per_unit is None else f"{s.seconds_per_unit:.3g}"
                      + ("*" if s.timed_with_counter else "") + ("†" if s.reused_from else ""),
                      f"{s.units:,.0f}", _hours(s.gpu_hours))
            first = False
        if c.error:
            t.add_row(label if first else "", Text(f"FAILED: {c.error}", style="red"), *[""] * 8)
        t.add_row("", Text("cell total", style="bold"), *[""] * 7, Text(_hours(c.gpu_hours), style="bold"),
                  end_section=True)
    m = Table(title=f"per method (× {report.seeds} seed(s)), projected on {gpu_name}", title_justify="left")
    for col in ("method", "GPU time", "largest stage", "its GPU time", f"time on {report.device}"):
        m.add_column(col, justify="left" if col in ("method", "largest stage") else "right")
    for name, tot in report.method_totals().items():
        m.add_row(name, _hours(tot["gpu_hours"]), tot["largest_stage"] or "—", _hours(tot["largest_gpu_hours"]),
                  _hours(tot["device_hours"]))
    m.add_row(Text("matrix", style="bold"), Text(_hours(report.gpu_hours), style="bold"), "", "", "")
    notes = Text(f"{len(report.cells)} cell(s) dry-run in {report.seconds:.0f} s, {report.max_units} unit(s) per "
                 f"stage; * timed with the FLOP counter on (one unit ran); † figures of the same stage in another "
                 f"cell (its work was cached); [fp16]: projected at that precision's peak; stages without FLOPs are "
                 f"counted at this machine's time. GPU peak "
                 f"{_si(GPUS[report.gpu][report.precision], 'FLOP/s')} ({report.precision}, dense datasheet figure), "
                 f"efficiency {report.efficiency} (--gpu-efficiency); {_per_call(report)}.", style="dim")
    return Group(t, m, notes)


def _per_call(report: DryRunReport) -> str:
    if report.op_seconds is None:
        return "FLOPs only (a dry run made before operator calls were counted)"
    return f"at least {report.op_seconds * 1e6:.0f} µs per operator call of a unit (calls/unit; measured on an H200)"


def _own(s: StageCost) -> str:
    return f" [{s.precision}]" if s.precision else ""


def markdown(report: DryRunReport) -> str:
    """The report as Markdown (the ``leaderboards/`` cost table): per method the projected GPU-hours and largest
    stage, then every stage of every cell."""
    gpu = f"{report.gpu.upper()} {report.precision}, {report.efficiency:.0%} of the dense peak " \
          f"{_si(GPUS[report.gpu][report.precision], 'FLOP/s')}; {_per_call(report)}"
    out = [f"Projected on {gpu}; measured on {report.device}, {report.max_units} unit(s) per stage, "
           f"{len(report.cells)} cell(s) in {report.seconds:.0f} s; × {report.seeds} seed(s).", "",
           f"| method | GPU time ({report.gpu.upper()}) | largest stage | its GPU time | time on {report.device} "
           f"| weights |", "|---|---:|---|---:|---:|---|"]
    arch = {c.method for c in report.cells if c.architecture_only}
    for name, tot in report.method_totals().items():
        out.append(f"| {name} | {_hours(tot['gpu_hours'])} | {tot['largest_stage'] or '—'} | "
                   f"{_hours(tot['largest_gpu_hours'])} | {_hours(tot['device_hours'])} | "
                   f"{'architecture only' if name in arch else 'released / none needed'} |")
    out += [f"| **matrix** | **{_hours(report.gpu_hours)}** | | | | |", "",
            "| cell | stage | unit | params | peak mem | FLOPs/unit | calls/unit | s/unit | units | GPU time |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in report.cells:
        label = f"{c.method} {c.source}→{c.target}"
        for s in c.stages:
            sec = "—" if s.seconds_per_unit is None else f"{s.seconds_per_unit:.3g}" + (
                "*" if s.timed_with_counter else "") + ("†" if s.reused_from else "")
            out.append(f"| {label} | {'↳ ' if s.parent else ''}{s.name}{_own(s)} | {s.unit} | {_si(s.params)} | "
                       f"{_si(s.peak_bytes, 'B')} | {_si(s.flops_per_unit)} | {_si(s.ops_per_unit)} | {sec} | "
                       f"{s.units:,.0f} | "
                       f"{_hours(s.gpu_hours)} |")
        if c.error:
            out.append(f"| {label} | FAILED: {c.error} | | | | | | | | |")
        if c.weights:
            out.append(f"| {label} | weights: " + "; ".join(f"{k}: {v}" for k, v in c.weights.items())
                       + " | | | | | | | | |")
    out += ["", "\\* timed with the FLOP counter on (one unit ran); † figures borrowed from the same stage in "
            "another cell (same cost key, or its work cached there); ↳ nested in the stage above; [fp16]: "
            "projected at that precision's peak (the component runs so on a GPU whatever the run's)."]
    return "\n".join(out) + "\n"


__all__ = ["dry_run", "render", "markdown", "report_from_dict", "project_seconds", "DryRunReport", "CellCost",
           "StageCost", "GPUS", "DEFAULT_EFFICIENCY", "GPU_OP_SECONDS"]
