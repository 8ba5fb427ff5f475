"""Stages of a cell and what one unit of each costs: the meter behind ``harness run --dry-run`` (docs/design.md §14).

A *stage* is one kind of repeated work of a method — the optimiser steps of one training, the denoising steps of a
generator, the images an annotator labels, the test images a counter predicts — and a *unit* is one repetition.
Core loops (:func:`harness.training.loop.train`, :func:`harness.synthetic_pool.generate_cached` and the annotation
of a pool, :func:`harness.evaluation.evaluate_counter`, the Stable Diffusion generator) and the plugins' own loops
declare their stages here::

    with stage("train: density", units=cfg.steps, unit="optimiser step", params=count_params(model)) as st:
        for step in range(cfg.steps):
            with st.unit():
                ...one optimiser step...
            if st.done:
                break

Outside a dry run :func:`stage` returns a do-nothing stage (``done`` is always False) and costs one context-variable
lookup. Inside one (a :class:`Meter` made active with :func:`metering`), the meter

- stops every loop after ``max_units`` units (each entry runs at least one: later stages need its output, except
  a stage whose ``key`` another cell already measured, which runs none and borrows those figures);
- counts the FLOPs and ATen operator calls of the first unit of each stage (:mod:`harness.meter_count`; forward
  and backward; that unit also warms up) and times the others without it (``seconds_per_unit``; a stage that ran
  a single unit is timed with the counter on, ``timed_with_counter``; on a GPU, clocks read after synchronising);
- records peak memory while the stage runs: CUDA peak allocated on a GPU, resident-set growth over the stage's
  start on CPU (sampled every 5 ms from ``/proc/self/statm``; elsewhere ``ru_maxrss``);
- attributes nested stages (a sampler's denoising steps inside the evaluation of one test image) to themselves:
  a unit's own time and FLOPs exclude its nested stages', and the nested stage's full count is derived from its
  parent's (:meth:`Meter.full_units`).

A stage declares ``units``: how many units this *entry* would run without the dry run (e.g. ``cfg.steps``, or the
denoising steps of one image). Entries of the same stage name add up (a training run per self-training cycle).
"""
from __future__ import annotations

import contextlib
import contextvars
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterator

from .meter_memory import PeakMemory

__all__ = ["stage", "metering", "Meter", "StageRecord", "count_params", "params_of", "note_weights", "active_meter"]

_METER: contextvars.ContextVar["Meter | None"] = contextvars.ContextVar("harness_meter", default=None)


def active_meter() -> "Meter | None":
    """The meter of the dry run in progress in this context, or None (a real run)."""
    return _METER.get()


def count_params(*modules: Any) -> int:
    """Number of parameters of torch modules (shared parameters counted once)."""
    seen, n = set(), 0
    for m in modules:
        for p in getattr(m, "parameters", lambda: [])() if m is not None else ():
            if id(p) not in seen:
                seen.add(id(p))
                n += int(p.numel())
    return n


def params_of(obj: Any, depth: int = 3) -> int | None:
    """Parameters of a component: the torch module it is, the modules it holds as attributes, or those of its
    ``model`` / ``counter`` / ``net`` (searched ``depth`` levels deep); None when there is none."""
    if obj is None or depth < 0:
        return None
    if callable(getattr(obj, "parameters", None)) and hasattr(obj, "state_dict"):
        return count_params(obj)
    held = [v for v in getattr(obj, "__dict__", {}).values()
            if callable(getattr(v, "parameters", None)) and hasattr(v, "state_dict")]
    if held:  # the torch modules it holds (e.g. RDBT's R, D and Φ)
        return count_params(*held)
    for attr in ("model", "counter", "net"):
        n = params_of(getattr(obj, attr, None), depth - 1)
        if n:
            return n
    return None


def note_weights(component: str, weights: str) -> None:
    """Record how a component's weights were obtained in the dry run in progress (``"architecture only"`` when its
    pretrained weights did not resolve and it runs with random weights of the same architecture); no-op otherwise."""
    m = _METER.get()
    if m is not None:
        m.weights.setdefault(m.scope, {})[component] = weights


def architecture_only(component: str, exc: BaseException) -> None:
    """A component's weights did not resolve (``exc``, usually a :class:`harness.WeightsError`): in a dry run, record
    it as "architecture only" (the caller goes on with random weights of the same architecture, same cost);
    otherwise re-raise ``exc``.

    Raises:
        the given ``exc`` when no dry run is in progress.
    """
    if _METER.get() is None:
        raise exc
    note_weights(component, f"architecture only ({str(exc).split(':')[0]})")


