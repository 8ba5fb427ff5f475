"""Density maps (docs/design.md §3): count kept, σ rule, pixel convention, agreement with the classic loop."""
from __future__ import annotations

import math

import numpy as np
import pytest

from realdata import n_inside, sha_train
from harness.data.density import (
    adaptive_sigmas,
    classic_density_map,
    density_map,
    downsample_density,
    head_pixels,
)
from harness.errors import ConfigError, DataError


# ------------------------------------------------------------------------------------------ σ rule


def test_adaptive_sigma_square_hand_case():
    # 4 corners of a 10-px square: neighbours at 10, 10, 10√2 -> σ = 0.3 · (20 + 10√2) / 3
    square = np.array([[20.0, 20.0], [30.0, 20.0], [20.0, 30.0], [30.0, 30.0]])
    expected = 0.3 * (20 + 10 * math.sqrt(2)) / 3
    assert adaptive_sigmas(square) == pytest.approx([expected] * 4)
    # the map uses exactly that σ: equal to a fixed-σ map with the same value
    adaptive = density_map(square, (50, 50))
    fixed = density_map(square, (50, 50), kernel="fixed", sigma=expected)
    np.testing.assert_allclose(adaptive, fixed, atol=1e-7)
    assert not np.allclose(adaptive, density_map(square, (50, 50), kernel="fixed", sigma=15.0), atol=1e-4)


def test_adaptive_sigma_with_few_points():
    # 2 points 10 px apart: one neighbour exists -> σ = 0.3 · 10; 3 points: mean over the 2 neighbours
    assert adaptive_sigmas(np.array([[0.0, 0.0], [10.0, 0.0]])).tolist() == pytest.approx([3.0, 3.0])
    three = np.array([[0.0, 0.0], [10.0, 0.0], [30.0, 0.0]])
    assert adaptive_sigmas(three) == pytest.approx([0.3 * 20, 0.3 * 15, 0.3 * 25])
    # k=1 uses only the nearest neighbour, β scales
    assert adaptive_sigmas(three, k=1, beta=0.5) == pytest.approx([5.0, 5.0, 10.0])
    # a lone point gets the fixed sigma
    assert adaptive_sigmas(np.array([[5.0, 5.0]]), sigma=4.0).tolist() == [4.0]
    one = density_map([[50.5, 50.5]], (101, 101), sigma=4.0)
    g = np.exp(-0.5 * (np.arange(-12, 13) / 4.0) ** 2)
    assert one[50, 50] == pytest.approx(1 / g.sum() ** 2, rel=1e-5)


def test_max_sigma_caps_the_kernel():
    far = np.array([[10.0, 10.0], [90.0, 90.0]])  # σ = 0.3 · 113 ≈ 34
    capped = density_map(far, (100, 100), max_sigma=2.0)
    np.testing.assert_allclose(capped, density_map(far, (100, 100), kernel="fixed", sigma=2.0), atol=1e-7)


# ------------------------------------------------------------------------------------------ mass


@pytest.mark.parametrize("kernel", ["adaptive", "fixed"])
def test_sum_equals_count_random_points_with_borders(kernel):
    rng = np.random.default_rng(0)
    h, w = 97, 131
    pts = np.concatenate(
        [
            rng.uniform([-6, -6], [w + 6, h + 6], size=(300, 2)),  # some outside
            rng.uniform([0, 0], [2, h], size=(20, 2)),  # hugging the left border
            np.array([[0.0, 0.0], [w, h], [w, 0.0], [0.0, h], [w - 1e-9, 5.0]]),  # on edges/corners
        ]
    )
    expected = n_inside(pts, (h, w))
    assert 0 < expected < len(pts)
    d = density_map(pts, (h, w), kernel=kernel, sigma=6.0)
    assert d.dtype == np.float32 and d.shape == (h, w)
    assert abs(float(d.sum()) - expected) < 1e-3
    assert (d >= 0).all()
    for s in (2, 4, 8):
        ds = downsample_density(d, s)
        assert ds.shape == (math.ceil(h / s), math.ceil(w / s))
        assert abs(float(ds.sum()) - expected) < 1e-3


def test_points_outside_are_ignored_and_empty_input():
    assert density_map([[-0.5, 3.0], [12.01, 3.0], [3.0, -1.0]], (10, 12)).sum() == 0
    assert density_map(np.zeros((0, 2)), (10, 12)).shape == (10, 12)
    assert density_map([], (10, 12)).sum() == 0


