"""Uncertainty of the numbers: paired bootstrap intervals over the test images (docs/design.md §12).

A cell's MAE and MSE are means over its test images, so the images are the unit of resampling (Efron &
Tibshirani, *An Introduction to the Bootstrap*, 1993, ch. 13: percentile intervals). Resamples are drawn with a
seeded generator and the same resampled image indices serve every seed of a method and both methods of a
comparison (paired), so the interval of a difference reflects only the images on which the methods disagree.
Crowd-counting papers report neither intervals nor seed spreads; the leaderboard shows both.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: defaults: 2000 resamples, 95 % percentile intervals, resampling seed 0
RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


def _indices(n: int, resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _metrics(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MAE and root MSE along the last axis of signed errors ĉ − c."""
    return np.abs(errors).mean(axis=-1), np.sqrt((errors ** 2).mean(axis=-1))


@dataclass(frozen=True)
class Interval:
    """A percentile interval ``[low, high]`` of a statistic at ``level``, from ``resamples`` resamples (``seed``)."""

    low: float
    high: float
    level: float = LEVEL
    resamples: int = RESAMPLES
    seed: int = SEED

    def to_list(self) -> list[float]:
        return [round(float(self.low), 4), round(float(self.high), 4)]


def _interval(values: np.ndarray, level: float, resamples: int, seed: int) -> Interval:
    lo, hi = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(lo), float(hi), level, resamples, seed)


def bootstrap_mae_mse(errors, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
                      ) -> tuple[Interval, Interval]:
    """Paired bootstrap intervals of MAE and MSE (root) for per-image signed errors.

    Args:
        errors: ``(n_images,)`` signed errors ĉ − c of one cell, or ``(n_seeds, n_images)`` for the seeds of one
            method on one cell (the statistic is then the mean over seeds of each seed's MAE / MSE, and every
            resample uses the same images for every seed).
        resamples, level, seed: number of resamples, interval level, resampling seed.

    Returns:
        ``(mae interval, mse interval)``.

    Raises:
        ValueError: no images, or non-finite errors.
    """
    e = np.atleast_2d(np.asarray(errors, dtype=np.float64))
    if e.shape[-1] == 0 or not np.isfinite(e).all():
        raise ValueError("bootstrap needs at least one image and finite errors")
    idx = _indices(e.shape[-1], resamples, seed)
    mae, mse = _metrics(e[:, idx])  # (n_seeds, resamples)
    return _interval(mae.mean(0), level, resamples, seed), _interval(mse.mean(0), level, resamples, seed)


@dataclass(frozen=True)
class Comparison:
    """A − B on one cell: the MAE difference (negative: A is better), its paired-bootstrap interval, and the
    fraction of resamples in which A's MAE is below B's."""

    mae_a: float
    mae_b: float
    diff: float
    interval: Interval
    p_a_better: float
    n_images: int


def compare_mae(abs_err_a, abs_err_b, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = SEED
                ) -> Comparison:
    """Paired bootstrap comparison of two methods' absolute errors on the same images (same order).

    Args:
        abs_err_a, abs_err_b: ``(n_images,)`` or ``(n_seeds, n_images)`` absolute errors |ĉ − c| (seeds averaged).

    Raises:
        ValueError: different image counts, no images, or non-finite errors.
    """
    a = np.atleast_2d(np.abs(np.asarray(abs_err_a, dtype=np.float64)))
    b = np.atleast_2d(np.abs(np.asarray(abs_err_b, dtype=np.float64)))
    if a.shape[-1] != b.shape[-1] or a.shape[-1] == 0:
        raise ValueError(f"paired comparison needs the same images: {a.shape[-1]} vs {b.shape[-1]}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired comparison needs finite errors")
    idx = _indices(a.shape[-1], resamples, seed)
    da, db = a[:, idx].mean(-1).mean(0), b[:, idx].mean(-1).mean(0)
    mae_a, mae_b = float(a.mean()), float(b.mean())
    return Comparison(mae_a, mae_b, mae_a - mae_b, _interval(da - db, level, resamples, seed),
                      float(np.mean(da < db)), int(a.shape[-1]))


__all__ = ["bootstrap_mae_mse", "compare_mae", "Interval", "Comparison", "RESAMPLES", "LEVEL", "SEED"]
