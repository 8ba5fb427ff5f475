"""The ``harness`` console script and ``python -m harness``: the :mod:`harness.cli` commands, with the interpreter's
own housekeeping kept short, since every cell a user runs in its own process pays it (README, "Fixed costs").

- **Start-up.** The command line and its libraries load with CPython's cyclic garbage collector paused, and are
  frozen when they have loaded, since this process ends with its command
  (:func:`harness.cli_common.loading_libraries`; ``harness run`` does it again for the plugins, the readers, torch
  and the modules its cells use).
- **Exit.** Finalising the interpreter runs a full collection over every object still alive (measured: 0.34 s of a
  process's exit after ``import torch``, 0.13 s with the objects frozen). When the command has returned or exited,
  everything it wrote is closed (atomic writes; the log handlers are flushed by :mod:`logging`'s exit hook, which
  still runs), so the objects are frozen (:func:`gc.freeze`) and the process ends without walking them.
"""
from __future__ import annotations

import gc


def main() -> None:
    """Run the ``harness`` command line (exit codes: :mod:`harness.cli`)."""
    from . import cli_common
    from .cli_common import loading_libraries

    cli_common.OWNS_PROCESS = True
    with loading_libraries():
        from .cli import main as cli
    try:
        cli(prog_name="harness")
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
