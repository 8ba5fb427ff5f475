"""``harness`` command line: a thin click + rich layer over :mod:`harness.runner` and
:mod:`harness.leaderboard`.

Commands::

    harness run [--matrix 'SHA→SHB,SHB→SHA'] [--methods a,b] [--seeds 0,1,2] [--profile smoke|paper]
                [--device auto|cpu|cuda] [--out runs/NAME] [--data-root PATH] [--limit-test N]
    harness plugins [--json]
    harness leaderboard RUN_DIR [--format md|csv|json|latex|html] [-o FILE]
    harness count IMAGE... --counter NAME [--out DIR] [--device auto|cpu|cuda]
    harness datasets [--data-root PATH]

Exit codes: 0 success; 1 some cells of a run failed (listed at the end; run again to retry them);
2 a user error (:class:`harness.errors.HarnessError`, printed as ``Error: <one line>`` on stderr, no
traceback; click's own usage errors also exit 2).
"""
from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from .cli_common import err_console, loading_libraries
from .dryrun import DEFAULT_EFFICIENCY, GPUS
from .cli_common import quiet_registries as _quiet_registries
from .cli_common import registries as _registries
from .errors import HarnessError

#: defaults of ``harness run`` without / with a data root
SYNTHETIC_MATRIX = "SYN-PARK→SYN-STREET,SYN-STREET→SYN-PARK"
SYNTHETIC_METHODS = "source-only-rescsrnet,zero,source-mean"
REAL_MATRIX = "SHA→SHB,SHB→SHA"


class HarnessGroup(click.Group):
    """Turns every :class:`HarnessError` into ``Error: <message>`` on stderr and exit code 2, and adds the
    sub-commands that plugins register (``harness_register_commands``) after the built-in ones."""

    def _plugin_commands(self) -> dict:
        regs = _registries()
        return {entry.spec.name: entry.spec.command for entry in regs.commands
                if entry.spec.name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands) + sorted(self._plugin_commands())

    def get_command(self, ctx: click.Context, name: str):
        if name in self.commands:
            return self.commands[name]
        return self._plugin_commands().get(name)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except HarnessError as exc:
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=HarnessGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crowd-harness", prog_name="harness")
def main() -> None:
    """crowd-harness: benchmark cross-dataset crowd counting methods (source→target matrices)."""
    _check_filesystem_encoding()


def _check_filesystem_encoding() -> None:
    """Cell folders are named ``SRC→TGT``: an ASCII file-system encoding (``LC_ALL=C`` with ``PYTHONUTF8=0``) cannot
    write them, so say how to fix it in one line instead of failing at the first folder.

    Raises:
        HarnessError: the file-system encoding cannot encode ``→``."""
    import sys

    try:
        "→".encode(sys.getfilesystemencoding())
    except (UnicodeEncodeError, LookupError):
        raise HarnessError(f"the file-system encoding is {sys.getfilesystemencoding()!r}, which cannot write the run "
                           f"folders' '→' names: run with PYTHONUTF8=1 or a UTF-8 locale (e.g. LC_ALL=C.UTF-8)"
                           ) from None


# --------------------------------------------------------------------------------------------- run


@main.command()
@click.option("--matrix", default=None, metavar="SRC→TGT,...",
              help=f"Cells to run ('→' or '->'). Default: {REAL_MATRIX} with a data root, "
                   f"else the built-in synthetic {SYNTHETIC_MATRIX}.")
@click.option("--methods", default=None, metavar="NAME,...",
              help=f"Methods (leaderboard rows; see `harness plugins`). Default: {SYNTHETIC_METHODS}.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated integer seeds.")
@click.option("--profile", default="smoke", show_default=True,
              help="Method profile: smoke (CPU, minutes, tiny sizes) or paper (the papers' hyperparameters).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Run directory; run again with the same --out to resume. Default: runs/<profile>.")
@click.option("--data-root", type=click.Path(path_type=Path), envvar="HARNESS_DATA", default=None,
              help="Folder holding the datasets' folders (e.g. ShanghaiTech/); env HARNESS_DATA.")
@click.option("--limit-test", type=int, default=None,
              help="Evaluate on the first N test images only (a separate cell: seed-K-nN).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Autocast precision of training and inference (parameters stay fp32).")
@click.option("--force", is_flag=True, help="Move aside cells of --out made with other options or other dataset "
                                            "files (another data root) and compute them again.")
@click.option("--workers", type=click.IntRange(0, 64), default=0, show_default=True,
              help="Image-decoding worker processes per cell (training and evaluation).")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="Local: CPU threads pinned for every cell (default: $OMP_NUM_THREADS, else the CPUs this process "
                   "may use). Part of a CPU cell's identity: numbers change with it.")