@dataclass
class StageRecord:
    """What the meter measured of one stage in one scope (a dry-run cell).

    Attributes:
        scope: the cell (``"method SRC→TGT"``) the stage ran in.
        name: the stage (``"train: density"``, ``"generate: U-Net step"``...).
        unit: what one unit is (``"optimiser step"``, ``"image"``...).
        parent: the stage whose unit the first entry of this one ran inside (nested), or None.
        entries: times the stage was entered; units_declared: units all entries would run in full.
        units_run: units that ran; parent_units_run: units of the parent that had run when this stage was last left.
        flops_per_unit: FLOPs of the first unit (own work, nested stages excluded); None: none measured.
        ops_per_unit: ATen operator calls of that unit (own work; :mod:`harness.meter_count`), or None.
        seconds_per_unit: mean own wall time of the units timed without the FLOP counter (else of the counted one).
        timed_with_counter: True when only the FLOP-counted unit could be timed.
        peak_bytes: CUDA peak allocated (GPU) or resident-set growth (CPU) while the stage ran, bytes.
        params: parameters of the modules the stage runs (declared by the stage).
        key: the stage's identity for reuse across cells (e.g. a generator's key), or None.
        reused_from: the scope whose per-unit figures were reused (cached work in this scope), or None.
        precision: the stage's GPU precision when fixed by its component (Stable Diffusion: fp16), or None.
    """

    scope: str
    name: str
    unit: str
    parent: str | None = None
    entries: int = 0
    units_declared: float = 0.0
    units_run: int = 0
    parent_units_run: int = 0
    flops_per_unit: float | None = None
    ops_per_unit: int | None = None
    seconds_per_unit: float | None = None
    timed_with_counter: bool = False
    peak_bytes: int = 0
    params: int | None = None
    key: str | None = None
    reused_from: str | None = None
    precision: str | None = None
    _timed: list = field(default_factory=list, repr=False)
    _counted_s: float | None = field(default=None, repr=False)

    def finish(self) -> None:
        """Settle ``seconds_per_unit`` from the timed units."""
        if self._timed:
            self.seconds_per_unit, self.timed_with_counter = sum(self._timed) / len(self._timed), False
        elif self._counted_s is not None:
            self.seconds_per_unit, self.timed_with_counter = self._counted_s, True

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if not k.startswith("_")}


class _Unit:
    """An open unit: its start, and its nested stages' time and FLOPs (subtracted from its own)."""

    __slots__ = ("child_s", "child_flops", "child_ops", "stage")

    def __init__(self, stage: "_Stage"):
        self.child_s, self.child_flops, self.child_ops, self.stage = 0.0, 0.0, 0, stage


