"""Whole images as square crops: pad, tile (optionally overlapping), stitch (numpy only).

The diffusion model works on ``crop × crop`` crops (256 px in the poster and CrowdDiff). An image is padded at the
bottom/right (image: black, crowd map: −1 = background) to ``(n − 1) · (crop − overlap) + crop`` per side and cut
into ``n_y × n_x`` tiles whose starts are ``i · (crop − overlap)``. Each tile owns a **core**: the tile minus half
the overlap on every inner side (the first tile's core starts at 0, the last one's ends at the padded border), and
the cores **partition** the padded image. :meth:`TileGrid.stitch` takes every pixel from the one tile whose core
holds it, so heads are counted once on the stitched map: a head in an overlap is never counted by two tiles, and a
head cut by a tile border is one contour (CrowdDiff instead averages 50 %-overlapping crops in
``cc_utils/combine_crops.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def tile_starts(length: int, crop: int, overlap: int = 0) -> tuple[list[int], list[tuple[int, int]], int]:
    """``(starts, cores, padded_length)`` along one axis of ``length`` px (see the module notes).

    Raises:
        ValueError: ``crop < 1``, or ``overlap`` not even or not in ``[0, crop)``."""
    if crop < 1:
        raise ValueError(f"crop must be >= 1, got {crop}")
    if overlap < 0 or overlap >= crop or overlap % 2:
        raise ValueError(f"overlap must be an even number of pixels in [0, crop), got {overlap}")
    stride = crop - overlap
    n = max(1, math.ceil((max(int(length), 1) - overlap) / stride))
    padded = (n - 1) * stride + crop
    starts = [i * stride for i in range(n)]
    half = overlap // 2
    cores = [(0 if i == 0 else s + half, padded if i == n - 1 else s + crop - half) for i, s in enumerate(starts)]
    return starts, cores, padded


@dataclass(frozen=True)
class TileGrid:
    """The tiles of an ``(height, width)`` image: ``ys`` / ``xs`` tile starts, ``y_cores`` / ``x_cores`` the cores
    (``[start, end)`` px), ``padded`` the padded ``(H', W')``; tiles are ordered row-major."""

    height: int
    width: int
    crop: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]
    y_cores: tuple[tuple[int, int], ...]
    x_cores: tuple[tuple[int, int], ...]
    padded: tuple[int, int]

    @classmethod
    def for_image(cls, height: int, width: int, crop: int, overlap: int = 0) -> "TileGrid":
        ys, yc, ph = tile_starts(height, crop, overlap)
        xs, xc, pw = tile_starts(width, crop, overlap)
        return cls(int(height), int(width), int(crop), int(overlap), tuple(ys), tuple(xs), tuple(yc), tuple(xc),
                   (ph, pw))

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def positions(self) -> list[tuple[int, int]]:
        """``(y0, x0)`` of every tile, row-major."""
        return [(y, x) for y in self.ys for x in self.xs]

    def split(self, array: np.ndarray, pad_value: float = 0) -> np.ndarray:
        """``(n_tiles, crop, crop, ...)`` crops of ``array`` (``(height, width, ...)``) padded with ``pad_value``.

        Raises:
            ValueError: ``array`` is not ``(height, width, ...)``."""
        a = np.asarray(array)
        if a.shape[:2] != (self.height, self.width):
            raise ValueError(f"array of shape {a.shape} does not match the grid's image {self.height}×{self.width}")
        ph, pw = self.padded[0] - self.height, self.padded[1] - self.width
        a = np.pad(a, ((0, ph), (0, pw)) + ((0, 0),) * (a.ndim - 2), constant_values=pad_value)
        c = self.crop
        return np.stack([a[y:y + c, x:x + c] for y, x in self.positions()])

    def stitch(self, tiles: np.ndarray) -> np.ndarray:
        """The ``(height, width, ...)`` image whose every pixel comes from the tile whose core holds it (cores
        partition the padded image, so each pixel — and each head — comes from exactly one tile).

        Raises:
            ValueError: a wrong number or size of tiles."""
        t = np.asarray(tiles)
        if t.shape[0] != len(self) or t.shape[1:3] != (self.crop, self.crop):
            raise ValueError(f"expected {len(self)} tiles of {self.crop}×{self.crop}, got shape {t.shape}")
        out = np.empty(self.padded + t.shape[3:], dtype=t.dtype)
        i = 0
        for y, (cy0, cy1) in zip(self.ys, self.y_cores):
            for x, (cx0, cx1) in zip(self.xs, self.x_cores):
                out[cy0:cy1, cx0:cx1] = t[i, cy0 - y:cy1 - y, cx0 - x:cx1 - x]
                i += 1
        return out[:self.height, :self.width]


__all__ = ["tile_starts", "TileGrid"]