def test_pixel_convention_floor_and_clip():
    inside, rows, cols = head_pixels([[3.9, 7.2], [12.0, 10.0], [0.0, 0.0]], (10, 12))
    assert inside.tolist() == [True, True, True]
    assert rows.tolist() == [7, 9, 0] and cols.tolist() == [3, 11, 0]
    d = density_map([[3.9, 7.2]], (20, 20), kernel="fixed", sigma=1.0)
    assert np.unravel_index(np.argmax(d), d.shape) == (7, 3)


def test_coincident_points_give_a_delta():
    # two heads on the same spot: σ = 0 for both -> all mass on one pixel
    d = density_map([[5.5, 5.5], [5.5, 5.5]], (11, 11))
    assert d[5, 5] == pytest.approx(2.0) and float(d.sum()) == pytest.approx(2.0)


def test_large_kernels_keep_mass():
    # σ larger than the image (sparse scene): the renormalised kernel still sums to one per head
    d = density_map([[1.0, 1.0], [30.0, 2.0]], (20, 40), kernel="fixed", sigma=60.0)
    assert abs(float(d.sum()) - 2.0) < 1e-4


# ------------------------------------------------------------------------------------------ classic


# adaptive σ ≈ 2–4 px exercises the vectorised small-kernel path, fixed σ = 8 px (radius 24) the window loop
@pytest.mark.parametrize("opts", [{}, {"kernel": "fixed", "sigma": 8.0}])
def test_matches_classic_loop_away_from_borders_and_keeps_mass_at_borders(opts):
    rng = np.random.default_rng(1)
    h, w = 120, 160
    interior = rng.uniform([40, 40], [w - 40, h - 40], size=(40, 2))
    sig = adaptive_sigmas(interior) if not opts else np.full(40, opts["sigma"])
    assert (3 * sig + 0.5 < 40).all()  # every kernel lies wholly inside the image
    fast = density_map(interior, (h, w), **opts)
    classic = classic_density_map(interior, (h, w), **opts)
    np.testing.assert_allclose(fast, classic, atol=1e-6)
    # near a border the classic map loses mass, ours keeps it
    border = np.array([[1.0, 60.0], [2.0, 64.0], [0.5, 70.0], [159.0, 2.0]])
    fast_b = density_map(border, (h, w), **opts)
    classic_b = classic_density_map(border, (h, w), **opts)
    assert abs(float(fast_b.sum()) - 4) < 1e-4
    assert float(classic_b.sum()) < 4 - 0.5


def test_downsample_hand_case():
    d = np.ones((5, 5), dtype=np.float32)
    ds = downsample_density(d, 2)
    assert ds.dtype == np.float32
    assert ds.tolist() == [[4, 4, 2], [4, 4, 2], [2, 2, 1]]
    assert downsample_density(d, 1).tolist() == d.tolist()
    assert downsample_density(d, 8).tolist() == [[25.0]]


def test_bad_input_raises_one_line_errors():
    for bad in ([[1.0, 2.0, 3.0]], [[np.nan, 1.0]], np.zeros((2, 2, 2))):
        with pytest.raises(DataError) as err:
            density_map(bad, (10, 10))
        assert "\n" not in str(err.value)
    with pytest.raises(DataError):
        density_map([[1.0, 1.0]], (0, 10))
    with pytest.raises(ConfigError):
        density_map([[1.0, 1.0]], (10, 10), kernel="gauss")
    with pytest.raises(ConfigError):
        density_map([[1.0, 1.0]], (10, 10), sigma=-1)
    with pytest.raises(ConfigError):
        density_map([[1.0, 1.0]], (10, 10), k=0)
    with pytest.raises(ConfigError):
        downsample_density(np.ones((4, 4)), 0)
    with pytest.raises(DataError):
        downsample_density(np.ones(4), 2)


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.realdata
@pytest.mark.parametrize("index", [1, 2, 3, 10, 14, 15])
def test_real_sha_points_sum_to_count(data_root, index):
    points, shape = sha_train(data_root, index)
    expected = n_inside(points, shape)
    assert expected > 100
    d = density_map(points, shape)
    assert abs(float(d.sum()) - expected) < 1e-3
    for s in (4, 8):
        assert abs(float(downsample_density(d, s).sum()) - expected) < 1e-3
    fixed = density_map(points, shape, kernel="fixed", sigma=15.0)
    assert abs(float(fixed.sum()) - expected) < 1e-3
