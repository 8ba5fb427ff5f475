"""Metrics on hand-computed cases (docs/design.md §4) plus cross-checks against naive reference implementations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from harness.data.density import density_map
from harness.errors import ConfigError, DataError
from harness.metrics import (
    DEFAULT_PEAK_THRESHOLD,
    count_metrics,
    localisation_ap,
    localisation_map,
    match_points,
    nwpu_prf,
    nwpu_sigmas,
    points_from_density,
    precision_recall_f1,
)

# ------------------------------------------------------------------------------------------ counting


def test_count_metrics_hand_case():
    # errors: -2, 0, 5, -4
    m = count_metrics([10, 20, 5, 0], [12, 20, 0, 4])
    assert m["mae"] == pytest.approx(11 / 4)
    assert m["mse"] == pytest.approx(math.sqrt(45 / 4))  # ROOT of the mean squared error
    # NAE skips the image with c = 0: (2/12 + 0/20 + 4/4) / 3
    assert m["nae"] == pytest.approx((2 / 12 + 0 + 1) / 3)
    assert m["n_images"] == 4 and m["n_nae"] == 3


def test_count_metrics_mse_is_root_not_plain_mean_square():
    m = count_metrics([3.0], [0.0])
    assert m["mse"] == pytest.approx(3.0)  # plain mean square would be 9


def test_nae_nan_when_no_positive_count():
    m = count_metrics([1.0, 0.0], [0, 0])
    assert math.isnan(m["nae"]) and m["n_nae"] == 0
    assert m["mae"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "pred, gt",
    [([], []), ([1, 2], [1]), ([1, float("nan")], [1, 2]), ([1], [-1]), ([[1, 2]], [[1, 2]])],
)
def test_count_metrics_bad_input(pred, gt):
    with pytest.raises(DataError) as err:
        count_metrics(pred, gt)
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ AP@δ
# Image A: GT g0 (0,0), g1 (10,0); p0 (5,0) s.9 is 5 px from BOTH; p1 (10,3) s.8 is 3 px from g1;
#          p2 (50,50) s.5 far away.
# Image B: GT h0 (0,0); q0 (3,4) s.8 is exactly 5 px away; q1 (100,100) s.9 far away.
# Pooled order (stable, ties by image then input order): p0 .9, q1 .9, p1 .8, q0 .8, p2 .5; N_gt = 3.

A = (np.array([[5.0, 0], [10, 3], [50, 50]]), np.array([0.9, 0.8, 0.5]), np.array([[0.0, 0], [10, 0]]))
B = (np.array([[3.0, 4], [100, 100]]), np.array([0.8, 0.9]), np.array([[0.0, 0]]))


def test_ap_hand_case_delta_5():
    # δ=5: p0 TP (tie -> g0, lower index), q1 FP, p1 TP (g1), q0 TP (5 <= 5), p2 FP.
    # TP 1,0,1,1,0 -> precision 1, 1/2, 2/3, 3/4, 3/5; interpolated at the TPs: 1, 3/4, 3/4.
    assert localisation_ap([A, B], 5) == pytest.approx((1 + 0.75 + 0.75) / 3)


def test_ap_hand_case_delta_3_boundary():
    # δ=3: only p1 (exactly 3 px) is a TP, at rank 3 -> AP = (1/3) / 3
    assert localisation_ap([A, B], 3) == pytest.approx(1 / 9)
    # just below the boundary p1 is lost too
    assert localisation_ap([A, B], 2.999) == pytest.approx(0.0)
    # just below 5: p0 and q0 are both out -> same as δ=3
    assert localisation_ap([A, B], 4.999) == pytest.approx(1 / 9)


def test_ap_nearest_unmatched_rule_matters():
    # If p0 took g1 instead of g0, p1 would have nothing within δ=5: AP would be (1 + 1/2) / 3.
    # Swapping the GT order flips the tie -> p0 takes g1 (now index 0) and p1 is a FP.
    a_swapped = (A[0], A[1], A[2][::-1].copy())
    assert localisation_ap([a_swapped, B], 5) == pytest.approx((1 + 0.5) / 3)
    # with δ=11 p1 then falls back to the other GT at sqrt(109) ~ 10.44 px
    assert localisation_ap([a_swapped, B], 11) == pytest.approx((1 + 0.75 + 0.75) / 3)


def test_ap_score_ties_follow_input_order():
    # Same images in the order B, A: ties now put q1 before p0 and q0 before p1:
    # q1 FP, p0 TP, q0 TP, p1 TP, p2 FP -> precision 0, 1/2, 2/3, 3/4 -> interpolated 3/4 at each TP.
    assert localisation_ap([B, A], 5) == pytest.approx(0.75)


def test_map_averages_over_deltas_and_keeps_keys():
    out = localisation_map([A, B], deltas=[3, 5])
    assert set(out["ap"]) == {3, 5}
    assert out["ap"][3] == pytest.approx(1 / 9)
    assert out["ap"][5] == pytest.approx(2.5 / 3)
    assert out["map"] == pytest.approx((1 / 9 + 2.5 / 3) / 2)
    # order of deltas does not matter
    assert localisation_map([A, B], deltas=[5, 3])["ap"] == out["ap"]


def test_ap_with_empty_prediction_image_and_empty_gt_image():
    c = (np.zeros((0, 2)), np.zeros(0), np.array([[7.0, 7.0]]))  # one missed head, no predictions
    d = (np.array([[1.0, 1.0]]), np.array([0.85]), np.zeros((0, 2)))  # one prediction, no heads
    # order: p0 .9, q1 .9, d0 .85, p1 .8, q0 .8, p2 .5; N_gt = 4
    # TP 1,0,0,1,1,0 -> precision 1, 1/2, 1/3, 1/2, 3/5, 1/2 -> interpolated at TPs: 1, 3/5, 3/5
    assert localisation_ap([A, B, c, d], 5) == pytest.approx((1 + 0.6 + 0.6) / 4)


def test_ap_one_to_one():
    gt = np.array([[0.0, 0.0]])
    pred = np.array([[1.0, 0.0], [0.0, 1.0]])  # both within δ of the only head
    # TP, FP -> AP = 1 (recall reaches 1 at precision 1)
    assert localisation_ap([(pred, [0.9, 0.8], gt)], 2) == pytest.approx(1.0)
    # a duplicate ranked FIRST costs precision: FP then TP -> AP = 1/2
    far = np.array([[30.0, 0.0], [1.0, 0.0]])
    assert localisation_ap([(far, [0.9, 0.8], gt)], 2) == pytest.approx(0.5)


def test_ap_degenerate_cases():
    no_gt = [(np.array([[1.0, 1.0]]), np.array([1.0]), np.zeros((0, 2)))]
    out = localisation_map(no_gt, deltas=[1, 2])
    assert math.isnan(out["map"]) and all(math.isnan(v) for v in out["ap"].values())
    no_pred = [(np.zeros((0, 2)), np.zeros(0), np.array([[1.0, 1.0]]))]
    assert localisation_map(no_pred, deltas=[1, 2]) == {"map": 0.0, "ap": {1: 0.0, 2: 0.0}}
    perfect = [(np.array([[1.0, 1.0], [9.0, 9.0]]), np.array([0.2, 0.7]), np.array([[9.0, 9.0], [1.0, 1.0]]))]
    assert localisation_map(perfect)["map"] == pytest.approx(1.0)


def test_ap_bad_input():
    with pytest.raises(DataError):
        localisation_map([(np.zeros((2, 2)), np.zeros(3), np.zeros((1, 2)))])
    with pytest.raises(DataError):
        localisation_map([(np.zeros((2, 3)), np.zeros(2), np.zeros((1, 2)))])
    with pytest.raises(DataError):
        localisation_map([(np.zeros((2, 2)), np.zeros(2))])
    with pytest.raises(ConfigError):
        localisation_map([A], deltas=[0, 1])
    with pytest.raises(ConfigError):
        localisation_map([A], deltas=[])


def _reference_map(items, deltas):
    """Naive per-δ implementation: full distance matrices, explicit walk, VOC all-points AP with sentinels."""
    aps = []
    pooled = [(s, i, j) for i, (p, sc, g) in enumerate(items) for j, s in enumerate(sc)]
    order = sorted(range(len(pooled)), key=lambda t: -pooled[t][0])  # Python's sort is stable
    n_gt = sum(len(g) for _, _, g in items)
    for delta in deltas:
        used = [np.zeros(len(g), bool) for _, _, g in items]
        flags = []
        for t in order:
            _, i, j = pooled[t]
            p, _, g = items[i]
            if len(g) == 0:
                flags.append(0)
                continue
            d = np.sqrt(((g - p[j]) ** 2).sum(axis=1))
            d[used[i] | (d > delta)] = np.inf
            k = int(np.argmin(d))
            if np.isfinite(d[k]):
                used[i][k] = True
                flags.append(1)
            else:
                flags.append(0)
        tp = np.cumsum(flags)
        rec = tp / n_gt
        prec = tp / np.arange(1, len(flags) + 1)
        mrec = np.concatenate([[0.0], rec, [1.0]])
        mpre = np.concatenate([[0.0], prec, [0.0]])
        for k in range(len(mpre) - 2, -1, -1):
            mpre[k] = max(mpre[k], mpre[k + 1])
        idx = np.flatnonzero(mrec[1:] != mrec[:-1])
        aps.append(float(((mrec[idx + 1] - mrec[idx]) * mpre[idx + 1]).sum()))
    return aps


def test_map_matches_naive_reference_on_random_grid_points():
    rng = np.random.default_rng(3)
    items = []
    for _ in range(4):
        # integer coordinates and scores from few levels: many distance ties, exact boundaries, score ties
        g = rng.integers(0, 30, size=(rng.integers(0, 25), 2)).astype(float)
        p = rng.integers(0, 30, size=(rng.integers(0, 25), 2)).astype(float)
        s = rng.integers(0, 4, size=len(p)).astype(float)
        items.append((p, s, g))
    deltas = [1, 2, 3, 5, 7.5, 10]
    ours = localisation_map(items, deltas)
    for delta, ref in zip(deltas, _reference_map(items, deltas)):
        assert ours["ap"][delta] == pytest.approx(ref, abs=1e-12)


def test_map_matches_naive_reference_with_more_deltas_than_a_machine_word():
    """The matching keeps the δ a point is taken at as the bits of a Python int: 150 thresholds (0.5 px apart, so
    many pairs reach a point at some δ but not at others) agree with the per-δ walk of the reference."""
    rng = np.random.default_rng(11)
    items = []
    for _ in range(3):
        g = rng.uniform(0, 60, size=(rng.integers(10, 40), 2))
        p = np.concatenate([g[: len(g) // 2] + rng.normal(0, 6, size=(len(g) // 2, 2)),
                            rng.uniform(0, 60, size=(rng.integers(5, 30), 2))])
        items.append((p, rng.uniform(0, 1, size=len(p)), g))
    deltas = [0.5 * k for k in range(1, 151)]
    ours = localisation_map(items, deltas)
    ref = _reference_map(items, deltas)
    assert [ours["ap"][d] for d in deltas] == pytest.approx(ref, abs=1e-12)
    assert len(set(np.round(ref, 9))) > 20  # the thresholds do make a difference


# ------------------------------------------------------------------------------------------ NWPU


def test_nwpu_matching_beats_greedy():
    gt = np.array([[0.0, 0.0], [4.0, 0.0]])
    pred = np.array([[2.0, 0.0], [-1.0, 0.0]])  # p0 is 2 px from both; p1 only reaches g0
    # Greedy (p0 -> nearest g0) would leave p1 unmatched; the maximum matching pairs p0-g1, p1-g0.
    assert nwpu_prf(pred, gt, 3.0) == (2, 0, 0)
    assert match_points(pred, gt, 3.0).tolist() == [1, 0]
    # per-GT sigma: g1 now only accepts within 1 px -> one pair left
    assert nwpu_prf(pred, gt, np.array([3.0, 1.0])) == (1, 1, 1)
    # the boundary is inclusive
    assert nwpu_prf(np.array([[3.0, 4.0]]), np.array([[0.0, 0.0]]), 5.0) == (1, 0, 0)
    assert nwpu_prf(np.zeros((0, 2)), gt, 3.0) == (0, 0, 2)
    assert nwpu_prf(pred, np.zeros((0, 2)), 3.0) == (0, 2, 0)


def test_nwpu_matching_size_equals_hungarian():
    rng = np.random.default_rng(0)
    for _ in range(10):
        gt = rng.uniform(0, 40, size=(rng.integers(1, 30), 2))
        pred = rng.uniform(0, 40, size=(rng.integers(1, 30), 2))
        sig = rng.uniform(1, 8, size=len(gt))
        allowed = np.linalg.norm(pred[:, None] - gt[None], axis=2) <= sig[None, :]
        rows, cols = linear_sum_assignment(-allowed.astype(float))
        expected = int(allowed[rows, cols].sum())
        match = match_points(pred, gt, sig)
        assert int((match >= 0).sum()) == expected
        ok = match >= 0
        assert allowed[np.flatnonzero(ok), match[ok]].all()  # every pair is allowed
        assert len(set(match[ok].tolist())) == ok.sum()  # one-to-one


def test_nwpu_levels_are_box_area_decades():
    from harness.metrics import nwpu_levels

    # A0 [0, 10], A1 (10, 100], A2 (100, 1e3], A3 (1e3, 1e4], A4 (1e4, 1e5], A5 > 1e5 (px², integer boxes)
    assert nwpu_levels([[3, 3], [2, 5], [4, 4], [10, 10], [10, 11], [30, 35], [92, 123], [394, 471]]).tolist() == \
        [0, 0, 1, 1, 2, 3, 4, 5]


def test_nwpu_localisation_follows_the_official_evaluation():
    """eval/eval.py of the NWPU-Crowd localisation code: integer points, one-to-one matching within σ of the
    ground-truth head, micro-averaged P/R/F1 with + 1e-20 denominators, per-level recall with empty levels as 0."""
    from harness.metrics import nwpu_localisation

    gt = np.array([[10, 10], [50, 50], [100, 100]])
    sigma = np.array([[2, 3], [2, 3], [8, 11]])
    level = np.array([1, 1, 3])
    pred = np.array([[12.4, 10.0], [52.6, 50.0], [100.0, 109.0], [300.0, 300.0]])  # 12.4 -> 12; 52.6 -> 53
    out = nwpu_localisation([(pred, gt, sigma, level), (np.zeros((0, 2)), np.array([[5, 5]]), [[1, 1]], [0])])
    # σ_s: (12,10) within 2 of (10,10); (53,50) is 3 from (50,50) > 2; (100,109) is 9 > 8
    assert (out["tp_s"], out["fp_s"], out["fn_s"]) == (1, 3, 3)
    # σ_l: 3 px reaches (50,50) and 11 px reaches (100,100)
    assert (out["tp_l"], out["fp_l"], out["fn_l"]) == (3, 1, 1)
    assert out["precision_l"] == pytest.approx(0.75) and out["recall_l"] == pytest.approx(0.75)
    assert out["f1_l"] == pytest.approx(0.75)
    assert out["recall_levels_l"] == pytest.approx([0.0, 1.0, 0.0, 1.0, 0.0, 0.0])  # A0's only head missed
    assert out["recall_level_mean_l"] == pytest.approx(2 / 6)


def test_nwpu_sigmas_and_prf():
    """Integer σ as the official val_gt_loc.txt holds them: min(w, h)/2 and sqrt(w² + h²)/2 rounded half up."""
    s_small, s_large = nwpu_sigmas(np.array([[4.0, 3.0], [10.0, 10.0], [16, 16], [1, 3]]))
    assert s_small.tolist() == [2, 5, 8, 1]            # 1.5 -> 2, 0.5 -> 1 (half up, not truncated)
    assert s_large.tolist() == [3, 7, 11, 2]           # 2.5 -> 3, 7.07 -> 7, 11.31 -> 11, 1.58 -> 2
    p, r, f1 = precision_recall_f1(3, 1, 2)
    assert (p, r) == pytest.approx((0.75, 0.6)) and f1 == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert precision_recall_f1(0, 0, 0) == (0.0, 0.0, 0.0)
    with pytest.raises(DataError):
        nwpu_prf(np.zeros((1, 2)), np.zeros((2, 2)), np.array([1.0, 2.0, 3.0]))
    with pytest.raises(DataError):
        precision_recall_f1(-1, 0, 0)


# ------------------------------------------------------------------------------------------ peaks


def test_points_from_density_hand_case():
    d = np.zeros((20, 30))
    d[4, 7] = 0.9
    d[12, 20] = d[12, 21] = 0.5  # a plateau of two equal maxima -> one point between them
    d[12, 19] = 0.2  # not a maximum
    d[17, 3] = 5e-5  # below the default threshold 1e-4
    pts, scores = points_from_density(d)
    assert pts.tolist() == [[7.5, 4.5], [21.0, 12.5]]
    assert scores.tolist() == [0.9, 0.5]
    # stride 4: block centres; the default threshold scales with stride² (16e-4 > 1e-3 peak)
    d[17, 3] = 1e-3
    pts4, _ = points_from_density(d, stride=4)
    assert pts4.tolist() == [[30.0, 18.0], [84.0, 50.0]]
    assert DEFAULT_PEAK_THRESHOLD * 16 > 1e-3
    pts_low, _ = points_from_density(d, stride=4, threshold=0.0)
    assert [14.0, 70.0] in pts_low.tolist()
    # a larger neighbourhood suppresses the weaker of two close peaks
    e = np.zeros((10, 10))
    e[5, 2], e[5, 5] = 1.0, 0.8
    assert len(points_from_density(e)[0]) == 2
    assert points_from_density(e, min_distance=3)[0].tolist() == [[2.5, 5.5]]


def test_points_from_density_equals_scipy_label_statistics_on_plateaus():
    """Each peak's centre and score are the per-label mean position and maximum that scipy.ndimage's
    center_of_mass / maximum give, exactly, on maps with many plateaus (quantised values, blown-up blocks)."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    maps = [np.round(rng.uniform(0, 1, size=(rng.integers(1, 30), rng.integers(1, 30))) * 3) / 3 for _ in range(30)]
    maps += [np.kron(rng.uniform(0, 1, size=(rng.integers(1, 12), rng.integers(1, 12))), np.ones((3, 2)))
             for _ in range(30)]
    for d in maps:
        for md in (1, 2):
            pts, scores = points_from_density(d, stride=2, threshold=0.0, min_distance=md)
            peak = ndimage.maximum_filter(d, size=2 * md + 1, mode="constant", cval=-np.inf)
            mask = (d == peak) & (d > 0.0)
            labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
            assert len(pts) == n
            if n == 0:
                continue
            idx = np.arange(1, n + 1)
            com = np.asarray(ndimage.center_of_mass(mask, labels, idx)).reshape(n, 2)
            ref_scores = np.asarray(ndimage.maximum(d, labels, idx))
            order = np.argsort(-ref_scores, kind="stable")
            ref_pts = np.stack([(com[:, 1] + 0.5) * 2, (com[:, 0] + 0.5) * 2], axis=1)[order]
            assert pts.tolist() == ref_pts.tolist() and scores.tolist() == ref_scores[order].tolist()


