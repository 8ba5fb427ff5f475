"""Matrix planning and execution: run directories, resume, failure isolation (DESIGN.md §5).

A *run* evaluates methods on a matrix of ``source→target`` dataset pairs over several seeds. Each *cell*
(method, source→target, seed) lives in its own directory::

    <out>/<method>/<source>→<target>/seed-<k>/        (seed-<k>-n<N> with --limit-test N)
        config.json          resolved configuration (method, strategy, options, profile, seed, device,
                             harness version, git commit, data root, limit_test)
        predictions.partial.jsonl   evaluation progress: one flushed JSON line per test image
                             (id, counts, predicted/ground-truth points); re-read on resume
        predictions.csv      image_id, gt_count, pred_count, abs_error (+ one column per prediction extra)
        metrics.json         MAE, MSE (root), NAE, mAP, AP@δ, leakage flags, provenance; marks the cell done;
                             ``mae:<output>`` / ``mse:<output>`` for counters with several outputs
                             (``Prediction.extras["count:<output>"]``, e.g. RDBT's regression/detection)
        error.json           written instead of metrics.json when the cell failed (retried next run)
        log.txt              the cell's log (tracebacks of failures included)
        checkpoints/         for the strategy (``ctx.workdir / "checkpoints"``)

Resume rules: a cell whose ``metrics.json`` exists is never recomputed. Otherwise the strategy is fitted
again (strategies keep their own checkpoints under ``ctx.workdir`` to make this cheap) and evaluation
continues after the last image recorded in ``predictions.partial.jsonl``. Every file except the append-only
progress file is written atomically (:mod:`harness.io`); a torn last line of the progress file (killed
mid-write) is dropped and that image predicted again.

Evaluation on a truncated test split (``limit_test=N``: the first N images in the dataset's sorted order) is
a different configuration: its cells live in ``seed-<k>-n<N>`` so a full run never reuses a limited one.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import random
import re
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .errors import ConfigError, HarnessError, UnknownNameError
from .io import ArtifactCache, atomic_write_json, atomic_write_text
from .specs import CellContext

#: the AP@δ values copied to top-level keys of metrics.json (the full δ = 1..100 curve is kept under "ap")
AP_DELTAS_REPORTED = (5, 10, 20)
#: localisation thresholds δ in pixels for mAP (Idrees et al., ECCV 2018; RDBT Table 1)
MAP_DELTAS = range(1, 101)
PARTIAL_FILE = "predictions.partial.jsonl"

_ARROW = re.compile(r"\s*(?:→|->)\s*")


# --------------------------------------------------------------------------------------------- planning


def _parse_pairs(matrix: str | Iterable[str] | Iterable[tuple[str, str]]
                 ) -> tuple[list[tuple[str, str]], list[str]]:
    """(pairs, problems): every well-formed pair, and one message per malformed entry."""
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


def parse_matrix(matrix: str | Iterable[str] | Iterable[tuple[str, str]], registries: Any = None
                 ) -> list[tuple[str, str]]:
    """Parse ``"SHA→SHB, SHB->SHA"`` into ``[("SHA", "SHB"), ("SHB", "SHA")]``.

    Both arrows (``→`` and ``->``) are accepted, with or without spaces; pairs are separated by commas.
    Already-split pairs pass through. With ``registries``, names (and aliases) are resolved to the
    registered dataset names; otherwise they are only stripped. Duplicate pairs are dropped (first kept).

    Raises:
        ConfigError: every entry without exactly one arrow or with an empty side, and (with
            ``registries``) every unknown dataset name, listed in one message.
    """
    pairs, problems = _parse_pairs(matrix)
    out: list[tuple[str, str]] = []
    for src, tgt in pairs:
        if registries is not None:
            try:
                src, tgt = registries.datasets.resolve(src), registries.datasets.resolve(tgt)
            except UnknownNameError as exc:
                problems.append(str(exc))
                continue
        if (src, tgt) not in out:
            out.append((src, tgt))
    if problems:
        raise ConfigError("; ".join(problems))
    return out


def parse_list(value: str | Iterable[str]) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]`` (duplicates dropped); lists pass through."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out: list[str] = []
    for v in items:
        v = str(v).strip()
        if v and v not in out:
            out.append(v)
    return out


@dataclass(frozen=True)
class Cell:
    """One unit of work: ``method`` evaluated on ``source→target`` with ``seed``.

    ``limit_test``: evaluate on the first N test images only (None = the whole test split); part of the
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
        return Path(self.method) / self.pair / self.seed_dir

    def __str__(self) -> str:
        return f"{self.method} {self.pair} {self.seed_dir}"


