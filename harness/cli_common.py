"""What the ``harness`` commands share: the stderr console and the process-wide registries with plugin load
warnings shown (or kept quiet for machine-readable output)."""
from __future__ import annotations

import warnings

import click
from rich.console import Console

err_console = Console(stderr=True)


def registries():
    """The process-wide registries; plugin load warnings are shown as one ``Warning:`` line each."""
    from .plugins import get_registries

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        regs = get_registries()
    for w in caught:
        click.echo(f"Warning: {w.message}", err=True)
    return regs


def quiet_registries():
    """The process-wide registries, plugin load warnings suppressed (their errors are part of JSON output)."""
    from .plugins import get_registries

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_registries()


__all__ = ["err_console", "registries", "quiet_registries"]
