"""The shared synthetic-data pipeline: generate → annotate → score → filter → pseudo-label → mix
(docs/design.md §10; PromptMix, Bakhtiarnia et al. 2023, eq. 2–4, as reproduced in the Aarhus report §III).

A method supplies the :class:`~harness.types.GenerationRequest` s (PromptMix: captions → prompts; SPADE: label masks)
and a generator; :func:`build_pool` does the rest and :func:`pool_extras` turns the pool into the per-epoch samples
that :func:`harness.fit_density_counter` mixes into the real source images:

1. **generate** every request (content-addressed cache ``synthetic/image``: key = generator key + request key; a
   killed generation resumes at the next missing image);
2. **annotate** every image with l heavyweight counters (``heavyweight-counter`` annotators; cache
   ``synthetic/annotation``);
3. **score** q (eq. 4) = max_{j≠j'} d(A_j, A_j') / max_j d(A_j, 0) with d = |count difference| (eq. 10) or the MAE
   between density maps on a common grid, and **filter** images with q > ``max_quality``;
4. keep **one annotator's labels** as pseudo-labels: its density map becomes ``round(count)`` head points
   (:func:`harness.pseudo_labels.density_to_points`; cache ``synthetic/points``);
5. **mix**: each epoch a fresh random subset of ``r_mix · |real|`` kept images joins training.

Leakage (docs/design.md §11): annotators trained on the *target's* labels are left out by default
(``exclude_target_trained``); ``keep="target"`` takes the one trained on the target (the report's choice) and the
cell is flagged. Every annotator that filters or labels is recorded with the cell's components, so its training
labels count as labels the counter saw.
"""
from __future__ import annotations

import contextlib
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from .errors import ConfigError
from .io import atomic_write_json
from .options import component
from .pseudo_labels import (DISTANCES, CounterAnnotator, density_to_points, q_stats,  # noqa: F401  (re-exported)
                            quality_score)
from .stages import params_of, stage
from .training.density import EpochExtras
from .types import GenerationRequest, PseudoLabel, output_stride

SYNTHETIC_FILE = "synthetic.json"
DEFAULT_ANNOTATORS = ("csrnet-sha", "mcnn-sha", "mcnn-shb")


@dataclass
class PoolOptions:
    """Options of the annotate → filter → pseudo-label → mix stages (a strategy embeds them as ``pool``).

    Attributes:
        annotators: l registered counters used as heavyweight annotators.
        annotator_options: per annotator, options of its counter's factory (e.g. ``{"mcnn-sha": {"weights":
            "/path/to/mcnn_shtechA_660.h5"}}``; the contract tests use ``{"weights": "random"}``).
        exclude_target_trained: leave out annotators trained on the target's labels (no leakage).
        keep: whose labels become the pseudo-labels: a counter name, ``source`` (the first annotator trained on the
            source, else the first) or ``target`` (the one trained on the target: leakage, flagged).
        quality_distance: ``count`` (eq. 10) or ``mae``. max_quality: drop images with q above it (None: keep all).
        max_synthetic: use at most this many generated images (None: all).
        r_mix: synthetic images per epoch as a fraction of the real training images (0 generates nothing).
        synthetic_in_val: hold a share of the usable images out for validation, at the real images' train / val
            ratio, ``r_mix × n_val`` of them joining the validation images (the PromptMix report's Table IV).
    """

    annotators: tuple[str, ...] = component("counter", many=True, default=DEFAULT_ANNOTATORS)
    annotator_options: dict = field(default_factory=dict)
    exclude_target_trained: bool = True
    keep: str = "source"
    quality_distance: Literal["count", "mae"] = "count"
    max_quality: float | None = None
    max_synthetic: int | None = None
    r_mix: float = 1.0
    synthetic_in_val: bool = False

    def validate(self) -> list[str]:
        p = []
        if not self.annotators:
            p.append("give at least one annotator (a registered counter name)")
        if self.r_mix < 0:
            p.append(f"r_mix must be >= 0 (1.0 = 100 %), got {self.r_mix}")
        unknown = sorted(set(self.annotator_options) - set(self.annotators))
        if unknown:
            p.append(f"annotator_options names {', '.join(unknown)}, which are not among the annotators")
        if self.max_synthetic is not None and self.max_synthetic < 1:
            p.append(f"max_synthetic must be >= 1 or null, got {self.max_synthetic}")
        return p


