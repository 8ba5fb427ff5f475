"""Crowd maps, contour counting and tiling on hand-made inputs (numpy + OpenCV only; fast)."""
from __future__ import annotations

import numpy as np
import pytest

from harness_ldm.crowdmap import (count_heads, gaussian_kernel, map_to_density, normaliser, render_crowd_map,
                                  render_density)
from harness_ldm.tiling import TileGrid, tile_starts


def blank(h=24, w=32) -> np.ndarray:
    return np.full((h, w), -1.0, np.float32)


def dots(m: np.ndarray, pixels, value=1.0) -> np.ndarray:
    m = m.copy()
    for x, y in pixels:
        m[y, x] = value
    return m


# ------------------------------------------------------------------------------------------ rendering


def test_kernel_is_unit_mass_and_normaliser_is_its_peak():
    k = gaussian_kernel(0.5)
    assert k.shape == (5, 5) and k.sum() == pytest.approx(1.0)
    assert normaliser(0.5) == pytest.approx(k.max()) == pytest.approx(0.6187, abs=1e-4)
    with pytest.raises(ValueError):
        gaussian_kernel(0.0)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_rendering_keeps_the_count_including_border_heads(sigma):
    rng = np.random.default_rng(1)
    pts = np.concatenate([rng.uniform([0, 0], [40, 30], (25, 2)),
                          [[0.0, 0.0], [39.9, 29.9], [0.1, 15.0], [20.0, 29.5]]])  # corners and edges
    dens = render_density(pts, (30, 40), sigma)
    assert dens.dtype == np.float32 and dens.shape == (30, 40)
    assert dens.sum() == pytest.approx(len(pts), rel=1e-5)
    assert render_density(np.zeros((0, 2)), (30, 40), sigma).sum() == 0


def test_crowd_map_range_and_inverse_keep_the_count_of_separated_heads():
    pts = np.array([[5.5, 5.5], [15.2, 6.7], [25.9, 12.1], [8.0, 20.0], [30.5, 20.5]])
    m = render_crowd_map(pts, (24, 36), 0.5)
    assert m.min() == pytest.approx(-1.0) and m.max() == pytest.approx(1.0)
    assert (m == 1.0).sum() == len(pts)  # each isolated head peaks at exactly +1 on its own pixel
    assert map_to_density(m, normaliser(0.5)).sum() == pytest.approx(len(pts), rel=1e-5)
    heads = count_heads(m)
    assert heads.count == len(pts)
    # centroids at the pixel centre of each head's pixel (floor(x) + 0.5)
    got = sorted(map(tuple, heads.points))
    want = sorted((np.floor(x) + 0.5, np.floor(y) + 0.5) for x, y in pts)
    assert np.allclose(got, want)


# ------------------------------------------------------------------------------------------ contour counting


def test_empty_and_noisy_background_maps_have_no_heads():
    assert count_heads(blank()).count == 0
    noisy = blank() + np.random.default_rng(0).uniform(0, 0.3, (24, 32)).astype(np.float32)  # < the 0.5 floor
    h = count_heads(noisy)
    assert h.count == 0 and h.points.shape == (0, 2) and h.scores.shape == (0,)
    assert h.level >= 0.5  # Otsu alone would split the noise; the floor keeps it out


def test_touching_heads_with_a_gap_count_twice_and_merged_heads_once():
    # two heads 3 px apart: their Gaussian tails touch, the 0.5 level separates them
    two = render_crowd_map(np.array([[10.5, 10.5], [13.5, 10.5]]), (24, 32), 0.5)
    assert two[10, 11] > -1 and two[10, 12] > -1  # tails touch between them
    assert count_heads(two).count == 2
    # a 2 x 2 plateau is one blob: one head at its centre
    plateau = dots(blank(), [(20, 5), (21, 5), (20, 6), (21, 6)])
    h = count_heads(plateau)
    assert h.count == 1 and np.allclose(h.points, [[21.0, 6.0]])
    # heads on adjacent pixels merge into one contour (the method's limit in dense crowds)
    assert count_heads(dots(blank(), [(5, 5), (6, 5)])).count == 1
    # two 1-px heads one pixel apart stay two (the cross-shaped closing does not join single dots) ...
    assert count_heads(dots(blank(), [(5, 15), (7, 15)])).count == 2
    # ... but a one-pixel gap between wider blobs is bridged by CrowdDiff's opening of the background, not without it
    gap1 = blank()
    gap1[14:17, 3:6] = 1.0
    gap1[14:17, 7:10] = 1.0
    assert count_heads(gap1).count == 1
    assert count_heads(gap1, opening="none").count == 2


