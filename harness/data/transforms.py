"""Image transforms that keep head points in place: resizing and stride padding.

Points are ``(N, 2) float`` ``(x, y)`` pixels, origin top-left (docs/design.md §3).
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def scale_factor(height: int, width: int, scale: float = 1.0, max_side: int | None = None) -> float:
    """Resize factor for an ``height × width`` image: ``scale``, times ``min(1, max_side / max(H, W))`` when
    ``max_side`` is given (so large images shrink to at most ``max_side`` px and small ones keep ``scale``)."""
    f = float(scale)
    if max_side is not None:
        f *= min(1.0, float(max_side) / max(int(height), int(width)))
    return f


def resize_sample(image: np.ndarray, points: np.ndarray | None, factor: float,
                  min_side: int = 1) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize an image (Pillow bilinear, antialiased when shrinking) and its head points by ``factor``.

    Args:
        image: ``(H, W, 3) uint8``.
        points: ``(N, 2)`` float ``(x, y)`` pixels, or None.
        factor: resize factor (1.0 returns the inputs unchanged).
        min_side: lower bound on each output side in pixels.

    Returns:
        ``(image (h, w, 3) uint8, points (N, 2) float64 scaled by (w / W, h / H))`` with
        ``h = max(min_side, round(H · factor))`` (same for ``w``); the number of points is unchanged.
    """
    if factor == 1.0:
        return image, (None if points is None else np.asarray(points, dtype=np.float64))
    H, W = image.shape[:2]
    h, w = max(min_side, int(round(H * factor))), max(min_side, int(round(W * factor)))
    out = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR), dtype=np.uint8)
    if points is None:
        return out, None
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2) * np.array([w / W, h / H])
    return out, pts


def pad_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Zero-pad ``image`` (``(H, W, ...)``) at the bottom/right so both sides are multiples of ``multiple``."""
    h, w = image.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        image = np.pad(image, ((0, ph), (0, pw)) + ((0, 0),) * (image.ndim - 2))
    return image


__all__ = ["scale_factor", "resize_sample", "pad_to_multiple"]
