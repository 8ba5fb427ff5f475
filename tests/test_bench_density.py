"""Benchmark: fast density_map vs the classic per-head gaussian_filter loop on real ShanghaiTech A train images.

The project runs pytest with ``--benchmark-disable``: each benchmark then runs once as a plain test and still
checks correctness (sums equal counts). To measure (compare the two means in the "density" group):

    HARNESS_DATA=/work/shared/data .venv/bin/pytest tests/test_bench_density.py --benchmark-enable

Speed-up over the first N train images (IMG_1..IMG_N, incl. 1,500-head scenes; minutes for the classic loop):

    HARNESS_DATA=/work/shared/data .venv/bin/python tests/test_bench_density.py 10
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from realdata import n_inside, sha_train
from harness.data.density import classic_density_map, density_map

# A few hundred heads each: the classic loop takes seconds per image (not minutes), so the disabled
# (run-once) mode stays cheap.
BENCH_IMAGES = (8, 9, 17)  # 145, 189 and 285 heads


@pytest.fixture(scope="module")
def sha_images(data_root):
    return [sha_train(data_root, i) for i in BENCH_IMAGES]


def _run(fn, images):
    return [fn(points, shape) for points, shape in images]


@pytest.mark.realdata
@pytest.mark.benchmark(group="density")
def test_bench_fast_density(benchmark, sha_images):
    benchmark.extra_info["images"] = [f"SHA/train/IMG_{i}" for i in BENCH_IMAGES]
    benchmark.extra_info["heads"] = sum(len(p) for p, _ in sha_images)
    maps = benchmark(_run, density_map, sha_images)
    for (points, shape), d in zip(sha_images, maps):
        assert d.shape == shape and d.dtype == np.float32
        assert abs(float(d.sum()) - n_inside(points, shape)) < 1e-3


@pytest.mark.realdata
@pytest.mark.benchmark(group="density")
def test_bench_classic_density(benchmark, sha_images):
    benchmark.extra_info["images"] = [f"SHA/train/IMG_{i}" for i in BENCH_IMAGES]
    benchmark.extra_info["heads"] = sum(len(p) for p, _ in sha_images)
    maps = benchmark.pedantic(_run, args=(classic_density_map, sha_images), rounds=2, iterations=1)
    for (points, shape), classic in zip(sha_images, maps):
        count = n_inside(points, shape)
        fast = density_map(points, shape)
        # the classic loop loses the mass blurred past the border; ours renormalises inside the image, so
        # it is never below the classic map and both agree on the total up to that border loss
        assert 0.9 * count < float(classic.sum()) <= count + 1e-3
        assert (fast >= classic - 1e-6).all()
        assert np.abs(fast - classic).max() < 0.05


def main(argv: list[str]) -> None:
    """Time both implementations on SHA train IMG_1..IMG_n and print totals and the speed-up."""
    n = int(argv[1]) if len(argv) > 1 else 10
    root = Path(os.environ.get("HARNESS_DATA", "/work/shared/data"))
    t_fast = t_classic = 0.0
    heads = 0
    for i in range(1, n + 1):
        points, shape = sha_train(root, i)
        density_map(points, shape)  # warm-up (imports, caches)
        t0 = time.perf_counter()
        fast = density_map(points, shape)
        t1 = time.perf_counter()
        classic_density_map(points, shape)
        t2 = time.perf_counter()
        t_fast += t1 - t0
        t_classic += t2 - t1
        heads += len(points)
        assert abs(float(fast.sum()) - n_inside(points, shape)) < 1e-3
        print(f"IMG_{i}: {len(points)} heads {shape}: fast {1e3 * (t1 - t0):.1f} ms, classic {t2 - t1:.2f} s")
    print(f"{n} images, {heads} heads: fast {t_fast:.3f} s, classic {t_classic:.1f} s, "
          f"speed-up {t_classic / t_fast:.0f}x")


if __name__ == "__main__":
    main(sys.argv)
