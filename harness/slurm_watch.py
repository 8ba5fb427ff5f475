"""The state of a run's Slurm jobs as the driver sees them, with or without job accounting.

submitit asks ``sacct`` for a job's state. Many clusters run without accounting (no ``slurmdbd``): there ``sacct``
fails, submitit's state stays ``UNKNOWN`` and ``Job.result()`` waits forever for a job that was cancelled, killed
for memory or lost with its node (it also prints the failure as two warnings on every poll). :class:`SlurmStates`
asks ``squeue`` for the jobs still in the queue, then ``sacct`` where accounting works, else ``scontrol show job``
(which keeps an ended job for the cluster's ``MinJobAge``, 300 s by default); :func:`ended` says when a job left
the queue without a result. Job states: Slurm's ``squeue(1)`` "JOB STATE CODES".
"""
from __future__ import annotations

import getpass
import subprocess
import sys
from typing import Callable

#: states of a job still in the queue (it may yet write its result; REQUEUED: preempted or timed out and requeued
#: by submitit's checkpointing)
LIVE = frozenset({"PENDING", "RUNNING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED",
                  "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT", "STOPPED",
                  "POWER_UP_NODE", "UPDATE_DB"})
#: states after which a job never runs again (COMPLETED without a result file: the file system may lag; see `ended`)
ENDED = frozenset({"CANCELLED", "FAILED", "OUT_OF_MEMORY", "NODE_FAIL", "TIMEOUT", "BOOT_FAIL", "DEADLINE",
                   "PREEMPTED", "COMPLETED", "REVOKED"})


def _first_word(state: str) -> str:
    """``"CANCELLED by 0"`` (sacct) → ``"CANCELLED"``."""
    return state.split()[0].rstrip("+") if state.strip() else ""


class SlurmStates:
    """``states(job_ids) -> {job_id: state | None}`` (None: no command knows the job any more).

    Args:
        notice: called once with one line when ``sacct`` is unavailable (default: printed on stderr).
        run: ``subprocess.run`` (tests may replace it).
    """

    def __init__(self, notice: Callable[[str], None] | None = None, run: Callable = subprocess.run):
        self.accounting: bool | None = None  # None: not asked yet
        self.notice = notice or (lambda line: print(line, file=sys.stderr))
        self._run = run

    def _out(self, cmd: list[str]) -> tuple[int, str, str]:
        try:
            p = self._run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 1, "", str(exc)
        return p.returncode, p.stdout, p.stderr

    def queued(self) -> dict[str, str]:
        """Jobs of this user still in the queue (array tasks one per line: ``123_4``)."""
        rc, out, _ = self._out(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"])
        if rc != 0:
            return {}
        return {i: s for i, _, s in (line.partition("|") for line in out.split()) if i}

    def finished(self, job_ids: list[str]) -> dict[str, str]:
        """States of jobs no longer queued: ``sacct`` where accounting works, else ``scontrol show job``."""
        found: dict[str, str] = {}
        if job_ids and self.accounting is not False:
            rc, out, err = self._out(["sacct", "-n", "-P", "-X", "-o", "JobID,State", "-j", ",".join(job_ids)])
            if rc != 0:
                self.accounting = False
                why = (err.strip().splitlines() or ["no output"])[0]
                self.notice(f"Slurm: no job accounting here (sacct: {why}); a job's end is read from squeue and "
                            f"scontrol instead")
            else:
                self.accounting = True
                for line in out.splitlines():
                    jid, _, state = line.partition("|")
                    if jid in job_ids and _first_word(state):
                        found[jid] = _first_word(state)
        for jid in job_ids:
            if jid in found:
                continue
            rc, out, _ = self._out(["scontrol", "-o", "show", "job", jid])
            if rc == 0:
                for field in out.split():
                    if field.startswith("JobState="):
                        found[jid] = field.split("=", 1)[1]
        return found

    def __call__(self, job_ids: list[str]) -> dict[str, str | None]:
        queued = self.queued()
        states: dict[str, str | None] = {j: queued[j] for j in job_ids if j in queued}
        states.update(self.finished([j for j in job_ids if j not in states]))
        return {j: states.get(j) for j in job_ids}


def ended(state: str | None, seen_for: float, poll_s: float, grace_s: float) -> bool:
    """Whether a job without a result file has ended for good: a failure state (CANCELLED, OUT_OF_MEMORY,
    NODE_FAIL, …) seen on two polls ``poll_s`` apart; COMPLETED, or a job no command knows any more, after
    ``grace_s`` (its result file may still be on its way through a shared file system)."""
    if state in LIVE:
        return False
    if state in ENDED and state != "COMPLETED":
        return seen_for >= poll_s
    return seen_for >= grace_s


__all__ = ["SlurmStates", "ended", "LIVE", "ENDED"]