@dataclass
class SyntheticRecord:
    """One generated image of the pool (a row of ``synthetic.json``)."""

    request: GenerationRequest
    path: Path
    size: tuple[int, int]
    counts: dict[str, float] = field(default_factory=dict)
    q: float | None = None
    kept: bool = True
    pseudo_count: float | None = None
    points_path: Path | None = None

    def to_dict(self) -> dict:
        r = self.request
        return {"prompt": r.prompt, "negative_prompt": r.negative_prompt, "seed": r.seed, "size": list(self.size),
                "strength": r.strength, "meta": r.meta, "path": str(self.path), "counts": self.counts, "q": self.q,
                "kept": self.kept, "pseudo_count": self.pseudo_count,
                "points_path": None if self.points_path is None else str(self.points_path)}


@dataclass
class SyntheticPool:
    """The annotated pool: ``records``, the pseudo-labelling annotator's name ``kept`` and all ``annotators``."""

    records: list[SyntheticRecord]
    kept: str
    annotators: list[str]
    stats: dict = field(default_factory=dict)

    @property
    def usable(self) -> list[SyntheticRecord]:
        return [r for r in self.records if r.kept]


def choose_annotators(ctx: Any, opts: PoolOptions) -> tuple[list[str], str]:
    """``(annotator names, the pseudo-labelling one)`` for the cell, decided from the counters' declared
    ``trained_on`` before anything is built (see the module notes).

    Raises:
        ConfigError: every annotator trained on the target, or an impossible ``keep``."""
    regs = ctx.registries.counters
    names = [regs.resolve(n) for n in opts.annotators]
    trained = {n: {d.upper() for d in regs.get(n).trained_on} for n in names}
    if opts.exclude_target_trained:
        dropped = [n for n in names if ctx.target_name.upper() in trained[n]]
        names = [n for n in names if n not in dropped]
        if dropped:
            ctx.log.info("annotators trained on %s's labels left out: %s", ctx.target_name, ", ".join(dropped))
        if not names:
            raise ConfigError(f"every annotator ({', '.join(opts.annotators)}) was trained on {ctx.target_name}'s "
                              f"labels; add others or set exclude_target_trained: false (the cell is then flagged)")
    if opts.keep in ("source", "target"):
        wanted = (ctx.source_name if opts.keep == "source" else ctx.target_name).upper()
        match = [n for n in names if wanted in trained[n]]
        if opts.keep == "target" and not match:
            raise ConfigError(f"keep: target but no annotator was trained on {ctx.target_name} "
                              f"(annotators: {', '.join(names)})")
        return names, (match or names)[0]
    kept = regs.resolve(opts.keep)
    if kept not in names:
        raise ConfigError(f"keep: {opts.keep!r} is not among this cell's annotators ({', '.join(names)})")
    return names, kept


def _read_sample(rec: SyntheticRecord) -> tuple[np.ndarray, np.ndarray]:
    return _read_png(rec.path), np.load(rec.points_path)


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _save_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG")


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to the temporary name
        np.save(fh, array)


def _save_label(path: Path, lab: PseudoLabel, stride: int) -> None:
    dens = lab.density if lab.density is not None else np.zeros((0, 0), np.float32)
    with open(path, "wb") as fh:
        np.savez_compressed(fh, count=np.float64(lab.count), density=dens.astype(np.float32), stride=np.int64(stride))


def _load_label(path: Path, name: str) -> PseudoLabel:
    with np.load(path) as z:
        dens = z["density"]
        return PseudoLabel(count=float(z["count"]), density=dens if dens.size else None,
                           meta={"annotator": name, "stride": int(z["stride"])})


