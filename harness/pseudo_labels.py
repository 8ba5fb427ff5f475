"""Pseudo-labels of synthetic images (PromptMix, Bakhtiarnia et al. 2023, eq. 4 and 10; the Aarhus report §III-D):
a registered counter as a heavyweight annotator, the quality score q of an image from its annotators' labels, and
an annotator's density map turned into head points. Used by the synthetic pool (:mod:`harness.synthetic_pool`)."""
from __future__ import annotations

from itertools import combinations
from typing import Any, Sequence

import numpy as np

from .errors import ConfigError
from .types import PseudoLabel, Provenance, output_stride

DISTANCES = ("count", "mae")

__all__ = ["CounterAnnotator", "quality_score", "density_to_points", "q_stats", "DISTANCES"]


class CounterAnnotator:
    """A registered counter as a heavyweight annotator f_ann^j (the ``heavyweight-counter`` annotator):
    ``annotate(image) -> PseudoLabel`` with the counter's count and density map (``(h, w)`` at ``stride``).

    Args:
        counter: a built :class:`~harness.types.Counter` (``name``, ``provenance``, ``predict``; ``stride``).
    """

    def __init__(self, counter: Any):
        self.counter = counter
        self.name = counter.name
        self.provenance: Provenance = counter.provenance
        self.stride = output_stride(counter, 1)

    def key(self) -> dict:
        """What determines this annotator's labels (for cache keys): name and weights provenance."""
        return {"counter": self.name, **self.provenance.to_dict()}

    def annotate(self, image: np.ndarray) -> PseudoLabel:
        """``image``: ``(H, W, 3) uint8`` RGB -> PseudoLabel(count, density ``(h, w)`` float32)."""
        pred = self.counter.predict(image)
        density = None if pred.density is None else np.asarray(pred.density, dtype=np.float32)
        return PseudoLabel(count=float(pred.count), density=density, meta={"annotator": self.name,
                                                                          "stride": self.stride})


def _common_grid(maps: Sequence[np.ndarray], strides: Sequence[int], shape: tuple[int, int]) -> list[np.ndarray]:
    """Sum-pool every density map to the coarsest stride over the image ``shape`` (counts kept)."""
    s = max(strides)
    h, w = -(-shape[0] // s), -(-shape[1] // s)
    out = []
    for dens, st in zip(maps, strides):
        if s % st:
            raise ConfigError(f"annotator strides {list(strides)} are not multiples of each other: the MAE distance "
                              f"needs nested grids (use quality_distance: count)")
        f = s // st
        d = np.zeros((h * f, w * f), dtype=np.float64)
        hh, ww = min(d.shape[0], dens.shape[0]), min(d.shape[1], dens.shape[1])
        d[:hh, :ww] = dens[:hh, :ww]
        out.append(d.reshape(h, f, w, f).sum(axis=(1, 3)))
    return out


def quality_score(labels: Sequence[PseudoLabel], distance: str = "count",
                  image_shape: tuple[int, int] | None = None) -> float:
    """Quality score of one synthetic image from its l annotations (PromptMix eq. 4):
    ``q = max_{j≠j'} d(A_j, A_j') / max_j d(A_j, 0)``. Large q: the annotators disagree relative to the largest
    annotation. 0/0 (every annotation empty) is 0. For ``"count"`` (eq. 10) and non-negative counts 0 ≤ q ≤ 1.

    Args:
        labels: ``l ≥ 2`` annotations (``density`` with ``meta["stride"]`` needed for ``"mae"``).
        distance: ``"count"`` or ``"mae"`` (mean |A − B| over a common sum-pooled grid).
        image_shape: ``(H, W)`` of the image (``"mae"`` only).

    Raises:
        ConfigError: fewer than two annotations, an unknown distance, or ``"mae"`` without density maps.
    """
    if len(labels) < 2:
        raise ConfigError(f"the quality score (eq. 4) needs at least two annotators, got {len(labels)}")
    if distance == "count":
        vals = [float(lab.count) for lab in labels]
        pair = max(abs(a - b) for a, b in combinations(vals, 2))
        norm = max(abs(v) for v in vals)
    elif distance == "mae":
        if any(lab.density is None for lab in labels) or image_shape is None:
            raise ConfigError("quality distance 'mae' needs every annotator's density map and the image shape")
        maps = _common_grid([lab.density for lab in labels], [int(lab.meta.get("stride", 1)) for lab in labels],
                            tuple(image_shape))
        pair = max(float(np.abs(a - b).mean()) for a, b in combinations(maps, 2))
        norm = max(float(np.abs(m).mean()) for m in maps)
    else:
        raise ConfigError(f"unknown quality distance {distance!r}: use one of {', '.join(DISTANCES)}")
    return 0.0 if norm == 0 else pair / norm


def density_to_points(density: np.ndarray, stride: int, image_shape: tuple[int, int],
                      rng: np.random.Generator) -> np.ndarray:
    """Pseudo-label head points from an annotator's density map, keeping its count.

    ``N = round(Σ density)`` points are apportioned to the map's cells in proportion to their mass (largest
    remainders) and placed uniformly at random inside their cell's ``stride × stride`` block — the report's
    "output transformed to coordinates, convolved with a Gaussian kernel" (§III-D).

    Args:
        density: ``(h, w)`` density map (negative values clipped to 0). stride: its output stride (px).
        image_shape: ``(H, W)``; points are clipped inside it. rng: positions inside cells.

    Returns:
        ``(N, 2) float64`` ``(x, y)`` pixels.
    """
    d = np.clip(np.asarray(density, dtype=np.float64), 0, None)
    total = d.sum()
    n = int(round(total))
    if n == 0:
        return np.zeros((0, 2))
    quota = d.ravel() / total * n
    counts = np.floor(quota).astype(np.int64)
    rest = n - int(counts.sum())
    if rest > 0:
        counts[np.argsort(-(quota - counts), kind="stable")[:rest]] += 1
    rows, cols = np.divmod(np.repeat(np.arange(d.size), counts), d.shape[1])
    xy = np.stack([cols, rows], axis=1).astype(np.float64) * stride + rng.random((n, 2)) * stride
    H, W = image_shape
    xy[:, 0] = np.clip(xy[:, 0], 0, W - 1e-3)
    xy[:, 1] = np.clip(xy[:, 1], 0, H - 1e-3)
    return xy


def q_stats(qs: np.ndarray) -> dict:
    """n, mean, std, min, quartiles and max of quality scores (``{"n": 0}`` when there are none)."""
    qs = np.asarray(qs, dtype=float)
    if qs.size == 0:
        return {"n": 0}
    p = np.percentile(qs, [0, 25, 50, 75, 100])
    return {"n": int(qs.size), "mean": round(float(qs.mean()), 4), "std": round(float(qs.std()), 4),
            "min": round(float(p[0]), 4), "q25": round(float(p[1]), 4), "median": round(float(p[2]), 4),
            "q75": round(float(p[3]), 4), "max": round(float(p[4]), 4)}
