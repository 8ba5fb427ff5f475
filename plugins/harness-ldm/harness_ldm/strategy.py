"""The ``ldm`` strategy: train the LDM crowd-map counter on the labelled source and return it (options:
:class:`harness_ldm.config.LDMOptions`).

The source's train split (a seeded subset of ``source_images``) trains both stages; a seeded subset of
``val_images`` of its val split selects them (:mod:`harness_ldm.training`); the target is never looked at. The
trained networks are stored through the core's ``ctx.cached_fit`` (``ldm-model``), keyed by the source's image ids
and every option that determines them (:meth:`LDMOptions.training_key`: all but test-time sampling) plus the cell's
conditions (seed, source, precision, device kind, CPU threads, harness version), so
``ldm`` and ``ldm-k4`` of one source train once. The cell keeps a link (or copy) of the model as
``checkpoints/ldm-model.pt`` for ``harness ldm steps``; loop checkpoints go to ``checkpoints/ldm-vq`` and
``checkpoints/ldm-diffusion`` (a killed fit resumes there).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from harness import ConfigError, Provenance, atomic_write_json, subset

from . import __version__
from .config import LDMOptions

#: bump when a change invalidates cached models
CACHE_VERSION = 1
MODEL_FILE = "ldm-model.pt"


def _load(refs):
    return [r.load() for r in refs]


class LDMStrategy:
    """Strategy ``ldm`` (see the module notes).

    Raises (per cell): ConfigError (no train or val images); WeightsError (an ``init`` model that cannot be
    resolved)."""

    uses_target_images = False

    def __init__(self, options: LDMOptions):
        self.o = options

    def fit(self, ctx):
        from .counter import LDMCounter, load_model, save_model
        from .training import train_model

        o = self.o
        train_refs = subset(ctx.source.samples("train"), o.source_images, ctx.seed, 1)
        val_refs = subset(ctx.source.samples("val"), o.val_images, ctx.seed, 2)
        if not train_refs or not val_refs:
            raise ConfigError(f"ldm needs labelled train and val images of the source {ctx.source_name!r}; got "
                              f"{len(train_refs)} train and {len(val_refs)} val images")
        key = {"version": CACHE_VERSION, "train": [r.key for r in train_refs], "val": [r.key for r in val_refs],
               "options": o.training_key()}
        ckdir = Path(ctx.workdir) / "checkpoints"

        def create(tmp: Path) -> None:
            t0 = time.perf_counter()
            net, info = train_model(o, _load(train_refs), _load(val_refs), seed=ctx.seed, device=ctx.device,
                                    precision=ctx.precision, checkpoint_dir=ckdir, log=ctx.log,
                                    cache_root=ctx.cache.root, fingerprint={**key, **ctx.fit_conditions()})
            info.update({"weights": f"trained-in-run (ldm {o.space}; source {ctx.source_name})",
                         "trained_on": [ctx.source_name], "seconds": round(time.perf_counter() - t0, 2),
                         "ldm_version": __version__})
            save_model(tmp, net, o, info)

        path, hit = ctx.cached_fit("ldm-model", key, create)
        net, _, info = load_model(path, ctx.device)
        _link(path, ckdir / MODEL_FILE)
        # the cached model's own options hold the training; this method's sampling and report options apply
        counter = LDMCounter(net, o, device=ctx.device, precision=ctx.precision, name=f"ldm-{o.space}",
                             provenance=Provenance(info.get("weights", "trained-in-run"),
                                                   trained_on=frozenset({ctx.source_name})),
                             seed=ctx.seed)
        atomic_write_json(ckdir / "ldm-sampling.json", {"sampling": o.to_dict()["sampling"],
                                                       "report_steps": list(o.report_steps)})
        vq = info.get("vq") or {}
        diff = info.get("diffusion") or {}
        ctx.provenance_notes.update({
            "selection_split": "source val", "trained_in_run": True, "ldm_version": __version__, "space": o.space,
            "cached_model": hit, "model_key": path.stem[:16], "train_seconds": info.get("seconds"),
            "n_train_images": info.get("n_train_images"), "n_val_images": info.get("n_val_images"),
            "gt_map_count_mae_val": info.get("gt_map_count_mae"),
            "vq_recon_count_mae_val": vq.get("recon_count_mae"), "vq_best_step": vq.get("best_step"),
            "diffusion_best_val_mae": diff.get("best_val_mae"), "diffusion_best_step": diff.get("best_step"),
            "latent_scale": info.get("latent_scale"), "normaliser": info.get("normaliser"),
            "ddim_steps": o.sampling.ddim_steps, "hypotheses": o.sampling.hypotheses, "fusion": o.sampling.fusion,
            "eta": o.sampling.eta})
        ctx.log.info("ldm: model %s (%s); ground-truth-map count MAE %s, VQ reconstruction count MAE %s, diffusion "
                     "val MAE %s", path, "cached" if hit else "trained", info.get("gt_map_count_mae"),
                     vq.get("recon_count_mae"), diff.get("best_val_mae"))
        return counter


def _link(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` (a copy where links are impossible), replacing ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dest)


__all__ = ["LDMStrategy", "MODEL_FILE", "CACHE_VERSION"]
