"""``harness ldm steps RUN_DIR``: the cost table — MAE, MSE, mAP and seconds per image against the number of DDIM
steps, on the same target images, for every finished or running ``ldm`` cell of a run.

Each cell's trained model (``checkpoints/ldm-model.pt``) is loaded with the cell's own sampling options (K, fusion,
η, overlap) and evaluated with :func:`harness.evaluate_counter` (the cell's seed, so the per-image seeds are the run's)
on the target's evaluation split for each step count (default: the method's ``report_steps``; the poster's profile
10, 25, 50, 100, 500). Seconds per image time ``predict`` alone (image decoding excluded). The target's labels are
used for this report only: nothing is selected with them. Writes ``ldm-steps.json`` and ``ldm-steps.md`` per cell.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from harness import HarnessError, counter_is_stochastic, counter_localises

MODEL = Path("checkpoints") / "ldm-model.pt"


class TimedCounter:
    """Wraps a counter and adds the wall time of each ``predict`` to ``seconds`` (stochastic passed through)."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0
        self.name, self.provenance = inner.name, inner.provenance
        self.stochastic = counter_is_stochastic(inner)
        self.localises = counter_localises(inner)

    def predict(self, image, **kw):
        t0 = time.perf_counter()
        try:
            return self.inner.predict(image, **kw)
        finally:
            self.seconds += time.perf_counter() - t0


def ldm_cells(run_dir: Path) -> list[Path]:
    """Cell folders of ``ldm``-strategy cells under ``run_dir`` (sorted).

    Raises:
        HarnessError: ``run_dir`` is not a folder or holds no ldm cell."""
    from harness import RunDir

    cells = [c.path for c in RunDir(run_dir).of_strategy("ldm")]
    if not cells:
        raise HarnessError(f"no ldm cells under {run_dir}: run `harness run --methods ldm ...` into it first")
    return cells


def steps_table(cell_dir: Path, steps: list[int] | None = None, *, limit_test: int | None = None, data_root=None,
                device: str = "cpu") -> list[dict]:
    """Rows ``{"ddim_steps", "mae", "mse", "map", "seconds_per_image", "n_images"}`` of one cell.

    Raises:
        HarnessError: no config.json or model file; the target's data cannot be opened."""
    from harness import evaluate_counter

    from .counter import load_counter

    from harness import CellDir

    cell = CellDir(cell_dir)
    config = cell.config()
    if not (cell_dir / MODEL).exists():
        raise HarnessError(f"{cell_dir / MODEL} not found: the cell has not finished fitting; run it first")
    opts = config.get("resolved_options") or {}
    steps = list(steps or opts.get("report_steps") or [10, 25, 50, 100, 500])
    refs = cell.eval_refs(data_root=data_root, limit_test=limit_test)
    counter = load_counter(cell_dir / MODEL, device, config.get("precision") or "fp32",
                           sampling=opts.get("sampling"), counting=opts.get("counting"))
    rows = []
    for s in steps:
        timed = TimedCounter(counter.with_sampling(ddim_steps=int(s)))
        m = evaluate_counter(timed, refs, seed=int(config.get("seed", 0))).metrics
        rows.append({"ddim_steps": int(s), "mae": m["mae"], "mse": m["mse"], "map": m.get("map"),
                     "seconds_per_image": timed.seconds / max(1, m["n_images"]), "n_images": m["n_images"],
                     "hypotheses": counter.options.sampling.hypotheses})
    return rows


def render_rows(rows: list[dict]) -> str:
    """Markdown table of :func:`steps_table` rows."""
    lines = ["| DDIM steps | MAE↓ | MSE↓ | mAP↑ | s / image | images | K |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mp = "–" if r["map"] is None else f"{r['map']:.3f}"
        lines.append(f"| {r['ddim_steps']} | {r['mae']:.2f} | {r['mse']:.2f} | {mp} | {r['seconds_per_image']:.3f} | "
                     f"{r['n_images']} | {r['hypotheses']} |")
    return "\n".join(lines) + "\n"


@click.group("ldm")
def ldm_group():
    """LDM crowd-map counter reports (plugin harness-ldm)."""


@ldm_group.command("steps")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--steps", "steps", default=None, help="comma-separated DDIM step counts (default: the method's "
                                                     "report_steps)")
@click.option("--limit-test", type=int, default=None, help="evaluate on the first N target images only")
@click.option("--data-root", type=click.Path(path_type=Path), default=None, envvar="HARNESS_DATA")
@click.option("--device", default="cpu")
def steps_command(run_dir: Path, steps, limit_test, data_root, device):
    """MAE, MSE, mAP and seconds per image against DDIM steps for every ldm cell in RUN_DIR (same images)."""
    from harness import atomic_write_json, atomic_write_text

    try:
        parsed = [int(s) for s in steps.split(",")] if steps else None
    except ValueError:
        raise click.ClickException(f"--steps must be comma-separated integers, got {steps!r}") from None
    try:
        cells = ldm_cells(run_dir)
        for cell in cells:
            rows = steps_table(cell, parsed, limit_test=limit_test, data_root=data_root, device=device)
            atomic_write_json(cell / "ldm-steps.json", {"rows": rows, "limit_test": limit_test,
                                                        "note": "target labels used for this report only"})
            text = render_rows(rows)
            atomic_write_text(cell / "ldm-steps.md", text)
            click.echo(f"{cell}\n{text}")
    except HarnessError as exc:
        raise click.ClickException(str(exc)) from None
