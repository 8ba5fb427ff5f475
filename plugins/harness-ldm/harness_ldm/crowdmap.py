"""Crowd maps and contour counting (numpy + OpenCV, no torch).

**Crowd map** (the diffusion target x of the poster's Figure 3; CrowdDiff, Ranasinghe et al., CVPR 2024,
``cc_utils/preprocess_shtech.py`` + ``guided_diffusion/image_datasets.py``): every head point is a dot at its pixel
``(floor(x), floor(y))`` convolved with a narrow discrete Gaussian (σ px; CrowdDiff 0.5 px, kernel radius
``ceil(3σ)``) normalised to unit mass, giving a density map that sums to the count (a head near the border has its
kernel renormalised inside the image, docs/design.md §3). The crowd map divides that density by the **normaliser**
``= peak of the unit-mass kernel`` (so an isolated head peaks at 1), clips to [0, 1] and maps to [-1, 1]
(``2 · m − 1``). ``map_to_density`` inverts it where nothing was clipped.

**Counting** (poster Figure 4, "contour detection"; CrowdDiff ``cc_utils/count.py``): the map in [0, 1] is
quantised to uint8, optionally denoised (``cv2.fastNlMeansDenoising``, CrowdDiff), binarised at
``max(threshold, Otsu)`` — a floor keeps Otsu from splitting an empty or all-background map into noise —,
cleaned by a 3×3 elliptic opening, and its external contours (``cv2.findContours``) are the heads. CrowdDiff opens
its *inverted* binary image (``THRESH_BINARY_INV`` then ``MORPH_OPEN``), which is a closing of the heads with the
3×3 cross: 1-px heads survive, 1-px holes and one-pixel gaps between blobs wider than a pixel are filled; it then
counts the holes with ``RETR_TREE`` minus the outer border, which misses heads touching the image border. We count
the external contours of the (closed) heads instead, so border heads count and no "− 1" is needed; ``opening:
heads`` opens the heads themselves (removes blobs smaller than the kernel). Each head is located at its blob's
centroid (pixel centres, ``+0.5``) and scored by the largest map value in the blob, so the localisation metrics
(AP@δ, mAP) rank confident heads first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: the 3×3 elliptic structuring element of CrowdDiff's ``cc_utils/count.py`` (a cross)
OPENINGS = ("background", "heads", "none")


def gaussian_kernel(sigma: float) -> np.ndarray:
    """Discrete 2-D Gaussian ``exp(-(dx² + dy²) / 2σ²)`` on ``[-r, r]²`` with ``r = max(1, ceil(3σ))``, unit sum;
    ``(2r + 1, 2r + 1) float64``.

    Raises:
        ValueError: ``sigma <= 0``."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    r = max(1, int(math.ceil(3 * sigma)))
    g = np.exp(-np.arange(-r, r + 1, dtype=np.float64) ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    return np.outer(g, g)


def normaliser(sigma: float) -> float:
    """The crowd map's normaliser: the peak of the unit-mass kernel of ``sigma`` (an isolated head's density peak),
    e.g. 0.6193 for σ = 0.5 px."""
    return float(gaussian_kernel(sigma).max())


def render_density(points: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Density map ``(H, W) float32`` of head ``points`` ``(N, 2)`` (x, y) px: a unit-mass Gaussian (σ px) per head
    at pixel ``(floor(x), floor(y))``, renormalised inside the image, so ``sum == N`` for points inside the image
    (points outside are clipped to the nearest pixel)."""
    import cv2

    H, W = int(shape[0]), int(shape[1])
    dens = np.zeros((H, W), np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if not len(pts) or H < 1 or W < 1:
        return dens.astype(np.float32)
    k = gaussian_kernel(sigma)
    r = k.shape[0] // 2
    g = k[r] / k[r].sum()  # the separable 1-D factor (unit sum)
    ix = np.clip(np.floor(pts[:, 0]).astype(int), 0, W - 1)
    iy = np.clip(np.floor(pts[:, 1]).astype(int), 0, H - 1)
    # mass of the 1-D factor inside [0, L) for a centre at i: cumulative sums over the window
    inside_x = np.array([g[max(0, r - i):min(2 * r + 1, r + W - i)].sum() for i in range(W)])
    inside_y = np.array([g[max(0, r - i):min(2 * r + 1, r + H - i)].sum() for i in range(H)])
    np.add.at(dens, (iy, ix), 1.0 / (inside_x[ix] * inside_y[iy]))
    out = cv2.filter2D(dens, -1, k, borderType=cv2.BORDER_CONSTANT)
    return out.astype(np.float32)


def render_crowd_map(points: np.ndarray, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """The crowd map ``(H, W) float32`` in [-1, 1] (see the module notes): ``2 · clip(density / normaliser, 0, 1) −
    1``; background is −1, an isolated head's pixel +1."""
    dens = render_density(points, shape, sigma)
    return (2.0 * np.clip(dens / normaliser(sigma), 0.0, 1.0) - 1.0).astype(np.float32)


def map_to_density(crowd_map: np.ndarray, norm: float) -> np.ndarray:
    """Crowd map in [-1, 1] -> density ``(H, W) float32`` (``(x + 1) / 2 · normaliser``, clipped to [0, normaliser]);
    the inverse of :func:`render_crowd_map` where no head overlap was clipped. Its sum is the poster's eq. 5 count."""
    m = np.clip((np.asarray(crowd_map, np.float32) + 1.0) / 2.0, 0.0, 1.0)
    return (m * float(norm)).astype(np.float32)


@dataclass
class Heads:
    """Heads found in a crowd map: ``count`` (int), ``points (M, 2) float64`` (x, y) px (blob centroids at pixel
    centres), ``scores (M,) float64`` (largest map value in [0, 1] of each blob), ``level`` (the binarisation level
    used, in [0, 1])."""

    count: int
    points: np.ndarray
    scores: np.ndarray
    level: float


def count_heads(crowd_map: np.ndarray, *, threshold: float = 0.5, otsu: bool = True, denoise: bool = False,
                opening: str = "background") -> Heads:
    """Count and locate the heads of a crowd map by contour detection (see the module notes).

    Args:
        crowd_map: ``(H, W)`` float in [-1, 1] (values outside are clipped).
        threshold: binarisation floor in [0, 1] map units ((x + 1) / 2); the level is ``max(threshold, Otsu)`` with
            ``otsu``, else ``threshold``.
        otsu: use Otsu's level (CrowdDiff) when it is above the floor.
        denoise: ``cv2.fastNlMeansDenoising`` first (CrowdDiff; smooths 1-px dots away at σ 0.5, so off by default).
        opening: ``background`` (CrowdDiff's opening of its inverted binary image), ``heads`` or ``none``.

    Returns:
        :class:`Heads`.

    Raises:
        ValueError: a map that is not 2-D, or an unknown ``opening``.
    """
    import cv2

    m = np.asarray(crowd_map, dtype=np.float32)
    if m.ndim != 2:
        raise ValueError(f"crowd map must be 2-D, got shape {m.shape}")
    if opening not in OPENINGS:
        raise ValueError(f"opening must be one of {', '.join(OPENINGS)}, got {opening!r}")
    m01 = np.clip((np.nan_to_num(m, nan=-1.0) + 1.0) / 2.0, 0.0, 1.0)
    u8 = np.round(m01 * 255.0).astype(np.uint8)
    if denoise:
        u8 = cv2.fastNlMeansDenoising(u8)
    level = float(threshold) * 255.0
    if otsu and u8.size:
        t, _ = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        level = max(level, float(t))
    fg = (u8 > level).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    if opening == "background":
        fg = 1 - cv2.morphologyEx(1 - fg, cv2.MORPH_OPEN, kernel)
    elif opening == "heads":
        fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(fg, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    n = len(contours)
    if n == 0:
        return Heads(0, np.zeros((0, 2)), np.zeros(0), level / 255.0)
    labels = np.zeros(fg.shape, np.int32)
    for i, c in enumerate(contours):
        cv2.drawContours(labels, [c], -1, i + 1, thickness=-1)
    labels *= fg.astype(np.int32)  # a closed contour's interior holes are not the head's pixels
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    area = np.bincount(lab, minlength=n + 1)[1:].astype(np.float64)
    cx = np.bincount(lab, weights=xs + 0.5, minlength=n + 1)[1:]
    cy = np.bincount(lab, weights=ys + 0.5, minlength=n + 1)[1:]
    peak = np.zeros(n + 1)
    np.maximum.at(peak, lab, m01[ys, xs].astype(np.float64))
    ok = area > 0
    pts = np.stack([cx[ok] / area[ok], cy[ok] / area[ok]], 1)
    scores = peak[1:][ok]
    order = np.argsort(-scores, kind="stable")
    return Heads(int(n), pts[order], scores[order], level / 255.0)


__all__ = ["gaussian_kernel", "normaliser", "render_density", "render_crowd_map", "map_to_density", "Heads",
           "count_heads", "OPENINGS"]