@click.option("--executor", type=click.Choice(["local", "ray", "slurm"]), default="local", show_default=True,
              help="Where the cells run: here, one after another; a Ray cluster; a Slurm job array (submitit).")
@click.option("--address", default="auto", show_default=True,
              help="Ray: 'auto' (a running cluster), 'ray://HOST:10001', or 'local' (start one here).")
@click.option("--gpus-per-cell", type=float, default=0, show_default=True, help="Ray: GPUs per cell.")
@click.option("--cpus-per-cell", type=float, default=1, show_default=True, help="Ray: CPUs per cell.")
@click.option("--max-retries", type=int, default=3, show_default=True, help="Ray: retries of a cell whose worker died.")
@click.option("--slurm-partition", default=None, help="Slurm: partition.")
@click.option("--slurm-time", type=int, default=240, show_default=True, help="Slurm: minutes per cell (requeued when "
                                                                             "preempted or timed out).")
@click.option("--slurm-gpus-per-task", type=int, default=1, show_default=True, help="Slurm: GPUs per cell.")
@click.option("--slurm-cpus-per-task", type=int, default=4, show_default=True, help="Slurm: CPUs per cell.")
@click.option("--slurm-array-parallelism", type=int, default=16, show_default=True,
              help="Slurm: cells running at once.")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for cells another driver is computing (else leave them to it).")
@click.option("--plugin", "plugins", multiple=True, metavar="MODULE",
              help="Also load this plugin module (not installed as a distribution); repeatable. Workers import it too.")
@click.option("--log-with", "trackers", multiple=True, type=click.Choice(["tensorboard", "mlflow", "wandb"]),
              help="Experiment tracker (repeatable): one tracked run per cell (training losses, final metrics, "
                   "overlays); pip install 'crowd-harness[trackers]'.")
@click.option("--tracker-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the trackers write (default OUT/trackers; W&B runs offline there).")
@click.option("--progress/--no-progress", default=None, help="Progress bars (default: only on a terminal).")
@click.option("--dry-run", is_flag=True, help="Run a few units of every stage of every cell here, at the profile's "
                                              "real shapes, and print memory, FLOPs and projected GPU-hours; "
                                              "writes no cell.")
@click.option("--gpu", type=click.Choice(sorted(GPUS)), default="a100", show_default=True,
              help="Dry run: the GPU the hours are projected on.")
@click.option("--gpu-efficiency", type=click.FloatRange(0, 1, min_open=True), default=DEFAULT_EFFICIENCY,
              show_default=True, help="Dry run: sustained fraction of the GPU's peak FLOP/s (measured on an H200; "
                                      "each unit is also bounded by its operator calls × 20 µs).")
@click.option("--dry-run-units", type=click.IntRange(1, 100), default=2, show_default=True,
              help="Dry run: units (steps, images) each stage runs.")
