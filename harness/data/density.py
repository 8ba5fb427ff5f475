"""Density maps from point annotations (docs/design.md §3).

A *density map* is a ``(H, W) float32`` array whose sum is the number of annotated heads inside the image.
Each head ``i`` at ``(x_i, y_i)`` contributes a 2-D Gaussian kernel ``G_{σ_i}`` centred on its pixel:

    F(p) = Σ_i δ(p − p_i) * G_{σ_i}(p)                      (Zhang et al., MCNN, CVPR 2016, eq. 1)

with the *geometry-adaptive kernel* ``σ_i = β · d̄_i``, ``d̄_i`` the mean distance from head ``i`` to its
``k`` nearest neighbouring heads (β = 0.3, k = 3 in MCNN; CSRNet, Li et al. CVPR 2018, uses the same rule),
or a fixed ``σ`` for sparse scenes.

Conventions used by every function here:

* ``points``: ``(N, 2)`` float, ``(x, y)`` in pixels of the image, origin top-left. A point at ``(x, y)``
  belongs to pixel ``(row, col) = (floor(y), floor(x))``: pixel ``j`` covers ``[j, j + 1)``. Points with
  ``0 <= x <= W`` and ``0 <= y <= H`` are *inside* (a point exactly on the right/bottom edge is clipped to
  the last pixel); points farther out are ignored (neither drawn nor used as neighbours).
* Kernels are truncated at ``radius = int(truncate · σ + 0.5)`` pixels, exactly as
  ``scipy.ndimage.gaussian_filter`` truncates them, so :func:`density_map` and :func:`classic_density_map`
  agree wherever a kernel lies wholly inside the image.
* Fewer than ``k + 1`` points: the adaptive rule uses the ``n − 1`` neighbours that exist; a single point
  gets the fixed ``sigma``. (CSRNet's preprocessing gives a single point ``σ = mean(H, W) / 4``, which smears
  one head over the whole image, and gives ``σ = inf`` for 2–3 points; we do not copy either.)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from harness.errors import ConfigError, DataError

__all__ = [
    "density_map",
    "classic_density_map",
    "downsample_density",
    "adaptive_sigmas",
    "head_pixels",
]

_KERNELS = ("adaptive", "fixed")
# Kernels with radius <= this are drawn vectorised (grouped by radius); larger ones in a per-head loop.
_VECTOR_MAX_RADIUS = 12
# At most this many kernel samples are scattered at once (~64 MB of temporaries).
_CHUNK_ELEMENTS = 4_000_000


# ----------------------------------------------------------------------------------------- helpers


def _as_shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        dims = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise DataError(f"density shape {shape!r} is not a sequence of integers: pass (H, W)") from None
    if len(dims) not in (2, 3) or dims[0] <= 0 or dims[1] <= 0:
        raise DataError(f"density shape {shape!r} is invalid: pass (H, W) (or an image's (H, W, C)) with H, W > 0")
    return dims[0], dims[1]


def as_points(points, what: str = "points") -> np.ndarray:
    """Validate point annotations: ``(N, 2) float64`` ``(x, y)`` pixels (an empty input gives ``(0, 2)``).

    Raises:
        DataError: not an ``(N, 2)`` array, or non-finite values (``what`` names the points in the message).
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise DataError(f"{what} have shape {pts.shape}: pass an (N, 2) array of (x, y) pixel positions")
    if not np.isfinite(pts).all():
        raise DataError(f"{what} contain {int((~np.isfinite(pts)).any(axis=1).sum())} non-finite rows: "
                        f"drop them first")
    return pts


def _check_options(kernel: str, sigma: float, beta: float, k: int, truncate: float, max_sigma) -> None:
    if kernel not in _KERNELS:
        raise ConfigError(f"density kernel {kernel!r} is unknown: use one of {', '.join(_KERNELS)}")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ConfigError(f"density sigma={sigma!r} is invalid: pass a finite σ >= 0 in pixels")
    if not (np.isfinite(beta) and beta >= 0):
        raise ConfigError(f"density beta={beta!r} is invalid: pass a finite β >= 0 (MCNN uses 0.3)")
    if int(k) != k or k < 1:
        raise ConfigError(f"density k={k!r} is invalid: pass an integer number of neighbours >= 1 (MCNN uses 3)")
    if not (np.isfinite(truncate) and truncate > 0):
        raise ConfigError(f"density truncate={truncate!r} is invalid: pass a positive number of σ (default 3)")
    if max_sigma is not None and not (np.isfinite(max_sigma) and max_sigma >= 0):
        raise ConfigError(f"density max_sigma={max_sigma!r} is invalid: pass None or a finite σ >= 0 in pixels")


