"""NWPU-Crowd's localisation evaluation (Wang et al., TPAMI 2020, §4.2; ``eval/eval.py`` of the NWPU-Crowd
localisation sample code): integer σ and head-size levels from head boxes, one-to-one matching within σ, P/R/F1
(docs/design.md §4). Re-exported by :mod:`harness.metrics`."""
from __future__ import annotations

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree

from harness.data.density import as_points as _points
from harness.errors import DataError


def _vector(value, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise DataError(f"{what} have shape {arr.shape}: pass a 1-D array with one value per item")
    if not np.isfinite(arr).all():
        raise DataError(f"{what} contain non-finite values: every value must be a finite number")
    return arr


def _half_up(x) -> np.ndarray:
    """Round half up to integers (``floor(x + 0.5)``), as the NWPU-Crowd localisation files are written."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5)


def nwpu_sigmas(boxes_wh) -> tuple[np.ndarray, np.ndarray]:
    """NWPU-Crowd matching thresholds from head boxes (Wang et al., TPAMI 2020, §4.2), as the official
    ``val_gt_loc.txt`` holds them (NWPU-Crowd-Sample-Code-for-Localization ``eval/``): integer pixels.

    Args:
        boxes_wh: ``(N, 2)`` head-box width and height in pixels (rounded half up to integers first).

    Returns:
        ``(sigma_s, sigma_l)``, each ``(N,) int64``: σ_s = min(w, h) / 2 (strict) and σ_l = sqrt(w² + h²) / 2
        (loose), each rounded half up (a 16 × 16 box: 8 and 11; a 1 × 3 box: 1 and 2).
    """
    wh = _half_up(_points(boxes_wh, "head boxes (w, h)"))
    return (_half_up(wh.min(axis=1) / 2.0).astype(np.int64),
            _half_up(np.hypot(wh[:, 0], wh[:, 1]) / 2.0).astype(np.int64))


#: NWPU-Crowd's head-size levels A0..A5 by box area in px²: [0, 10], (10, 100], (100, 10³], (10³, 10⁴], (10⁴, 10⁵],
#: > 10⁵ (the per-level recall of the official localisation evaluation)
NWPU_LEVELS = 6


def nwpu_levels(boxes_wh) -> np.ndarray:
    """``(N,) int64`` head-size level 0..5 of each box (area of the integer box, see :data:`NWPU_LEVELS`)."""
    wh = _half_up(_points(boxes_wh, "head boxes (w, h)"))
    area = wh[:, 0] * wh[:, 1]
    return np.clip(np.ceil(np.log10(np.maximum(area, 1.0))) - 1, 0, NWPU_LEVELS - 1).astype(np.int64)


def nwpu_localisation(items) -> dict:
    """The official NWPU-Crowd localisation evaluation (``eval/eval.py`` of the NWPU-Crowd localisation sample code)
    over images.

    Args:
        items: per image ``(pred_points (M, 2), gt_points (N, 2), sigma (N, 2) [σ_s, σ_l], level (N,))``; points
            are rounded half up to integer pixels first, as the official prediction and ground-truth files hold
            them.

    Returns:
        for σ_s (``_s``) and σ_l (``_l``): ``precision``, ``recall``, ``f1`` over all images' summed tp / fp / fn
        (micro-averaged, denominators + 1e-20 as the official code), ``recall_levels`` (6 values, A0..A5; a level
        with no head counts 0, as officially) and ``recall_level_mean``; plus the totals ``tp``, ``fp``, ``fn``.
    """
    out: dict = {}
    for k, tag in ((0, "s"), (1, "l")):
        tp = fp = fn = 0
        tp_c, fn_c = np.zeros(NWPU_LEVELS), np.zeros(NWPU_LEVELS)
        for pred, gt, sigma, level in items:
            pred = _half_up(np.asarray(pred, dtype=np.float64).reshape(-1, 2))
            gt = _half_up(np.asarray(gt, dtype=np.float64).reshape(-1, 2))
            sig = np.asarray(sigma, dtype=np.float64).reshape(-1, 2)[:, k]
            lev = np.asarray(level, dtype=np.int64).reshape(-1)
            match = match_points(pred, gt, sig) if len(gt) else np.full(len(pred), -1)
            hit = np.zeros(len(gt), dtype=bool)
            hit[match[match >= 0]] = True
            tp += int(hit.sum())
            fp += int(len(pred) - hit.sum())
            fn += int(len(gt) - hit.sum())
            tp_c += np.bincount(lev[hit], minlength=NWPU_LEVELS)[:NWPU_LEVELS]
            fn_c += np.bincount(lev[~hit], minlength=NWPU_LEVELS)[:NWPU_LEVELS]
        p = tp / (tp + fp + 1e-20)
        r = tp / (tp + fn + 1e-20)
        levels = tp_c / (tp_c + fn_c + 1e-20)
        out.update({f"precision_{tag}": float(p), f"recall_{tag}": float(r),
                    f"f1_{tag}": float(2 * p * r / (p + r)) if p + r else 0.0,
                    f"recall_levels_{tag}": [float(v) for v in levels],
                    f"recall_level_mean_{tag}": float(levels.mean()), f"tp_{tag}": tp, f"fp_{tag}": fp,
                    f"fn_{tag}": fn})
    return out


def match_points(pred_points, gt_points, sigma) -> np.ndarray:
    """One-to-one maximum matching of predicted and ground-truth points within σ.

    A pair (prediction p, ground truth g) may match when ``|p − g| ≤ σ_g``; the matching with the most
    pairs is found (the NWPU-Crowd evaluation's Hungarian matching on the 0/1 match matrix, Wang et al.,
    TPAMI 2020). Computed with Hopcroft–Karp (``scipy.sparse.csgraph.maximum_bipartite_matching``) on the
    sparse candidate graph from a KD-tree, which finds the same number of pairs as
    ``scipy.optimize.linear_sum_assignment`` on the dense 0/1 matrix but scales to NWPU's 10⁴-head images.

    Args:
        pred_points: ``(M, 2)`` float ``(x, y)`` pixels. gt_points: ``(N, 2)``.
        sigma: scalar or ``(N,)`` per-ground-truth threshold in pixels (e.g. :func:`nwpu_sigmas`).

    Returns:
        ``(M,)`` int64: index of the matched ground-truth point for each prediction, −1 if unmatched.

    Raises:
        DataError: malformed points or σ (wrong length, negative, non-finite).
    """
    pred = _points(pred_points, "predicted points")
    gt = _points(gt_points, "ground-truth points")
    sig = _vector(sigma, "sigma")
    if len(sig) == 1:
        sig = np.full(len(gt), sig[0])
    if len(sig) != len(gt):
        raise DataError(f"{len(sig)} sigma values for {len(gt)} ground-truth points: pass a scalar or one per point")
    if (sig < 0).any():
        raise DataError("sigma contains negative values: matching thresholds must be >= 0 px")
    out = np.full(len(pred), -1, dtype=np.int64)
    if len(pred) == 0 or len(gt) == 0:
        return out
    s_max = float(sig.max())
    pairs = cKDTree(pred).sparse_distance_matrix(cKDTree(gt), s_max * (1 + 1e-9) + 1e-9, output_type="ndarray")
    pi = pairs["i"].astype(np.int64)
    gi = pairs["j"].astype(np.int64)
    dist = np.hypot(pred[pi, 0] - gt[gi, 0], pred[pi, 1] - gt[gi, 1])
    ok = dist <= sig[gi]
    if not ok.any():
        return out
    graph = csr_matrix((np.ones(int(ok.sum()), dtype=np.int8), (pi[ok], gi[ok])), shape=(len(pred), len(gt)))
    graph.sum_duplicates()
    return maximum_bipartite_matching(graph, perm_type="column").astype(np.int64)


def nwpu_prf(pred_points, gt_points, sigma) -> tuple[int, int, int]:
    """True positives, false positives and false negatives of one image under NWPU-Crowd matching.

    See :func:`match_points` (one-to-one maximum matching, pair allowed when distance ≤ σ of the
    ground-truth head; NWPU uses σ_s = min(w, h)/2 and σ_l = sqrt(w² + h²)/2 of the head box, see
    :func:`nwpu_sigmas`, and a per-ground-truth ``sigma`` array is accepted for that).

    Returns:
        ``(tp, fp, fn)`` with ``fp = M − tp`` and ``fn = N − tp``. Sum them over images and pass the
        totals to :func:`precision_recall_f1` (NWPU's evaluation is micro-averaged).
    """
    match = match_points(pred_points, gt_points, sigma)
    n_gt = len(_points(gt_points, "ground-truth points"))
    tp = int((match >= 0).sum())
    return tp, int(len(match) - tp), int(n_gt - tp)


def precision_recall_f1(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1 from match totals (NWPU-Crowd, Wang et al., TPAMI 2020).

    P = tp / (tp + fp), R = tp / (tp + fn), F1 = 2PR / (P + R); an empty denominator gives 0, as in the
    NWPU-Crowd evaluation code (which adds 1e-20 to every denominator).

    Raises:
        DataError: a negative count.
    """
    if min(tp, fp, fn) < 0:
        raise DataError(f"match counts tp={tp}, fp={fp}, fn={fn} contain a negative value: counts must be >= 0")
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return float(p), float(r), float(f1)


__all__ = ["match_points", "nwpu_prf", "nwpu_sigmas", "nwpu_levels", "nwpu_localisation", "NWPU_LEVELS",
           "precision_recall_f1"]
