"""What the ``harness`` commands share: the stderr console, the process-wide registries with plugin load
warnings shown (or kept quiet for machine-readable output), and the garbage-collector pause of their start-up."""
from __future__ import annotations

import contextlib
import gc
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


#: True in the process of the ``harness`` console script (:mod:`harness.__main__` sets it), which ends with its
#: command: there, what a command loads is frozen when the loading ends (see :func:`loading_libraries`)
OWNS_PROCESS = False


@contextlib.contextmanager
def loading_libraries():
    """Pause CPython's cyclic garbage collector while a command loads its libraries; its state is restored after.

    Loading click, rich, the harness, its plugins and torch creates about a million objects that live until the
    process ends, and the collector walks all of them again each time a full collection triggers during the imports:
    measured on 2 cores, importing torch took 0.85 s with the collector paused against 0.99 s with it (medians of 5
    processes; README, "Fixed costs"). The imports make no garbage worth collecting; whatever they do make is
    collected once the collector runs again.

    In the console script's own process (:data:`OWNS_PROCESS`) the loaded objects are also frozen (:func:`gc.freeze`)
    when the loading ends: they live until the process exits, and unfrozen, the first collections of the run walk
    them all again (measured: about 0.14 s less of a 25-image ``harness run``, README "Fixed costs"). A library caller's
    objects are never frozen (they stay collectable)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if OWNS_PROCESS:
            gc.freeze()  # the loaded modules live as long as the process: no collection need walk them again
        if enabled:
            gc.enable()


__all__ = ["err_console", "registries", "quiet_registries", "loading_libraries"]