@dataclass
class Plan:
    """A validated run: every name resolved, every dataset opened, nothing computed yet."""

    cells: list[Cell]
    matrix: list[tuple[str, str]]
    methods: list[str]
    seeds: list[int]
    profile: str
    data_root: Path | None
    registries: Any
    limit_test: int | None = None
    datasets: dict[str, Any] = field(default_factory=dict)  # canonical name -> Dataset object

    def options(self, method: str) -> dict:
        return self.registries.methods.get(method).options(self.profile)


#: option keys naming other components, validated at plan time: key (or key suffix ``_<kind>``) -> kind
_COMPONENT_KEYS = {"counter": "counter", "annotator": "annotator", "generator": "generator",
                   "counters": "counter", "annotators": "annotator", "generators": "generator"}


def _component_refs(options: dict) -> list[tuple[str, str, str]]:
    """(option key, kind, name) for options that name a counter/annotator/generator."""
    refs = []
    for key, value in options.items():
        kind = _COMPONENT_KEYS.get(key) or _COMPONENT_KEYS.get(key.rsplit("_", 1)[-1])
        if kind is None:
            continue
        names = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple)) else []
        refs += [(key, kind, n) for n in names if isinstance(n, str)]
    return refs


def plan_run(matrix: str | Iterable, methods: str | Iterable[str], seeds: str | Iterable[int] = (0,),
             profile: str = "smoke", registries: Any = None, data_root: str | os.PathLike | None = None,
             limit_test: int | None = None) -> Plan:
    """Validate a whole run before any work and return its :class:`Plan`.

    Args:
        matrix: ``"SHA→SHB,SHB->SHA"`` or a list of ``(source, target)`` pairs.
        methods: ``"a,b"`` or a list of method names (aliases allowed).
        seeds: ``"0,1,2"`` or a list of ints.
        profile: ``"smoke"`` or ``"paper"`` (any profile every method defines).
        registries: :class:`harness.plugins.Registries` (default: :func:`harness.plugins.get_registries`).
        data_root: folder holding the datasets' own folders (e.g. ``ShanghaiTech/``); needed only by
            datasets registered with ``needs_root=True``.
        limit_test: evaluate on the first N test images only (None: all).

    Checks: matrix syntax; unknown datasets and methods (with "did you mean"); each method's strategy is
    registered and the method has ``profile``; component names in a method's options (keys ``counter``,
    ``annotator``, ``generator``, their plurals, or ending in ``_counter`` etc.) are registered; seeds are
    integers; the data root exists and every dataset opens on it and has a non-empty test split.

    Raises:
        ConfigError: ONE error listing every problem found (``"; "``-separated).
    """
    if registries is None:
        from .plugins import get_registries
        registries = get_registries()
    problems: list[str] = []

    # matrix
    pairs: list[tuple[str, str]] = []
    raw_pairs, problems = _parse_pairs(matrix)
    for src, tgt in raw_pairs:
        resolved = []
        for name in (src, tgt):
            try:
                resolved.append(registries.datasets.resolve(name))
            except UnknownNameError as exc:
                msg = str(exc)
                if msg not in problems:
                    problems.append(msg)
        if len(resolved) == 2 and tuple(resolved) not in pairs:
            pairs.append((resolved[0], resolved[1]))

    # methods
    method_names: list[str] = []
    names = parse_list(methods)
    if not names:
        problems.append("no methods given: pass --methods NAME[,NAME...] (see `harness plugins`)")
    for name in names:
        try:
            spec = registries.methods.get(name)
        except UnknownNameError as exc:
            problems.append(str(exc))
            continue
        if spec.name not in method_names:
            method_names.append(spec.name)
        if spec.strategy not in registries.strategies:
            problems.append(f"method {spec.name!r} uses an unknown strategy: "
                            + _unknown(registries.strategies, spec.strategy))
        if profile not in spec.profiles:
            problems.append(f"method {spec.name!r} has no profile {profile!r}; it has: "
                            f"{', '.join(sorted(spec.profiles)) or '(none)'}")
        else:
            for key, kind, ref in _component_refs(dict(spec.profiles[profile])):
                if ref not in registries.by_kind(kind):
                    problems.append(f"method {spec.name!r} option {key}={ref!r}: "
                                    + _unknown(registries.by_kind(kind), ref))

    # seeds
    seed_list: list[int] = []
    for s in (parse_list(seeds) if isinstance(seeds, str) else list(seeds)):
        try:
            seed_list.append(int(s))
        except (TypeError, ValueError):
            problems.append(f"seed {s!r} is not an integer (use e.g. --seeds 0,1,2)")
    if not seed_list and not any("seed" in p for p in problems):
        problems.append("no seeds given (use e.g. --seeds 0,1,2)")
    seed_list = list(dict.fromkeys(seed_list))
    if limit_test is not None and int(limit_test) < 1:
        problems.append(f"--limit-test must be a positive number of images, got {limit_test}")

    # data root and datasets
    root = Path(data_root).expanduser() if data_root else None
    datasets: dict[str, Any] = {}
    needed = list(dict.fromkeys(n for pair in pairs for n in pair))
    if root is not None and not root.is_dir() and any(registries.datasets.get(n).needs_root for n in needed):
        problems.append(f"data root {str(root)!r} is not a folder: pass --data-root (or set HARNESS_DATA) to "
                        f"the folder that holds the datasets' folders (e.g. ShanghaiTech/)")
    else:
        for name in needed:
            spec = registries.datasets.get(name)
            if spec.needs_root and root is None:
                problems.append(f"dataset {name!r} needs a data root: pass --data-root PATH or set HARNESS_DATA")
                continue
            try:
                ds = spec.factory(root)
                n_test = len(ds.samples("test"))
            except HarnessError as exc:
                problems.append(f"dataset {name!r}: {exc}")
                continue
            except Exception as exc:  # a reader bug must still not hide the other problems
                problems.append(f"dataset {name!r} failed to open under {root}: {type(exc).__name__}: {exc}")
                continue
            if n_test == 0:
                problems.append(f"dataset {name!r} has no test images under {root}; check the data root")
                continue
            datasets[name] = ds

    if problems:
        raise ConfigError(f"{len(problems)} problem(s) in the run configuration: " + "; ".join(problems))
    cells = [Cell(m, s, t, seed, int(limit_test) if limit_test else None)
             for m in method_names for (s, t) in pairs for seed in seed_list]
    return Plan(cells=cells, matrix=pairs, methods=method_names, seeds=seed_list, profile=profile,
                data_root=root, registries=registries, limit_test=int(limit_test) if limit_test else None,
                datasets=datasets)