@click.option("--json", "as_json", is_flag=True, help="Dry run: JSON instead of the table.")
@click.option("--markdown", "as_markdown", is_flag=True, help="Dry run: Markdown instead of the table.")
def run(matrix, methods, seeds, profile, device, out_dir, data_root, limit_test, precision, force, workers, threads,
        executor, address, gpus_per_cell, cpus_per_cell, max_retries, slurm_partition, slurm_time, slurm_gpus_per_task,
        slurm_cpus_per_task, slurm_array_parallelism, wait, plugins, trackers, tracker_dir, progress, dry_run, gpu,
        gpu_efficiency, dry_run_units, as_json, as_markdown):
    """Run METHODS on every SRC→TGT cell of MATRIX for each seed, then print the leaderboard.

    Finished cells are never recomputed; failed cells are retried on the next run. Exits 1 when any cell
    failed (listed at the end).
    """
    if matrix is None:
        matrix = REAL_MATRIX if data_root else SYNTHETIC_MATRIX
    if methods is None:
        methods = SYNTHETIC_METHODS
    out_dir = out_dir or Path("runs") / profile
    with loading_libraries():  # the plugins, the readers and torch (every cell and the device check need it)
        import torch  # noqa: F401

        from . import runner
        from .io import check_writable_dir, default_cache_dir

        if plugins:
            from .plugins import build_registries, plugin_modules

            regs = build_registries(plugin_modules(plugins))
        else:
            regs = _registries()
        planned = runner.plan_run(matrix, methods, seeds, profile, regs, data_root, limit_test, precision)
        if not dry_run:  # and what every cell and the leaderboard will load: scipy's ndimage and spatial, pandas
            from . import executors, jobs, leaderboard, metrics, stats, visualize  # noqa: F401
    canonical = planned.spec
    command = shlex.join(["harness", "run", "--matrix", ",".join(f"{a}→{b}" for a, b in canonical.matrix),
                          "--methods", ",".join(canonical.methods), "--seeds", ",".join(map(str, canonical.seeds)),
                          "--profile", profile, "--device", device, "--precision", precision, "--out", str(out_dir)]
                         + (["--data-root", str(data_root)] if data_root else [])
                         + (["--limit-test", str(limit_test)] if limit_test else [])
                         + (["--threads", str(threads)] if threads else [])
                         + (["--executor", executor] if executor != "local" else [])
                         + _executor_args(executor, address=address, gpus_per_cell=gpus_per_cell,
                                          cpus_per_cell=cpus_per_cell, max_retries=max_retries,
                                          slurm_partition=slurm_partition, slurm_time=slurm_time,
                                          slurm_gpus_per_task=slurm_gpus_per_task,
                                          slurm_cpus_per_task=slurm_cpus_per_task,
                                          slurm_array_parallelism=slurm_array_parallelism)
                         + [a for m in plugins for a in ("--plugin", m)]
                         + [a for t in trackers for a in ("--log-with", t)]
                         + (["--tracker-dir", str(tracker_dir)] if tracker_dir else []))
    # the same validated plan with the run's command line, workers and plugins on its spec (a new frozen value)
    plan = replace(planned, spec=replace(canonical, command=command, workers=workers, plugins=tuple(plugins),
                                         trackers=tuple(dict.fromkeys(trackers)),
                                         tracker_dir=str(tracker_dir.resolve()) if tracker_dir else None))
    if dry_run:
        from .cli_dryrun import dry_run_command

        return dry_run_command(plan, device, gpu=gpu, efficiency=gpu_efficiency, max_units=dry_run_units,
                               as_json=as_json, as_markdown=as_markdown)
    if any(not (Path(out_dir) / c.relpath / "metrics.json").exists() for c in plan.cells):
        check_writable_dir(out_dir, "--out")  # a finished run in a read-only folder is only printed
        check_writable_dir(default_cache_dir(), "the artefact cache (HARNESS_CACHE)")
    err_console.print(f"[bold]harness run[/bold]: {len(plan.cells)} cell(s) "
                      f"({len(plan.methods)} method(s) × {len(plan.matrix)} pair(s) × {len(plan.seeds)} seed(s)) "
                      f"→ {out_dir}")
    from .executors import make_executor

    options = {"ray": {"address": None if address == "local" else address, "gpus_per_cell": gpus_per_cell,
                       "cpus_per_cell": cpus_per_cell, "max_retries": max_retries},
               "slurm": {"partition": slurm_partition, "time_min": slurm_time, "gpus_per_task": slurm_gpus_per_task,
                         "cpus_per_task": slurm_cpus_per_task, "array_parallelism": slurm_array_parallelism,
                         "notice": lambda line: err_console.print(line, markup=False, highlight=False, soft_wrap=True)},
               "local": {"threads": threads}}[executor]
    summary = runner.execute(plan, out_dir, device, progress=progress, console=err_console, force=force,
                             executor=make_executor(executor, **options), wait=wait)
    for path in summary.replaced:
        err_console.print(f"moved a cell of another configuration aside: {path}")
    err_console.print(f"finished {len(summary.finished)}, already done {len(summary.skipped)}, "
                      f"failed {len(summary.failed)}" + (", interrupted (run again to resume)"
                                                         if summary.interrupted else "")
                      + (f", {len(summary.held)} being computed by another driver (run again later to collect them)"
                         if summary.held else ""))
    click.echo(_write_board(Path(out_dir)))
    if summary.failed:
        click.echo(f"Error: {len(summary.failed)} cell(s) failed (see error.json and log.txt in each; "
                   f"run again to retry):", err=True)
        for cell, message in summary.failed:
            click.echo(f"  {out_dir / cell.relpath}: {message}", err=True)
        sys.exit(1)
    if summary.interrupted:
        sys.exit(143 if summary.signal == "SIGTERM" else 130)
    if data_root is None and matrix == SYNTHETIC_MATRIX and methods == SYNTHETIC_METHODS:
        trained = SYNTHETIC_METHODS.split(",")[0]
        click.echo(  # plain lines (no rich wrapping): commands to copy
            "\nnext:\n"
            f"  harness compare {out_dir} {trained} source-mean   # is the trained counter better? (paired, 95 %)\n"
            f"  harness report {out_dir} -o {out_dir}/report       # HTML: forest plots, per-cell pages, overlays\n"
            "  harness run --data-root DIR --matrix 'SHA→SHB,SHB→SHA' --methods source-only-mcnn-sha,zero,source-mean"
            "   # ShanghaiTech\n"
            "  harness plugins                                     # the methods (PromptMix, RDBT, SYRAC, LDM, ...)\n"
            "  harness new-plugin my-method                        # a method of your own", err=True)