def test_points_from_density_round_trip_and_ap():
    gt = np.array([[10.5, 20.5], [40.5, 7.5], [25.5, 30.5]])
    dens = density_map(gt, (48, 64), kernel="fixed", sigma=2.0)
    pts, scores = points_from_density(dens)
    assert len(pts) == 3
    assert sorted(map(tuple, pts.tolist())) == sorted(map(tuple, gt.tolist()))
    assert localisation_ap([(pts, scores, gt)], 1) == pytest.approx(1.0)
    # empty map -> no points
    p0, s0 = points_from_density(np.zeros((8, 8)))
    assert p0.shape == (0, 2) and s0.shape == (0,)


def test_points_from_density_bad_input():
    with pytest.raises(DataError):
        points_from_density(np.zeros((2, 2, 2)))
    with pytest.raises(DataError):
        points_from_density(np.full((2, 2), np.nan))
    with pytest.raises(ConfigError):
        points_from_density(np.zeros((2, 2)), stride=0)
    with pytest.raises(ConfigError):
        points_from_density(np.zeros((2, 2)), min_distance=0)


def test_count_correlation_exposes_a_near_constant_predictor():
    from harness.metrics import count_correlation

    gt = np.array([10.0, 50.0, 100.0, 200.0])
    assert count_correlation(gt * 0.5 + 3, gt) == pytest.approx(1.0)
    assert count_correlation(-gt, gt) == pytest.approx(-1.0)
    assert math.isnan(count_correlation(np.full(4, 90.0), gt))  # the trivial baselines: undefined
    assert math.isnan(count_correlation(gt[:2], gt[:2]))  # fewer than 3 images
    # a predictor near the mean count with noise unrelated to the truth: r ≈ 0 although its MAE is moderate
    noise = np.array([1.0, -2.0, 1.0, 0.0])
    assert abs(count_correlation(90.0 + noise, gt)) < 0.2
    assert count_metrics(gt * 0.5 + 3, gt)["r"] == pytest.approx(1.0)