def _unknown(registry: Any, name: str) -> str:
    try:
        registry.entry(name)
    except UnknownNameError as exc:
        return str(exc)
    return f"{name!r}"


# --------------------------------------------------------------------------------------------- execution


@dataclass
class RunSummary:
    """What :func:`execute` did: cells computed now, skipped (already finished), and failed."""

    out_dir: Path
    finished: list[Cell] = field(default_factory=list)
    skipped: list[Cell] = field(default_factory=list)
    failed: list[tuple[Cell, str]] = field(default_factory=list)  # (cell, "Type: one-line message")

    @property
    def ok(self) -> bool:
        return not self.failed


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ``"cpu"``/``"cuda[:n]"`` pass through.

    Raises:
        ConfigError: ``cuda`` asked for but not available, or an unknown device string.
    """
    device = (device or "auto").strip().lower()
    if device == "cpu":
        return device
    if device == "auto" or device.startswith("cuda"):
        try:
            import torch
            has_cuda = torch.cuda.is_available()
        except ImportError:
            has_cuda = False
        if device == "auto":
            return "cuda" if has_cuda else "cpu"
        if not has_cuda:
            raise ConfigError(f"device {device!r} asked for but CUDA is not available; use --device cpu or auto")
        return device
    raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")


def git_commit() -> str | None:
    """The commit of the harness source tree (``git rev-parse HEAD``), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def _harness_version() -> str:
    from . import __version__
    return __version__


