"""The ``syrac`` strategy: SYRAC (D'Alessandro et al., 2023) end to end for one cell, with no label at all.

1. build the registered generator (``stable-diffusion``: SD 2.1 in the paper profile) through the cell;
2. the noisy counting set (§3.2) and, for the ranking variants, the ranking pairs (§3.1) — cached and resumable
   (:mod:`harness_syrac.data`); the pair list goes to ``<cell>/syrac/pairs.json``;
3. the encoder: random init, ImageNet (``init_weights: imagenet``, the paper's) or a local state dict, through the
   core's :func:`harness.pretrained_backbone`;
4. ``synthetic-rank`` / ``intra-image-rank``: rank pre-training on the core loop, selected by the ranking loss on
   held-out synthetic pairs (§4.1); ``none``: end-to-end regression on the noisy set, selected on its held-out part;
   ``imagenet``: no training;
5. except for ``none``: the non-negative least-squares probe without intercept on the frozen features of the noisy
   set (§4.2);
6. the count-only :class:`harness_syrac.model.SyracCounter` with the g × g patch grid (§4.3).

The trained network and probe depend on everything but the grid, so they are cached through the core's
``ctx.cached_fit`` (``syrac/fit``, keyed by :meth:`Syrac.fit_key` plus the cell's conditions: seed, precision,
device kind, threads, harness version): ``syrac-g1`` … ``syrac-g4`` of one cell train once (docs/design.md §8).

What ``harness syrac inspect`` needs is written to ``<cell>/syrac/``: ``pairs.json`` and ``model.pt`` (backbone,
input size, normalisation, grid, the network with its rank head, the probe weights). The counter's provenance has
no ``trained_on`` (no benchmark's labels reached it) except ``ImageNet`` when the encoder starts from it; the noisy-count set, the generator, the real images used and
the selection split go into the cell's provenance notes.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from harness import ConfigError, Provenance, WeightsError

from .config import SyracOptions, resolve_checkpoint
from .data import FOLDER, ImageStore, build_noisy_set, build_pairs, real_refs, write_pairs

MODEL_FILE = "model.pt"
#: provenance notes of the training and the probe, kept with a cached fit
FIT_NOTES = ("rank_pretraining", "regression", "probe", "selection_split")


class Syrac:
    """SYRAC for one cell (options: :class:`harness_syrac.config.SyracOptions`).

    ``uses_target_images`` is True when the ranking pairs are made from the target's unlabelled train images (the
    runner records the flag).

    Raises (per cell): WeightsError (a generator or ImageNet weights that cannot be found: one line saying how to
    provide them), ConfigError (an unknown backbone, too few real images)."""

    def __init__(self, options: SyracOptions):
        self.opts = options
        self.uses_target_images = options.uses_pairs and options.real_images == "target"

    def _init_weights(self) -> str | None:
        """The encoder's ``init_weights`` as the core resolves it (``"imagenet"`` or a local file), None for random
        init; a missing file is refused here, before any generation (in a dry run it is "architecture only").

        Raises:
            WeightsError: one line: which file, from where, where to put it."""
        from harness import architecture_only, resolve_pretrained

        init = self.opts.encoder_init
        if init is None:
            return None
        if init != "imagenet":
            try:
                init = str(resolve_checkpoint(init))
            except FileNotFoundError as exc:
                raise WeightsError(str(exc)) from None
        try:
            resolve_pretrained(self.opts.backbone, init, "init_weights")
        except WeightsError as exc:  # a dry run goes on: the encoder keeps its random initialisation (recorded)
            architecture_only(f"{self.opts.backbone} (init_weights)", exc)
        return init

    def fit(self, ctx) -> Any:
        import torch

        from harness import atomic_save

        from harness import pretrained_backbone

        from .model import ProbeHead, RegressionHead, SyracCounter, SyracNet

        o, t0 = self.opts, time.perf_counter()
        init_weights = self._init_weights()  # refuse before any generation
        folder = Path(ctx.workdir) / FOLDER
        store = ImageStore(o.input_size, o.train.max_cached_gb * 1e9)
        generator = ctx.build("generator", o.generator, model=o.generator_model, steps=o.steps,
                              guidance_scale=o.guidance_scale, max_side=o.max_side)
        notes = ctx.provenance_notes
        notes.update({"labels": "none (synthetic ranking pairs and noisy synthetic counts)", "pretrain": o.pretrain,
                      "uses_target_images": self.uses_target_images, "generator": generator.key(),
                      "noisy_count_set": {"prompt": o.noisy_prompt, "negative_prompt": o.noisy_negative_prompt,
                                          "counts": list(o.noisy_counts), "per_count": o.noisy_per_count,
                                          "empty_prompt": o.empty_prompt, "size": list(o.noisy_size)}})
        noisy = build_noisy_set(ctx, o, generator, store)
        notes["noisy_count_set"]["n_images"] = len(noisy)
        pairs = None
        if o.uses_pairs:
            refs = real_refs(ctx, o)
            if len(refs) < 2:
                raise ConfigError(f"SYRAC needs at least 2 real {o.real_images} images for ranking pairs (one held out "
                                  f"for model selection), got {len(refs)}")
            dataset = ctx.target_name if o.real_images == "target" else ctx.source_name
            notes["real_images"] = {"dataset": dataset, "split": "train", "labels_read": False, "n": len(refs)}
            if o.pretrain == "synthetic-rank":
                notes["ranking_pairs"] = {"kind": "img2img", "prompt": o.rank_prompt, "strength": o.strength,
                                          "negative_prompt": o.rank_negative_prompt,
                                          "per_image": o.synthetic_per_image}
            else:
                notes["ranking_pairs"] = {"kind": "crop", "crop_range": list(o.crop_range),
                                          "per_image": o.synthetic_per_image}
            pairs = build_pairs(ctx, o, generator, store)
        write_pairs(folder, o, pairs, noisy, {"source": ctx.source_name, "target": ctx.target_name,
                                              "seed": ctx.seed, "generator": generator.key()})
        notes["data_seconds"] = round(time.perf_counter() - t0, 2)

        from harness import derive_seed

        torch.manual_seed(derive_seed(ctx.seed, 9))
        net = SyracNet(o.backbone, nonneg_head=o.pretrain != "none")
        init = {"weights": "random-init"}
        if init_weights is not None:
            pretrained = pretrained_backbone(net.encoder, o.backbone, init_weights, option="init_weights")
            init = pretrained.to_dict()
            ctx.provenance_notes["pretrained_init"] = init
        net = net.to(ctx.device)
        notes.update({"backbone": o.backbone, "input_size": list(o.input_size), "normalisation": o.normalisation,
                      "init_weights": init, "grid": o.grid})
        key = self.fit_key(ctx, generator, pairs, noisy, init)
        trained: dict = {}

        def create(tmp: Path) -> None:
            trained.update(self._train(ctx, net, store, pairs, noisy, init))
            trained["notes"] = {k: notes[k] for k in FIT_NOTES if k in notes}
            torch.save(trained, tmp)

        cached, hit = ctx.cached_fit("syrac/fit", key, create)
        state = trained
        if hit:
            from harness import read_checkpoint

            state = read_checkpoint(cached, "cached SYRAC fit")
            net.load_state_dict(state["state_dict"])
            net = net.to(ctx.device).eval()
            notes.update(state["notes"])
            notes["fit_reused"] = cached.name
            ctx.log.info("syrac: an identical fit (all options but the grid) is in the cache: reusing %s", cached)
        state = {**state, "grid": o.grid}
        probe_w = None if state["probe_w"] is None else state["probe_w"].numpy().astype(np.float64)
        head = RegressionHead(net, state["scale"]) if o.pretrain == "none" else ProbeHead(net, probe_w).to(ctx.device)
        atomic_save(folder / MODEL_FILE, lambda p: torch.save(state, p))
        notes["fit_seconds"] = round(time.perf_counter() - t0, 2)
        start = "random init" if init_weights is None else f"init {Path(init['path']).name}"
        prov = Provenance(weights=f"trained-in-run (SYRAC, pretrain {o.pretrain}, {o.backbone}, {start})",
                          trained_on=frozenset(init.get("trained_on", ())), sha256=init.get("sha256", ""))
        return SyracCounter(head.eval(), o.input_size, o.grid, o.normalisation, provenance=prov,
                            name=f"syrac-{o.pretrain}-g{o.grid}", device=ctx.device, precision=ctx.precision)

    def fit_key(self, ctx, generator, pairs, noisy, init: dict) -> dict:
        """What determines the trained network and probe besides the cell's conditions (which ``ctx.cached_fit``
        adds): options but the grid (it only changes inference), generator, the pairs (with the real files' sizes
        and modification times) and the noisy images (content-addressed), and the initial weights."""
        from dataclasses import asdict

        from . import __version__

        def stat(path):
            try:
                st = Path(path).stat()
                return [st.st_size, st.st_mtime_ns]
            except (OSError, TypeError):
                return None

        options = asdict(self.opts)
        options.pop("grid")
        return {"syrac": __version__, "options": options, "generator": generator.key(),
                "pairs": [[p.real, stat(p.real_path) if p.real_path else None, p.synthetic, p.split]
                          for p in pairs or []],
                "noisy": [[n.path, n.count, n.split] for n in noisy], "init": init}

    def _train(self, ctx, net, store, pairs, noisy, init: dict) -> dict:
        """Rank pre-training / end-to-end regression, then the probe (see the module notes); returns the state saved
        as ``model.pt`` (without the grid). Writes its facts into ``ctx.provenance_notes``."""
        import torch

        from .model import encode, fit_probe
        from .training import train_rank, train_regression

        o, notes = self.opts, ctx.provenance_notes
        ckpt_dir = Path(ctx.workdir) / "checkpoints"
        about = {"backbone": o.backbone, "input_size": list(o.input_size), "init": init.get("sha256", "random"),
                 "pretrain": o.pretrain}
        kw = dict(normalisation=o.normalisation, seed=ctx.seed, device=ctx.device, precision=ctx.precision,
                  log=ctx.log, about=about)
        probe_w, scale = None, None
        if o.uses_pairs:
            res = train_rank(net, store, pairs, o.train, checkpoint_dir=ckpt_dir / "syrac-rank", **kw)
            notes["rank_pretraining"] = {k: v for k, v in res.items() if k != "history"}
            notes["selection_split"] = "synthetic ranking pairs (held-out real images' pairs)"
            ctx.log.info("syrac: rank pre-training %s", notes["rank_pretraining"])
        if o.pretrain == "none":
            scale = float(max(max(o.noisy_counts), 1))
            res = train_regression(net, store, noisy, o.train, scale=scale,
                                   checkpoint_dir=ckpt_dir / "syrac-regression", **kw)
            notes["regression"] = {k: v for k, v in res.items() if k != "history"}
            notes["selection_split"] = "noisy synthetic counts (held out)"
        else:
            feats = encode(net, [store.get(n.path) for n in noisy], o.normalisation, device=ctx.device,
                           precision=ctx.precision)
            probe_w, stats = fit_probe(feats, np.array([n.count for n in noisy], dtype=np.float64))
            notes["probe"] = {"method": "scipy.optimize.nnls, no intercept", "images": len(noisy), **stats}
            notes.setdefault("selection_split", "none (ImageNet features, linear probe)")
            ctx.log.info("syrac: probe %s", notes["probe"])
        return {"backbone": o.backbone, "input_size": list(o.input_size), "normalisation": o.normalisation,
                "pretrain": o.pretrain, "init": init, "scale": scale,
                "probe_w": None if probe_w is None else torch.as_tensor(probe_w, dtype=torch.float32),
                "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()}}


def load_model(folder: Path, device: str = "cpu") -> tuple[Any, dict]:
    """``(SyracNet with the saved weights (eval mode), the saved state)`` from ``<folder>/model.pt``.

    Raises:
        ConfigError: the file is missing."""
    from .model import SyracNet

    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"{path} not found: run the syrac cell to the end first")
    from harness import read_checkpoint

    state = read_checkpoint(path, "SYRAC model")
    net = SyracNet(state["backbone"], nonneg_head=False)
    net.load_state_dict(state["state_dict"])
    return net.to(device).eval(), state


__all__ = ["Syrac", "load_model", "MODEL_FILE"]
