"""Built-in synthetic crowds: procedurally rendered scenes with *exact* head points.

Two variants with a real domain gap between them (scale, density and perspective differ):

============  ==========  ============  ===================  =========================================
variant       image W×H   people        head radius (px)     perspective
============  ==========  ============  ===================  =========================================
SYN-SPARSE    320 × 240   5 – 40        6 → 11 (top → bottom) mild: horizon at 30 % of the height
SYN-DENSE     320 × 240   100 – 400     1.5 → 6              strong: horizon at 12 %, more people far away
SYN-PARK      160 × 120   40 – 160      2.2 → 5.5            moderate: horizon at 25 %
SYN-STREET    160 × 120   60 – 200      1.8 → 4.6            stronger: horizon at 18 %, more people far away
============  ==========  ============  ===================  =========================================

SYN-PARK and SYN-STREET are the default demo pair of ``harness run`` without a data root: their counts overlap, so
predicting zero or the source's mean count is far from the truth and a trained counter has something to show; the
shift between them is in scale and perspective. They have 30 train / 10 val / 30 test images (the others 60 / 15 / 30).

Every split has a fixed size (:data:`SPLIT_SIZES`: train 60, val 15, test 30 images; the demo pair
:data:`DEMO_SPLITS`). Image ``index`` of
``split`` of a variant is rendered from a seed derived from ``(variant, split, index)`` alone (SHA-256 of
``"SYN-SPARSE/train/7"``), so the data are identical on every machine and splits never share an image.

Scene model: a sky/ground gradient with texture noise and a few structures (buildings on the horizon, a path,
lamp posts); each person is a body ellipse with a head disc (skin tone, hair cap) in varied colours. The
head radius grows linearly with the image row ``y`` below the horizon (a ground-plane perspective), people are
drawn back to front (far first) so near people occlude far ones as in a real crowd, and the annotated head
point is the centre of the head disc (occluded heads stay annotated, as in ShanghaiTech).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ..errors import DataError
from ..types import Sample, SampleRef

#: number of images per split (fixed; the demo pair has :data:`DEMO_SPLITS`)
SPLIT_SIZES: dict[str, int] = {"train": 60, "val": 15, "test": 30}
DEMO_SPLITS = (("train", 30), ("val", 10), ("test", 30))


@dataclass(frozen=True)
class SyntheticVariant:
    """Parameters of one synthetic domain.

    Attributes:
        name: dataset name (``"SYN-SPARSE"`` / ``"SYN-DENSE"``).
        width / height: image size in pixels.
        count_range: inclusive range of the number of people per image (uniform).
        radius_far / radius_near: head radius in pixels at the horizon row and at the bottom row.
        horizon: horizon row as a fraction of the height; heads lie below it.
        far_bias: exponent ``p`` of the row sampling density ``∝ r(y)^-p`` (0: uniform rows; 2: constant
            people per ground area under the perspective, i.e. many small far heads).
        splits: images per split (default :data:`SPLIT_SIZES`).
    """

    name: str
    width: int
    height: int
    count_range: tuple[int, int]
    radius_far: float
    radius_near: float
    horizon: float
    far_bias: float
    splits: tuple[tuple[str, int], ...] = tuple(SPLIT_SIZES.items())

    def split_size(self, split: str) -> int:
        return dict(self.splits)[split]


VARIANTS: dict[str, SyntheticVariant] = {
    "SYN-SPARSE": SyntheticVariant("SYN-SPARSE", 320, 240, (5, 40), 6.0, 11.0, 0.30, 0.0),
    "SYN-DENSE": SyntheticVariant("SYN-DENSE", 320, 240, (100, 400), 1.5, 6.0, 0.12, 1.5),
    # the demo pair: overlapping counts (predicting zero is far from optimal), a shift in scale and perspective,
    # small images and 30 training images so `harness run` without a data root finishes in minutes
    "SYN-PARK": SyntheticVariant("SYN-PARK", 160, 120, (40, 160), 2.2, 5.5, 0.25, 0.5, DEMO_SPLITS),
    "SYN-STREET": SyntheticVariant("SYN-STREET", 160, 120, (60, 200), 1.8, 4.6, 0.18, 1.0, DEMO_SPLITS),
}

_SKIN = np.array([[255, 224, 189], [234, 192, 134], [198, 134, 66], [141, 85, 36], [94, 58, 30],
                  [241, 194, 125]], dtype=float)
_HAIR = np.array([[20, 15, 10], [60, 40, 20], [110, 80, 40], [200, 170, 100], [90, 90, 90], [30, 30, 40]],
                 dtype=float)


def _variant(name: str) -> SyntheticVariant:
    key = name.strip().upper().replace("_", "-")
    if key not in VARIANTS:
        raise DataError(f"unknown synthetic variant {name!r}; use one of {', '.join(VARIANTS)}")
    return VARIANTS[key]


def _check_split(variant: SyntheticVariant, split: str, index: int | None = None) -> None:
    sizes = dict(variant.splits)
    if split not in sizes:
        raise DataError(f"{variant.name} has no split {split!r}; use one of {', '.join(sizes)}")
    if index is not None and not 0 <= index < sizes[split]:
        raise DataError(f"{variant.name} {split} has images 0..{sizes[split] - 1}; got index {index}")


def scene_seed(variant: str, split: str, index: int) -> int:
    """The 64-bit seed of one image: the first 8 bytes of SHA-256(``"<variant>/<split>/<index>"``)."""
    digest = hashlib.sha256(f"{_variant(variant).name}/{split}/{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def _radius(v: SyntheticVariant, y: np.ndarray) -> np.ndarray:
    """Head radius (px) at image row ``y`` (linear ground-plane perspective)."""
    y0 = v.horizon * v.height
    t = np.clip((y - y0) / (v.height - y0), 0.0, 1.0)
    return v.radius_far + (v.radius_near - v.radius_far) * t


def _background(v: SyntheticVariant, rng: np.random.Generator) -> Image.Image:
    h, w = v.height, v.width
    hy = int(round(v.horizon * h))
    rows = np.arange(h, dtype=float)[:, None]
    sky_top, sky_bot = rng.uniform(150, 235, 3), rng.uniform(190, 250, 3)
    ground_far, ground_near = rng.uniform(90, 170, 3), rng.uniform(50, 140, 3)
    t_sky = np.clip(rows / max(hy, 1), 0, 1)
    t_gr = np.clip((rows - hy) / max(h - hy, 1), 0, 1)
    sky = sky_top * (1 - t_sky) + sky_bot * t_sky
    ground = ground_far * (1 - t_gr) + ground_near * t_gr
    col = np.where(rows < hy, sky, ground)  # (h, 3)
    img = np.broadcast_to(col[:, None, :], (h, w, 3)).copy()
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    # buildings on the horizon
    x = float(rng.uniform(-20, 10))
    while x < w:
        bw, bh = rng.uniform(25, 70), rng.uniform(0.3, 1.0) * max(hy, 8) + 4
        shade = tuple(int(c) for c in rng.uniform(70, 200, 3))
        draw.rectangle([x, hy - bh, x + bw, hy + 2], fill=shade)
        for wy in np.arange(hy - bh + 4, hy - 3, 7):  # windows
            for wx in np.arange(x + 3, x + bw - 4, 8):
                if rng.random() < 0.6:
                    draw.rectangle([wx, wy, wx + 3, wy + 3], fill=tuple(int(c * 0.6) for c in shade))
        x += bw + rng.uniform(0, 25)
    # a path towards the viewer and a few lamp posts
    cx = rng.uniform(0.3, 0.7) * w
    path = tuple(int(c) for c in rng.uniform(120, 200, 3))
    draw.polygon([(cx - 4, hy), (cx + 4, hy), (cx + rng.uniform(40, 120), h), (cx - rng.uniform(40, 120), h)],
                 fill=path)
    for _ in range(int(rng.integers(1, 4))):
        px, py = rng.uniform(0, w), rng.uniform(hy + 5, h)
        r = float(_radius(v, np.array([py]))[0])
        draw.rectangle([px - r * 0.2, py - r * 9, px + r * 0.2, py], fill=(40, 40, 45))
        draw.ellipse([px - r * 0.6, py - r * 9.6, px + r * 0.6, py - r * 8.4], fill=(250, 240, 180))
    # texture noise: fine Gaussian grain + a smooth low-frequency shading field
    arr = np.asarray(canvas, dtype=float)
    low = rng.normal(0, 1, (h // 16 + 2, w // 16 + 2))
    low = np.asarray(Image.fromarray(low.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR))
    arr = arr * (1 + 0.08 * low[..., None]) + rng.normal(0, 6, (h, w, 1)) + rng.normal(0, 3, (h, w, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _sample_rows(v: SyntheticVariant, n: int, rng: np.random.Generator) -> np.ndarray:
    """Head rows below the horizon, density ``∝ r(y)^-far_bias`` (inverse-CDF on a fine grid)."""
    y0 = v.horizon * v.height
    grid = np.linspace(y0, v.height - 1e-3, 512)
    pdf = _radius(v, grid) ** (-v.far_bias)
    cdf = np.cumsum(pdf)
    cdf /= cdf[-1]
    return np.interp(rng.random(n), cdf, grid)


def render_scene(variant: str, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render image ``index`` of ``split`` of a synthetic variant.

    Returns:
        image: ``(H, W, 3) uint8`` RGB.
        points: ``(N, 2) float64`` head points ``(x, y)`` in pixels (centres of the head discs), all inside
            the image, sorted far to near (drawing order).
        radii: ``(N,) float64`` head radius of each person in pixels.

    Raises:
        DataError: unknown variant, split or index out of range.

    The result depends only on ``(variant, split, index)`` (see :func:`scene_seed`).
    """
    v = _variant(variant)
    _check_split(v, split, index)
    rng = np.random.default_rng(scene_seed(v.name, split, index))
    canvas = _background(v, rng)
    lo, hi = v.count_range
    n = int(rng.integers(lo, hi + 1))
    ys = np.sort(_sample_rows(v, n, rng))  # far (top) first: drawn back to front
    xs = rng.uniform(0, v.width, n)
    radii = _radius(v, ys) * rng.uniform(0.85, 1.15, n)
    draw = ImageDraw.Draw(canvas)
    for x, y, r in zip(xs, ys, radii):
        body = tuple(int(c) for c in rng.uniform(20, 235, 3))
        bw, bh = r * rng.uniform(1.1, 1.5), r * rng.uniform(3.0, 4.0)
        top = y + 0.7 * r
        draw.ellipse([x - bw, top, x + bw, top + 2 * bh], fill=body)
        skin = tuple(int(c) for c in np.clip(_SKIN[rng.integers(len(_SKIN))] + rng.normal(0, 8, 3), 0, 255))
        hair = tuple(int(c) for c in _HAIR[rng.integers(len(_HAIR))])
        draw.ellipse([x - r, y - r, x + r, y + r], fill=skin)
        draw.pieslice([x - r, y - r, x + r, y + r], 180 + rng.uniform(-20, 0), 360 + rng.uniform(0, 20),
                      fill=hair)
    canvas = canvas.filter(ImageFilter.GaussianBlur(0.5))
    points = np.stack([xs, ys], axis=1).astype(np.float64).reshape(-1, 2)
    return np.asarray(canvas, dtype=np.uint8), points, radii.astype(np.float64)