def cell_config(plan: Plan, cell: Cell, device: str, commit: str | None = None) -> dict:
    """The resolved configuration recorded in ``config.json``."""
    spec = plan.registries.methods.get(cell.method)
    return {
        "method": cell.method, "strategy": spec.strategy, "options": plan.options(cell.method),
        "profile": plan.profile, "source": cell.source, "target": cell.target, "seed": cell.seed,
        "limit_test": cell.limit_test, "device": device, "harness_version": _harness_version(),
        "git_commit": commit, "data_root": str(plan.data_root) if plan.data_root else None,
        "python": platform.python_version(),
    }


#: config keys that must match for an existing cell directory to be resumed
IDENTITY_KEYS = ("method", "strategy", "options", "profile", "source", "target", "seed", "limit_test")


def _identity(config: dict) -> dict:
    return json.loads(json.dumps({k: config.get(k) for k in IDENTITY_KEYS}, default=str))


def _check_existing(plan: Plan, out_dir: Path, device: str) -> None:
    problems = []
    for cell in plan.cells:
        path = out_dir / cell.relpath / "config.json"
        if not path.exists():
            continue
        try:
            old = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # unreadable config of an unfinished cell: rewritten below
        new = cell_config(plan, cell, device)
        diff = [k for k in IDENTITY_KEYS if _identity(old).get(k) != _identity(new).get(k)]
        if diff:
            problems.append(f"{path} was run with a different {', '.join(diff)}")
    if problems:
        raise ConfigError("the output folder holds cells of another configuration; use another --out or "
                          "delete them: " + "; ".join(problems))


def seed_everything(seed: int, device: str = "cpu") -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (if installed); on CPU also ask torch for deterministic
    algorithms (``warn_only=True``: ops without a deterministic version warn instead of failing)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


class _TorchDeterminism:
    """Restore torch's global deterministic-algorithms setting after a cell."""

    def __enter__(self):
        try:
            import torch
            self.state = (torch.are_deterministic_algorithms_enabled(),
                          torch.is_deterministic_algorithms_warn_only_enabled())
        except ImportError:
            self.state = None
        return self

    def __exit__(self, *exc):
        if self.state is not None:
            import torch
            torch.use_deterministic_algorithms(self.state[0], warn_only=self.state[1])
        return False


