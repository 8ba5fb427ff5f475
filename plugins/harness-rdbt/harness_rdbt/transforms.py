"""RDBT's transformations between regression and detection outputs, its fusion rules and patch selection.

Conventions: points are ``(N, 2) float (x, y)`` pixels of the network's input image (origin top-left); a box of
side ``s`` centred at ``(x, y)`` is ``[x − s/2, y − s/2, x + s/2, y + s/2]``; a map with stride ``k`` has cell
``(r, c)`` covering input pixels ``[c·k, (c+1)·k) × [r·k, (r+1)·k)``.

- :func:`head_sizes`: pseudo box sides from point annotations (nearest-neighbour distance; scipy KD-tree).
- :func:`csp_targets` / :func:`decode_csp`: CSP training targets and decoding (peaks + torchvision NMS).
- :func:`psi`: Det→Reg Ψ (RDBT eq. 1): a Gaussian per detected head, σ_j = β · box side, mass kept.
- :func:`phi_points`: decoding of Φ's map (RDBT §3.3): binarised at 0.2, merged within 10×10 px.
- :func:`confidence_map`, :func:`fuse_density`: the detection-confidence weight map W_t and eq. 8.
- :func:`fuse_detections`: D's detections ∪ Φ(R)'s points (scales restored: D's scale map in the lower
  half of the image, nearest-neighbour distance in the upper half) followed by NMS (RDBT §3.4).
- :func:`select_density_patches` / :func:`select_detection_patches` / :func:`random_patches`: the two
  224×224 patches per image (density 50–70 % range; highest mean detection confidence; random ablation).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from harness import ConfigError, DataError, as_points


@dataclass
class Detections:
    """Scored head detections of one image.

    Attributes:
        points: ``(N, 2)`` centres ``(x, y)`` px. scores: ``(N,)`` confidences in [0, 1].
        sizes: ``(N,)`` box sides px. counted: ``(N,)`` bool, the detections that count as heads (the rest are
        kept, with their lower scores, for the localisation AP only). origin: ``(N,)`` 0 = detector D, 1 = Φ(R).
    """

    points: np.ndarray
    scores: np.ndarray
    sizes: np.ndarray
    counted: np.ndarray = field(default=None)
    origin: np.ndarray = field(default=None)

    def __post_init__(self):
        self.points = as_points(self.points)
        n = len(self.points)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(n)
        self.sizes = np.asarray(self.sizes, dtype=np.float64).reshape(n)
        self.counted = np.ones(n, bool) if self.counted is None else np.asarray(self.counted, bool).reshape(n)
        self.origin = np.zeros(n, np.int8) if self.origin is None else np.asarray(self.origin, np.int8).reshape(n)

    def __len__(self) -> int:
        return len(self.points)

    @property
    def count(self) -> int:
        return int(self.counted.sum())

    def boxes(self) -> np.ndarray:
        """``(N, 4)`` boxes ``x1, y1, x2, y2``."""
        h = self.sizes[:, None] / 2
        return np.concatenate([self.points - h, self.points + h], axis=1)

    def subset(self, idx) -> "Detections":
        return Detections(self.points[idx], self.scores[idx], self.sizes[idx], self.counted[idx], self.origin[idx])

    @staticmethod
    def empty() -> "Detections":
        return Detections(np.zeros((0, 2)), np.zeros(0), np.zeros(0))


# ------------------------------------------------------------------------------------------ pseudo boxes


def head_sizes(points, *, default: float = 16.0, min_size: float = 4.0, max_size: float = 64.0) -> np.ndarray:
    """Pseudo box side per head from point annotations: the distance to its nearest neighbouring head
    (scipy ``cKDTree``), clipped to ``[min_size, max_size]``; ``default`` for a lone head (pixels).

    This is how point-supervised detectors get boxes (PSDNN, Liu et al. CVPR 2019, as RDBT §4.2 follows).
    Returns ``(N,) float64``."""
    pts = as_points(points)
    if len(pts) == 0:
        return np.zeros(0)
    if len(pts) == 1:
        return np.full(1, float(np.clip(default, min_size, max_size)))
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pts).query(pts, k=2)
    nn = d[:, 1]
    nn = np.where(nn > 0, nn, default)
    return np.clip(nn, min_size, max_size)


def csp_targets(points, sizes, image_hw, stride: int = 4, gauss_scale: float = 0.5) -> dict:
    """CSP targets of one image (Liu et al. CVPR 2019, §3.3) at stride ``stride``.

    Args:
        points: ``(N, 2)`` head centres px; sizes: ``(N,)`` box sides px; image_hw: ``(H, W)`` of the input.
        gauss_scale: σ of the negative-reduction Gaussian, as a fraction of the box side in cells.

    Returns:
        float32 arrays of shape ``(C, ceil(H/stride), ceil(W/stride))``: ``pos`` (C=1, 1 at the cell of each
        head), ``gauss`` (C=1, max over heads of an unnormalised Gaussian), ``scale`` (C=1, log(side/stride) at
        head cells), ``offset`` (C=2, sub-cell x, y in [0, 1) at head cells).
    """
    pts = as_points(points)
    sizes = np.asarray(sizes, dtype=np.float64).reshape(len(pts))
    H, W = int(image_hw[0]), int(image_hw[1])
    h, w = -(-H // stride), -(-W // stride)
    pos = np.zeros((1, h, w), np.float32)
    gauss = np.zeros((1, h, w), np.float32)
    scale = np.zeros((1, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for (x, y), s in zip(pts, sizes):
        cx, cy = x / stride, y / stride
        c, r = int(np.floor(cx)), int(np.floor(cy))
        if not (0 <= r < h and 0 <= c < w):
            continue
        sg = max(0.5, gauss_scale * s / stride)
        rad = int(np.ceil(3 * sg))
        r0, r1, c0, c1 = max(0, r - rad), min(h, r + rad + 1), max(0, c - rad), min(w, c + rad + 1)
        g = np.exp(-((xx[r0:r1, c0:c1] - c) ** 2 + (yy[r0:r1, c0:c1] - r) ** 2) / (2 * sg * sg))
        gauss[0, r0:r1, c0:c1] = np.maximum(gauss[0, r0:r1, c0:c1], g)
        pos[0, r, c] = 1.0
        scale[0, r, c] = np.log(s / stride)
        offset[:, r, c] = (cx - c, cy - r)
    return {"pos": pos, "gauss": gauss, "scale": scale, "offset": offset}


def decode_csp(center_logits, scale, offset, *, stride: int = 4, keep_threshold: float = 0.05,
               count_threshold: float = 0.5, nms_iou: float = 0.5, max_detections: int = 5000) -> Detections:
    """Detections from CSP's maps for one image (CSP §3.4): 3×3 local maxima of ``sigmoid(center)`` above
    ``keep_threshold``, boxes from the scale and offset maps, torchvision ``batched``-free ``nms`` at ``nms_iou``.

    Args:
        center_logits, scale: ``(h, w)`` (or ``(1, h, w)``) torch tensors; offset ``(2, h, w)``.
        count_threshold: detections at or above it are *counted* heads; lower ones are kept for AP.

    Returns:
        :class:`Detections` in input pixels, sorted by score (descending).
    """
    import torch
    import torch.nn.functional as F
    from torchvision.ops import nms

    c = torch.sigmoid(center_logits.reshape(1, 1, *center_logits.shape[-2:]).float())
    peaks = (c == F.max_pool2d(c, 3, stride=1, padding=1)) & (c >= keep_threshold)
    idx = torch.nonzero(peaks[0, 0], as_tuple=False)
    if len(idx) == 0:
        return Detections.empty()
    r, col = idx[:, 0], idx[:, 1]
    sc = c[0, 0, r, col]
    if len(sc) > max_detections:
        top = torch.topk(sc, max_detections).indices
        r, col, sc = r[top], col[top], sc[top]
    off = offset.reshape(2, *offset.shape[-2:]).float()
    x = (col.float() + off[0, r, col].clamp(0, 1)) * stride
    y = (r.float() + off[1, r, col].clamp(0, 1)) * stride
    side = torch.exp(scale.reshape(*scale.shape[-2:]).float()[r, col].clamp(-3, 6)) * stride
    boxes = torch.stack([x - side / 2, y - side / 2, x + side / 2, y + side / 2], 1)
    keep = nms(boxes, sc, float(nms_iou))
    pts = torch.stack([x, y], 1)[keep].detach().cpu().numpy().astype(np.float64)
    scores = sc[keep].detach().cpu().numpy().astype(np.float64)
    sizes = side[keep].detach().cpu().numpy().astype(np.float64)
    return Detections(pts, scores, sizes, counted=scores >= count_threshold)


# ------------------------------------------------------------------------------------------ Ψ and Φ


def psi(points, sizes, image_hw, *, beta: float = 0.3, stride: int = 1, min_sigma: float = 1.0) -> np.ndarray:
    """Det→Reg transformer Ψ (RDBT eq. 1): a Gaussian at each detected head with σ_j = β · box side (the
    geometry-adaptive rule σ = β·d of the density maps, so Ψ inverts Φ's training targets), normalised inside the
    image (:func:`harness.data.density.density_map`), sum-pooled to ``stride``.

    Returns:
        ``(ceil(H/stride), ceil(W/stride)) float32`` whose sum is the number of points inside the image.
    """
    from harness import density_map, downsample_density

    pts = as_points(points)
    H, W = int(image_hw[0]), int(image_hw[1])
    sig = np.maximum(min_sigma, beta * np.asarray(sizes, dtype=np.float64).reshape(len(pts)))
    out = np.zeros((H, W), np.float64)
    keys = np.round(sig * 2) / 2  # group heads by σ (0.5 px bins): one vectorised call per group
    for s in np.unique(keys):
        sel = keys == s
        out += density_map(pts[sel], (H, W), kernel="fixed", sigma=float(s))
    out = out.astype(np.float32)
    return downsample_density(out, stride) if stride > 1 else out


def phi_points(prob: np.ndarray, *, stride: int = 1, threshold: float = 0.2, merge_px: float = 10.0
               ) -> tuple[np.ndarray, np.ndarray]:
    """Head points from Φ's probability map (RDBT §3.3): binarise at ``threshold`` (0.2) and merge the non-zero
    pixels within a ``merge_px × merge_px`` input-pixel area into one point (the local maximum of the
    probability within the window; a plateau gives its centre).

    Args:
        prob: ``(h, w)`` sigmoid output of Φ at ``stride`` (input pixels per map pixel).

    Returns:
        ``(points (M, 2) x, y input px, scores (M,) probabilities)``, scores descending.
    """
    from harness import points_from_density

    md = max(1, int(round(merge_px / (2 * stride))))
    p = np.asarray(prob, dtype=np.float64)
    return points_from_density(np.where(p >= threshold, p, 0.0), stride=stride,
                               threshold=float(threshold) - 1e-9, min_distance=md)


def confidence_map(points, scores, sizes, map_hw, *, stride: int, beta: float = 0.3, truncate: float = 3.0
                   ) -> np.ndarray:
    """Detection-confidence weight map W_t (RDBT §3.4, eq. 8) at ``stride``: within the k×k area of each
    detection centre (k the support of its Ψ Gaussian, 2·truncate·σ_j + 1 px) the weight is the centre's
    score; overlaps keep the maximum. Returns ``(h, w) float32`` in [0, 1]."""
    pts = as_points(points)
    h, w = int(map_hw[0]), int(map_hw[1])
    W = np.zeros((h, w), np.float32)
    sig = beta * np.asarray(sizes, dtype=np.float64).reshape(len(pts))
    for (x, y), s, sg in zip(pts, np.asarray(scores, dtype=np.float64), sig):
        c, r = int(x // stride), int(y // stride)
        half = int(round(truncate * sg / stride))
        r0, r1, c0, c1 = max(0, r - half), min(h, r + half + 1), max(0, c - half), min(w, c + half + 1)
        if r0 < r1 and c0 < c1:
            W[r0:r1, c0:c1] = np.maximum(W[r0:r1, c0:c1], np.float32(np.clip(s, 0, 1)))
    return W


def fuse_density(regression: np.ndarray, transformed: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """RDBT eq. 8: ``M^R = (1 − W) · R(I) + W · Ψ(D(I))`` (all ``(h, w)`` at the same stride).

    Raises:
        DataError: shapes differ."""
    R, P, Wt = (np.asarray(a, dtype=np.float32) for a in (regression, transformed, weight))
    if not (R.shape == P.shape == Wt.shape):
        raise DataError(f"fuse_density: maps must share one shape, got {R.shape}, {P.shape}, {Wt.shape}")
    return ((1 - Wt) * R + Wt * P).astype(np.float32)


def restore_sizes(points, image_hw, *, scale_map: np.ndarray | None, scale_stride: int = 4,
                  default: float = 16.0, min_size: float = 4.0, max_size: float = 64.0,
                  context_points=None) -> np.ndarray:
    """Box sides for Φ's points (RDBT §3.4): in the lower half of the image (y ≥ H/2) read D's scale map
    (``(h, w)`` box sides in px at ``scale_stride``); in the upper half use the nearest-neighbour distance among
    ``context_points`` (all fused heads; default the points themselves), clipped to ``[min_size, max_size]``."""
    pts = as_points(points)
    if len(pts) == 0:
        return np.zeros(0)
    ctx = pts if context_points is None else np.concatenate([as_points(context_points), pts])
    nn = head_sizes(ctx, default=default, min_size=min_size, max_size=max_size)[-len(pts):]
    out = nn.copy()
    if scale_map is not None:
        lower = pts[:, 1] >= image_hw[0] / 2
        r = np.clip((pts[:, 1] // scale_stride).astype(int), 0, scale_map.shape[0] - 1)
        c = np.clip((pts[:, 0] // scale_stride).astype(int), 0, scale_map.shape[1] - 1)
        out[lower] = np.clip(scale_map[r[lower], c[lower]], min_size, max_size)
    return out


def nms_detections(det: Detections, iou: float) -> Detections:
    """torchvision ``nms`` over a :class:`Detections` (score order); returns the kept ones, scores descending."""
    import torch
    from torchvision.ops import nms

    if len(det) == 0:
        return det
    keep = nms(torch.as_tensor(det.boxes(), dtype=torch.float32), torch.as_tensor(det.scores, dtype=torch.float32),
               float(iou)).numpy()
    return det.subset(keep)


def fuse_detections(det: Detections, phi_pts, phi_scores, image_hw, *, scale_map: np.ndarray | None,
                    scale_stride: int = 4, nms_iou: float = 0.5, **size_kw) -> Detections:
    """RDBT §3.4: D(I)'s detections ∪ Φ(R(I))'s points (boxes restored by :func:`restore_sizes`), then NMS.

    Φ's points are counted (they passed Φ's 0.2 binarisation); D's keep their own ``counted`` flags.
    Returns the fused :class:`Detections` (``origin`` 0 = D, 1 = Φ)."""
    pp = as_points(phi_pts)
    sizes = restore_sizes(pp, image_hw, scale_map=scale_map, scale_stride=scale_stride,
                          context_points=det.points[det.counted], **size_kw)
    phi = Detections(pp, np.asarray(phi_scores, dtype=np.float64).reshape(len(pp)), sizes,
                     counted=np.ones(len(pp), bool), origin=np.ones(len(pp), np.int8))
    both = Detections(np.concatenate([det.points, phi.points]), np.concatenate([det.scores, phi.scores]),
                      np.concatenate([det.sizes, phi.sizes]), np.concatenate([det.counted, phi.counted]),
                      np.concatenate([det.origin, phi.origin]))
    return nms_detections(both, nms_iou)


# ------------------------------------------------------------------------------------------ patches


def patch_grid(image_hw, patch: int) -> list[tuple[int, int]]:
    """Top-left corners ``(y0, x0)`` of the non-overlapping ``patch × patch`` tiles covering the image (the
    last row/column is shifted inwards so every tile lies inside; one tile at (0, 0) if the image is smaller)."""
    H, W = int(image_hw[0]), int(image_hw[1])
    if patch < 1:
        raise ConfigError(f"patch_size must be >= 1 pixel, got {patch}")

    def starts(n):
        if n <= patch:
            return [0]
        s = list(range(0, n - patch + 1, patch))
        if s[-1] + patch < n:
            s.append(n - patch)
        return s

    return [(y, x) for y in starts(H) for x in starts(W)]


def select_density_patches(density: np.ndarray, stride: int, image_hw, *, patch: int, n: int = 2,
                           low: float = 0.5, high: float = 0.7, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Regression patches (RDBT §3.4): rank the non-overlapping tiles by their pseudo count (sum of the fused
    density inside), keep those whose rank percentile lies in ``[low, high]`` (50–70 %: medium-high density,
    avoiding the unreliable extremes) and draw ``n`` of them at random. With fewer candidates than ``n``, the
    tiles closest to the middle of the range fill up. Returns corners ``(y0, x0)`` px."""
    if not 0 <= low <= high <= 1:
        raise ConfigError(f"density range must satisfy 0 <= low <= high <= 1, got [{low}, {high}]")
    tiles = patch_grid(image_hw, patch)
    dens = np.asarray(density, dtype=np.float64)
    sums = np.array([dens[y // stride:(y + patch) // stride, x // stride:(x + patch) // stride].sum()
                     for y, x in tiles])
    order = np.argsort(sums, kind="stable")
    m = len(tiles)
    pct = np.empty(m)
    pct[order] = np.arange(m) / max(1, m - 1)
    cand = np.flatnonzero((pct >= low - 1e-9) & (pct <= high + 1e-9))
    chosen = list(rng.choice(cand, size=min(n, len(cand)), replace=False)) if len(cand) else []
    if len(chosen) < min(n, m):
        rest = [i for i in np.argsort(np.abs(pct - (low + high) / 2), kind="stable") if i not in chosen]
        chosen += rest[:min(n, m) - len(chosen)]
    return [tiles[int(i)] for i in chosen]


def select_detection_patches(det: Detections, image_hw, *, patch: int, n: int = 2) -> list[tuple[int, int]]:
    """Detection patches (RDBT §3.4): the ``n`` non-overlapping tiles whose detections have the highest mean
    confidence (tiles without detections score 0; ties: raster order). Returns corners ``(y0, x0)`` px."""
    tiles = patch_grid(image_hw, patch)
    means = []
    for y, x in tiles:
        inside = ((det.points[:, 0] >= x) & (det.points[:, 0] < x + patch) & (det.points[:, 1] >= y)
                  & (det.points[:, 1] < y + patch)) if len(det) else np.zeros(0, bool)
        means.append(float(det.scores[inside].mean()) if inside.any() else 0.0)
    order = np.argsort(-np.asarray(means), kind="stable")
    return [tiles[int(i)] for i in order[:n]]


def random_patches(image_hw, *, patch: int, n: int = 2, rng: np.random.Generator) -> list[tuple[int, int]]:
    """Ablation "w/ RS" (RDBT Table 2): ``n`` tiles drawn uniformly from the non-overlapping grid."""
    tiles = patch_grid(image_hw, patch)
    return [tiles[int(i)] for i in rng.choice(len(tiles), size=min(n, len(tiles)), replace=False)]
