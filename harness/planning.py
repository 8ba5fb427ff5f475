"""Planning a run: parse and validate the whole matrix before any work (docs/design.md §8).

:func:`plan_run` resolves every name, parses every method's options for the profile into its strategy's options
dataclass (:mod:`harness.options`), checks the component references in them, validates seeds and opens every
dataset — and reports **all** problems in one :class:`~harness.errors.ConfigError`.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from .errors import ConfigError, HarnessError, UnknownNameError

_ARROW = re.compile(r"\s*(?:→|->)\s*")
#: seeds are 32-bit unsigned (numpy's and torch's seeding take them whole)
SEED_LIMIT = 2**32


def _parse_pairs(matrix: str | Iterable[str] | Iterable[tuple[str, str]]
                 ) -> tuple[list[tuple[str, str]], list[str]]:
    """(pairs, problems): every well-formed pair (duplicates dropped), and one message per malformed entry."""
    items: list[Any] = [p for p in matrix.split(",") if p.strip()] if isinstance(matrix, str) else list(matrix)
    pairs: list[tuple[str, str]] = []
    problems: list[str] = []
    for item in items:
        if isinstance(item, str):
            sides = _ARROW.split(item.strip())
            if len(sides) != 2 or not all(s.strip() for s in sides):
                problems.append(f"bad matrix entry {item.strip()!r} (expected SOURCE→TARGET or SOURCE->TARGET)")
                continue
            pair = (sides[0].strip(), sides[1].strip())
        else:
            pair = (str(item[0]).strip(), str(item[1]).strip())
        if pair not in pairs:
            pairs.append(pair)
    if not items:
        problems.append("empty matrix: give at least one SOURCE→TARGET pair, e.g. --matrix 'SHA→SHB'")
    return pairs, problems


def _resolve_pairs(matrix, registries: Any) -> tuple[list[tuple[str, str]], list[str]]:
    pairs, problems = _parse_pairs(matrix)
    out: list[tuple[str, str]] = []
    for src, tgt in pairs:
        if registries is not None:
            resolved = []
            for name in (src, tgt):
                try:
                    resolved.append(registries.datasets.resolve(name))
                except UnknownNameError as exc:
                    if str(exc) not in problems:
                        problems.append(str(exc))
            if len(resolved) != 2:
                continue
            src, tgt = resolved
        if (src, tgt) not in out:
            out.append((src, tgt))
    return out, problems


def parse_matrix(matrix: str | Iterable[str] | Iterable[tuple[str, str]], registries: Any = None
                 ) -> list[tuple[str, str]]:
    """Parse ``"SHA→SHB, SHB->SHA"`` into ``[("SHA", "SHB"), ("SHB", "SHA")]`` (what ``harness run`` uses).

    Both arrows (``→`` and ``->``) are accepted, with or without spaces; pairs are separated by commas.
    Already-split pairs pass through. With ``registries``, names (and aliases) are resolved to the registered
    dataset names. Duplicate pairs are dropped (first kept).

    Raises:
        ConfigError: every malformed entry and (with ``registries``) every unknown dataset, in one message.
    """
    pairs, problems = _resolve_pairs(matrix, registries)
    if problems:
        raise ConfigError("; ".join(problems))
    return pairs


def parse_list(value: str | Iterable[str]) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (duplicates dropped); lists pass through."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for v in items:
        v = str(v).strip()
        if v and v not in out:
            out.append(v)
    return out


def parse_seeds(seeds: str | Iterable[int]) -> tuple[list[int], list[str]]:
    """``(seeds, problems)``: integers ``0 <= seed < 2**32`` (numpy and torch take them whole), duplicates dropped."""
    out, problems = [], []
    for s in (parse_list(seeds) if isinstance(seeds, str) else list(seeds)):
        try:
            value = int(str(s).strip())
        except (TypeError, ValueError):
            problems.append(f"seed {s!r} is not an integer (use e.g. --seeds 0,1,2)")
            continue
        if not 0 <= value < SEED_LIMIT:
            problems.append(f"seed {value} is out of range: seeds are integers 0 <= seed < 2**32 ({SEED_LIMIT})")
            continue
        if value not in out:
            out.append(value)
    if not out and not problems:
        problems.append("no seeds given (use e.g. --seeds 0,1,2)")
    return out, problems


@dataclass(frozen=True)
class Cell:
    """One unit of work: ``method`` evaluated on ``source→target`` with ``seed``.

    ``limit_test``: evaluate on the first N test images only (None = the whole evaluation split); part of the
    cell's identity and of its directory name (``seed-0-n20``).
    """

    method: str
    source: str
    target: str
    seed: int
    limit_test: int | None = None

    @property
    def pair(self) -> str:
        return f"{self.source}→{self.target}"

    @property
    def seed_dir(self) -> str:
        return f"seed-{self.seed}" + (f"-n{self.limit_test}" if self.limit_test else "")

    @property
    def relpath(self) -> Path:
        """``<method>/<source>→<target>/seed-<k>[-n<N>]``, always three plain folder names below the run folder.

        Raises:
            ConfigError: a name that would leave the run folder (registration refuses such names already)."""
        parts = (self.method, self.pair, self.seed_dir)
        if any(p in ("", ".", "..") or "/" in p or "\\" in p or p.startswith("..") for p in parts):
            raise ConfigError(f"cell {self} would not be a folder inside the run folder: component names may not "
                              f"contain path separators or '..'")
        return Path(*parts)

    def __str__(self) -> str:
        return f"{self.method} {self.pair} {self.seed_dir}"


@dataclass(frozen=True)
class RunSpec:
    """What a run asks for, before anything is checked: names, numbers and paths only (frozen, hashable and
    picklable: it is what the driver sends to every Ray or Slurm worker, which plans it again).

    ``matrix``: ``"SHA→SHB,SHB->SHA"`` or ``(source, target)`` pairs; ``methods``: ``"a,b"`` or names; ``seeds``:
    ``"0,1"`` or ints. ``command``: the command line that made the run (recorded in each cell's ``config.json``);
    ``workers``: image-decoding worker processes (``--workers``); ``plugins``: extra plugin modules (``--plugin``),
    loaded by every worker too; ``trackers`` / ``tracker_dir``: experiment trackers of every cell
    (:mod:`harness.tracking`; default folder ``<out>/trackers``). Lists are stored as tuples. :meth:`plan` validates it
    into a :class:`Plan`."""

    matrix: str | tuple[tuple[str, str], ...]
    methods: str | tuple[str, ...]
    seeds: str | tuple[int, ...] = (0,)
    profile: str = "smoke"
    data_root: str | None = None
    limit_test: int | None = None
    precision: str = "fp32"
    command: str | None = None
    workers: int = 0
    plugins: tuple[str, ...] = ()
    trackers: tuple[str, ...] = ()
    tracker_dir: str | None = None

    def __post_init__(self):
        def frozen(v):
            return v if isinstance(v, str) else tuple(tuple(x) if isinstance(x, list) else x for x in v)
        object.__setattr__(self, "matrix", frozen(self.matrix))
        object.__setattr__(self, "methods", frozen(self.methods))
        object.__setattr__(self, "seeds", frozen([self.seeds] if isinstance(self.seeds, int) else self.seeds))
        object.__setattr__(self, "plugins", tuple(self.plugins))
        object.__setattr__(self, "trackers", tuple(self.trackers))
        if self.data_root is not None:
            object.__setattr__(self, "data_root", os.fspath(self.data_root))

    def plan(self, registries: Any = None) -> "Plan":
        """Validate everything and return the :class:`Plan` (see :func:`plan_run`).

        Raises:
            ConfigError: ONE error listing every problem found."""
        return _plan(self, registries)


@dataclass(frozen=True)
class Plan:
    """A validated run: every name resolved, every option parsed, every dataset opened, nothing computed yet.
    Immutable once :meth:`RunSpec.plan` built it.

    ``spec``: the run's :class:`RunSpec` in canonical form (method names resolved, pairs and seeds as tuples);
    ``strategy_options[method]``: the method's parsed options dataclass for the profile; ``datasets[name]``: the open
    datasets. The spec's fields are readable on the plan (``plan.profile``, ``plan.precision``, ...)."""

    cells: tuple[Cell, ...]
    spec: RunSpec
    registries: Any
    datasets: dict[str, Any] = field(default_factory=dict)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    #: data fingerprints computed so far (harness.cell.plan_fingerprints): a memo, not part of the plan's value
    fingerprints: dict = field(default_factory=dict, compare=False, repr=False)

    matrix = property(lambda self: list(self.spec.matrix), doc="``(source, target)`` pairs, canonical names")
    methods = property(lambda self: list(self.spec.methods), doc="canonical method names")
    seeds = property(lambda self: list(self.spec.seeds))
    profile = property(lambda self: self.spec.profile)
    data_root = property(lambda self: Path(self.spec.data_root).expanduser() if self.spec.data_root else None)
    limit_test = property(lambda self: self.spec.limit_test)
    precision = property(lambda self: self.spec.precision)
    command = property(lambda self: self.spec.command)
    workers = property(lambda self: self.spec.workers)
    plugins = property(lambda self: self.spec.plugins)

    def options(self, method: str) -> dict:
        """The method's raw options for the profile (as registered; recorded in ``config.json``)."""
        return self.registries.methods.get(method).options(self.profile)


def method_options(registries: Any, method: str, profile: str) -> tuple[Any, list[str]]:
    """``(parsed options, problems)`` of a method's profile: parsed into its strategy's options dataclass, and its
    component references checked against the registries."""
    from .options import component_refs, parse

    spec = registries.methods.get(method)
    if spec.strategy not in registries.strategies:
        return None, [f"method {spec.name!r} uses an unknown strategy: " + _unknown(registries.strategies,
                                                                                   spec.strategy)]
    if profile not in spec.profiles:
        return None, [f"method {spec.name!r} has no profile {profile!r}; it has: "
                      f"{', '.join(sorted(spec.profiles)) or '(none)'}"]
    strategy = registries.strategies.get(spec.strategy)
    obj, problems = parse(strategy.options, spec.profiles[profile], f"method {spec.name!r} ({profile})")
    for path, kind, ref in (component_refs(obj) if obj is not None else []):
        if ref not in registries.by_kind(kind):
            problems.append(f"method {spec.name!r} option {path}={ref!r}: " + _unknown(registries.by_kind(kind), ref))
    return obj, problems


def resolved_options(registries: Any, method: str, profile: str) -> dict:
    """What a method's profile resolves to, before any GPU hour: ``{"method", "strategy", "profile", "description",
    "options": [{"key", "value", "source"}]}`` with every leaf of the parsed options dataclass under its dotted key
    and where its value came from: ``"profile"`` (set by the method's profile) or ``"default"`` (the strategy's
    options dataclass). (``harness run`` takes no per-option overrides: a changed value is a new method or profile.)

    Raises:
        UnknownNameError: no such method (with "did you mean").
        ConfigError: the profile does not exist or does not parse (every problem in one message)."""
    from .options import to_dict

    spec = registries.methods.get(method)
    obj, problems = method_options(registries, spec.name, profile)
    if problems:
        raise ConfigError("; ".join(problems))
    given = set(_leaves(spec.profiles[profile]))
    rows = [{"key": k, "value": v, "source": "profile" if k in given or any(g.startswith(k + ".") for g in given)
             else "default"} for k, v in _leaves(to_dict(obj)).items()]
    return {"method": spec.name, "strategy": spec.strategy, "profile": profile, "description": spec.description,
            "options": rows}


def _leaves(d: Any, prefix: str = "") -> dict:
    """``{"a.b": value}`` of a nested dict's leaves (lists are leaves)."""
    if not isinstance(d, dict) or (prefix and not d):
        return {prefix: d}
    out: dict = {}
    for k, v in d.items():
        out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _open_datasets(names: list[str], root: Path | None, registries: Any) -> tuple[dict, list[str]]:
    datasets, problems = {}, []
    if root is not None and not root.is_dir() and any(registries.datasets.get(n).needs_root for n in names):
        return {}, [f"data root {str(root)!r} is not a folder: pass --data-root (or set HARNESS_DATA) to the folder "
                    f"that holds the datasets' folders (e.g. ShanghaiTech/)"]
    for name in names:
        spec = registries.datasets.get(name)
        if spec.needs_root and root is None:
            problems.append(f"dataset {name!r} needs a data root: pass --data-root PATH or set HARNESS_DATA")
            continue
        try:
            ds = spec.factory(root)
            from .types import eval_split

            split = eval_split(ds)
            n_eval = len(ds.samples(split))
        except HarnessError as exc:
            problems.append(f"dataset {name!r}: {exc}")
            continue
        except Exception as exc:  # a reader bug must still not hide the other problems
            problems.append(f"dataset {name!r} failed to open under {root}: {type(exc).__name__}: {exc}")
            continue
        if n_eval == 0:
            problems.append(f"dataset {name!r} has no {split} images under {root}; check the data root")
            continue
        datasets[name] = ds
    return datasets, problems


def plan_run(matrix: str | Iterable, methods: str | Iterable[str], seeds: str | Iterable[int] = (0,),
             profile: str = "smoke", registries: Any = None, data_root: str | os.PathLike | None = None,
             limit_test: int | None = None, precision: str = "fp32", *, command: str | None = None,
             workers: int = 0, plugins: Iterable[str] = ()) -> Plan:
    """Validate a whole run before any work and return its :class:`Plan`: ``RunSpec(...).plan(registries)``.

    Args:
        matrix: ``"SHA→SHB,SHB->SHA"`` or a list of ``(source, target)`` pairs.
        methods: ``"a,b"`` or a list of method names (aliases allowed).
        seeds: ``"0,1,2"`` or a list of ints, each ``0 <= seed < 2**32``.
        profile: ``"smoke"`` or ``"paper"`` (any profile every method defines).
        registries: :class:`harness.plugins.Registries` (default: the process-wide ones).
        data_root: folder holding the datasets' own folders; needed only by datasets with ``needs_root``.
        limit_test: evaluate on the first N images of the evaluation split only (None: all).
        precision: ``fp32`` | ``bf16`` | ``fp16`` (training and inference).
        command: the command line recorded on the plan's :class:`RunSpec` (see there).
        workers: image-decoding worker processes per cell (recorded on the :class:`RunSpec`).
        plugins: plugin modules loaded with ``--plugin`` (recorded on the :class:`RunSpec`; workers import them).

    Raises:
        ConfigError: ONE error listing every problem found (``"; "``-separated).
    """
    return RunSpec(matrix, methods, seeds, profile, data_root or None, limit_test, precision, command,
                   int(workers or 0), tuple(plugins)).plan(registries)


def _plan(spec: RunSpec, registries: Any) -> Plan:
    from .training.loop import PRECISIONS

    matrix, methods, seeds, profile = spec.matrix, spec.methods, spec.seeds, spec.profile
    limit_test, precision = spec.limit_test, spec.precision
    if registries is None:
        from .plugins import get_registries
        registries = get_registries()
    pairs, problems = _resolve_pairs(matrix, registries)
    method_names: list[str] = []
    parsed: dict[str, Any] = {}
    names = parse_list(methods)
    if not names:
        problems.append("no methods given: pass --methods NAME[,NAME...] (see `harness plugins`)")
    for name in names:
        try:
            method = registries.methods.get(name)
        except UnknownNameError as exc:
            problems.append(str(exc))
            continue
        if method.name in method_names:
            continue
        method_names.append(method.name)
        parsed[method.name], found = method_options(registries, method.name, profile)
        problems += found
    seed_list, seed_problems = parse_seeds(seeds)
    problems += seed_problems
    if limit_test is not None and (isinstance(limit_test, bool) or int(limit_test) < 1):
        problems.append(f"--limit-test must be a positive number of images, got {limit_test}")
    if precision not in PRECISIONS:
        problems.append(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    root = Path(spec.data_root).expanduser() if spec.data_root else None
    datasets, found = _open_datasets(list(dict.fromkeys(n for pair in pairs for n in pair)), root, registries)
    problems += found
    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the run configuration: " + "; ".join(problems))
    limit = int(limit_test) if limit_test else None
    cells = [Cell(m, s, t, seed, limit) for m in method_names for (s, t) in pairs for seed in seed_list]
    canonical = replace(spec, matrix=tuple(pairs), methods=tuple(method_names), seeds=tuple(seed_list), limit_test=limit)
    return Plan(cells=tuple(cells), spec=canonical, registries=registries, datasets=datasets, strategy_options=parsed)


def _unknown(registry: Any, name: str) -> str:
    try:
        registry.entry(name)
    except UnknownNameError as exc:
        return str(exc)
    return f"{name!r}"


__all__ = ["Cell", "Plan", "RunSpec", "parse_matrix", "parse_list", "parse_seeds", "plan_run", "method_options", "resolved_options",
           "SEED_LIMIT"]