@lru_cache(maxsize=512)
def _cached(variant: str, split: str, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img, pts, radii = render_scene(variant, split, index)
    for a in (img, pts, radii):
        a.setflags(write=False)
    return img, pts, radii


class SyntheticCrowds:
    """The :class:`harness.specs.Dataset` of one synthetic variant (no files; ``root`` is None).

    ``samples(split)`` returns the variant's split size (``SPLIT_SIZES[split]``) refs with ids ``"<split>_0000"`` ...; loading renders
    the scene (cached in memory, ~0.23 MB per image) and returns a :class:`Sample` with writable copies;
    ``meta`` holds ``head_radii`` (``(N,)`` px), ``seed``, ``variant`` and ``original_size`` ``(W, H)``.

    Raises:
        DataError: unknown variant or split.
    """

    def __init__(self, variant: str, root: Path | None = None):
        self.variant = _variant(variant)
        self.name = self.variant.name
        self.root = None

    def __repr__(self) -> str:
        return f"SyntheticCrowds({self.name!r})"

    def samples(self, split: str) -> list[SampleRef]:
        _check_split(self.variant, split)
        return [SampleRef(dataset=self.name, split=split, id=f"{split}_{i:04d}", image_path=None,
                          annotation_path=None, loader=self._load, image_loader=self._load_image)
                for i in range(self.variant.split_size(split))]

    @staticmethod
    def _index(ref: SampleRef) -> int:
        return int(ref.id.rsplit("_", 1)[1])

    def _load(self, ref: SampleRef) -> Sample:
        index = self._index(ref)
        img, pts, radii = _cached(self.name, ref.split, index)
        meta = {"variant": self.name, "seed": scene_seed(self.name, ref.split, index),
                "head_radii": radii.copy(), "original_size": (img.shape[1], img.shape[0]),
                "original_mode": "RGB", "n_points_dropped": 0}
        return Sample(id=ref.id, image=img.copy(), points=pts.copy(), meta=meta)

    def _load_image(self, ref: SampleRef) -> np.ndarray:
        return _cached(self.name, ref.split, self._index(ref))[0].copy()