def head_pixels(points, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of the heads inside the image.

    Args:
        points: ``(N, 2)`` float, ``(x, y)`` pixels.
        shape: ``(H, W)`` (or ``(H, W, C)``).

    Returns:
        ``(inside, rows, cols)``: ``inside`` is an ``(N,)`` bool mask of points with ``0 <= x <= W`` and
        ``0 <= y <= H``; ``rows``/``cols`` are ``(n_inside,)`` int64 pixel indices ``floor(y)``/``floor(x)``
        clipped to ``[0, H - 1]``/``[0, W - 1]``.

    Raises:
        DataError: ``points`` is not ``(N, 2)`` finite, or ``shape`` is not a valid ``(H, W)``.
    """
    h, w = _as_shape(shape)
    pts = as_points(points)
    x, y = pts[:, 0], pts[:, 1]
    inside = (x >= 0) & (x <= w) & (y >= 0) & (y <= h)
    cols = np.minimum(np.floor(x[inside]).astype(np.int64), w - 1)
    rows = np.minimum(np.floor(y[inside]).astype(np.int64), h - 1)
    return inside, rows, cols


def adaptive_sigmas(points, *, beta: float = 0.3, k: int = 3, sigma: float = 15.0) -> np.ndarray:
    """Geometry-adaptive kernel widths σ_i = β · mean distance to the k nearest neighbours.

    MCNN (Zhang et al., CVPR 2016), §3.1 / eq. 1; neighbours found with ``scipy.spatial.cKDTree`` on the
    (sub-pixel) point coordinates. With ``n < k + 1`` points the mean runs over the ``n − 1`` neighbours that
    exist; a lone point gets ``sigma``.

    Args:
        points: ``(N, 2)`` float, ``(x, y)`` pixels.
        beta: β (MCNN: 0.3). k: number of neighbours (MCNN: 3). sigma: σ for a single point, in pixels.

    Returns:
        ``(N,) float64`` σ in pixels (0 for a point whose neighbours all coincide with it).
    """
    pts = as_points(points)
    n = len(pts)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    if n == 1:
        return np.full(1, float(sigma))
    k_eff = min(int(k), n - 1)
    dist, _ = cKDTree(pts).query(pts, k=k_eff + 1)
    return beta * np.asarray(dist, dtype=np.float64)[:, 1:].mean(axis=1)


def _sigmas(pts: np.ndarray, kernel: str, sigma: float, beta: float, k: int, max_sigma) -> np.ndarray:
    if kernel == "fixed":
        sig = np.full(len(pts), float(sigma))
    else:
        sig = adaptive_sigmas(pts, beta=beta, k=k, sigma=sigma)
    if max_sigma is not None:
        sig = np.minimum(sig, float(max_sigma))
    return sig


def _kernels_1d(centres: np.ndarray, sig: np.ndarray, r: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-point 1-D Gaussian kernels over ``[c − r, c + r]``, zeroed outside ``[0, size)`` and normalised
    to sum 1 inside it. Returns ``(index (n, 2r+1) clipped into range, weight (n, 2r+1))``."""
    offs = np.arange(-r, r + 1, dtype=np.float64)
    safe = np.maximum(sig, 1e-12)[:, None]  # σ = 0 gives a delta: exp(-huge) = 0 off centre, 1 at centre
    wgt = np.exp(-0.5 * (offs[None, :] / safe) ** 2)
    idx = centres[:, None] + np.arange(-r, r + 1)[None, :]
    wgt[(idx < 0) | (idx >= size)] = 0.0
    wgt /= wgt.sum(axis=1, keepdims=True)  # the centre pixel is always inside, so the sum is >= 1
    return np.clip(idx, 0, size - 1), wgt


# ----------------------------------------------------------------------------------------- public


def density_map(
    points: ArrayLike,
    shape: Sequence[int],
    *,
    kernel: str = "adaptive",
    sigma: float = 15.0,
    beta: float = 0.3,
    k: int = 3,
    truncate: float = 3.0,
    max_sigma: float | None = None,
) -> np.ndarray:
    """Density map of point annotations, each head a truncated Gaussian normalised inside the image.

    The 2-D kernel of head ``i`` is the outer product of two 1-D Gaussians (separable), evaluated on the
    ``(2r+1)²`` window around its pixel, ``r = int(truncate · σ_i + 0.5)``; each 1-D factor is renormalised
    over the part of the window inside the image, so every head inside the image contributes exactly 1
    (mass is kept at borders) and ``density.sum()`` equals the number of points inside the image. Heads
    with small kernels are drawn vectorised (grouped by radius, scattered with ``np.bincount``), heads
    with large kernels one window each: milliseconds per image (≥100× the classic loop, see
    ``tests/test_bench_density.py``), with the same values as :func:`classic_density_map` (to float32
    rounding) wherever a kernel lies wholly inside the image.

    σ rule: ``kernel="adaptive"`` uses σ_i = β · mean distance to the ``k`` nearest heads (MCNN, Zhang
    et al. CVPR 2016, eq. 1; see :func:`adaptive_sigmas` for fewer than ``k + 1`` heads);
    ``kernel="fixed"`` uses σ_i = ``sigma``. ``max_sigma`` caps σ_i (None: no cap).

    Args:
        points: ``(N, 2)`` float, ``(x, y)`` pixels, origin top-left; a point at ``(x, y)`` is drawn at
            pixel ``(floor(y), floor(x))``; points outside ``[0, W] × [0, H]`` are ignored.
        shape: ``(H, W)`` of the image (an image's ``(H, W, C)`` shape is accepted).
        kernel: ``"adaptive"`` or ``"fixed"``.
        sigma: fixed σ in pixels (also the σ of a lone head under ``"adaptive"``).
        beta: adaptive-kernel β (0.3 in MCNN).
        k: adaptive-kernel number of neighbours (3 in MCNN).
        truncate: kernel radius in units of σ (as ``scipy.ndimage.gaussian_filter``).
        max_sigma: optional upper bound on σ in pixels.

    Returns:
        ``(H, W) float32`` density; sums to the number of points inside the image.

    Raises:
        DataError: malformed ``points`` or ``shape``. ConfigError: invalid kernel options.
    """
    _check_options(kernel, sigma, beta, k, truncate, max_sigma)
    h, w = _as_shape(shape)
    pts = as_points(points)
    inside, rows, cols = head_pixels(pts, (h, w))
    if len(rows) == 0:
        return np.zeros((h, w), dtype=np.float32)
    sig = _sigmas(pts[inside], kernel, sigma, beta, k, max_sigma)
    radii = (truncate * sig + 0.5).astype(np.int64)
    # A window never needs to be larger than the image: clip radii (weights beyond the image are 0 anyway).
    radii = np.minimum(radii, max(h, w))

    # Small kernels (the many heads of dense crowds): vectorised per exact radius, scattered with
    # np.bincount in chunks of at most _CHUNK_ELEMENTS kernel samples (bounds temporary memory).
    small = radii <= _VECTOR_MAX_RADIUS
    acc = np.zeros(h * w, dtype=np.float64)
    idx_parts: list[np.ndarray] = []
    wgt_parts: list[np.ndarray] = []
    pending = 0
    for r in np.unique(radii[small]).tolist():
        members = np.flatnonzero(radii == r)
        step = max(1, _CHUNK_ELEMENTS // (2 * r + 1) ** 2)
        for start in range(0, len(members), step):
            sel = members[start : start + step]
            yi, yw = _kernels_1d(rows[sel], sig[sel], r, h)
            xi, xw = _kernels_1d(cols[sel], sig[sel], r, w)
            idx_parts.append((yi[:, :, None] * w + xi[:, None, :]).ravel())
            wgt_parts.append((yw[:, :, None] * xw[:, None, :]).ravel())
            pending += idx_parts[-1].size
            if pending >= _CHUNK_ELEMENTS:
                acc += np.bincount(np.concatenate(idx_parts), np.concatenate(wgt_parts), minlength=h * w)
                idx_parts, wgt_parts, pending = [], [], 0
    if idx_parts:
        acc += np.bincount(np.concatenate(idx_parts), np.concatenate(wgt_parts), minlength=h * w)
    out = acc.astype(np.float32).reshape(h, w)

    # Large kernels (sparse heads): a loop adding the separable window clipped to the image; the per-head
    # overhead is small next to the (2r+1)² window.
    big = np.flatnonzero(~small)
    for r, c, s, rad in zip(rows[big].tolist(), cols[big].tolist(), sig[big].tolist(), radii[big].tolist()):
        y0, y1 = max(r - rad, 0), min(r + rad + 1, h)
        x0, x1 = max(c - rad, 0), min(c + rad + 1, w)
        scale = -0.5 / s**2  # s > 0 here: rad > _VECTOR_MAX_RADIUS
        gy = np.exp(scale * np.arange(y0 - r, y1 - r, dtype=np.float64) ** 2)
        gx = np.exp(scale * np.arange(x0 - c, x1 - c, dtype=np.float64) ** 2)
        gy, gx = (gy / gy.sum()).astype(np.float32), (gx / gx.sum()).astype(np.float32)
        out[y0:y1, x0:x1] += gy[:, None] * gx[None, :]
    return out


def classic_density_map(
    points,
    shape: Sequence[int],
    *,
    kernel: str = "adaptive",
    sigma: float = 15.0,
    beta: float = 0.3,
    k: int = 3,
    truncate: float = 3.0,
    max_sigma: float | None = None,
) -> np.ndarray:
    """Reference density map: the classic per-head loop of MCNN/CSRNet preprocessing (slow).

    For each head: an ``(H, W)`` zero map with a 1 at the head's pixel, blurred with
    ``scipy.ndimage.gaussian_filter(σ_i, mode="constant", truncate=truncate)``, and summed (CSRNet,
    Li et al. CVPR 2018, ``make_dataset`` notebook ``gaussian_filter_density``). Mass that the blur pushes
    past the border is LOST, so the sum is below the count near borders. Same arguments, σ rule and pixel
    convention as :func:`density_map`; used as a cross-check and as the benchmark baseline.

    Returns:
        ``(H, W) float32`` density.
    """
    _check_options(kernel, sigma, beta, k, truncate, max_sigma)
    h, w = _as_shape(shape)
    pts = as_points(points)
    inside, rows, cols = head_pixels(pts, (h, w))
    out = np.zeros((h, w), dtype=np.float64)
    if len(rows) == 0:
        return out.astype(np.float32)
    sig = _sigmas(pts[inside], kernel, sigma, beta, k, max_sigma)
    for r, c, s in zip(rows, cols, sig):
        pt2d = np.zeros((h, w), dtype=np.float64)
        pt2d[r, c] = 1.0
        out += gaussian_filter(pt2d, float(s), mode="constant", truncate=truncate)
    return out.astype(np.float32)


def downsample_density(density: np.ndarray, stride: int) -> np.ndarray:
    """Sum-pool a density map by an integer stride, keeping the count.

    The map is padded with zeros at the bottom/right to a multiple of ``stride`` and each ``stride × stride``
    block is summed (the target of a counter with output stride ``s``, e.g. 4 for MCNN, 8 for CSRNet).

    Args:
        density: ``(H, W)`` float density.
        stride: integer ``s >= 1``.

    Returns:
        ``(ceil(H / s), ceil(W / s)) float32``; its sum equals ``density.sum()`` (up to float32 rounding).

    Raises:
        DataError: ``density`` is not 2-D. ConfigError: ``stride`` is not a positive integer.
    """
    dens = np.asarray(density)
    if dens.ndim != 2:
        raise DataError(f"density has shape {dens.shape}: pass a 2-D (H, W) map")
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise ConfigError(f"downsample stride={stride!r} is invalid: pass an integer >= 1")
    s = int(stride)
    if s == 1:
        return dens.astype(np.float32, copy=True)
    h, w = dens.shape
    hh, ww = -(-h // s), -(-w // s)
    padded = np.zeros((hh * s, ww * s), dtype=np.float64)
    padded[:h, :w] = dens
    return padded.reshape(hh, s, ww, s).sum(axis=(1, 3)).astype(np.float32)
