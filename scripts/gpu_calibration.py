"""Calibrate the dry run's GPU projection against a dry run measured on that GPU.

A dry run on a GPU (`harness run … --dry-run --device cuda --gpu <that GPU> --json`) holds, per stage, the measured
seconds per unit (CUDA-synchronised) and the FLOPs and ATen operator calls per unit. This prints, as Markdown:

- per stage timed without the FLOP counter: the fraction of the dense peak it sustained (FLOPs / s / peak) and its
  seconds per operator call;
- the two figures the projection uses (:data:`harness.dryrun.DEFAULT_EFFICIENCY`, :data:`harness.dryrun.GPU_OP_SECONDS`)
  refitted: the median fraction of peak of the stages over 1 TFLOP per unit, the median seconds per call of the
  training steps their FLOPs do not explain (under 1 % of peak);
- per method: the measured time of its cells against the projection (``project_seconds``) at the given figures.

Dry runs made before operator calls were counted can take them from a dry run of the same cells elsewhere
(``--ops-from cpu.json``: same stages, same shapes). A CPU count is what the projection is used with; it is higher
than a GPU's for optimiser steps (per-tensor loops on a CPU, multi-tensor kernels on CUDA).

    .venv/bin/python scripts/gpu_calibration.py gpu-1.json gpu-2.json --ops-from cpu.json [--efficiency 0.1]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.dryrun import DEFAULT_EFFICIENCY, GPU_OP_SECONDS, GPUS, project_seconds  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reports", nargs="+", help="--json outputs of dry runs on the GPU")
    ap.add_argument("--ops-from", action="append", default=[], help="--json dry runs giving operator calls")
    ap.add_argument("--efficiency", type=float, default=DEFAULT_EFFICIENCY)
    ap.add_argument("--op-seconds", type=float, default=GPU_OP_SECONDS)
    args = ap.parse_args()
    ops = {}
    for f in args.ops_from:
        for c in json.loads(Path(f).read_text())["cells"]:
            for s in c["stages"]:
                if s.get("ops_per_unit"):
                    ops.setdefault((c["method"], s["name"]), s["ops_per_unit"])
    cells, peak_of = {}, {}
    for f in args.reports:
        r = json.loads(Path(f).read_text())
        if not str(r["device"]).startswith("cuda"):
            print(f"error: {f} was measured on {r['device']}, not on a GPU", file=sys.stderr)
            return 2
        for c in r["cells"]:
            if c["method"] not in cells or cells[c["method"]]["error"]:  # the first complete measurement of a method
                cells[c["method"]] = c
                peak_of[c["method"]] = (r["gpu"], r["precision"])
    rows, fractions, per_call = [], [], []
    for m, c in cells.items():
        gpu, precision = peak_of[m]
        for s in c["stages"]:
            where = s["reused_from"].split(" ")[0] if s.get("reused_from") else m  # a borrowed stage: its measurer's
            s["ops_per_unit"] = s.get("ops_per_unit") or ops.get((m, s["name"])) or ops.get((where, s["name"]))
            f, t, n = s["flops_per_unit"], s["seconds_per_unit"], s["ops_per_unit"]
            if not f or not t or s["timed_with_counter"] or s.get("reused_from"):
                continue
            frac = f / t / GPUS[gpu][s.get("precision") or precision]
            us = t / n * 1e6 if n else None
            rows.append((m, s["name"], f, n, t, frac, us))
            if f > 1e12:
                fractions.append(frac)
            if frac < 0.01 and us is not None and s["name"].startswith("train:"):
                per_call.append(us)
    print("| method | stage | FLOPs/unit | operator calls | s/unit | fraction of peak | µs per call |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for m, name, f, n, t, frac, us in rows:
        per = "—" if us is None else f"{us:.1f}"
        print(f"| {m} | {name} | {f:.3g} | {n or '—'} | {t:.4f} | {frac:.3f} | {per} |")
    print()
    if fractions:
        print(f"stages over 1 TFLOP per unit: fraction of peak {min(fractions):.3f}–{max(fractions):.3f}, median "
              f"{statistics.median(fractions):.3f} ({len(fractions)} stages)")
    if per_call:
        print(f"training steps under 1 % of peak: {min(per_call):.1f}–{max(per_call):.1f} µs per operator call, "
              f"median {statistics.median(per_call):.1f} ({len(per_call)} stages)")
    print()
    print(f"| method | measured (GPU h) | projected, FLOPs at {args.efficiency} of peak + "
          f"{args.op_seconds * 1e6:.0f} µs/call | measured / projected | FLOPs only at 0.3 | measured / that |")
    print("|---|---:|---:|---:|---:|---:|")
    for m, c in cells.items():
        gpu, precision = peak_of[m]
        meas = proj = old = 0.0
        for s in c["stages"]:
            t = s["seconds_per_unit"] or 0.0
            peak = GPUS[gpu][s.get("precision") or precision]
            meas += s["units"] * t
            new = project_seconds(s["flops_per_unit"], s["ops_per_unit"], peak * args.efficiency, args.op_seconds)
            flops_only = project_seconds(s["flops_per_unit"], 0, peak * 0.3)
            proj += s["units"] * (t if new is None else new)
            old += s["units"] * (t if flops_only is None else flops_only)
        if not proj or not old:
            print(f"| {m} | {meas / 3600:.3f} | — | — | — | — |")
            continue
        missing = any(s["flops_per_unit"] and not s["ops_per_unit"] for s in c["stages"])
        print(f"| {m} | {meas / 3600:.3f} | {proj / 3600:.3f}{' (calls not counted)' if missing else ''} | "
              f"{meas / proj:.2f} | {old / 3600:.3f} | {meas / old:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