def _executor_args(executor: str, **options) -> list[str]:
    """The executor's options as they go on the recorded command line (``config.json``'s ``command``): Ray's and
    Slurm's resources, so the command reruns the run as it was placed."""
    names = {"ray": ("address", "gpus_per_cell", "cpus_per_cell", "max_retries"),
             "slurm": ("slurm_partition", "slurm_time", "slurm_gpus_per_task", "slurm_cpus_per_task",
                       "slurm_array_parallelism")}.get(executor, ())
    return [a for n in names if options[n] is not None for a in ("--" + n.replace("_", "-"), str(options[n]))]


def _write_board(out_dir: Path) -> str:
    """The run's Markdown leaderboard, also written to ``leaderboard.md`` where the folder is writable."""
    from .io import atomic_write_text
    from .leaderboard import collect, leaderboard, render

    board = render(leaderboard(collect(out_dir)), "md")
    try:
        atomic_write_text(out_dir / "leaderboard.md", board)
    except OSError as exc:
        err_console.print(f"could not write {out_dir / 'leaderboard.md'} ({exc.strerror or type(exc).__name__}); "
                          f"the leaderboard is printed below", markup=False, highlight=False)
    return board


# --------------------------------------------------------------------------------------------- plugins


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json):
    """List plugins: versions, hooks, registered components per kind, and load errors."""
    from dataclasses import asdict

    regs = _registries() if not as_json else _quiet_registries()
    if as_json:
        click.echo(json.dumps([asdict(p) for p in regs.plugins], indent=2))
        return
    table = Table(title="harness plugins")
    for col in ("plugin", "version", "distribution", "hooks", "components", "error"):
        table.add_column(col, overflow="fold")
    for p in regs.plugins:
        comps = "\n".join(f"{kind}: {', '.join(names)}" for kind, names in p.components.items())
        hooks = "\n".join(h.replace("harness_register_", "") for h in p.hooks)
        table.add_row(p.name + (" (built-in)" if p.builtin else ""), p.version or "", p.distribution or "",
                      hooks, comps, f"[red]{p.error}[/red]" if p.error else "")
    Console().print(table)


@main.command("config")
@click.argument("method")
@click.option("--profile", default="paper", show_default=True, help="The profile to resolve (smoke, paper, ...).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def config_cmd(method, profile, as_json):
    """Print every option METHOD runs with under --profile, and where each value comes from (profile or default):
    what to read before spending GPU hours."""
    from .planning import resolved_options

    res = resolved_options(_quiet_registries(), method, profile)
    if as_json:
        click.echo(json.dumps(res, indent=2, default=str))
        return
    table = Table(title=f"{res['method']} ({res['strategy']}), profile {res['profile']}", caption=res["description"])
    for col in ("option", "value", "from"):
        table.add_column(col, overflow="fold")
    for row in res["options"]:
        table.add_row(row["key"], json.dumps(row["value"], default=str),
                      row["source"] if row["source"] == "default" else f"[bold]{row['source']}[/bold]")
    Console().print(table)


# --------------------------------------------------------------------------------------------- leaderboard


from .cli_results import RESULT_COMMANDS  # noqa: E402  (leaderboard, status, report, compare, submit)

for _command in RESULT_COMMANDS:
    main.add_command(_command)


@main.command("new-plugin")
@click.argument("name")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Folder in which harness-NAME/ is written.")
@click.option("--title", default=None, help="One line naming the method (README, descriptions).")
def new_plugin(name, out_dir, title):
    """Write harness-NAME/: a method distribution (pyproject with the harness entry point, a strategy built from
    core pieces, its method, README with the paper ↔ profile table, tests) whose tests pass right away."""
    from .newplugin import write_plugin

    root = write_plugin(name, out_dir, title)
    click.echo(f"wrote {root}\nnext: pip install -e {root} && (cd {root} && pytest) && "
               f"pytest --harness-plugin {name.replace('-', '_')}")


from .cli_data import count, datasets  # noqa: E402  (harness count, harness datasets [verify])

main.add_command(count)
main.add_command(datasets)


if __name__ == "__main__":  # pragma: no cover
    main()