class Meter:
    """Measures the stages of the cells of a dry run (see the module notes).

    Args:
        max_units: units each stage entry runs before ``done`` (>= 1).
        device: ``"cpu"`` or ``"cuda[:n]"`` (how memory is measured).
    """

    def __init__(self, max_units: int = 2, device: str = "cpu"):
        if int(max_units) < 1:
            raise ValueError(f"max_units must be >= 1, got {max_units!r}")
        self.max_units = int(max_units)
        self.scope = ""
        self.records: dict[tuple[str, str], StageRecord] = {}
        self.weights: dict[str, dict[str, str]] = {}
        self.artefacts: dict[str, tuple[str, list[str]]] = {}  # cached fit -> (scope, stages its creation ran)
        self.memory = PeakMemory(device)
        self.device = device
        self.trace: Any = None  # a pathlib.Path holding the name of the stage being run (set per isolated cell)
        self._units: list[_Unit] = []
        self._counter: Any = None  # the UnitCounter in force (opened by the outermost counting unit)

    def record(self, name: str, unit: str) -> StageRecord:
        """The record of stage ``name`` entered now in this scope; under another parent than its first entry's it
        is ``"<name> (in <parent>)"``, counted apart (SYRAC's generator: the noisy set, and per real image)."""
        parent = self._units[-1].stage.rec.name if self._units else None
        rec = self.records.get((self.scope, name))
        if rec is not None and rec.parent != parent:
            name = f"{name} (in {parent or 'the cell'})"
            rec = self.records.get((self.scope, name))
        if self.trace is not None:  # the stage in progress, for a parent process that outlives this one
            self.trace.write_text(name)
        if rec is None:
            rec = self.records[(self.scope, name)] = StageRecord(self.scope, name, unit, parent=parent)
        return rec

    def names(self) -> set[str]:
        """Stage names recorded so far in the current scope."""
        return {r.name for r in self.scope_records(self.scope)}

    def artefact(self, path: str, before: set[str], hit: bool) -> None:
        """A cached artefact (``CellContext.cached_fit``) was made or found in the current scope: when made, remember
        the stages its creation ran (those new since ``before``); when found, made by another cell of this dry run,
        copy those stages into this scope (figures borrowed), so a cached fit does not hide its cost."""
        if not hit:
            self.artefacts[path] = (self.scope, sorted(self.names() - before))
            return
        made = self.artefacts.get(path)
        if made is None or made[0] == self.scope:
            return
        src, names = made
        for name in names:
            rec = self.records.get((src, name))
            if rec is not None and (self.scope, name) not in self.records:
                self.records[(self.scope, name)] = replace(rec, scope=self.scope, reused_from=src,
                                                           _timed=list(rec._timed))

    def scope_records(self, scope: str) -> list[StageRecord]:
        return [r for (s, _), r in self.records.items() if s == scope]

    def full_units(self, rec: StageRecord) -> float:
        """Units the stage runs in the full profile: its declared units; for a nested stage, the declared units per
        entry × entries per parent unit × the parent's full units."""
        if rec.parent is None:
            return rec.units_declared
        parent = self.records.get((rec.scope, rec.parent))
        if parent is None or not rec.entries or not rec.parent_units_run:
            return rec.units_declared
        per_entry = rec.units_declared / rec.entries
        return per_entry * (rec.entries / rec.parent_units_run) * self.full_units(parent)


class _Stage:
    """One entry of a stage (see :func:`stage`)."""

    def __init__(self, meter: Meter, rec: StageRecord, units: float):
        self.meter, self.rec, self.run = meter, rec, 0
        self.limit = max(1, min(meter.max_units, int(units) if units else 1))

    @property
    def done(self) -> bool:
        return self.run >= self.limit

    def set_params(self, n: int | None) -> None:
        """The stage's parameter count, when its model is built after the stage began (lazily)."""
        if n:
            self.rec.params = max(self.rec.params or 0, int(n))

    @contextlib.contextmanager
    def unit(self) -> Iterator[None]:
        m, rec = self.meter, self.rec
        me = _Unit(self)
        suspended = m._counter if rec.flops_per_unit is not None else None
        if suspended is not None:  # FLOPs known: time this unit without the enclosing unit's counter
            m._counter = None
            suspended.__exit__(None, None, None)
        counting_here = m._counter is None and rec.flops_per_unit is None
        if counting_here:
            from .meter_count import UnitCounter

            m._counter = UnitCounter().__enter__()
        counter = m._counter
        c0 = counter.totals() if counter is not None else (0, 0)
        m._units.append(me)
        if m.trace is not None:
            m.trace.write_text(rec.name)
        m.memory.sync()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            m.memory.sync()
            total_s = time.perf_counter() - t0
            m._units.pop()
            if m.trace is not None and m._units:
                m.trace.write_text(m._units[-1].stage.rec.name)
            flops, ops = (a - b for a, b in zip(counter.totals(), c0)) if counter is not None else (0, 0)
            if counting_here:
                counter.__exit__(None, None, None)
                m._counter = None
            if suspended is not None:
                m._counter = suspended.__enter__()
            own_s = max(0.0, total_s - me.child_s)
            if counter is None:
                rec._timed.append(own_s)
            elif rec._counted_s is None:
                rec._counted_s = own_s
            if counter is not None and rec.flops_per_unit is None:
                rec.flops_per_unit = float(max(0.0, flops - me.child_flops))
                rec.ops_per_unit = max(0, ops - me.child_ops)
            if m._units:
                m._units[-1].child_s += total_s
                m._units[-1].child_flops += float(flops)
                m._units[-1].child_ops += ops
            self.run += 1
            rec.units_run += 1


class _NoStage:
    """The stage outside a dry run: nothing measured, never done."""

    done = False
    run = 0

    @staticmethod
    def unit():
        return contextlib.nullcontext()

    @staticmethod
    def set_params(n) -> None:
        return None


_NO_STAGE = _NoStage()


