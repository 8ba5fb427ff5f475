"""Benchmark: the harness's evaluation path against a bare torch loop over the same images and weights.

The harness adds per-image seeding, prediction validation, the progress file, local-maxima localisation and the
metrics; the benchmark keeps that overhead visible (group "evaluation"; compare the two means):

    .venv/bin/pytest tests/test_bench_eval.py --benchmark-enable

With ``--benchmark-disable`` (the project's default) each runs once as a plain test and checks that the harness
predicts exactly what the bare loop computes. Process-to-process timings of ``harness run`` against a bare script
are in the README.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from harness import evaluate_counter
from harness.data.synthetic import SyntheticCrowds
from harness.models.mcnn import mcnn_counter, mcnn_preprocess

N_IMAGES = 6


@pytest.fixture(scope="module")
def setup():
    refs = SyntheticCrowds("SYN-DENSE").samples("test")[:N_IMAGES]
    return mcnn_counter("SHA", weights="random"), refs


def bare_loop(model, refs) -> list[float]:
    out = []
    with torch.inference_mode():
        for ref in refs:
            s = ref.load()
            out.append(float(model(mcnn_preprocess(s.image)).sum()))
    return out


@pytest.mark.benchmark(group="evaluation")
def test_bench_bare_torch_loop(benchmark, setup):
    counter, refs = setup
    counts = benchmark(bare_loop, counter.model.eval(), refs)
    assert len(counts) == N_IMAGES


@pytest.mark.benchmark(group="evaluation")
def test_bench_harness_evaluation(benchmark, setup, tmp_path):
    counter, refs = setup
    paths = iter(range(10**6))
    result = benchmark(lambda: evaluate_counter(counter, refs, seed=0, partial_path=tmp_path / f"{next(paths)}.jsonl"))
    assert np.allclose([r["pred_count"] for r in result.records], bare_loop(counter.model.eval(), refs), rtol=1e-5)
    assert result.metrics["map"] is not None
