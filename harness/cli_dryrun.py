"""``harness run --dry-run``: print what the plan's cells cost (:mod:`harness.dryrun`), as a table or JSON."""
from __future__ import annotations

import json
import sys
from dataclasses import replace
from typing import Any

import click

from .cli_common import err_console


def dry_run_command(plan: Any, device: str, *, gpu: str, efficiency: float, max_units: int, as_json: bool,
                    as_markdown: bool = False) -> None:
    """Dry-run every cell of ``plan`` here and print the table (stdout), ``--json`` or ``--markdown``; exits 1 when
    a cell's stage could not run (each named in one line)."""
    from rich.console import Console

    from .conditions import resolve_device
    from .dryrun import dry_run, markdown, render

    dev = resolve_device(device)
    plan = replace(plan, spec=replace(plan.spec, trackers=(), tracker_dir=None))
    n = len({(c.method, c.source, c.target) for c in plan.cells})
    err_console.print(f"[bold]harness run --dry-run[/bold]: {n} cell(s) at the {plan.profile} profile's shapes, "
                      f"{max_units} unit(s) per stage, on {dev}; nothing is written to the run folder")
    report = dry_run(plan, dev, gpu=gpu, efficiency=efficiency, max_units=max_units, isolate=True,
                     on_cell=lambda i, k, c: err_console.print(f"  [{i + 1}/{k}] {c.method} {c.pair}",
                                                               highlight=False),
                     notify=lambda line: err_console.print(f"  {line}", highlight=False))
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=1, default=float))
    elif as_markdown:
        click.echo(markdown(report))
    else:
        Console(width=max(160, Console().width), soft_wrap=False).print(render(report))
    failed = [c for c in report.cells if c.error]
    if failed:
        click.echo(f"Error: {len(failed)} cell(s) could not run every stage:", err=True)
        for c in failed:
            click.echo(f"  {c.method} {c.source}→{c.target}: {c.error}", err=True)
        sys.exit(1)