@contextlib.contextmanager
def stage(name: str, *, units: float, unit: str = "unit", params: int | None = None, key: Any = None,
          max_units: int | None = None, per_cell: bool = False, precision: str | None = None) -> Iterator[Any]:
    """Declare a stage (see the module notes) and yield its handle (``.unit()``, ``.done``).

    Args:
        name: the stage's name in the dry-run table (``"<what>: <which>"``, e.g. ``"train: density"``).
        units: units this entry runs in full (e.g. ``cfg.steps``; >= 0).
        unit: what one unit is (``"optimiser step"``, ``"image"``, ``"U-Net step"``...).
        params: parameters of the modules the stage runs (:func:`count_params`).
        key: the stage's cost identity across cells (a JSON-ready value: what fixes the work of one unit, e.g. a
            generator's key, or a network's configuration and batch shape). A stage whose key another cell of the
            dry run measured runs no unit (``done`` at once; the loop must cope) and borrows that cell's figures;
            one whose work was cached does the same.
        max_units: a lower cap than the meter's for this stage (e.g. 1 generated image).
        per_cell: the units are a budget of the stage in the cell, not of each entry: once spent, later entries run
            none (for loops that cope with no unit, e.g. a sampler entered once per validation image).
        precision: the precision the stage's component runs at on a GPU whatever the run's (projected at its peak).
    """
    m = _METER.get()
    if m is None:
        yield _NO_STAGE
        return
    rec = m.record(name, unit)
    rec.entries += 1
    rec.units_declared += float(units)
    if params is not None:
        rec.params = max(rec.params or 0, int(params))
    rec.precision = precision or rec.precision
    if key is not None and rec.key is None:
        import json

        rec.key = json.dumps(key, sort_keys=True, default=str)
    st = _Stage(m, rec, units)
    if max_units is not None:
        st.limit = max(1, min(st.limit, int(max_units)))
    if per_cell:
        st.limit = max(0, st.limit - (rec.units_run if rec.entries > 1 else 0))
    if rec.key is not None and any(o.key == rec.key and o.name == rec.name and o.units_run and o.scope != m.scope
                                   and not o.reused_from for o in m.records.values()):
        st.limit = 0  # measured in another cell of this dry run: its figures are borrowed (_reuse)
    base, saved = m.memory.begin()
    try:
        yield st
    finally:
        rec.peak_bytes = max(rec.peak_bytes, m.memory.end(base, saved))
        parent = m._units[-1].stage.rec if m._units else None
        if parent is not None and parent.name == rec.parent:
            rec.parent_units_run = parent.units_run + 1  # the parent's unit in progress counts
        rec.finish()


@contextlib.contextmanager
def metering(meter: Meter, scope: str) -> Iterator[Meter]:
    """Make ``meter`` the active meter of this context for one scope (a dry-run cell)."""
    meter.scope = scope
    token = _METER.set(meter)
    meter.memory.start()
    try:
        yield meter
    finally:
        meter.memory.stop()
        meter.memory = PeakMemory("cuda" if meter.memory.cuda else "cpu")
        _METER.reset(token)
        for rec in meter.scope_records(scope):
            rec.finish()
        _reuse(meter, scope)


def _reuse(meter: Meter, scope: str) -> None:
    """Keyed stages of ``scope`` take the per-unit figures of the first cell of the dry run that measured the same
    stage with the same key (whether this cell ran units or found the work cached), with the stages nested in it
    there; the first measurement of a key is the one reported."""
    for rec in list(meter.scope_records(scope)):
        if rec.key is None:
            continue
        for other in meter.records.values():
            if other.scope == scope:
                break  # only earlier cells
            if other.key == rec.key and other.name == rec.name and other.units_run and not other.reused_from:
                rec.flops_per_unit, rec.seconds_per_unit = other.flops_per_unit, other.seconds_per_unit
                rec.ops_per_unit = other.ops_per_unit
                rec.timed_with_counter, rec.peak_bytes = other.timed_with_counter, other.peak_bytes
                rec.params, rec.reused_from = other.params or rec.params, other.scope
                _borrow_nested(meter, scope, other)
                break


def _borrow_nested(meter: Meter, scope: str, parent: StageRecord) -> None:
    """Copy into ``scope`` the stages nested in ``parent`` (measured in ``parent.scope``) that ``scope`` lacks."""
    for child in [r for r in meter.scope_records(parent.scope) if r.parent == parent.name]:
        if (scope, child.name) not in meter.records:
            meter.records[(scope, child.name)] = replace(child, scope=scope, reused_from=child.scope,
                                                         _timed=list(child._timed))
            _borrow_nested(meter, scope, child)