def test_border_heads_are_counted_and_located_inside_the_image():
    m = dots(blank(), [(0, 0), (31, 0), (0, 23), (31, 23), (15, 0), (0, 12)])
    h = count_heads(m)
    assert h.count == 6
    assert (h.points[:, 0] > 0).all() and (h.points[:, 0] < 32).all()
    assert (h.points[:, 1] > 0).all() and (h.points[:, 1] < 24).all()


def test_scores_rank_heads_by_their_map_value():
    m = dots(blank(), [(4, 4), (20, 10)], value=0.6)
    m[18, 25] = 1.0
    h = count_heads(m, otsu=False, threshold=0.5)
    assert h.count == 3
    assert h.scores[0] == pytest.approx(1.0) and np.allclose(h.points[0], [25.5, 18.5])
    assert np.all(np.diff(h.scores) <= 0)


def test_opening_the_heads_removes_single_pixel_blobs():
    m = dots(blank(), [(5, 5)])
    m[10:13, 10:13] = 1.0
    assert count_heads(m, opening="heads").count == 1
    assert count_heads(m, opening="background").count == 2
    with pytest.raises(ValueError):
        count_heads(m, opening="close")
    with pytest.raises(ValueError):
        count_heads(np.zeros((2, 2, 2)))


# ------------------------------------------------------------------------------------------ tiling


@pytest.mark.parametrize("shape,crop,overlap", [((50, 70), 16, 0), ((50, 70), 16, 4), ((16, 16), 16, 0),
                                                ((5, 9), 16, 6), ((64, 33), 32, 16)])
def test_cores_partition_the_image_and_stitch_inverts_split(shape, crop, overlap):
    g = TileGrid.for_image(*shape, crop, overlap)
    a = np.random.default_rng(0).random(shape + (3,))
    tiles = g.split(a, pad_value=-7)
    assert tiles.shape == (len(g), crop, crop, 3)
    assert np.array_equal(g.stitch(tiles), a)
    cover = np.zeros(g.padded, int)
    for y0, y1 in g.y_cores:
        for x0, x1 in g.x_cores:
            cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()
    assert g.padded[0] >= shape[0] and g.padded[1] >= shape[1]


def test_tile_starts_rejects_bad_overlaps():
    with pytest.raises(ValueError):
        tile_starts(100, 16, 3)
    with pytest.raises(ValueError):
        tile_starts(100, 16, 16)


def test_stitching_never_double_counts_heads_in_overlaps_or_on_tile_borders():
    crop, overlap = 16, 6
    g = TileGrid.for_image(40, 52, crop, overlap)
    # heads inside overlaps, on tile and core borders, and in the padding-adjacent last row / column
    xs = sorted({x for s in g.xs for x in (s, s + 1, s + crop - 1, s + overlap // 2)} | {51})
    ys = sorted({y for s in g.ys for y in (s, s + crop - 1)} | {39})
    pts = np.array([[x + 0.5, y + 0.5] for i, y in enumerate(ys) for x in xs[i % 3::3] if x < 52 and y < 40])
    m = render_crowd_map(pts, (40, 52), 0.5)
    assert count_heads(m).count == len(pts)  # sanity: the whole map
    tiles = g.split(m, pad_value=-1.0)
    naive = sum(count_heads(t).count for t in tiles)
    assert naive > len(pts)  # heads in overlaps are seen by several tiles ...
    assert count_heads(g.stitch(tiles)).count == len(pts)  # ... and counted once after stitching