def _cell_logger(cell_dir: Path, cell: Cell) -> logging.Logger:
    logger = logging.getLogger(f"harness.cell.{abs(hash((str(cell_dir), time.time())))}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    handler = logging.FileHandler(cell_dir / "log.txt", mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(handler)
    return logger


def _close_logger(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def read_partial(path: Path) -> list[dict]:
    """Records of a ``predictions.partial.jsonl``; a torn last line (run killed mid-write) is dropped and
    the file rewritten without it."""
    if not path.exists():
        return []
    records, good = [], []
    text = path.read_text(encoding="utf-8")
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good.append(line)
    if "".join(good) != text:
        atomic_write_text(path, "".join(good))
    return records


def points_and_scores(pred: Any, image_shape: tuple[int, ...], stride: int | None = None
                      ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Scored points of a prediction for localisation metrics.

    If the counter gives ``points`` they are used (scores default to 1). Otherwise points are the local
    maxima of the density map (DESIGN.md §4) from :func:`harness.metrics.points_from_density`, mapped back
    to input pixels with the counter's output ``stride`` (e.g. 4 for MCNN, 8 for CSRNet). Counters that do
    not declare one get ``round(image width / density width)``: maps of ``H // s`` or ``ceil(H / s)`` rows
    make that ratio non-integer for image sizes that are not multiples of ``s``.
    Returns ``(None, None)`` when the prediction has neither.
    """
    if pred.points is not None:
        pts = np.asarray(pred.points, dtype=np.float64).reshape(-1, 2)
        scores = (np.ones(len(pts)) if pred.scores is None else np.asarray(pred.scores, dtype=np.float64))
        return pts, scores
    if pred.density is None:
        return None, None
    from .metrics import points_from_density
    density = np.asarray(pred.density)
    if stride is None:
        stride = max(1, int(round(image_shape[1] / density.shape[1])))
    pts, scores = points_from_density(density, stride=stride)
    return np.asarray(pts, dtype=np.float64).reshape(-1, 2), np.asarray(scores, dtype=np.float64)


def _round_points(a: np.ndarray | None, nd: int = 2) -> list | None:
    return None if a is None else np.round(np.asarray(a, dtype=np.float64), nd).tolist()


def _finite(x: Any) -> Any:
    """JSON-safe number: NaN/inf -> None."""
    if isinstance(x, (float, np.floating)) and not math.isfinite(float(x)):
        return None
    return x


#: prefix of Prediction.extras keys that carry the count of one named output (e.g. RDBT's "count:regression")
OUTPUT_COUNT_PREFIX = "count:"


def output_metrics(records: list[dict]) -> dict:
    """MAE / MSE (root) per named output of a counter with several (e.g. RDBT's regression and detection heads).

    Every ``Prediction.extras`` key ``"count:<output>"`` becomes ``"mae:<output>"`` and ``"mse:<output>"``
    (:func:`harness.metrics.count_metrics` over the images that report it). Returns ``{}`` when no record has one.
    """
    from .metrics import count_metrics

    names = sorted({k[len(OUTPUT_COUNT_PREFIX):] for r in records for k in (r.get("extras") or {})
                    if k.startswith(OUTPUT_COUNT_PREFIX)})
    out: dict = {}
    for name in names:
        key = OUTPUT_COUNT_PREFIX + name
        pairs = [(r["extras"][key], r["gt_count"]) for r in records if (r.get("extras") or {}).get(key) is not None]
        if pairs:
            m = count_metrics(np.array([p for p, _ in pairs], dtype=np.float64),
                              np.array([g for _, g in pairs], dtype=np.float64))
            out[f"mae:{name}"], out[f"mse:{name}"] = float(m["mae"]), float(m["mse"])
    return out


def run_cell(plan: Plan, cell: Cell, cell_dir: Path, device: str, *, cache: ArtifactCache,
             commit: str | None, on_image: Callable[[int, int], None] | None = None) -> dict:
    """Fit and evaluate one cell in ``cell_dir`` (see the module docstring); returns the metrics written.

    Exceptions propagate (the caller records them); KeyboardInterrupt leaves the progress file for resume.
    """
    from .metrics import count_metrics, localisation_map

    registries = plan.registries
    method = registries.methods.get(cell.method)
    strategy_spec = registries.strategies.get(method.strategy)
    options = plan.options(cell.method)
    config = cell_config(plan, cell, device, commit)
    atomic_write_json(cell_dir / "config.json", config)
    (cell_dir / "checkpoints").mkdir(exist_ok=True)
    log = _cell_logger(cell_dir, cell)
    try:
        t0 = time.perf_counter()
        log.info("cell %s: strategy %s options %s profile %s device %s", cell, method.strategy, options,
                 plan.profile, device)
        source, target = plan.datasets[cell.source], plan.datasets[cell.target]
        target_images = [ref.unlabelled() for ref in target.samples("train")]
        ctx = CellContext(source=source, source_name=cell.source, target_name=cell.target,
                          target_images=target_images, profile=plan.profile, seed=cell.seed, device=device,
                          workdir=cell_dir, cache=cache, registries=registries, options=dict(options), log=log)
        with _TorchDeterminism():
            seed_everything(cell.seed, device)
            strategy = strategy_spec.factory(**options)
            counter = strategy.fit(ctx)
            fit_s = time.perf_counter() - t0
            log.info("fit done in %.1f s; counter %s, provenance %s", fit_s, getattr(counter, "name", "?"),
                     counter.provenance.to_dict())

            refs = target.samples("test")
            if cell.limit_test:
                refs = refs[:cell.limit_test]
            partial = cell_dir / PARTIAL_FILE
            records = read_partial(partial)
            done = {r["image_id"] for r in records}
            if done:
                log.info("resuming evaluation: %d of %d test images already predicted", len(done), len(refs))
            t1 = time.perf_counter()
            with open(partial, "a", encoding="utf-8") as fh:
                for i, ref in enumerate(refs):
                    if ref.id in done:
                        if on_image:
                            on_image(i + 1, len(refs))
                        continue
                    sample = ref.load()
                    pred = counter.predict(sample.image)
                    pts, scores = points_and_scores(pred, sample.image.shape, getattr(counter, "stride", None))
                    gt = float(sample.count)
                    rec = {"image_id": sample.id, "gt_count": gt, "pred_count": float(pred.count),
                           "abs_error": abs(float(pred.count) - gt),
                           "n_points_dropped": int(sample.meta.get("n_points_dropped", 0)),
                           "extras": {k: _finite(float(v)) for k, v in (pred.extras or {}).items()
                                      if isinstance(v, (int, float, np.number))},
                           "pred_points": _round_points(pts), "scores": _round_points(scores, 6),
                           "gt_points": _round_points(sample.points)}
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                    records.append(rec)
                    if on_image:
                        on_image(i + 1, len(refs))
            eval_s = time.perf_counter() - t1
        ids = [r.id for r in refs]
        by_id = {r["image_id"]: r for r in records}
        records = [by_id[i] for i in ids if i in by_id]

        import pandas as pd
        rows = []
        for r in records:
            row = {"image_id": r["image_id"], "gt_count": r["gt_count"], "pred_count": r["pred_count"],
                   "abs_error": r["abs_error"]}
            row.update(r.get("extras") or {})
            rows.append(row)
        df = pd.DataFrame(rows, columns=None if rows else ["image_id", "gt_count", "pred_count", "abs_error"])
        atomic_write_text(cell_dir / "predictions.csv", df.to_csv(index=False))

        metrics = dict(count_metrics(np.array([r["pred_count"] for r in records]),
                                     np.array([r["gt_count"] for r in records])))
        metrics.update(output_metrics(records))
        if all(r["pred_points"] is not None for r in records) and records:
            items = [(np.asarray(r["pred_points"], dtype=np.float64).reshape(-1, 2),
                      np.asarray(r["scores"], dtype=np.float64).reshape(-1),
                      np.asarray(r["gt_points"], dtype=np.float64).reshape(-1, 2)) for r in records]
            loc = localisation_map(items, deltas=MAP_DELTAS)
            ap = {str(int(d)): _finite(float(v)) for d, v in loc["ap"].items()}
            metrics["map"] = _finite(float(loc["map"]))
            metrics["ap"] = ap
            for d in AP_DELTAS_REPORTED:
                metrics[f"ap@{d}"] = ap.get(str(d))
        else:
            metrics.update({"map": None, "ap": {}, **{f"ap@{d}": None for d in AP_DELTAS_REPORTED}})
            log.info("no points or density map from the counter: localisation metrics skipped")
        notes = dict(ctx.provenance_notes)
        provenance = counter.provenance
        metrics.update({
            "method": cell.method, "strategy": method.strategy, "source": cell.source, "target": cell.target,
            "seed": cell.seed, "profile": plan.profile, "limit_test": cell.limit_test,
            "target_labels_seen": bool(provenance.saw_labels_of(cell.target)),
            "uses_target_images": bool(strategy_spec.uses_target_images or notes.get("uses_target_images")),
            "selection_split": str(notes.get("selection_split", "none")),
            "provenance": provenance.to_dict(), "provenance_notes": notes,
            "n_points_dropped": int(sum(r.get("n_points_dropped", 0) for r in records)),
            "fit_s": round(fit_s, 3), "eval_s": round(eval_s, 3),
            "duration_s": round(time.perf_counter() - t0, 3),
        })
        metrics = {k: _finite(v) for k, v in metrics.items()}
        atomic_write_json(cell_dir / "metrics.json", metrics)  # last: marks the cell finished
        log.info("done: MAE %.3f MSE %.3f NAE %s mAP %s (%d images, %.1f s)", metrics["mae"], metrics["mse"],
                 metrics.get("nae"), metrics.get("map"), metrics["n_images"], metrics["duration_s"])
        return metrics
    except Exception:
        log.error("cell failed:\n%s", traceback.format_exc())
        raise
    except BaseException:
        log.warning("cell interrupted; run again with the same --out to resume")
        raise
    finally:
        _close_logger(log)


def execute(plan: Plan, out_dir: str | os.PathLike, device: str = "auto", *, progress: bool | None = None,
            console: Any = None, cache: ArtifactCache | None = None) -> RunSummary:
    """Run every cell of ``plan`` under ``out_dir`` (layout: module docstring) and return a summary.

    Finished cells (``metrics.json`` present) are skipped; a failing cell writes ``error.json``
    (``type``, one-line ``message``; traceback in ``log.txt``) and the others continue; cells with an
    ``error.json`` are retried. KeyboardInterrupt/SystemExit are not failures: they stop the run, and the
    next run resumes. ``progress``: rich progress bars for cells and images (default: only on a terminal).

    Raises:
        ConfigError: ``out_dir`` holds cells of the same path but another configuration (e.g. another
            profile or options), or the device is unavailable.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = Path(out_dir)
    device = resolve_device(device)
    _check_existing(plan, out, device)
    out.mkdir(parents=True, exist_ok=True)
    cache = cache or ArtifactCache()
    commit = git_commit()
    console = console or Console(stderr=True)
    show = console.is_terminal if progress is None else progress
    summary = RunSummary(out_dir=out)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not show, transient=True) as bars:
        cells_bar = bars.add_task("cells", total=len(plan.cells))
        for cell in plan.cells:
            cell_dir = out / cell.relpath
            if (cell_dir / "metrics.json").exists():
                summary.skipped.append(cell)
                bars.advance(cells_bar)
                continue
            cell_dir.mkdir(parents=True, exist_ok=True)
            (cell_dir / "error.json").unlink(missing_ok=True)
            img_bar = bars.add_task(f"  {cell}", total=None)

            def on_image(i: int, n: int, _task=img_bar) -> None:
                bars.update(_task, completed=i, total=n)

            try:
                run_cell(plan, cell, cell_dir, device, cache=cache, commit=commit, on_image=on_image)
                summary.finished.append(cell)
            except Exception as exc:
                message = _one_line(exc)
                atomic_write_json(cell_dir / "error.json", {
                    "type": type(exc).__name__, "message": " ".join(str(exc).split()), "cell": str(cell),
                    "traceback": "see log.txt", "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
                summary.failed.append((cell, message))
                if show:
                    console.print(f"[red]cell {cell} failed:[/red] {message}")
            finally:
                bars.remove_task(img_bar)
            bars.advance(cells_bar)
    return summary


def run(matrix: str | Iterable, methods: str | Iterable[str], out_dir: str | os.PathLike,
        seeds: str | Iterable[int] = (0,), profile: str = "smoke", device: str = "auto",
        data_root: str | os.PathLike | None = None, limit_test: int | None = None, registries: Any = None,
        **kw) -> RunSummary:
    """:func:`plan_run` then :func:`execute` (the library form of ``harness run``)."""
    plan = plan_run(matrix, methods, seeds, profile, registries, data_root, limit_test)
    return execute(plan, out_dir, device, **kw)


__all__ = ["Cell", "Plan", "RunSummary", "parse_matrix", "plan_run", "execute", "run", "run_cell",
           "resolve_device", "seed_everything", "read_partial", "points_and_scores", "cell_config", "output_metrics",
           "PARTIAL_FILE", "MAP_DELTAS"]
