"""Training targets of the density-map report at the network size (seed 003 §6, §11).

- :func:`circle_map`: "Through the use of the PIL library, I draw each point as a circle within a black image ...
  converted into a single 2D array of floats (224 by 224)" (§6). The report gives neither the radius nor the value:
  ours, a filled circle of ``radius`` px at the network size, value 1 inside (the green channel / 255), overlaps
  merge (the map does not sum to the count: the count comes from the regressor).
- :func:`gaussian_map`: the fix the report proposes ("applying more heat density ... through the usage of Gaussian
  Diffusion formula", §11): the core's density map (:func:`harness.density_map`, fixed σ) of the resized points,
  which sums to the count.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from harness import DataError, density_map


def scaled_points(points: np.ndarray, image_hw: tuple[int, int], size: int) -> np.ndarray:
    """``points (N, 2) (x, y)`` of an ``H × W`` image -> the same heads on the ``size × size`` resized image (the
    report resizes without keeping the aspect ratio)."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    h, w = image_hw
    return pts * np.array([size / float(w), size / float(h)])


def circle_map(points: np.ndarray, image_hw: tuple[int, int], size: int = 224, radius: float = 2.0) -> np.ndarray:
    """``(size, size) float32`` in {0, 1}: a filled circle of ``radius`` px (at the network size) per head, drawn
    with ``PIL.ImageDraw.ellipse`` on a black image.

    Raises:
        DataError: ``radius`` not positive."""
    if not radius > 0:
        raise DataError(f"circle radius must be > 0 px, got {radius}")
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for x, y in scaled_points(points, image_hw, size):
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)
    return np.asarray(canvas, np.float32) / 255.0


def gaussian_map(points: np.ndarray, image_hw: tuple[int, int], size: int = 224, sigma: float = 2.0) -> np.ndarray:
    """``(size, size) float32`` density of the resized heads, fixed Gaussian σ px; sums to the count (heads near the
    border lose the mass outside, as :func:`harness.density_map` documents)."""
    pts = scaled_points(points, image_hw, size)
    return density_map(pts, (size, size), kernel="fixed", sigma=float(sigma)).astype(np.float32)


__all__ = ["circle_map", "gaussian_map", "scaled_points"]
