"""``harness rdbt iterations RUN_DIR``: the per-iteration report of RDBT Table 3.

For every finished or running ``rdbt`` cell under ``RUN_DIR`` it loads the checkpoint of each cycle
(``checkpoints/rdbt-cycle-<t>.pt``; t = 0 are the source-trained R_0, D_0) and evaluates it on the images the cell
is scored on (:meth:`harness.CellDir.eval_refs`: the target's evaluation split, NWPU's ``val``, else ``test``): MAE/MSE of the regression and the detection output and the detection mAP (δ = 1..100). The target's
test labels are used for this report only — the strategy never reads them and nothing is selected with them.
Writes ``iterations-eval.json`` and ``iterations-eval.md`` in each cell folder.
"""
from __future__ import annotations

from pathlib import Path

import click

from harness import HarnessError


def evaluate_cycles(cell_dir: Path, *, data_root=None, limit_test: int | None = None, device: str = "cpu") -> list[dict]:
    """Rows ``{"cycle", "mae:regression", "mse:regression", "mae:detection", "mse:detection", "map", "n_images"}``
    for each cycle checkpoint of one rdbt cell.

    Raises:
        HarnessError: the cell has no config.json or no cycle checkpoints; the data root is missing."""
    from harness import evaluate_counter

    from .strategy import load_cycle_counter

    from harness import CellDir

    cell = CellDir(cell_dir)
    config = cell.config()
    refs = cell.eval_refs(data_root=data_root, limit_test=limit_test)
    cycles = sorted(int(p.stem.rsplit("-", 1)[1]) for p in (cell_dir / "checkpoints").glob("rdbt-cycle-*.pt"))
    if not cycles:
        raise HarnessError(f"{cell_dir}/checkpoints has no rdbt-cycle-*.pt: run the rdbt cell first")
    rows = []
    for t in cycles:
        m = evaluate_counter(load_cycle_counter(cell_dir, t, device), refs, seed=int(config.get("seed", 0))).metrics
        rows.append({"cycle": t, **{k: m[k] for k in ("mae:regression", "mse:regression", "mae:detection",
                                                      "mse:detection", "map", "n_images")}})
    return rows


def render_rows(rows: list[dict]) -> str:
    """Markdown table (RDBT Table 3 layout)."""
    lines = ["| iteration | reg MAE↓ | reg MSE↓ | det MAE↓ | det MSE↓ | det mAP↑ |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['cycle']} | {r['mae:regression']:.2f} | {r['mse:regression']:.2f} | "
                     f"{r['mae:detection']:.2f} | {r['mse:detection']:.2f} | {r['map']:.3f} |")
    return "\n".join(lines) + "\n"


@click.group("rdbt")
def rdbt_group():
    """RDBT reports."""


@rdbt_group.command("iterations")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--limit-test", type=int, default=None,
              help="evaluate on the first N target evaluation images only (default: the cell's own --limit-test)")
@click.option("--data-root", type=click.Path(path_type=Path), default=None, envvar="HARNESS_DATA")
@click.option("--device", default="cpu")
def iterations_command(run_dir: Path, limit_test, data_root, device):
    """Per-cycle MAE/MSE (regression, detection) and mAP of every rdbt cell in RUN_DIR (RDBT Table 3)."""
    from harness import atomic_write_json, atomic_write_text

    from harness import RunDir

    try:
        cells = [c.path for c in RunDir(run_dir).of_strategy("rdbt")]
    except HarnessError as exc:
        raise click.ClickException(str(exc)) from None
    if not cells:
        raise click.ClickException(f"no rdbt cells under {run_dir}: run `harness run --methods rdbt ...` first")
    for cell in cells:
        try:
            rows = evaluate_cycles(cell, data_root=data_root, limit_test=limit_test, device=device)
        except HarnessError as exc:
            raise click.ClickException(str(exc)) from None
        atomic_write_json(cell / "iterations-eval.json", {"rows": rows, "limit_test": limit_test,
                                                           "note": "target test labels used for this report only"})
        text = render_rows(rows)
        atomic_write_text(cell / "iterations-eval.md", text)
        click.echo(f"{cell}\n{text}")
