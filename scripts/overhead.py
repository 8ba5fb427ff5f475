"""Fixed costs of `harness run` against a bare torch loop over the same images and weights, process to process.

The harness run: ``harness run --matrix SHA→SHB --methods source-only-mcnn-sha --limit-test N`` into a fresh folder
(planning, data fingerprints, config, per-image seeding and validation, the progress file, ground truth, metrics
and mAP, overlays, the leaderboard). The bare loop: a new Python process that loads the same MCNN-SHA weights, reads
the same N ShanghaiTech B test images with Pillow and sums the model's density maps. Runs alternate, ``--repeat``
times each, in ABBA order (bare first in even rounds, the harness first in odd ones, so that a drift of a shared
machine's speed cancels out); the medians and their ratio are printed, and the median and range of the rounds' own
ratios (wall seconds; the machine should be otherwise idle), and the same for CPU time (user + system), which a
shared virtual machine's neighbours disturb less.

    HARNESS_DATA=... HARNESS_WEIGHTS=... .venv/bin/python scripts/overhead.py [--images 25] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BARE = """
import os, sys
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from harness.models.mcnn import mcnn_counter, mcnn_preprocess
root = Path(os.environ["HARNESS_DATA"]) / "ShanghaiTech/part_B/test_data/images"
files = sorted(root.glob("*.jpg"), key=lambda p: int(p.stem.split("_")[-1]))[:int(sys.argv[1])]
model = mcnn_counter("SHA", device="cpu").model.eval()
with torch.inference_mode():
    counts = [float(model(mcnn_preprocess(np.asarray(Image.open(f).convert("RGB")))).sum()) for f in files]
print(sum(counts))
"""


def timed(cmd: list[str], cpu: list[float]) -> float:
    """Wall seconds of ``cmd``; its CPU seconds (user + system, from the children's rusage) appended to ``cpu``."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not os.environ.get("HARNESS_DATA"):
        sys.exit("set HARNESS_DATA to the folder holding ShanghaiTech/ (and HARNESS_WEIGHTS to the MCNN weights)")
    harness = str(Path(sys.executable).parent / "harness")
    bare, run, bare_cpu, run_cpu = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "bare.py"
        script.write_text(BARE)
        for i in range(args.repeat):
            out = Path(tmp) / f"run-{i}"
            command = [harness, "run", "--matrix", "SHA→SHB", "--methods", "source-only-mcnn-sha", "--limit-test",
                       str(args.images), "--out", str(out), "--data-root", os.environ["HARNESS_DATA"]]
            steps = [lambda: bare.append(timed([sys.executable, str(script), str(args.images)], bare_cpu)),
                     lambda: run.append(timed(command, run_cpu))]
            for step in steps if i % 2 == 0 else steps[::-1]:  # ABBA: a drift of the machine's speed cancels out
                step()
            shutil.rmtree(out, ignore_errors=True)
    b, r = statistics.median(bare), statistics.median(run)
    print(f"bare torch loop: {b:.2f} s (median of {', '.join(f'{x:.2f}' for x in bare)})")
    print(f"harness run:     {r:.2f} s (median of {', '.join(f'{x:.2f}' for x in run)})")
    print(f"ratio {r / b:.3f}; fixed cost {r - b:.2f} s over {args.images} images")
    pairs = sorted(y / x for x, y in zip(bare, run))  # each harness run against the bare loop of its round
    print(f"paired ratios: median {statistics.median(pairs):.3f} (range {pairs[0]:.3f}-{pairs[-1]:.3f})")
    bc, rc = statistics.median(bare_cpu), statistics.median(run_cpu)
    print(f"CPU time (user + system): bare {bc:.2f} s, harness {rc:.2f} s (medians): ratio {rc / bc:.3f}")


if __name__ == "__main__":
    main()
