"""The shared synthetic-data pipeline's pieces on hand cases: the quality score q (PromptMix eq. 4 with the count
distance of eq. 10 or the MAE between density maps) and pseudo-label head points from a density map."""
from __future__ import annotations

import numpy as np
import pytest

from harness import ConfigError, PseudoLabel, density_to_points, quality_score


def lab(count, density=None, stride=1):
    return PseudoLabel(count=count, density=density, meta={"stride": stride})


# ------------------------------------------------------------------------------------- quality score

def test_quality_score_counts_eq4_eq10():
    # max pairwise |count difference| = |10 - 20| = 10, max count 20
    assert quality_score([lab(10.0), lab(12.0), lab(20.0)]) == pytest.approx(0.5)
    assert quality_score([lab(7.0), lab(7.0)]) == 0.0
    assert quality_score([lab(0.0), lab(0.0)]) == 0.0  # 0/0: the annotators agree
    assert quality_score([lab(0.0), lab(4.0)]) == pytest.approx(1.0)


def test_quality_score_mae_on_a_common_grid():
    # annotator 1 at stride 4 (4x4 map of a 16x16 image), annotator 2 at stride 8 (2x2 map)
    a = np.zeros((4, 4))
    a[0, 0] = 4.0  # all mass in the top-left 8x8 block after sum-pooling
    b = np.array([[2.0, 0.0], [0.0, 2.0]])
    q = quality_score([lab(4.0, a, 4), lab(4.0, b, 8)], "mae", (16, 16))
    # common grid (stride 8): A = [[4,0],[0,0]], B = [[2,0],[0,2]]; MAE(A,B) = (2+2)/4 = 1; max MAE(.,0) = 1
    assert q == pytest.approx(1.0)
    # counts agree, so the count distance sees nothing: the MAE distance sees the different layouts
    assert quality_score([lab(4.0, a, 4), lab(4.0, b, 8)], "count") == 0.0


def test_quality_score_errors():
    with pytest.raises(ConfigError, match="at least two annotators"):
        quality_score([lab(1.0)])
    with pytest.raises(ConfigError, match="unknown quality distance"):
        quality_score([lab(1.0), lab(2.0)], "rmse")
    with pytest.raises(ConfigError, match="needs every annotator's density map"):
        quality_score([lab(1.0), lab(2.0)], "mae", (8, 8))


# ----------------------------------------------------------------------------------- pseudo-labels

def test_density_to_points_keeps_count_and_layout():
    d = np.zeros((6, 8), dtype=np.float32)
    d[1, 2], d[4, 6], d[5, 0] = 3.2, 1.7, 0.4  # 5.3 people -> 5 points
    pts = density_to_points(d, 8, (48, 64), np.random.default_rng(0))
    assert pts.shape == (5, 2)
    cells = [(int(y // 8), int(x // 8)) for x, y in pts]
    # quotas 3.02 / 1.60 / 0.38 -> floors 3 / 1 / 0, the one left goes to the largest remainder (1.60)
    assert sorted(cells) == [(1, 2)] * 3 + [(4, 6)] * 2


def test_density_to_points_empty_and_clipped():
    assert density_to_points(np.zeros((3, 3)), 4, (12, 12), np.random.default_rng(0)).shape == (0, 2)
    d = np.full((2, 2), 2.0)
    pts = density_to_points(d, 10, (15, 15), np.random.default_rng(1))  # image smaller than the map's cover
    assert len(pts) == 8 and pts.max() < 15


