"""``harness leaderboard | status | report | compare | submit``: the commands that read finished runs (through
:class:`harness.rundir.RunDir`); added to the ``harness`` group by :mod:`harness.cli`."""
from __future__ import annotations

import os
from pathlib import Path

import click

from .cli_common import err_console
from .errors import HarnessError



@click.command("leaderboard")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json", "latex", "html"]), default="md",
              show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to FILE instead of stdout.")
def leaderboard_cmd(run_dir, fmt, output):
    """Leaderboard of RUN_DIR: methods × cells, MAE/MSE/NAE/mAP as mean ± std over seeds."""
    from .io import atomic_write_text, check_writable_dir
    from .leaderboard import collect, leaderboard, render

    text = render(leaderboard(collect(run_dir)), fmt)
    if output:
        check_writable_dir(Path(output).parent, "the folder of -o")
        if Path(output).exists() and not os.access(output, os.W_OK):
            raise HarnessError(f"-o {output} is read-only: choose another file or fix its permissions")
        atomic_write_text(output, text)
        err_console.print(f"wrote {output}")
    else:
        click.echo(text, nl=False)


@click.command("status")
@click.argument("run_dir", type=click.Path(path_type=Path))
def status_cmd(run_dir):
    """The state of every cell of RUN_DIR from its files alone: done, damaged (its files disagree: the line names the
    file), running (its lock is held), failed (with the error line), pending."""
    from .jobs import cell_states

    if not Path(run_dir).is_dir():
        raise HarnessError(f"{run_dir} is not a folder: pass the --out folder of a `harness run`")
    states = cell_states(run_dir)
    counts = {k: sum(s["state"] == k for s in states)
              for k in ("done", "damaged", "running", "interrupted", "failed", "pending")}
    for rare in ("damaged", "interrupted"):
        if not counts[rare]:
            del counts[rare]  # named only when there is one
    click.echo(f"{run_dir}: {len(states)} cell(s): " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for s in states:
        click.echo(f"  {s['state']:8s} {s['cell']}" + (f"  {s['message']}" if s["message"] else ""))


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default RUN_DIR/report).")
def report_cmd(run_dir, out_dir):
    """A static HTML report of RUN_DIR that works offline: the sortable leaderboard (index.html) and a page per
    cell (command, configuration, provenance, count scatter, error histogram, best/worst density overlays)."""
    from .io import check_writable_dir
    from .report import write_report

    out_dir = out_dir or Path(run_dir) / "report"
    check_writable_dir(out_dir, "-o")
    click.echo(str(write_report(run_dir, out_dir)))


@click.command("compare")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.argument("method_a")
@click.argument("method_b")
@click.option("--format", "fmt", type=click.Choice(["md", "csv", "json"]), default="md", show_default=True)
def compare_cmd(run_dir, method_a, method_b, fmt):
    """Per cell of RUN_DIR: METHOD_A's MAE minus METHOD_B's, its 95 % paired bootstrap interval over the test
    images, and the fraction of resamples in which A beats B."""
    from .leaderboard import collect, compare

    table = compare(collect(run_dir), method_a, method_b)
    if fmt == "csv":
        click.echo(table.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(table.to_json(orient="records", force_ascii=False, indent=2))
    else:
        click.echo(table.to_markdown(index=False, tablefmt="github", disable_numparse=True))
        click.echo(f"\nA = {method_a}, B = {method_b}; A − B < 0: A has the lower MAE. Paired bootstrap over the test "
                   f"images (2000 resamples, seed 0; seeds averaged on the same resampled images).")


@click.command("submit")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--dataset", default="NWPU", show_default=True, help="Benchmark whose test labels are withheld.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output folder (default RUN_DIR/submission).")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="HARNESS_DATA", default=None)
@click.option("--device", default="auto", show_default=True)
def submit_cmd(run_dir, dataset, out_dir, data_root, device):
    """Test-set predictions of RUN_DIR's cells targeting DATASET in its online-evaluation formats (NWPU-Crowd:
    count.txt = `id count` lines, loc.txt = `id n x1 y1 ...` lines), for methods scored on its val split."""
    from .execution import resolve_device
    from .submit import submit

    for folder in submit(run_dir, dataset, out=out_dir, device=resolve_device(device), data_root=data_root):
        click.echo(str(folder))


# --------------------------------------------------------------------------------------------- count


#: the commands, in the order `harness --help` lists them
RESULT_COMMANDS = (leaderboard_cmd, status_cmd, report_cmd, compare_cmd, submit_cmd)
