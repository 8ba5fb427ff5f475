"""SYRAC's synthetic data (§3): the ranking pairs and the noisy counting set, generated through the core's
``stable-diffusion`` generator and cached content-addressed (:func:`harness.generate_cached`: a killed generation
resumes at the next missing image), plus the pair list written to the cell folder (``syrac/pairs.json``).

- **Ranking pairs** (§3.1): for every real unlabelled image x^real (the target's train images by default, or the
  source's train images read with ``load_image()`` — never their labels), ``synthetic_per_image`` img2img images
  x^syn = G(x^real, t_prompt, t_neg, ε), each with its own recorded seed; pairs (x^real, x^syn) with
  c^real ≥ c^syn. ``intra-image-rank`` (Table 3) pairs an image with a random crop of itself instead.
- **Noisy counting set** (§3.2): text-to-image "A group of {N} people. High angle" for every N, ``noisy_per_count``
  images each, plus empty scenes counted as 0; the count of an image is its prompt's N.
- Model selection holds out the pairs of a seeded ``val_fraction`` of the real images (all pairs of a real image on
  one side, so the held-out loss measures unseen scenes).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from harness import GenerationRequest, atomic_write_json, generate_cached, read_image, stage

from .config import SyracOptions

PAIRS_FILE = "pairs.json"
FOLDER = "syrac"


def stable_seed(*parts: int | str) -> int:
    """A seed in ``[0, 2**63)`` from integers and strings (strings by SHA-256), via ``numpy.random.SeedSequence``."""
    ints = [int(p) % 2**32 if isinstance(p, (int, np.integer)) else
            int.from_bytes(hashlib.sha256(str(p).encode()).digest()[:4], "little") for p in parts]
    return int(np.random.SeedSequence(ints).generate_state(2, dtype=np.uint32).view(np.uint64)[0] >> np.uint64(1))


@dataclass
class Pair:
    """One ranking pair: ``real`` and ``synthetic`` are image keys of an :class:`ImageStore`; c(real) ≥ c(synthetic).

    Attributes:
        real: the real image's key (``"<dataset>/train/<id>"``). synthetic: an img2img file path or
            ``"crop:<real key>:<x0>,<y0>,<x1>,<y1>"`` (pixels of the real image).
        split: ``train`` | ``val``. seed: the synthetic image's seed. real_path: the real image file (for reports).
    """

    real: str
    synthetic: str
    split: str
    seed: int
    real_path: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class NoisyImage:
    """One image of the noisy counting set: its file, its count (the prompt's N; 0 for empty scenes), prompt, seed,
    and ``split`` (``train``; ``val`` for the held-out part used by the end-to-end regression's model selection)."""

    path: str
    count: int
    prompt: str
    seed: int
    split: str = "train"


class ImageStore:
    """Images by key at the network input size ``(H, W)`` (uint8), decoded on first use and kept in memory up to
    ``max_bytes``; further images are re-read on every use."""

    def __init__(self, size: tuple[int, int], max_bytes: float):
        self.size, self.max_bytes = (int(size[0]), int(size[1])), float(max_bytes)
        self.loaders: dict[str, Callable[[], np.ndarray]] = {}
        self._cache: dict[str, np.ndarray] = {}
        self._bytes = 0

    def add(self, key: str, loader: Callable[[], np.ndarray]) -> None:
        """Register ``loader() -> (h, w, 3) uint8`` (any size) under ``key``."""
        self.loaders[key] = loader

    def get(self, key: str) -> np.ndarray:
        """``(H, W, 3) uint8`` at the input size."""
        from .model import resize_uint8

        if key in self._cache:
            return self._cache[key]
        img = resize_uint8(self.loaders[key](), self.size)
        if self._bytes + img.nbytes <= self.max_bytes:
            self._cache[key] = img
            self._bytes += img.nbytes
        return img


def real_refs(ctx: Any, o: SyracOptions) -> list:
    """The real unlabelled images of the ranking pairs: the target's train images (``real_images: target``) or the
    source's train refs (images only). A seeded subset of ``max_real_images`` when capped."""
    refs = list(ctx.target_images) if o.real_images == "target" else list(ctx.source.samples("train"))
    if o.max_real_images is not None and o.max_real_images < len(refs):
        idx = np.sort(np.random.default_rng([int(ctx.seed), 3]).choice(len(refs), o.max_real_images, replace=False))
        refs = [refs[i] for i in idx]
    return refs


def val_images(n: int, fraction: float, seed: int, salt: int) -> set[int]:
    """Indices of the seeded held-out ``round(fraction · n)`` (at least 1, at most n − 1) of ``n`` items."""
    if n < 2:
        return set()
    k = min(n - 1, max(1, int(round(fraction * n))))
    return set(int(i) for i in np.random.default_rng([int(seed), salt]).choice(n, k, replace=False))


def crop_box(shape: tuple[int, int], lo: float, hi: float, seed: int) -> tuple[int, int, int, int]:
    """A random crop ``(x0, y0, x1, y1)`` (pixels) of an ``(H, W)`` image whose sides are a fraction f ∈ [lo, hi] of
    the image's (intra-image ranking: the crop holds no more people than the image)."""
    rng = np.random.default_rng(seed)
    H, W = int(shape[0]), int(shape[1])
    f = rng.uniform(lo, hi)
    h, w = max(1, int(round(f * H))), max(1, int(round(f * W)))
    y0, x0 = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    return x0, y0, x0 + w, y0 + h


def build_pairs(ctx: Any, o: SyracOptions, generator: Any, store: ImageStore) -> list[Pair]:
    """The ranking pairs of the cell (see the module notes); registers every image with ``store``.

    For ``synthetic-rank`` each real image's ``synthetic_per_image`` img2img requests are generated (or taken from
    the cache) one real image at a time, so only one full-resolution real image is held at once."""
    refs = real_refs(ctx, o)
    held = val_images(len(refs), o.train.val_fraction, ctx.seed, 11)
    pairs: list[Pair] = []
    n_new = 0
    measured: list[Pair] = []  # a dry run: the pairs of the images run, which stand in for the rest
    with stage("pairs: real image", units=len(refs), unit="real image", max_units=1) as st:
        for i, ref in enumerate(refs):
            split = "val" if i in held else "train"
            if st.done:  # a dry run (harness.stages): one image's pairs per image not run (never the copies too)
                pairs += [replace(p, split=split) for p in measured]
                continue
            with st.unit():
                new_pairs, new = _pairs_of(ctx, o, generator, store, ref, split)
            pairs += new_pairs
            measured = new_pairs
            n_new += new
    if o.pretrain == "synthetic-rank":
        ctx.log.info("syrac: %d ranking pairs from %d real images (%d img2img images generated now, %d cached)",
                     len(pairs), len(refs), n_new, len(pairs) - n_new)
    return pairs


def _pairs_of(ctx: Any, o: SyracOptions, generator: Any, store: ImageStore, ref: Any,
              split: str) -> tuple[list[Pair], int]:
    """The ranking pairs of one real image (crops, or its img2img images generated or cached) and the number of
    images generated now; registers the images with ``store``."""
    real_key = ref.key
    store.add(real_key, ref.load_image)
    path = getattr(ref, "image_path", None)
    seeds = [stable_seed(ctx.seed, real_key, g) for g in range(o.synthetic_per_image)]
    image = ref.load_image()
    if o.pretrain == "intra-image-rank":
        pairs = []
        for s in seeds:
            box = crop_box(image.shape[:2], *o.crop_range, s)
            key = f"crop:{real_key}:{','.join(map(str, box))}"
            store.add(key, lambda r=ref, b=box: r.load_image()[b[1]:b[3], b[0]:b[2]])
            pairs.append(Pair(real_key, key, split, s, str(path) if path else None, {"crop": list(box)}))
        return pairs, 0
    if o.generation_size is not None:
        from .model import resize_uint8

        image = resize_uint8(image, tuple(o.generation_size))
    reqs = [GenerationRequest(seed=s, size=tuple(image.shape[:2]), prompt=o.rank_prompt,
                              negative_prompt=o.rank_negative_prompt, init_image=image, strength=o.strength,
                              meta={"source_image": real_key}) for s in seeds]
    records, new = generate_cached(ctx, generator, reqs)
    for rec in records:
        store.add(str(rec.path), lambda p=rec.path: read_image(p))
    return [Pair(real_key, str(rec.path), split, rec.request.seed, str(path) if path else None,
                 {"size": list(rec.size)}) for rec in records], new


def noisy_requests(o: SyracOptions, seed: int) -> list[tuple[int, GenerationRequest]]:
    """``[(count, request)]`` of the noisy counting set (§3.2), each image with its own seed."""
    out = []
    groups = [(n, o.noisy_prompt.replace("{N}", str(n)), o.noisy_negative_prompt) for n in o.noisy_counts]
    if o.empty_prompt:
        groups.append((0, o.empty_prompt, o.empty_negative_prompt))
    for n, prompt, negative in groups:
        for i in range(o.noisy_per_count):
            out.append((n, GenerationRequest(seed=stable_seed(seed, "noisy", prompt, i), size=tuple(o.noisy_size),
                                             prompt=prompt, negative_prompt=negative, meta={"count": n})))
    return out


def build_noisy_set(ctx: Any, o: SyracOptions, generator: Any, store: ImageStore) -> list[NoisyImage]:
    """The noisy counting set of the cell (generated or taken from the cache; resumable); registers the images with
    ``store``; a seeded ``val_fraction`` is marked ``val`` (used only by the end-to-end regression)."""
    pending = noisy_requests(o, ctx.seed)
    records, n_new = generate_cached(ctx, generator, [r for _, r in pending])
    held = val_images(len(records), o.train.val_fraction, ctx.seed, 13)
    out = []
    for i, ((count, req), rec) in enumerate(zip(pending, records)):
        store.add(str(rec.path), lambda p=rec.path: read_image(p))
        out.append(NoisyImage(str(rec.path), int(count), req.prompt, int(req.seed), "val" if i in held else "train"))
    ctx.log.info("syrac: noisy counting set of %d images (%d generated now, %d cached)", len(out), n_new,
                 len(out) - n_new)
    return out


def write_pairs(folder: Path, o: SyracOptions, pairs: Sequence[Pair] | None, noisy: Sequence[NoisyImage],
                about: dict) -> Path:
    """``<folder>/pairs.json``: the pair list and the noisy set (what ``harness syrac inspect`` shows)."""
    return atomic_write_json(Path(folder) / PAIRS_FILE, {
        **about, "pretrain": o.pretrain, "real_images": o.real_images,
        "pairs": [asdict(p) for p in pairs or []], "noisy": [asdict(n) for n in noisy]})


def read_pairs(path: Path) -> dict:
    """The content of a ``pairs.json``."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


__all__ = ["Pair", "NoisyImage", "ImageStore", "stable_seed", "real_refs", "val_images", "crop_box", "build_pairs",
           "noisy_requests", "build_noisy_set", "write_pairs", "read_pairs", "PAIRS_FILE", "FOLDER"]
