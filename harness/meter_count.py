"""FLOPs and operator calls of a dry-run unit (:mod:`harness.stages`).

:class:`UnitCounter` opens :class:`torch.utils.flop_counter.FlopCounterMode` (FLOPs of matrix products,
convolutions and attention, forward and backward) and, above it, a dispatch mode that counts the ATen operator calls
the work makes after autograd (forward, backward and optimiser alike) — each one, on a GPU, a kernel launch or at
least a trip through the dispatcher. Small work is bounded by those calls, not by arithmetic: measured on an H200
(``leaderboards/paper-costs.md`` § Calibration), a training step of 1.45e10 FLOPs took 14 ms, 1 000 × its FLOP time.
The dry run's projection (:func:`harness.dryrun.project_seconds`) takes the larger of the two bounds.

The count depends on the device for optimiser steps: torch's optimisers run multi-tensor kernels on CUDA and a
per-tensor loop on a CPU (a ResCSRNet step: 835 calls on a CPU, 499 on the H200). The time per call
(:data:`harness.dryrun.GPU_OP_SECONDS`) was fitted on CPU counts against GPU times: it is meant for a dry run on a
CPU projected onto a GPU; a dry run on the GPU itself reports its measured time.
"""
from __future__ import annotations

import functools
from typing import Any

__all__ = ["UnitCounter"]


@functools.lru_cache(maxsize=None)
def _op_count_class() -> type:
    from torch.utils._python_dispatch import TorchDispatchMode

    class _OpCount(TorchDispatchMode):
        """Counts the ATen operator calls dispatched while it is open (after autograd, before decomposition)."""

        supports_higher_order_operators = True  # torch.cond & co. pass through to the FLOP counter below

        def __init__(self) -> None:
            super().__init__()
            self.n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.n += 1
            return func(*args, **(kwargs or {}))

    return _OpCount


class UnitCounter:
    """FLOPs and operator calls of the work run while it is open; it can be closed (a nested unit timed without it)
    and opened again, and :meth:`totals` adds up every opening."""

    def __init__(self) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        self._flops, self._ops = FlopCounterMode(display=False), _op_count_class()()
        self._flops_before = 0  # the FLOP mode counts from zero at each opening (and keeps its count when closed)
        self._open = False

    def __enter__(self) -> "UnitCounter":
        self._flops.__enter__()
        self._ops.__enter__()
        self._open = True
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ops.__exit__(*exc)
        self._flops_before += int(self._flops.get_total_flops())
        self._flops.__exit__(*exc)
        self._open = False

    def totals(self) -> tuple[int, int]:
        """``(FLOPs, operator calls)`` counted so far, every opening included (open or closed)."""
        return self._flops_before + (int(self._flops.get_total_flops()) if self._open else 0), self._ops.n