def generate_cached(ctx: Any, generator: Any, requests: Sequence[GenerationRequest],
                    limit: int | None = None) -> tuple[list[SyntheticRecord], int]:
    """Stage 1: ``(records, number generated now)``; cached images are reused, missing ones generated (resume).

    In a dry run (:mod:`harness.stages`) the images count in every cell that uses them, as cached fits do: an image
    another cell made is not generated again (figures borrowed), but each cell's cost is what it costs alone."""
    gkey = generator.key()
    size_of = getattr(generator, "output_size", lambda h, w: (h, w))
    records, made, n_new = [], [], 0
    todo = requests[:limit] if limit else requests
    label = getattr(generator, "model_id", None) or type(generator).__name__
    if any(r.init_image is not None for r in todo):
        label += " img2img"
    with stage(f"generate: {label}", units=len(todo), unit="image", key=gkey, max_units=1,
               precision=getattr(generator, "gpu_precision", None)) as st:
        for req in todo:
            size = tuple(int(s) for s in size_of(*req.size))
            ikey = {"generator": gkey, "request": req.key(), "size": list(size)}
            path = ctx.cache.path("synthetic/image", ikey, ".png")
            if not path.exists() and st.done and made:
                # a dry run (harness.stages): an image made here stands in, so every later stage sees the full pool
                stand_in = made[len(records) % len(made)]
                records.append(SyntheticRecord(req, stand_in.path, stand_in.size))
                continue
            if not path.exists():
                with st.unit():
                    img = generator.generate([req])[0].image
                ctx.cache.get_or_create("synthetic/image", ikey, ".png", lambda p, im=img: _save_png(p, im))
                n_new += 1
            records.append(SyntheticRecord(req, path, size))
            made.append(records[-1])
    return records, n_new


def build_pool(ctx: Any, generator: Any, requests: Sequence[GenerationRequest], opts: PoolOptions, *,
               about: dict | None = None, chosen: tuple[list[str], str] | None = None) -> SyntheticPool:
    """Stages 1–4 for the cell (see the module notes); writes ``synthetic.json`` in the cell folder.

    Args:
        ctx: the cell's :class:`harness.CellContext`.
        generator: a built :class:`~harness.types.Generator`.
        requests: what to generate (each with its own seed).
        opts: :class:`PoolOptions`.
        about: extra facts for ``synthetic.json`` (e.g. the captioner).
        chosen: ``(annotator names, the pseudo-labelling one)`` when the caller already ran
            :func:`choose_annotators` for this cell (so it is decided, and logged, once); chosen here otherwise.

    Raises:
        ConfigError: no usable annotator, or a pseudo-labelling annotator without density maps.
    """
    t0 = time.perf_counter()
    names, kept_name = chosen if chosen is not None else choose_annotators(ctx, opts)
    records, n_new = generate_cached(ctx, generator, requests, opts.max_synthetic)
    ctx.log.info("synthetic pool: %d images (%d generated now, %d cached) in %.1f s", len(records), n_new,
                 len(records) - n_new, time.perf_counter() - t0)
    t1 = time.perf_counter()
    anns = {n: ctx.build("annotator", "heavyweight-counter", counter=n, **opts.annotator_options.get(n, {}))
            for n in names}
    kept = anns[kept_name]
    stack = contextlib.ExitStack()  # one dry-run stage per annotator (harness.stages; inert in a real run)
    ann_stages = {n: stack.enter_context(stage(f"annotate: {n}", units=len(records), unit="image", key=a.key(),
                                               params=params_of(a)))
                  for n, a in anns.items()}
    with stack:
        _annotate(ctx, records, anns, ann_stages, kept_name, kept, opts)
    stats = q_stats(np.array([r.q for r in records if r.q is not None]))
    n_kept = sum(r.kept for r in records)
    ctx.log.info("annotated by %s in %.1f s; q (%s) %s; kept %d of %d (max_quality %s); pseudo-labels from %s",
                 ", ".join(names), time.perf_counter() - t1, opts.quality_distance, stats, n_kept, len(records),
                 opts.max_quality, kept_name)
    atomic_write_json(Path(ctx.workdir) / SYNTHETIC_FILE, {
        "source": ctx.source_name, "target": ctx.target_name, **(about or {}), "generator": generator.key(),
        "annotators": [a.key() for a in anns.values()], "kept_annotator": kept_name,
        "quality_distance": opts.quality_distance, "max_quality": opts.max_quality, "q_stats": stats,
        "n_kept": n_kept, "images": [r.to_dict() for r in records]})
    ctx.provenance_notes.update({"synthetic_images": len(records), "synthetic_kept": n_kept, "q_stats": stats,
                                 "annotators": names, "pseudo_labels_from": kept_name,
                                 "pool_seconds": round(time.perf_counter() - t0, 2)})
    return SyntheticPool(records, kept_name, names, stats)


