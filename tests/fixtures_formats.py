"""Write tiny datasets in the *exact* original on-disk formats, for reader tests.

Each ``make_*`` writes into a folder and returns ``{(split, id): points}`` (``(N, 2) float64`` x, y), the
points it wrote, so tests compare what the reader returns with what was written (never hard-coded counts).
Images are small random JPEGs; sizes are ``(H, W) = (24, 32)`` unless given.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image

H, W = 24, 32


def write_jpeg(path: Path, h: int = H, w: int = W, mode: str = "RGB", seed: int = 0) -> Path:
    """A random-noise JPEG of size ``(h, w)`` in Pillow ``mode`` (``"RGB"`` or ``"L"``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, quality=90)
    return path


def random_points(n: int, seed: int, h: int = H, w: int = W) -> np.ndarray:
    """``(n, 2)`` float64 x, y points strictly inside an ``(h, w)`` image (1-based MATLAB-like values)."""
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.uniform(0.5, w - 0.5, n), rng.uniform(0.5, h - 0.5, n)])


def write_shanghaitech_mat(path: Path, points: np.ndarray, *, transposed: bool = False,
                           number: int | None = -1) -> Path:
    """``GT_IMG_n.mat`` as distributed: ``image_info`` is a (1,1) object array holding a (1,1) struct with
    fields ``location`` ((N, 2) double, x y) and ``number`` ((1,1) uint16). Defects for tests: ``transposed``
    stores ``location`` as (2, N); ``number`` overrides the count field (None: no ``number`` field)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [("location", "O")] + ([] if number is None else [("number", "O")])
    struct = np.zeros((1, 1), dtype=fields)
    loc = np.asarray(points, np.float64).reshape(-1, 2)
    struct[0, 0]["location"] = loc.T if transposed else loc
    if number is not None:
        struct[0, 0]["number"] = np.array([[len(points) if number == -1 else number]], dtype=np.uint16)
    info = np.empty((1, 1), dtype=object)
    info[0, 0] = struct
    scipy.io.savemat(str(path), {"image_info": info})
    return path


def write_annpoints_mat(path: Path, points: np.ndarray) -> Path:
    """UCF_CC_50 / UCF-QNRF ``*_ann.mat``: variable ``annPoints`` ((N, 2) double, x y)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(str(path), {"annPoints": np.asarray(points, np.float64).reshape(-1, 2)})
    return path


def make_shanghaitech(root: Path, part: str = "A", n_train: int = 12, n_test: int = 5, *,
                      suffix: str = "", gt_name: str = "ground-truth",
                      counts: dict | None = None) -> dict:
    """``root/ShanghaiTech/part_{part}{suffix}/{train,test}_data/{images/IMG_n.jpg, <gt_name>/GT_IMG_n.mat}``.

    ``counts``: ``{(split, n): count}`` overrides (default count ``n % 7``, so some images have 0 heads).
    """
    written = {}
    base = root / "ShanghaiTech" / f"part_{part}{suffix}"
    for split, n_img in (("train", n_train), ("test", n_test)):
        for n in range(1, n_img + 1):
            count = (counts or {}).get((split, n), n % 7)
            pts = random_points(count, seed=n + (1000 if split == "test" else 0))
            write_jpeg(base / f"{split}_data" / "images" / f"IMG_{n}.jpg", seed=n)
            write_shanghaitech_mat(base / f"{split}_data" / gt_name / f"GT_IMG_{n}.mat", pts)
            written[(split, f"IMG_{n}")] = pts
    return written


def make_ucf50(root: Path, n: int = 50) -> dict:
    """``root/UCF_CC_50/{1..n}.jpg`` (grayscale, as the originals) + ``{i}_ann.mat`` (``annPoints``)."""
    written = {}
    for i in range(1, n + 1):
        pts = random_points(3 + i % 4, seed=i)
        write_jpeg(root / "UCF_CC_50" / f"{i}.jpg", mode="L", seed=i)
        write_annpoints_mat(root / "UCF_CC_50" / f"{i}_ann.mat", pts)
        written[("all", str(i))] = pts
    return written


