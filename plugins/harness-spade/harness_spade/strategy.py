"""The ``spade`` strategy: the Aarhus report's SPADE variant of PromptMix (§III-B, §IV-B, Table II) composed from the
core's pieces — masks of real source images train a GauGAN whose images of those masks feed the shared
synthetic-data pipeline (:mod:`harness.synthetic_pool`: annotate, q of eq. 4, filter, pseudo-label, per-epoch mixing),
whose samples join the core's source-only training (:func:`harness.fit_with_synthetic`), exactly as PromptMix's do.

1. **masks** m^i = f_mask(I_i) (eq. 5) of labelled *source* train images (HM needs their head points; the target's
   labels are never used): the configuration's segmenters (``SHTA_V2``: HM; ``SHTA_V3`` / ``SSU_V2``: SS + CM + HM)
   stacked into one label map per image (:mod:`harness_spade.masks`; cached per segmenter and image);
2. **GauGAN** trained on ``gan.max_train_images`` source images and their masks (:mod:`harness_spade.training`, the
   core loop, resumable); the trained weights are cached content-addressed (``spade/gaugan``: key = the images, their
   masks, the options, the seed, device and precision), so cells that differ only in ``r_mix`` share one GAN and
   therefore one image pool;
3. the **bag of masks** M: ``max_masks`` source train images, preferring images the GAN did not train on (the
   report's Fig. 5 shows a mask "the model has never been exposed to"); written to ``masks/<image id>.png`` in the
   cell folder (8-bit, pixel value = label id; ``masks/labels.txt`` names the ids): edit them and pass the folder
   back as ``mask_dir`` (``add``: a file replaces the computed mask of its image id, or adds a new mask;
   ``replace``: the folder's masks only);
4. k = ``images_per_mask`` images per mask (eq. 6) with distinct recorded seeds (the style vector r_vec), each mask
   resized (nearest) to ``crop_size × crop_size`` as the reference's test mode does; generated through
   :func:`harness.build_pool` (cached by the generator's weights hash and the request: resumable);
5. then the shared pipeline (docs/design.md §10), with the same options as PromptMix (``pool``); its leakage flags
   (docs/design.md §11) follow from the components built.

``r_mix = 0`` generates nothing and trains exactly as ``source-only-rescsrnet``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from harness import (ConfigError, DensityTrainOptions, GenerationRequest, PoolOptions, atomic_write_text,
                     component, count_params, fit_with_synthetic, stage)

from .masks import CONFIGS, MaskBuilder, mask_ids, read_mask_file, write_mask
from .training import GauGANOptions, prepare_item, square_mask, train_gaugan

MASKS_DIR = "masks"
LABELS_FILE = "labels.txt"
SEGMENTERS = ("head-mask", "crowd-segmentation", "surroundings-segmentation")


@dataclass
class SpadeOptions:
    """Options of ``spade``.

    Attributes:
        train: the lightweight counter's training (:class:`harness.DensityTrainOptions`; required).
        counter, counter_options: the lightweight counter (as PromptMix: ResCSRNet).
        masks: the report's mask configuration (Table II): ``SHTA_V2`` (HM), ``SHTA_V3`` / ``SSU_V2`` (SS + CM + HM;
            need DeepLabV3 weights: ``segmenter_options``).
        segmenter_options: per segmenter name, options of its factory (e.g. ``{"crowd-segmentation": {"weights":
            "/path/deeplabv3_mobilenet_v3_large-fc3c493d.pth"}}``).
        max_masks: masks to generate from (a seeded subset of the source's train images; None: all).
        mask_dir / mask_dir_mode: edited masks (a cell's ``masks/`` folder) ``add``-ed to or ``replace``-ing the
            computed ones.
        images_per_mask: k of eq. 6.
        gan: :class:`~harness_spade.training.GauGANOptions`.
        generator_weights: a trained GauGAN weights file to use instead of training one (its label count must
            match the configuration).
        pool: :class:`harness.PoolOptions` (annotators, q, filter, pseudo-labels, r_mix).
    """

    train: DensityTrainOptions | None = None
    counter: str = component("counter", default="rescsrnet")
    counter_options: dict = field(default_factory=dict)
    masks: Literal["SHTA_V2", "SHTA_V3", "SSU_V2"] = "SHTA_V2"
    segmenter_options: dict = field(default_factory=dict)
    max_masks: int | None = None
    mask_dir: str | None = None
    mask_dir_mode: Literal["add", "replace"] = "add"
    images_per_mask: int = 10
    gan: GauGANOptions = field(default_factory=GauGANOptions)
    generator_weights: str | None = None
    pool: PoolOptions = field(default_factory=PoolOptions)

    def validate(self) -> list[str]:
        p = []
        if self.train is None:
            p.append("option 'train' (with 'epochs') is required")
        if self.images_per_mask < 1:
            p.append(f"images_per_mask must be >= 1, got {self.images_per_mask}")
        if self.images_per_mask > 1 and not self.gan.use_vae and self.generator_weights is None:
            p.append("images_per_mask > 1 needs gan.use_vae: without the VAE's style vector every image of a mask "
                     "is the same")
        if self.max_masks is not None and self.max_masks < 1:
            p.append(f"max_masks must be >= 1 or null, got {self.max_masks}")
        unknown = sorted(set(self.segmenter_options) - set(CONFIGS[self.masks]))
        if unknown:
            p.append(f"segmenter_options names {', '.join(unknown)}, not used by masks {self.masks} "
                     f"({', '.join(CONFIGS[self.masks])})")
        if self.mask_dir is not None:
            try:
                mask_ids(self.mask_dir)
            except Exception as exc:  # DataError: one line naming the folder
                p.append(str(exc))
        if self.generator_weights is not None and not Path(self.generator_weights).expanduser().is_file():
            p.append(f"generator_weights {self.generator_weights} does not exist")
        return p


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


class Spade:
    """SPADE + PromptMix's pipeline: train a lightweight counter on real source images plus pseudo-labelled GauGAN
    images of source masks (see the module notes).

    Raises (per cell): ConfigError for impossible annotator choices; WeightsError for missing segmentation weights
    (one line naming the option); DataError for a bad edited mask."""

    def __init__(self, options: SpadeOptions):
        self.opts = options

    # ------------------------------------------------------------------------------------- images and masks

    def split_images(self, ctx) -> tuple[list, list]:
        """``(GAN training refs, mask refs)`` of the source's train split: a seeded permutation; the GAN takes the
        first ``gan.max_train_images``, the masks the next ``max_masks`` (wrapping round to GAN images only when the
        split is too small). Both in split order."""
        o = self.opts
        refs = list(ctx.source.samples("train"))
        if not refs:
            raise ConfigError(f"{ctx.source_name} has no train images")
        perm = np.random.default_rng([int(ctx.seed) % 2**32, 11]).permutation(len(refs))
        n_gan = len(refs) if o.gan.max_train_images is None else min(o.gan.max_train_images, len(refs))
        n_masks = len(refs) if o.max_masks is None else min(o.max_masks, len(refs))
        gan_idx = perm[:n_gan]
        mask_idx = np.concatenate([perm[n_gan:], perm[:n_gan]])[:n_masks]
        return [refs[i] for i in sorted(gan_idx)], [refs[i] for i in sorted(mask_idx)]

    def mask_builder(self, ctx) -> MaskBuilder:
        """The configuration's segmenters, built through the cell (provenance recorded)."""
        segs = [ctx.build("segmenter", name, **self.opts.segmenter_options.get(name, {}))
                for name in CONFIGS[self.opts.masks]]
        return MaskBuilder(segs, ctx.cache)

    def write_masks(self, ctx, masks: dict[str, np.ndarray], names: tuple[str, ...]) -> Path:
        """``masks/<id>.png`` and ``masks/labels.txt`` in the cell folder (the editable bag of masks M)."""
        from harness import atomic_save

        folder = Path(ctx.workdir) / MASKS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        for mid, lab in masks.items():
            atomic_save(folder / f"{_safe(mid)}.png", lambda p, m=lab: write_mask(p, m))
        head = (f"# SPADE masks ({self.opts.masks}) of this cell: 8-bit PNG, pixel value = label id. Edit them and "
                f"pass this folder as option mask_dir.\n")
        atomic_write_text(folder / LABELS_FILE, head + "".join(f"{i}\t{n}\n" for i, n in enumerate(names)))
        return folder

    # ------------------------------------------------------------------------------------- the GAN

    def trained_generator(self, ctx, items, item_keys: list, names: tuple[str, ...]) -> Path:
        """Path of the trained GauGAN weights (``ctx.cached_fit("spade/gaugan", …)``: keyed by the GAN options,
        labels and images plus the cell's conditions; trained now when missing)."""
        from dataclasses import asdict

        from harness import derive_seed

        from .generator import save_generator

        o = self.opts
        seed = derive_seed(ctx.seed, 0x5ADE)
        gan = asdict(o.gan)
        gan["betas"] = list(gan["betas"])
        key = {"version": 1, "gan": gan, "label_names": list(names), "images": item_keys, "gan_seed": seed}
        if o.gan.init_generator is not None:  # the transferred weights by content, not by path
            from harness import file_sha256

            from .training import _nvlabs_file

            init = _nvlabs_file(o.gan.init_generator)
            key["init_generator_sha256"] = file_sha256(init) if init.is_file() else None  # missing: one line later

        def create(tmp: Path) -> None:
            res = train_gaugan(items, len(names), o.gan, seed=seed, device=ctx.device, precision=ctx.precision,
                               checkpoint_dir=Path(ctx.workdir) / "checkpoints", log=ctx.log,
                               fingerprint={**key, **ctx.fit_conditions()})
            losses = [h for h in res.history if "generator" in h]
            if res.transfer is not None:
                ctx.provenance_notes["gan_transfer"] = {k: v for k, v in res.transfer.items() if k != "unused"}
            ctx.provenance_notes.update({"gan_steps": res.steps_done, "gan_seconds": round(res.seconds, 2),
                                         "gan_last_losses": {k: round(v, 4) for k, v in (losses[-1] if losses else {})
                                                             .items() if k != "step" and v is not None}})
            about = {"steps": res.steps_done, "gan_options": gan, "images": len(items), "source": ctx.source_name}
            save_generator(tmp, res.generator, o.gan.generator_config(len(names)), label_names=names,
                           trained_on=[ctx.source_name], about=about)

        path, hit = ctx.cached_fit("spade/gaugan", key, create)
        ctx.provenance_notes["gan_cached"] = hit
        if hit:
            ctx.log.info("GauGAN: trained weights found in the cache (%s)", path.name[:16])
        return path

    # ------------------------------------------------------------------------------------- generation

    def requests(self, ctx, masks: dict[str, np.ndarray], meta: dict[str, dict], size: int) -> list[GenerationRequest]:
        """Stage 3: k requests per mask (resized to ``size × size``), each with its own seed (eq. 6's r_vec)."""
        k = self.opts.images_per_mask
        reqs = []
        for i, (mid, lab) in enumerate(masks.items()):
            sq = square_mask(lab, size)
            reqs += [GenerationRequest(seed=1_000_000 * int(ctx.seed) + i * k + g, size=(size, size), label_mask=sq,
                                       meta={"mask_index": i, "mask_id": mid, **meta.get(mid, {})})
                     for g in range(k)]
        return reqs

    def fit(self, ctx):
        o = self.opts
        return fit_with_synthetic(ctx, "spade", o.counter, o.counter_options, o.train, o.pool,
                                  lambda: self.synthesise(ctx))

    def synthesise(self, ctx):
        """``(generator, requests, about)`` of this cell: the GauGAN (trained in the run on the source's labelled
        images unless ``generator_weights``), the label masks (built from the source's point annotations and/or
        read from ``mask_dir``, written to the cell's ``masks/``) and ``images_per_mask`` requests per mask."""
        from harness import array_sha256

        o = self.opts
        gan_refs, mask_refs = self.split_images(ctx)
        builder = self.mask_builder(ctx)
        names = builder.label_names
        seg_name, seg_params = f"segment: {o.masks}", count_params(*(getattr(g, "model", None)
                                                                     for g in builder.segmenters))
        if o.generator_weights is None:
            items, keys, made = [], [], 0
            with stage(seg_name, units=len(gan_refs), unit="image", params=seg_params, key=builder.key()) as st:
                for ref in gan_refs:
                    if st.done and items:  # a dry run (harness.stages): the items made stand in for the rest
                        items.append(items[len(items) % made])
                        keys.append(keys[len(keys) % made] + [ref.key])
                        continue
                    s = ref.load()
                    with st.unit():
                        lab = builder.build(s.image, s.points)
                    items.append(prepare_item(s.image, lab, o.gan.load))
                    keys.append([ref.key, array_sha256(s.image), array_sha256(lab)])
                    made = len(items)
            weights = str(self.trained_generator(ctx, items, keys, names))
        else:
            weights = o.generator_weights
        generator = ctx.build("generator", "gaugan", weights=weights)
        if tuple(generator.label_names) != tuple(names):
            raise ConfigError(f"the GauGAN ({weights}) was trained on {len(generator.label_names)} labels "
                              f"({', '.join(generator.label_names[:4])}…), masks {o.masks} have {len(names)}")
        masks: dict[str, np.ndarray] = {}
        meta: dict[str, dict] = {}
        if not (o.mask_dir and o.mask_dir_mode == "replace"):
            with stage(seg_name, units=len(mask_refs), unit="image", params=seg_params, key=builder.key()) as st:
                for ref in mask_refs:
                    if st.done and masks:  # a dry run: the masks made stand in for the rest
                        masks[ref.id] = next(iter(masks.values()))
                    else:
                        s = ref.load()
                        with st.unit():
                            masks[ref.id] = builder.build(s.image, s.points)
                    meta[ref.id] = {"source_image": ref.key,
                                    "image_path": None if ref.image_path is None else str(ref.image_path)}
        if o.mask_dir:
            files = mask_ids(o.mask_dir)
            for mid, path in files.items():
                masks[mid] = read_mask_file(path, len(names))
                meta[mid] = {**meta.get(mid, {}), "edited_mask": str(path)}
            ctx.log.info("spade: %d masks from %s (%s)", len(files), o.mask_dir, o.mask_dir_mode)
        folder = self.write_masks(ctx, masks, names)
        for mid in masks:
            meta.setdefault(mid, {})["mask_path"] = str(folder / f"{_safe(mid)}.png")
        dense = [float(np.mean(m > 0)) for m in masks.values()]
        ctx.provenance_notes.update({"masks": o.masks, "n_masks": len(masks), "mask_labels": len(names),
                                     "mask_foreground_fraction": round(float(np.mean(dense)), 4) if dense else None})
        ctx.log.info("spade: %d masks (%s, %d labels; mean non-background fraction %.3f), %d images per mask",
                     len(masks), o.masks, len(names), float(np.mean(dense)) if dense else 0.0, o.images_per_mask)
        reqs = self.requests(ctx, masks, meta, o.gan.crop_size)
        return generator, reqs, {"masks": o.masks, "label_names": list(names), "images_per_mask": o.images_per_mask,
                                 "masks_folder": str(folder)}


__all__ = ["Spade", "SpadeOptions", "MASKS_DIR", "LABELS_FILE"]
