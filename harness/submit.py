"""``harness submit RUN_DIR --dataset NWPU``: test-set predictions in a benchmark's online-evaluation format, for
cells scored on the dataset's val split because its test labels are withheld.

NWPU-Crowd (Wang et al., TPAMI 2020; its benchmark server takes a ``.txt`` per task):

- counting: one line per test image, ``<image id> <count>``;
- localisation: one line per test image, ``<image id> <number of points> <x1> <y1> <x2> <y2> ...`` (pixels).

Each cell's counter is rebuilt exactly as its run fitted it: the strategy is fitted again in the cell's folder, where
its checkpoints make that a reload (no training), and the test images are predicted with the evaluation's per-image
seeds (:func:`harness.evaluation.image_seed`); no label is read.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError
from .io import atomic_write_text
from .types import counter_localises, output_stride

FORMATS = {"NWPU": ("count.txt", "loc.txt")}


def _lines(counter, refs, seed: int) -> tuple[list[str], list[str]]:
    from .evaluation import image_seed, points_and_scores, predict_image

    counts, locs = [], []
    name = getattr(counter, "name", "counter")
    for ref in refs:
        image = ref.load_image()
        pred = predict_image(counter, image, image_seed(seed, ref.key), f"counter {name!r} on image {ref.key}")
        counts.append(f"{ref.id} {float(pred.count):.4f}")
        pts, _ = points_and_scores(pred, image.shape, output_stride(counter)) \
            if counter_localises(counter) else (None, None)
        pts = np.zeros((0, 2)) if pts is None else pts
        locs.append(" ".join([ref.id, str(len(pts))] + [f"{v:.2f}" for xy in pts for v in xy]))
    return counts, locs


def submit(run_dir: str | Path, dataset: str = "NWPU", *, out: str | Path | None = None, device: str = "cpu",
           data_root: str | Path | None = None, log=None) -> list[Path]:
    """Write ``<out>/<method>/<source>→<target>/seed-<k>/{count,loc}.txt`` for every finished cell of ``run_dir``
    whose target is ``dataset``; returns the folders written (default ``out``: ``RUN_DIR/submission``).

    Raises:
        ConfigError: an unsupported dataset, or no finished cell targets it.
    """
    import logging

    from .cell import CellEnvironment, Fit, cell_logger, close_logger, make_context
    from .io import ArtifactCache
    from .planning import Cell, plan_run

    if dataset not in FORMATS:
        raise ConfigError(f"no online-evaluation format for {dataset!r}; supported: {', '.join(FORMATS)}")
    run_dir, written = Path(run_dir), []
    out = Path(out) if out else run_dir / "submission"
    from .rundir import RunDir

    run = RunDir(run_dir)
    damaged = run.damaged()
    if damaged:
        raise ConfigError(f"damaged cell(s) are not submitted: {'; '.join(damaged[:3])} — run the same `harness "
                          f"run` with --force to compute them again")
    configs = [c.config() for c in run.finished()]
    configs = [c for c in configs if c.get("target") == dataset and not c.get("limit_test")]
    if not configs:
        raise ConfigError(f"{run_dir} has no finished cell with target {dataset} (full evaluation split): run "
                          f"`harness run --matrix 'SRC→{dataset}' ...` into it first")
    for cfg in configs:
        root = data_root or cfg.get("data_root")
        plan = plan_run(f"{cfg['source']}→{cfg['target']}", cfg["method"], [cfg["seed"]], cfg["profile"],
                        data_root=root, precision=cfg.get("precision") or "fp32")
        cell = Cell(cfg["method"], cfg["source"], cfg["target"], int(cfg["seed"]))
        cell_dir = run_dir / cell.relpath
        target = plan.datasets[cell.target]
        source = plan.datasets[cell.source]
        if cell.source == cell.target:
            from .data.splits import HeldOutVal
            source = HeldOutVal(source)
        spec = plan.registries.strategies.get(plan.registries.methods.get(cell.method).strategy)
        clog = cell_logger(cell_dir)
        try:
            ctx = make_context(plan, cell, Fit("", source, target, [], cell_dir, cell_dir / "unused"), device,
                               ArtifactCache(), plan.strategy_options[cell.method], clog)
            with CellEnvironment(cell.seed, device):
                counter = spec.factory(plan.strategy_options[cell.method]).fit(ctx)
                counts, locs = _lines(counter, target.samples("test"), cell.seed)
        finally:
            close_logger(clog)
        dest = out / cell.relpath
        atomic_write_text(dest / FORMATS[dataset][0], "\n".join(counts) + "\n")
        atomic_write_text(dest / FORMATS[dataset][1], "\n".join(locs) + "\n")
        (log or logging.getLogger("harness")).info("wrote %s", dest)
        written.append(dest)
    return written


__all__ = ["submit", "FORMATS"]
