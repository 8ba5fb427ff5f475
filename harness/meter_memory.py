"""Peak memory of a dry-run stage (:mod:`harness.stages`): CUDA peak allocated on a GPU; on CPU the resident set,
sampled every 5 ms from ``/proc/self/statm`` by a daemon thread while a cell is metered (elsewhere ``ru_maxrss``).

Windows nest: :meth:`PeakMemory.begin` opens a stage's window and :meth:`PeakMemory.end` closes it, returning the
stage's peak (CPU: growth over the window's start, bytes), while the enclosing window keeps the larger of its own
peak and the nested one's.
"""
from __future__ import annotations

import os
import resource
import sys
import threading

__all__ = ["PeakMemory"]


class PeakMemory:
    """Peak memory sampler: CUDA peak allocated, else resident set (a 5 ms sampling thread while metering).

    Args:
        device: ``"cpu"`` or ``"cuda[:n]"``; on CUDA the figures are ``torch.cuda.memory_allocated`` /
            ``max_memory_allocated`` (bytes) and no thread runs.

    Attributes:
        peak: the largest reading of the open window so far (bytes).
    """

    def __init__(self, device: str):
        self.cuda = str(device).startswith("cuda")
        self.peak = 0
        self._stop = threading.Event()
        self._thread = None
        self._statm = sys.platform.startswith("linux") and os.path.exists("/proc/self/statm")
        self._page = os.sysconf("SC_PAGE_SIZE") if self._statm else 1

    def now(self) -> int:
        """Memory in use now, bytes (CUDA allocated; resident set from statm; else the process's max RSS)."""
        if self.cuda:
            import torch

            return int(torch.cuda.memory_allocated())
        if self._statm:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024

    def start(self) -> None:
        """Start the CPU sampling thread (no-op on CUDA or without /proc)."""
        if self.cuda or not self._statm:
            return

        def sample():
            while not self._stop.wait(0.005):
                self.peak = max(self.peak, self.now())

        self._thread = threading.Thread(target=sample, name="harness-meter-memory", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampling thread (a stopped sampler is not restarted: make a new one)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def sync(self) -> None:
        """Wait for the GPU's queued work (CUDA kernels run asynchronously: a clock read without waiting times
        their launches); nothing on CPU."""
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def begin(self) -> tuple[int, int]:
        """Start a stage's window: ``(baseline, the enclosing window's peak so far)``."""
        base = self.now()
        if self.cuda:
            import torch

            saved = max(int(torch.cuda.max_memory_allocated()), self.peak)
            torch.cuda.reset_peak_memory_stats()
            self.peak = 0
            return base, saved
        saved, self.peak = self.peak, base
        return base, saved

    def end(self, base: int, saved: int) -> int:
        """Close a window and return the stage's peak (CUDA: peak allocated; CPU: growth over ``base``); the
        enclosing window keeps the larger of its peak and this one."""
        if self.cuda:
            import torch

            peak = max(int(torch.cuda.max_memory_allocated()), self.peak)
            self.peak = max(saved, peak)
            return peak
        peak = max(self.peak, self.now())
        self.peak = max(saved, peak)
        return max(0, peak - base)
