"""Helpers for tests on the real ShanghaiTech files (read directly, independently of the harness readers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image


def sha_train(root: Path, index: int):
    """Points (N, 2) and (H, W) of ShanghaiTech part A train image IMG_<index>."""
    base = Path(root) / "ShanghaiTech" / "part_A" / "train_data"
    mat = scipy.io.loadmat(base / "ground-truth" / f"GT_IMG_{index}.mat")
    points = np.asarray(mat["image_info"][0, 0][0, 0]["location"], dtype=np.float64)
    with Image.open(base / "images" / f"IMG_{index}.jpg") as im:
        w, h = im.size
    return points, (h, w)


def n_inside(points, shape) -> int:
    """Number of points with 0 ≤ x ≤ W and 0 ≤ y ≤ H (the density maps' notion of inside)."""
    h, w = shape
    x, y = points[:, 0], points[:, 1]
    return int(((x >= 0) & (x <= w) & (y >= 0) & (y <= h)).sum())
