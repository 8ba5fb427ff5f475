"""Calibrate the dry run's projection on this machine: for each method, the time the dry run projects for a `smoke`
cell here (Σ stages of units × measured seconds per unit) against the time the same cell really takes.

Each method runs twice, one after the other, in a fresh artefact cache so that no fit is cached: the real cell
(`harness run`, `duration_s` of its `metrics.json`) and the dry run (`harness run --dry-run --json`, the cell's
`device_hours`). Prints a Markdown table with the ratio projected / measured.

    .venv/bin/python scripts/calibrate_dry_run.py --matrix 'SYN-PARK→SYN-STREET' \\
        --methods source-only-rescsrnet,dmap-vgg,regnet            # minutes per method on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def harness(*args: str, env: dict) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("harness")
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matrix", default="SYN-PARK→SYN-STREET")
    ap.add_argument("--methods", required=True)
    ap.add_argument("--threads", default="2")
    ap.add_argument("--limit-test", default=None)
    args = ap.parse_args()
    rows = []
    for method in args.methods.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            common = ["--matrix", args.matrix, "--methods", method, "--profile", "smoke", "--threads", args.threads] \
                + (["--limit-test", args.limit_test] if args.limit_test else [])
            env = {**os.environ, "HARNESS_CACHE": str(Path(tmp) / "cache-real"), "OMP_NUM_THREADS": args.threads}
            t0 = time.perf_counter()
            real = harness("run", *common, "--out", str(Path(tmp) / "run"), env=env)
            wall = time.perf_counter() - t0
            metrics = sorted((Path(tmp) / "run").glob("*/*/seed-*/metrics.json"))
            if real.returncode != 0 or not metrics:
                print(f"{method}: the real run failed: {real.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            measured = sum(json.loads(p.read_text())["duration_s"] for p in metrics)
            env["HARNESS_CACHE"] = str(Path(tmp) / "cache-dry")
            dry = harness("run", *common, "--dry-run", "--json", env=env)
            if dry.returncode != 0:
                print(f"{method}: the dry run failed: {dry.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                continue
            report = json.loads(dry.stdout)
            projected = sum(c["device_hours"] for c in report["cells"]) * 3600
            largest = max((s for c in report["cells"] for s in c["stages"]), key=lambda s: s["device_hours"])
            rows.append((method, measured, projected, largest["name"], report["dry_run_seconds"], wall))
            print(f"{method}: measured {measured:.1f} s, projected {projected:.1f} s", file=sys.stderr)
    print("| method | measured cell s | projected s | projected / measured | largest stage | dry run s |")
    print("|---|---:|---:|---:|---|---:|")
    for method, measured, projected, largest, dry_s, _ in rows:
        print(f"| {method} | {measured:.1f} | {projected:.1f} | {projected / measured:.2f} | {largest} | {dry_s:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
