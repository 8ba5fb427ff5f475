"""The ``promptmix`` strategy: PromptMix stages 1–5 (Bakhtiarnia et al. 2023, as reproduced in the Aarhus
report §III-A and §IV) on top of the core's source-only ResCSRNet training.

1. caption real images (eq. 1) — the source's labelled train images, or (``caption_from="target"``, a
   cross-domain variant recorded as *uses target images*) the target's unlabelled train images;
2. suffix size and colour/greyscale; add or replace prompts from a prompt file;
3. generate k images per prompt with distinct recorded seeds (eq. 2);
4. annotate every image with l heavyweight counters (eq. 3), score q (eq. 4) and drop images with
   q > ``max_quality`` (q grows with the annotators' disagreement; the report's Table III limit of 10 000
   filters nothing, since q ≤ 1 for counts);
5. keep one annotator's labels as pseudo-labels and, each epoch, mix a fresh random subset of
   ``r_mix · |real|`` synthetic images into the real source images (training loop's ``extra_samples``).

Leakage (DESIGN.md §6): by default annotators whose weights saw the *target's* labels are left out of the
cell (``exclude_target_trained=True``). The report's own set-up keeps the annotator trained on the target
(``keep="target"``, ``exclude_target_trained=False``); its labels then reach the student, the counter's
provenance includes the target, and the cell is flagged "target labels seen" (†). Every annotator whose
labels decide anything (filter or pseudo-labels) is added to the provenance.

Artefacts are content-addressed in the run's cache (``ctx.cache``), so another method or a re-run reuses them
and a killed generation resumes with the next missing image:

- ``promptmix/caption``: key = captioner identity + image (dataset, split, id, file SHA-256);
- ``promptmix/image``: key = generator (model id and files, steps, guidance, dtype) + prompt + seed + size;
- ``promptmix/annotation``: key = image key + annotator (name, weights provenance and SHA-256).

Per cell, ``prompts.txt`` (editable, usable as a ``prompt_file``) and ``synthetic.json`` (every synthetic image:
prompt, seed, size, cached path, counts per annotator, q, kept or filtered) are written to the cell folder;
``harness promptmix inspect RUN_DIR`` turns them into a contact sheet and q histograms (report Fig. 6).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.default_plugins.strategies import SourceOnly
from harness.errors import ConfigError
from harness.io import atomic_write_json, atomic_write_text, file_sha256

from .annotation import DISTANCES, CounterAnnotator, density_to_points, q_stats, quality_score
from .captioning import prompt_suffix, read_prompt_file

DEFAULT_ANNOTATORS = ("csrnet-sha", "mcnn-sha", "mcnn-shb")
SYNTHETIC_FILE = "synthetic.json"
PROMPTS_FILE = "prompts.txt"


@dataclass
class SyntheticRecord:
    """One synthetic image of the pool (what ``synthetic.json`` lists)."""

    prompt: str
    prompt_index: int
    seed: int
    size: tuple[int, int]
    path: Path
    counts: dict[str, float]
    q: float | None
    kept: bool
    pseudo_count: float | None = None
    points_path: Path | None = None

    def to_dict(self) -> dict:
        return {"prompt": self.prompt, "prompt_index": self.prompt_index, "seed": self.seed,
                "size": list(self.size), "path": str(self.path), "counts": self.counts, "q": self.q,
                "kept": self.kept, "pseudo_count": self.pseudo_count,
                "points_path": None if self.points_path is None else str(self.points_path)}


class PromptMix(SourceOnly):
    """PromptMix: train a lightweight counter on real source images plus pseudo-labelled synthetic ones.

    Args (besides :class:`~harness.default_plugins.strategies.SourceOnly`'s ``counter``,
    ``counter_options``, ``train``):
        r_mix: synthetic images per epoch as a fraction of the real training images (0, 0.5, 1, 5, 10 for
            the report's 0–1000 %); 0 generates nothing (the baseline).
        captioner: captioner model id (``"tiny"``, a BLIP id/folder, or a ClipCap folder).
        caption_from: ``"source"`` (labelled train images) or ``"target"`` (the target's unlabelled train
            images: the cell is marked *uses target images*).
        max_captioned_images: caption at most this many images (seeded subset; None: all).
        prompt_file / prompt_file_mode: a text file of prompts (one per line) that is ``"add"``-ed to the
            captions or ``"replace"``-s them (report stage 2).
        images_per_prompt: k (report: 10 for SHA/SHB).
        generator_model, steps, guidance_scale, max_side: see
            :class:`harness_promptmix.generation.StableDiffusionGenerator` (report: SD 1.5, 50 steps, the
            captioned image's size).
        annotator_counters: l counter names (the heavyweight annotators; validated by the runner).
        exclude_target_trained: leave out annotators trained on the target's labels (no leakage).
        keep: whose labels become the pseudo-labels: a counter name, ``"source"`` (the first annotator
            trained on the source, else the first) or ``"target"`` (the one trained on the target — the
            report's choice; leakage, flagged).
        quality_distance: ``"count"`` (eq. 10) or ``"mae"``.
        max_quality: drop images with q above this (None: keep all).
        max_synthetic: use at most this many synthetic images (report: "limit on fake data" 3000).

    Raises:
        ConfigError: invalid options (at construction), or per cell an impossible annotator choice.
        WeightsError: a model that cannot be loaded (one line naming it).
    """

    def __init__(self, counter: str | None = None, counter_options: dict | None = None, train: dict | None = None,
                 *, r_mix: float = 1.0, captioner: str = "tiny", caption_from: str = "source",
                 max_captioned_images: int | None = None, prompt_file: str | None = None,
                 prompt_file_mode: str = "add", images_per_prompt: int = 10, generator_model: str = "tiny",
                 steps: int = 50, guidance_scale: float = 7.5, max_side: int | None = None,
                 annotator_counters: list[str] | tuple[str, ...] = DEFAULT_ANNOTATORS,
                 exclude_target_trained: bool = True,
                 keep: str = "source", quality_distance: str = "count", max_quality: float | None = None,
                 max_synthetic: int | None = None):
        super().__init__(counter=counter, pretrained=False, counter_options=counter_options, train=train)
        if not (isinstance(r_mix, (int, float)) and r_mix >= 0):
            raise ConfigError(f"promptmix: r_mix must be a number >= 0 (1.0 = 100 %), got {r_mix!r}")
        if caption_from not in ("source", "target"):
            raise ConfigError(f"promptmix: caption_from must be 'source' or 'target', got {caption_from!r}")
        if prompt_file_mode not in ("add", "replace"):
            raise ConfigError(f"promptmix: prompt_file_mode must be 'add' or 'replace', got {prompt_file_mode!r}")
        if int(images_per_prompt) < 1:
            raise ConfigError(f"promptmix: images_per_prompt must be >= 1, got {images_per_prompt!r}")
        if quality_distance not in DISTANCES:
            raise ConfigError(f"promptmix: quality_distance must be one of {', '.join(DISTANCES)}, "
                              f"got {quality_distance!r}")
        if not annotator_counters:
            raise ConfigError("promptmix: give at least one annotator (a registered counter name)")
        self.r_mix = float(r_mix)
        self.captioner, self.caption_from = captioner, caption_from
        self.max_captioned_images = max_captioned_images
        self.prompt_file, self.prompt_file_mode = prompt_file, prompt_file_mode
        if prompt_file is not None:
            read_prompt_file(prompt_file)  # fail early on a bad file
        self.k = int(images_per_prompt)
        self.generator_model, self.steps, self.guidance_scale = generator_model, int(steps), float(guidance_scale)
        self.max_side = max_side
        self.annotators = list(annotator_counters)
        self.exclude_target_trained, self.keep = bool(exclude_target_trained), str(keep)
        self.quality_distance, self.max_quality = quality_distance, max_quality
        self.max_synthetic = max_synthetic

    # ------------------------------------------------------------------------------------ per cell

    def _annotators(self, ctx) -> tuple[list[CounterAnnotator], CounterAnnotator]:
        anns = [CounterAnnotator(name, registries=ctx.registries, device=ctx.device) for name in self.annotators]
        if self.exclude_target_trained:
            dropped = [a.name for a in anns if a.provenance.saw_labels_of(ctx.target_name)]
            anns = [a for a in anns if not a.provenance.saw_labels_of(ctx.target_name)]
            if dropped:
                ctx.log.info("promptmix: annotators trained on %s's labels left out: %s", ctx.target_name,
                             ", ".join(dropped))
            if not anns:
                raise ConfigError(f"promptmix: every annotator ({', '.join(self.annotators)}) was trained on "
                                  f"{ctx.target_name}'s labels; add others or set exclude_target_trained=false "
                                  f"(the cell is then flagged)")
        if self.keep in ("source", "target"):
            wanted = ctx.source_name if self.keep == "source" else ctx.target_name
            match = [a for a in anns if wanted in a.provenance.trained_on]
            if self.keep == "target" and not match:
                raise ConfigError(f"promptmix: keep='target' but no annotator was trained on {ctx.target_name} "
                                  f"(annotators: {', '.join(a.name for a in anns)})")
            kept = (match or anns)[0]
        else:
            names = {a.name: a for a in anns}
            key = ctx.registries.counters.resolve(self.keep)
            if key not in names:
                raise ConfigError(f"promptmix: keep={self.keep!r} is not among this cell's annotators "
                                  f"({', '.join(names)})")
            kept = names[key]
        return anns, kept

    def _images_to_caption(self, ctx) -> list[Any]:
        """Refs (``load_image()``, ``image_path``) of the images to caption (seeded subset when capped)."""
        if self.caption_from == "target":
            refs = list(ctx.target_images)
        else:
            refs = list(ctx.source.samples("train"))
        if self.max_captioned_images is not None and self.max_captioned_images < len(refs):
            idx = np.sort(np.random.default_rng([ctx.seed, 7]).choice(len(refs), self.max_captioned_images,
                                                                     replace=False))
            refs = [refs[i] for i in idx]
        return refs

    def build_prompts(self, ctx) -> list[tuple[str, tuple[int, int]]]:
        """Stages 1–2: ``[(prompt, (H, W) of the captioned image)]``; captions are cached per captioner and
        image file. Prompt-file prompts take the size of the first captioned image, or 512 × 512."""
        from .captioning import load_captioner
        from .models import model_identity

        prompts: list[tuple[str, tuple[int, int]]] = []
        if not (self.prompt_file and self.prompt_file_mode == "replace"):
            resolved = model_identity(self.captioner, ctx.cache.root, "clipcap", "captioner")
            identity = resolved[1]
            captioner = None  # loaded only when a caption is missing from the cache
            for ref in self._images_to_caption(ctx):
                path = ref.image_path
                key = {"captioner": identity, "image": {"dataset": ref.dataset, "split": ref.split, "id": ref.id,
                                                        "sha256": file_sha256(path) if path else None}}
                cpath = ctx.cache.path("promptmix/caption", key, ".json")
                image = ref.load_image()
                if cpath.exists():
                    caption = json.loads(cpath.read_text(encoding="utf-8"))["caption"]
                else:
                    if captioner is None:
                        captioner, _ = load_captioner(self.captioner, ctx.cache.root, ctx.device, resolved)
                    caption = captioner.caption([image])[0]
                    atomic_write_json(cpath, {"caption": caption, "key": key})
                prompts.append((caption + prompt_suffix(image), tuple(image.shape[:2])))
        if self.prompt_file:
            size = prompts[0][1] if prompts else (512, 512)
            prompts += [(p, size) for p in read_prompt_file(self.prompt_file)]
        return prompts

    def build_pool(self, ctx) -> tuple[list[SyntheticRecord], CounterAnnotator, list[CounterAnnotator]]:
        """Stages 3–5 for the cell: generate, annotate, score, filter; returns ``(records, kept, annotators)``
        and writes ``prompts.txt`` / ``synthetic.json`` into the cell folder."""
        from .generation import StableDiffusionGenerator

        t0 = time.perf_counter()
        workdir, cache, log = Path(ctx.workdir), ctx.cache, ctx.log
        anns, kept = self._annotators(ctx)
        prompts = self.build_prompts(ctx)
        atomic_write_text(workdir / PROMPTS_FILE, "# PromptMix prompts of this cell (edit and pass as prompt_file)\n"
                          + "\n".join(p for p, _ in prompts) + "\n")
        log.info("promptmix: %d prompts (%s captions by %s) in %.1f s", len(prompts), self.caption_from,
                 self.captioner, time.perf_counter() - t0)
        gen = StableDiffusionGenerator(self.generator_model, steps=self.steps, guidance_scale=self.guidance_scale,
                                       max_side=self.max_side, device=ctx.device, cache_root=cache.root)
        records: list[SyntheticRecord] = []
        n_new = 0
        t1 = time.perf_counter()
        for i, (prompt, (h, w)) in enumerate(prompts):
            size = gen.output_size(int(h), int(w))
            for g in range(self.k):
                seed = 1_000_000 * int(ctx.seed) + i * self.k + g  # distinct per image (eq. 2's r_i^g)
                ikey = {"generator": gen.key(), "prompt": prompt, "seed": seed, "size": list(size)}
                ipath = cache.path("promptmix/image", ikey, ".png")
                if not ipath.exists():
                    from PIL import Image

                    img = gen.generate([prompt], [seed], [size])[0].image
                    cache.get_or_create("promptmix/image", ikey, ".png",
                                        lambda p, im=img: Image.fromarray(im).save(p, format="PNG"))
                    n_new += 1
                records.append(SyntheticRecord(prompt, i, seed, size, ipath, {}, None, True))
                if self.max_synthetic is not None and len(records) >= self.max_synthetic:
                    break
            if self.max_synthetic is not None and len(records) >= self.max_synthetic:
                break
        log.info("promptmix: %d synthetic images (%d generated now, %d cached) in %.1f s", len(records), n_new,
                 len(records) - n_new, time.perf_counter() - t1)

        t2 = time.perf_counter()
        for rec in records:
            image, labels = None, {}
            for ann in anns:
                akey = {"image": rec.path.stem, "annotator": ann.key()}
                apath = cache.path("promptmix/annotation", akey, ".npz")
                if not apath.exists():
                    image = _read_png(rec.path) if image is None else image
                    lab = ann.annotate(image)
                    dens = lab.density if lab.density is not None else np.zeros((0, 0), np.float32)
                    cache.get_or_create("promptmix/annotation", akey, ".npz",
                                        lambda p, c=lab.count, d=dens, s=ann.stride: _save_npz(p, c, d, s))
                labels[ann.name] = _load_label(apath, ann.name)
            rec.counts = {n: round(float(lab.count), 3) for n, lab in labels.items()}
            if len(anns) >= 2:
                rec.q = float(quality_score(list(labels.values()), self.quality_distance, tuple(rec.size)))
            rec.kept = rec.q is None or self.max_quality is None or rec.q <= float(self.max_quality)
            kept_label = labels[kept.name]
            rec.pseudo_count = float(kept_label.count)
            if kept_label.density is None:
                raise ConfigError(f"promptmix: annotator {kept.name} gives no density map, so its labels cannot "
                                  f"become head points; keep another annotator")
            # pseudo-label points, seeded by the image's content address (same points in every cell)
            rng = np.random.default_rng(int(rec.path.stem[:15], 16))
            rec.points_path = cache.get_or_create(
                "promptmix/points", {"image": rec.path.stem, "annotator": kept.key()}, ".npy",
                lambda p, d=kept_label.density, r=rng, sz=tuple(rec.size): _save_npy(
                    p, density_to_points(d, kept.stride, sz, r)))
        qs = np.array([r.q for r in records if r.q is not None], dtype=float)
        n_kept = sum(r.kept for r in records)
        stats = q_stats(qs)
        log.info("promptmix: annotated by %s in %.1f s; q (%s) %s; kept %d of %d (max_quality %s); pseudo-labels "
                 "from %s", ", ".join(a.name for a in anns), time.perf_counter() - t2, self.quality_distance,
                 stats, n_kept, len(records), self.max_quality, kept.name)
        atomic_write_json(workdir / SYNTHETIC_FILE, {
            "source": ctx.source_name, "target": ctx.target_name, "caption_from": self.caption_from,
            "captioner": self.captioner, "generator": gen.key(), "annotators": [a.key() for a in anns],
            "kept_annotator": kept.name, "quality_distance": self.quality_distance,
            "max_quality": self.max_quality, "q_stats": stats, "n_kept": n_kept,
            "images": [r.to_dict() for r in records]})
        ctx.provenance_notes.update({
            "synthetic_images": len(records), "synthetic_kept": n_kept, "q_stats": stats,
            "annotators": [a.name for a in anns], "pseudo_labels_from": kept.name,
            "pool_seconds": round(time.perf_counter() - t0, 2)})
        return records, kept, anns

    def extra_training(self, ctx) -> tuple[dict, frozenset]:
        """Build the pool (unless ``r_mix`` is 0) and return the per-epoch mixing hook and the labels it
        carries (every annotator that filtered or labelled)."""
        if self.caption_from == "target":
            ctx.provenance_notes["uses_target_images"] = True
        ctx.provenance_notes["r_mix"] = self.r_mix
        if self.r_mix == 0:
            ctx.log.info("promptmix: r_mix = 0, no synthetic images (the baseline)")
            return {}, frozenset()
        records, kept, anns = self.build_pool(ctx)
        pool = [r for r in records if r.kept]
        if not pool:
            raise ConfigError(f"promptmix: every synthetic image was filtered out (max_quality={self.max_quality}); "
                              f"raise max_quality or generate more images")
        n_train = len(ctx.source.samples("train"))
        cap = self.train.get("max_train_images")
        n_real = min(n_train, int(cap)) if cap is not None else n_train
        m = int(round(self.r_mix * n_real))
        if m > len(pool):
            ctx.log.warning("promptmix: r_mix %.2f × %d real = %d synthetic per epoch, but only %d pass the filter: "
                            "using all of them each epoch", self.r_mix, n_real, m, len(pool))
        m = min(m, len(pool))
        ctx.provenance_notes["synthetic_per_epoch"] = m

        def extra_samples(epoch: int, rng: np.random.Generator):
            chosen = rng.choice(len(pool), size=m, replace=False)
            return [(_read_png(pool[i].path), np.load(pool[i].points_path)) for i in sorted(chosen)]

        labels = frozenset().union(*(a.provenance.trained_on for a in anns))  # kept is one of anns
        return {"extra_samples": extra_samples}, labels


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to the temporary name
        np.save(fh, array)


def _save_npz(path: Path, count: float, density: np.ndarray, stride: int) -> None:
    with open(path, "wb") as fh:
        np.savez_compressed(fh, count=np.float64(count), density=density.astype(np.float32), stride=np.int64(stride))


def _load_label(path: Path, name: str):
    from harness.specs import PseudoLabel

    with np.load(path) as z:
        dens = z["density"]
        return PseudoLabel(count=float(z["count"]), density=dens if dens.size else None,
                           meta={"annotator": name, "stride": int(z["stride"])})
