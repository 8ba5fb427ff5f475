"""Benchmark: the localisation metrics a cell computes for every image (group "localisation").

A counter's density map of a ShanghaiTech B test image at stride 4 is 192 × 256; its local maxima (about 450 per
MCNN map) are the predicted points, matched against ~130 heads at δ = 1..100 px:

    .venv/bin/pytest tests/test_bench_metrics.py --benchmark-enable

With ``--benchmark-disable`` (the project's default) each runs once as a plain test and checks its result against a
straightforward computation (scipy's label statistics; the per-δ greedy walk of the metric's definition).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from harness.metrics import DEFAULT_PEAK_THRESHOLD, localisation_map, points_from_density
from test_metrics import _reference_map  # the per-δ walk of the metric's definition (tests/ is on sys.path)

N_IMAGES = 25


def _density(rng) -> np.ndarray:
    """A smooth, positive, MCNN-like map: blurred noise with a few hundred local maxima."""
    return ndimage.gaussian_filter(rng.uniform(0, 1, size=(192, 256)), 1.5) * 1e-2


@pytest.fixture(scope="module")
def maps():
    rng = np.random.default_rng(0)
    return [_density(rng) for _ in range(N_IMAGES)]


@pytest.fixture(scope="module")
def items(maps):
    rng = np.random.default_rng(1)
    out = []
    for d in maps:
        pts, scores = points_from_density(d, stride=4)
        gt = rng.uniform(0, [1024, 768], size=(130, 2))
        out.append((pts, scores, gt))
    return out


@pytest.mark.benchmark(group="localisation")
def test_bench_points_from_density(benchmark, maps):
    found = benchmark(lambda: [points_from_density(d, stride=4) for d in maps])
    d = maps[0]
    peak = ndimage.maximum_filter(d, size=3, mode="constant", cval=-np.inf)
    labels, n = ndimage.label((d == peak) & (d > DEFAULT_PEAK_THRESHOLD * 16), structure=np.ones((3, 3), dtype=bool))
    assert 100 < n == len(found[0][0])
    assert sorted(found[0][1].tolist()) == sorted(ndimage.maximum(d, labels, np.arange(1, n + 1)).tolist())


@pytest.mark.benchmark(group="localisation")
def test_bench_localisation_map(benchmark, items):
    result = benchmark(localisation_map, items)
    assert sum(len(p) for p, _, _ in items) > 100 * N_IMAGES
    for delta in (4, 30):
        assert result["ap"][delta] == pytest.approx(_reference_map(items, [delta])[0], abs=1e-12)
