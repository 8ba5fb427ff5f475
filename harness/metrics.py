"""Counting and localisation metrics (docs/design.md §4).

Counting (per image counts ĉ_i predicted, c_i ground truth, n images):

* MAE = (1/n) Σ |ĉ_i − c_i|
* MSE = sqrt((1/n) Σ (ĉ_i − c_i)²) — the ROOT mean squared error, which the crowd-counting literature has
  called "MSE" since MCNN (Zhang et al., CVPR 2016, eq. 6). (SYRAC's released code reports the plain mean
  square; never mix the two.)
* NAE = (1/n⁺) Σ_{c_i > 0} |ĉ_i − c_i| / c_i over the n⁺ images with c_i > 0 (NWPU-Crowd, Wang et al.,
  TPAMI 2020, eq. 3).

Localisation:

* AP@δ / mAP: Idrees et al., "Composition Loss for Counting, Density Map Estimation and Localization in
  Dense Crowds", ECCV 2018 (§5.3), as used by Liu et al., "Leveraging Self-Supervision for Cross-Domain
  Crowd Counting" / RDBT, ACM MM 2020, Table 1: predictions pooled over the images and sorted by score, a
  prediction within δ pixels of a still-unmatched ground-truth head of its image is a true positive, AP is
  the area under the precision–recall curve, mAP the mean over δ = 1..100.
* NWPU-Crowd P/R/F1 at σ_s / σ_l (Wang et al., TPAMI 2020, §4.2): one-to-one maximum matching of predicted
  and ground-truth heads, a pair allowed when their distance is ≤ the ground-truth head's σ.
* :func:`points_from_density`: head points of counters that only give density maps, as local maxima of the
  density (score = peak value).

Points are ``(N, 2)`` float ``(x, y)`` pixels of the input image, origin top-left (docs/design.md §3).
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage
from scipy.spatial import cKDTree

from harness.data.density import as_points as _points
from harness.errors import ConfigError, DataError
# NWPU-Crowd's evaluation (σ and levels from boxes, one-to-one matching, P/R/F1) lives in its own module
from harness.metrics_nwpu import (NWPU_LEVELS, _vector, match_points, nwpu_levels, nwpu_localisation, nwpu_prf,
                                  nwpu_sigmas, precision_recall_f1)

__all__ = [
    "count_metrics",
    "localisation_ap",
    "localisation_map",
    "match_points",
    "nwpu_prf",
    "nwpu_sigmas",
    "nwpu_levels",
    "nwpu_localisation",
    "NWPU_LEVELS",
    "precision_recall_f1",
    "points_from_density",
    "DEFAULT_PEAK_THRESHOLD",
]

# Default peak threshold of points_from_density, in count per input pixel: the peak of a normalised 2-D
# Gaussian is 1 / (2π σ²), which is 1e-4 at σ ≈ 40 px, so every head drawn with σ below ~40 px is kept.
DEFAULT_PEAK_THRESHOLD = 1e-4


# ------------------------------------------------------------------------------------------ counting


def count_metrics(pred_counts: ArrayLike, gt_counts: ArrayLike) -> dict:
    """MAE, MSE (root mean squared error) and NAE of per-image counts.

    MAE = mean |ĉ − c|; MSE = sqrt(mean (ĉ − c)²), the field's (root) MSE since MCNN (Zhang et al.,
    CVPR 2016, eq. 6); NAE = mean |ĉ − c| / c over the images with c > 0 (NWPU-Crowd, Wang et al.,
    TPAMI 2020), NaN when no image has c > 0; r = Pearson's correlation of ĉ and c over the images
    (:func:`count_correlation`): a counter whose r is near 0 does not track the count, whatever its MAE.

    Args:
        pred_counts: ``(n,)`` predicted counts ĉ (float).
        gt_counts: ``(n,)`` ground-truth counts c (number of annotated heads).

    Returns:
        ``{"mae": float, "mse": float, "nae": float, "r": float, "n_images": n, "n_nae": n⁺}`` where
        ``n_nae`` is the number of images (c > 0) that NAE averages over; r is NaN where undefined.

    Raises:
        DataError: empty input, lengths differ, non-finite values, or a negative ground-truth count.
    """
    pred = _vector(pred_counts, "predicted counts")
    gt = _vector(gt_counts, "ground-truth counts")
    if pred.shape != gt.shape:
        raise DataError(f"{len(pred)} predicted counts but {len(gt)} ground-truth counts: pass one of each per image")
    if len(gt) == 0:
        raise DataError("count_metrics got no images: pass at least one (predicted, ground-truth) count pair")
    if (gt < 0).any():
        raise DataError("ground-truth counts contain negative values: counts must be >= 0")
    err = pred - gt
    pos = gt > 0
    nae = float(np.mean(np.abs(err[pos]) / gt[pos])) if pos.any() else float("nan")
    return {
        "mae": float(np.mean(np.abs(err))),
        "mse": float(np.sqrt(np.mean(err**2))),
        "nae": nae,
        "r": count_correlation(pred, gt),
        "n_images": int(len(gt)),
        "n_nae": int(pos.sum()),
    }


def count_correlation(pred_counts, gt_counts) -> float:
    """Pearson's r of predicted and true counts over the test images, in [-1, 1].

    A near-constant predictor (a counter that learnt the mean count) can have an MAE below the trivial baselines
    while r ≈ 0; r exposes it. NaN when undefined: fewer than 3 images, or either side constant (the ``zero`` and
    ``source-mean`` baselines).

    Args:
        pred_counts, gt_counts: ``(n,)`` float counts.
    """
    pred = np.asarray(pred_counts, dtype=np.float64).reshape(-1)
    gt = np.asarray(gt_counts, dtype=np.float64).reshape(-1)
    if len(gt) < 3 or len(pred) != len(gt) or np.ptp(pred) <= 1e-9 * max(1.0, float(np.abs(pred).max())) \
            or np.ptp(gt) == 0:
        return float("nan")
    return float(np.clip(np.corrcoef(pred, gt)[0, 1], -1.0, 1.0))


# ------------------------------------------------------------------------------------------ AP@δ


def _image_tp(pred: np.ndarray, gt: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """True-positive flags ``(D, M)`` of one image's predictions, given in score order, for every δ.

    ``deltas`` must be sorted ascending. Greedy in the given order: a prediction takes the NEAREST
    unmatched ground-truth point within δ (distance ties -> lower ground-truth index); one walk over the
    predictions serves all δ at once: the δ at which a point is taken are the bits of a Python int (bit t:
    δ_t), a prediction's candidates, nearest first, each take the δ that reach them and are still free on both
    sides, and since the candidates come in distance order, the walk stops at the first one that no free δ of
    the prediction reaches.
    """
    n_d, m = len(deltas), len(pred)
    if m == 0 or len(gt) == 0:
        return np.zeros((n_d, m), dtype=bool)
    d_max = float(deltas[-1])
    # All pairs within the largest δ, once (slightly widened radius, then exact distances decide).
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(gt), d_max * (1 + 1e-9) + 1e-9, output_type="ndarray")
    if len(pairs) == 0:
        return np.zeros((n_d, m), dtype=bool)
    pi = pairs["i"].astype(np.int64)
    gi = pairs["j"].astype(np.int64)
    dist = np.hypot(pred[pi, 0] - gt[gi, 0], pred[pi, 1] - gt[gi, 1])
    keep = dist <= d_max
    pi, gi, dist = pi[keep], gi[keep], dist[keep]
    order = np.lexsort((gi, dist, pi))  # by prediction, then distance, then ground-truth index
    pi, gi, dist = pi[order], gi[order], dist[order]
    first_delta = np.searchsorted(deltas, dist, side="left")  # the pair is within δ_t for t >= first_delta
    bounds = np.searchsorted(pi, np.arange(m + 1)).tolist()
    gi_l, fd_l = gi.tolist(), first_delta.tolist()
    full = (1 << n_d) - 1
    taken = [0] * len(gt)  # bit t of taken[g]: ground truth g matched at δ_t
    rows = [0] * m  # bit t of rows[j]: prediction j a true positive at δ_t
    for j in range(m):
        free = full  # the δ at which prediction j is still unmatched
        for c in range(bounds[j], bounds[j + 1]):
            fd, g = fd_l[c], gi_l[c]
            take = (free >> fd << fd) & ~taken[g]
            if take:
                taken[g] |= take
                free &= ~take
            if not free >> fd:
                break
        rows[j] = full & ~free
    width = (n_d + 7) // 8
    packed = np.frombuffer(b"".join(r.to_bytes(width, "little") for r in rows), dtype=np.uint8).reshape(m, width)
    return np.unpackbits(packed, axis=1, count=n_d, bitorder="little").astype(bool).T


def localisation_map(items: Iterable, deltas: Sequence[float] = range(1, 101)) -> dict:
    """Localisation AP@δ for every δ and their mean (mAP).

    Idrees et al., ECCV 2018 (§5.3), as used by Liu et al., ACM MM 2020 (RDBT), Table 1. For each δ:

    1. predictions of ALL images are pooled and sorted by score, descending; the sort is stable, so tied
       scores keep input order (earlier image first, then the order of predictions within the image);
    2. walking that list, a prediction is a true positive if a still-unmatched ground-truth point OF ITS
       OWN IMAGE lies within δ pixels (Euclidean distance ≤ δ); it then takes the nearest such point
       (equal distances: the lower ground-truth index); otherwise it is a false positive;
    3. precision_j = TP_j / j and recall_j = TP_j / N_gt after the j-th prediction (N_gt over all images);
    4. AP = area under the interpolated PR curve, PASCAL-VOC "all points" style: precision made monotone
       (p̂_j = max_{j' ≥ j} precision_{j'}), summed over the recall steps: AP = Σ_{j ∈ TP} p̂_j / N_gt.

    No ground-truth point in any image: every AP is NaN (undefined). No predictions: every AP is 0.
    Speed: candidate pairs within max δ are found once per image with ``scipy.spatial.cKDTree`` and one
    greedy walk serves all δ (the matching only depends on the order of the image's own predictions).

    Args:
        items: iterable of ``(pred_points (M, 2), scores (M,), gt_points (N, 2))`` per image, ``(x, y)``
            pixels; ``M`` or ``N`` may be 0.
        deltas: distance thresholds δ in pixels (default 1..100).

    Returns:
        ``{"map": float, "ap": {δ: float}}`` (keys of ``ap`` are the given δ values).

    Raises:
        DataError: a malformed item (shapes, lengths, non-finite values). ConfigError: no δ or a δ ≤ 0.
    """
    delta_list = list(deltas)
    d_arr = np.asarray(delta_list, dtype=np.float64)
    if d_arr.ndim != 1 or len(d_arr) == 0 or not np.isfinite(d_arr).all() or (d_arr <= 0).any():
        raise ConfigError(f"localisation deltas {delta_list!r} are invalid: pass one or more finite distances > 0 px")
    d_perm = np.argsort(d_arr, kind="stable")
    d_sorted = d_arr[d_perm]
    d_rank = np.argsort(d_perm)  # row t of the sorted results is δ = d_sorted[t]; d_rank maps back
    tps: list[np.ndarray] = []
    scores_all: list[np.ndarray] = []
    n_gt = 0
    for i, item in enumerate(items):
        try:
            pred_points, scores, gt_points = item
        except (TypeError, ValueError):
            raise DataError(f"localisation item {i} is not a (pred_points, scores, gt_points) triple") from None
        pred = _points(pred_points, f"predicted points of item {i}")
        sc = _vector(scores, f"scores of item {i}") if np.size(scores) else np.zeros(0)
        gt = _points(gt_points, f"ground-truth points of item {i}")
        if len(sc) != len(pred):
            raise DataError(f"item {i} has {len(pred)} predicted points but {len(sc)} scores: pass one score per point")
        order = np.argsort(-sc, kind="stable")
        tp = np.zeros((len(d_arr), len(pred)), dtype=bool)
        tp[:, order] = _image_tp(pred[order], gt, d_sorted)[d_rank]
        tps.append(tp)
        scores_all.append(sc)
        n_gt += len(gt)
    if n_gt == 0:
        ap = np.full(len(d_arr), np.nan)
    else:
        scores_cat = np.concatenate(scores_all) if scores_all else np.zeros(0)
        if len(scores_cat) == 0:
            ap = np.zeros(len(d_arr))
        else:
            gorder = np.argsort(-scores_cat, kind="stable")
            tp = np.concatenate(tps, axis=1)[:, gorder]
            precision = np.cumsum(tp, axis=1, dtype=np.int64) / np.arange(1, tp.shape[1] + 1)
            interp = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
            ap = (interp * tp).sum(axis=1) / n_gt
    return {"map": float(np.mean(ap)), "ap": {d: float(a) for d, a in zip(delta_list, ap)}}


def localisation_ap(items: Iterable, delta: float) -> float:
    """AP at one distance threshold δ (pixels); see :func:`localisation_map` for the definition."""
    return localisation_map(items, [delta])["ap"][delta]


# ------------------------------------------------------------------------------------------ peaks


def points_from_density(
    density: np.ndarray,
    stride: int = 1,
    *,
    threshold: float | None = None,
    min_distance: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Head points of a density map: its local maxima, scored by peak value (docs/design.md §4).

    A pixel is a peak if it equals the maximum of its ``(2·min_distance + 1)²`` neighbourhood
    (``scipy.ndimage.maximum_filter``, outside the map counts as −inf) and exceeds ``threshold``; a
    connected plateau of equal maxima gives ONE point at its mean position.

    Coordinates: density pixel ``(row, col)`` of a map with output stride ``s`` covers input pixels
    ``[col·s, (col+1)·s) × [row·s, (row+1)·s)``; its point is the block centre
    ``x = (col + 0.5)·s, y = (row + 0.5)·s`` in input pixels (pixel ``j`` covers ``[j, j + 1)``, the
    ``floor`` convention of :func:`harness.data.density.density_map`, so for ``s = 1`` a head drawn at
    ``(x, y)`` comes back within half a pixel of it).

    Args:
        density: ``(h, w)`` float density (count per map pixel).
        stride: output stride ``s`` of the map relative to the input image (integer ≥ 1).
        threshold: minimum peak value, in count per MAP pixel; default
            ``DEFAULT_PEAK_THRESHOLD · s²`` (1e-4 per input pixel: keeps heads drawn with σ ≲ 40 px).
        min_distance: neighbourhood half-size in map pixels (default 1, i.e. 3 × 3).

    Returns:
        ``(points (M, 2) float64 (x, y) input pixels, scores (M,) float64 peak values)``, sorted by score
        descending (ties in raster order).

    Raises:
        DataError: ``density`` is not a finite 2-D array. ConfigError: invalid stride / min_distance.
    """
    dens = np.asarray(density, dtype=np.float64)
    if dens.ndim != 2:
        raise DataError(f"density has shape {dens.shape}: pass a 2-D (h, w) map")
    if not np.isfinite(dens).all():
        raise DataError("density contains non-finite values: check the counter's output")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise ConfigError(f"stride={stride!r} is invalid: pass the map's integer output stride >= 1")
    md = 1 if min_distance is None else min_distance
    if isinstance(md, bool) or int(md) != md or md < 1:
        raise ConfigError(f"min_distance={min_distance!r} is invalid: pass an integer >= 1 (map pixels)")
    thr = DEFAULT_PEAK_THRESHOLD * stride**2 if threshold is None else float(threshold)
    empty = (np.zeros((0, 2), dtype=np.float64), np.zeros(0, dtype=np.float64))
    if dens.size == 0:
        return empty
    peak = ndimage.maximum_filter(dens, size=2 * int(md) + 1, mode="constant", cval=-np.inf)
    mask = (dens == peak) & (dens > thr)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return empty
    # A plateau's pixels are each the maximum of the other's neighbourhood, so they hold one value: its score.
    # Its centre is the mean of its pixels' (row, col) (what ndimage.center_of_mass gives for a 0/1 mask; integer
    # sums, so the same float), per label with np.bincount.
    rows, cols = np.nonzero(mask)
    lab = labels[rows, cols]
    size = np.bincount(lab, minlength=n + 1)[1:]
    centre_row = np.bincount(lab, weights=rows, minlength=n + 1)[1:] / size
    centre_col = np.bincount(lab, weights=cols, minlength=n + 1)[1:] / size
    scores = np.zeros(n + 1)
    scores[lab] = dens[rows, cols]
    scores = scores[1:]
    pts = np.stack([(centre_col + 0.5) * stride, (centre_row + 0.5) * stride], axis=1)
    order = np.argsort(-scores, kind="stable")
    return pts[order], scores[order]
