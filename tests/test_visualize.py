"""Overlays of huge images stay bounded in memory (harness.visualize)."""
from __future__ import annotations

import numpy as np


def test_overlays_of_huge_images_are_drawn_at_a_bounded_size():
    """A 10 000 × 10 000 photograph's overlay would take ~6 GB of float arrays at full size: it is drawn at
    OVERLAY_MAX_SIDE on the longer side (the count written on it is the full image's)."""
    from harness.visualize import OVERLAY_MAX_SIDE, density_overlay

    img = np.zeros((3000, 2400, 3), np.uint8)
    out = density_overlay(img, np.ones((375, 300), np.float32), 12.0)
    assert max(out.shape[:2]) == OVERLAY_MAX_SIDE and out.shape[:2] == (OVERLAY_MAX_SIDE, round(2400 * 2048 / 3000))
    assert density_overlay(img, np.ones((375, 300), np.float32), max_side=None).shape[:2] == (3000, 2400)