def _annotate(ctx: Any, records: list, anns: dict, ann_stages: dict, kept_name: str, kept: Any,
              opts: PoolOptions) -> None:
    """Stages 2–3 for each record: every annotator's label (cached), the quality score, kept or not, the kept
    annotator's label as head points."""
    for rec in records:
        image, labels = None, {}
        for name, ann in anns.items():
            akey = {"image": rec.path.stem, "annotator": ann.key()}
            apath = ctx.cache.path("synthetic/annotation", akey, ".npz")
            if not apath.exists():
                image = _read_png(rec.path) if image is None else image
                with ann_stages[name].unit():
                    lab = ann.annotate(image)
                ctx.cache.get_or_create("synthetic/annotation", akey, ".npz",
                                        lambda p, lb=lab, s=output_stride(ann, 1): _save_label(p, lb, s))
            labels[name] = _load_label(apath, name)
        rec.counts = {n: round(float(lab.count), 3) for n, lab in labels.items()}
        if len(anns) >= 2:
            rec.q = float(quality_score(list(labels.values()), opts.quality_distance, rec.size))
        rec.kept = rec.q is None or opts.max_quality is None or rec.q <= float(opts.max_quality)
        kept_label = labels[kept_name]
        rec.pseudo_count = float(kept_label.count)
        if kept_label.density is None:
            raise ConfigError(f"annotator {kept_name} gives no density map, so its labels cannot become head points; "
                              f"keep another annotator")
        rng = np.random.default_rng(int(rec.path.stem[:15], 16))  # seeded by the image's content address
        rec.points_path = ctx.cache.get_or_create(
            "synthetic/points", {"image": rec.path.stem, "annotator": kept.key()}, ".npy",
            lambda p, d=kept_label.density, r=rng, sz=rec.size: _save_npy(
                p, density_to_points(d, int(kept_label.meta.get("stride", 1)), sz, r)))


def pool_extras(ctx: Any, pool: SyntheticPool, r_mix: float, n_real: int) -> EpochExtras:
    """Stage 5: each epoch a fresh random subset of ``round(r_mix · n_real)`` kept images (all of them, with a
    warning, when fewer pass the filter).

    Raises:
        ConfigError: every image was filtered out."""
    usable = pool.usable
    if not usable:
        raise ConfigError("every synthetic image was filtered out (max_quality); raise max_quality or generate more")
    m = int(round(r_mix * n_real))
    if m > len(usable):
        ctx.log.warning("r_mix %.2f × %d real = %d synthetic per epoch, but only %d pass the filter: using all of "
                        "them each epoch", r_mix, n_real, m, len(usable))
    m = min(m, len(usable))
    ctx.provenance_notes["synthetic_per_epoch"] = m

    def draw(epoch: int, rng: np.random.Generator):  # read when their batch comes (EpochExtras.draw)
        chosen = rng.choice(len(usable), size=m, replace=False)
        return [functools.partial(_read_sample, usable[i]) for i in sorted(chosen)]

    return EpochExtras(per_epoch=m, draw=draw)


def split_pool(pool: SyntheticPool, fraction: float, seed: int) -> tuple[SyntheticPool, list[SyntheticRecord]]:
    """``(pool without the held-out images, held-out usable records)``: a seeded ``fraction`` of the usable images
    (:func:`harness.data.splits.n_val_for` of them) held out for validation; the pool keeps the rest."""
    from .data.splits import n_val_for

    usable = pool.usable
    n = n_val_for(len(usable), fraction)
    held_idx = set(int(i) for i in np.random.default_rng([seed, 11]).permutation(len(usable))[:n])
    held = [r for i, r in enumerate(usable) if i in held_idx]
    held_ids = {id(r) for r in held}
    rest = SyntheticPool(records=[r for r in pool.records if id(r) not in held_ids], kept=pool.kept,
                         annotators=pool.annotators, stats=pool.stats)
    return rest, held


def pool_val_images(held: list[SyntheticRecord], r_mix: float, n_val_real: int,
                    seed: int) -> list[tuple[np.ndarray, float]]:
    """``round(r_mix · n_val_real)`` of the held-out records (seeded; all of them when fewer) as validation images
    ``(image (H, W, 3) uint8, pseudo-label count)``."""
    m = min(int(round(r_mix * n_val_real)), len(held))
    chosen = sorted(np.random.default_rng([seed, 12]).choice(len(held), size=m, replace=False)) if m else []
    return [(_read_png(held[i].path), float(len(np.load(held[i].points_path)))) for i in chosen]


__all__ = ["CounterAnnotator", "split_pool", "pool_val_images", "quality_score", "density_to_points", "q_stats",
           "PoolOptions", "SyntheticRecord", "SyntheticPool", "choose_annotators", "generate_cached", "build_pool",
           "pool_extras", "DISTANCES", "SYNTHETIC_FILE", "DEFAULT_ANNOTATORS"]