def make_qnrf(root: Path, n_train: int = 10, n_test: int = 4, folder: str = "UCF-QNRF_ECCV18") -> dict:
    """``root/<folder>/{Train,Test}/img_nnnn.jpg`` + ``img_nnnn_ann.mat`` (``annPoints``); ids restart
    at 0001 in each split, as in the original."""
    written = {}
    for split, sub, n_img in (("train", "Train", n_train), ("test", "Test", n_test)):
        for i in range(1, n_img + 1):
            name = f"img_{i:04d}"
            pts = random_points(i % 5, seed=i + (500 if split == "test" else 0))
            write_jpeg(root / folder / sub / f"{name}.jpg", seed=i)
            write_annpoints_mat(root / folder / sub / f"{name}_ann.mat", pts)
            written[(split, name)] = pts
    return written


def make_jhu(root: Path, sizes: dict | None = None) -> dict:
    """``root/jhu_crowd_v2.0/{train,val,test}/images/nnnn.jpg`` + ``gt/nnnn.txt`` (``x y w h o b`` per
    line, integers as in the original; image 1 of each split has an empty file) + ``image_labels.txt``.

    Returns ``{(split, id): {"points", "boxes", "occlusion", "blur", "labels"}}``."""
    sizes = sizes or {"train": 6, "val": 3, "test": 3}
    written = {}
    start = 1
    weathers = ["0", "1", "2", "3"]
    for split, n_img in sizes.items():
        label_lines = []
        for i in range(start, start + n_img):
            name = f"{i:04d}"
            rng = np.random.default_rng(i)
            count = 0 if i == start else int(rng.integers(1, 6))
            xy = np.column_stack([rng.integers(0, W, count), rng.integers(0, H, count)]).astype(np.float64)
            wh = rng.integers(2, 9, (count, 2)).astype(np.float64)
            occ = rng.integers(1, 4, count)
            blur = rng.integers(0, 2, count)
            write_jpeg(root / "jhu_crowd_v2.0" / split / "images" / f"{name}.jpg", seed=i)
            gt = root / "jhu_crowd_v2.0" / split / "gt" / f"{name}.txt"
            gt.parent.mkdir(parents=True, exist_ok=True)
            gt.write_text("".join(f"{int(x)} {int(y)} {int(w)} {int(h)} {o} {b}\n"
                                  for (x, y), (w, h), o, b in zip(xy, wh, occ, blur)))
            labels = {"label_count": count, "scene": "street" if i % 2 else "stadium",
                      "weather": int(weathers[i % 4]), "distractor": i % 2}
            label_lines.append(f"{name},{count},{labels['scene']},{labels['weather']},{labels['distractor']}\n")
            written[(split, name)] = {"points": xy, "boxes": np.column_stack([xy, wh]), "occlusion": occ,
                                      "blur": blur, "labels": labels}
        (root / "jhu_crowd_v2.0" / split / "image_labels.txt").write_text("".join(label_lines))
        start += n_img
    return written


def make_nwpu(root: Path, sizes: dict | None = None, *, with_test_jsons: bool = False) -> dict:
    """``root/NWPU-Crowd/images/nnnn.jpg`` + ``jsons/nnnn.json`` (``img_id``, ``human_num``, ``points``,
    ``boxes``) + ``train.txt``/``val.txt``/``test.txt`` (``id illumination scene-level`` per line, as in
    the original; test has no jsons: NWPU withholds them)."""
    sizes = sizes or {"train": 6, "val": 3, "test": 3}
    base = root / "NWPU-Crowd"
    written = {}
    start = 1
    for split, n_img in sizes.items():
        lines = []
        for i in range(start, start + n_img):
            name = f"{i:04d}"
            pts = random_points(0 if i == start else i % 6 + 1, seed=i)
            write_jpeg(base / "images" / f"{name}.jpg", seed=i)
            if split != "test" or with_test_jsons:
                (base / "jsons").mkdir(parents=True, exist_ok=True)
                boxes = [[x - 2, y - 2, x + 2, y + 2] for x, y in pts.tolist()]
                (base / "jsons" / f"{name}.json").write_text(json.dumps(
                    {"img_id": f"{name}.jpg", "human_num": len(pts), "points": pts.tolist(), "boxes": boxes}))
            lines.append(f"{name} {i % 2} {i % 5}\n")
            written[(split, name)] = pts
        (base / f"{split}.txt").write_text("".join(lines))
        start += n_img
    return written
