"""Training the LDM counter on the labelled source, both stages on the core loop (:func:`harness.train`).

1. **First stage** (latent space only): the ``VQModel`` E / D on random ``crop × crop`` crowd-map crops of the source
   train images — loss: foreground-weighted squared reconstruction error + the commitment loss diffusers'
   ``VQModel`` returns (``commit_loss``: ‖sg[z_q] − z‖² + β‖z_q − sg[z]‖², β = 0.25, van den Oord et al. 2017);
   selected on the **reconstruction count MAE** of the source val images (maps tiled, D(E(x)) stitched and counted by
   contours), reported beside the count MAE of contour counting on the ground-truth maps themselves (the floor the
   counting rule sets at this resolution). Then frozen; ``latent_scale`` = 1 / std of E(x) over 256 training crops.
2. **Diffusion**: ε_θ and T on (crowd-map crop, RGB crop) pairs, poster eq. 1, DDPM's 1000-step linear schedule
   (diffusers ``DDPMScheduler.add_noise``), EMA through ``LoopConfig(ema_decay)``; selected on the source val count MAE
   of a cheap sampler (``val_ddim_steps`` DDIM steps, one hypothesis, a fixed generator per image).

Crops: uniform random positions (images smaller than the crop padded: black image, background map), random
horizontal flips, drawn from the loop's step generator, so a resumed training draws what an uninterrupted one does.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness import (LoopConfig, Objective, OptimConfig, count_params, derive_seed, resize_sample, scale_factor, stage,
                     train)

from .config import LDMOptions
from .counter import LDMCounter, heads_of, replace_sampling
from .crowdmap import render_crowd_map
from .models import LDMNet, ddpm_scheduler, reconstruct, to_unit
from .tiling import TileGrid

_log = logging.getLogger("harness_ldm")


def network_view(image: np.ndarray, points: np.ndarray | None, o: LDMOptions):
    """``(image, points)`` resized by ``scale`` / ``max_side`` (as the counter does at test time)."""
    f = scale_factor(image.shape[0], image.shape[1], o.scale, o.max_side)
    return resize_sample(image, points, f, min_side=8)


class CropPool:
    """Labelled images at network resolution with their crowd maps, for random crops.

    ``images[i]``: ``(h, w, 3) uint8`` padded to at least ``crop`` per side (black); ``maps[i]``: ``(h, w) float16``
    crowd map in [-1, 1] (padding: −1); ``counts[i]``: head count."""

    def __init__(self, samples: Sequence[Any], o: LDMOptions):
        self.crop = int(o.crop_size)
        self.images, self.maps, self.counts = [], [], []
        for s in samples:
            img, pts = network_view(s.image, s.points, o)
            cmap = render_crowd_map(pts, img.shape[:2], o.sigma)
            ph, pw = max(0, self.crop - img.shape[0]), max(0, self.crop - img.shape[1])
            if ph or pw:
                img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
                cmap = np.pad(cmap, ((0, ph), (0, pw)), constant_values=-1.0)
            self.images.append(np.ascontiguousarray(img))
            self.maps.append(cmap.astype(np.float16))
            self.counts.append(len(pts))

    def __len__(self) -> int:
        return len(self.images)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random crops: ``(images (n, S, S, 3) uint8, maps (n, S, S) float32)``."""
        S = self.crop
        ims, mps = [], []
        for _ in range(n):
            i = int(rng.integers(len(self.images)))
            img, cmap = self.images[i], self.maps[i]
            y0 = int(rng.integers(0, img.shape[0] - S + 1))
            x0 = int(rng.integers(0, img.shape[1] - S + 1))
            a, b = img[y0:y0 + S, x0:x0 + S], cmap[y0:y0 + S, x0:x0 + S]
            if rng.random() < 0.5:
                a, b = a[:, ::-1], b[:, ::-1]
            ims.append(a)
            mps.append(b)
        return np.ascontiguousarray(np.stack(ims)), np.stack(mps).astype(np.float32)


class ValSet:
    """Source val images at network resolution: ``images`` (uint8), ``maps`` (ground-truth crowd maps, for the first
    stage's reconstruction error), ``counts``."""

    def __init__(self, samples: Sequence[Any], o: LDMOptions):
        self.images, self.maps, self.counts = [], [], []
        for s in samples:
            img, pts = network_view(s.image, s.points, o)
            self.images.append(img)
            self.maps.append(render_crowd_map(pts, img.shape[:2], o.sigma))
            self.counts.append(float(len(s.points)))

    def map_count_mae(self, o: LDMOptions) -> float:
        """Count MAE of contour counting on the ground-truth crowd maps (what counting loses on perfect maps)."""
        return float(np.mean([abs(heads_of(m, o).count - c) for m, c in zip(self.maps, self.counts)]))


def _cost_key(o: LDMOptions, val: "ValSet", stage_name: str) -> dict:
    """The networks' architecture, crop and batch sizes and the validation set's image shapes (not the schedules)."""
    from dataclasses import asdict

    d = {k: v for k, v in asdict(o.diffusion).items() if k in ("batch_size", "val_ddim_steps", "prediction_type")}
    return {"stage": stage_name, "space": o.space, "crop": o.crop_size, "cond": [o.cond_channels, o.cond_width],
            "vq": {k: v for k, v in asdict(o.vq).items() if k not in ("steps", "lr", "eval_every", "fg_weight")},
            "unet": asdict(o.unet), "diffusion": d, "val": [list(m.shape) for m in val.maps]}


class VQTask:
    """The first stage as a :class:`harness.training.loop.TrainTask` (see the module notes)."""

    def __init__(self, net: LDMNet, pool: CropPool, val: ValSet, o: LDMOptions, device: str, fingerprint: dict):
        self.net, self.pool, self.val, self.o, self.device = net, pool, val, o, device
        self._fingerprint = fingerprint

    def modules(self) -> dict:
        return {"vq": self.net.vq}

    def fingerprint(self) -> dict:
        return self._fingerprint

    def cost_key(self) -> dict:
        """What fixes the work of a step and a selection pass (the dry run's stage key: harness.stages)."""
        return _cost_key(self.o, self.val, "vq")

    def objectives(self) -> list:
        v = self.o.vq
        return [Objective("vq", self.net.vq.parameters(), self.loss,
                          OptimConfig(name="adamw", lr=v.lr, grad_clip=1.0))]

    def batch(self, step: int, rng: np.random.Generator) -> np.ndarray:
        return self.pool.draw(rng, self.o.vq.batch_size)[1]

    def loss(self, maps: np.ndarray, step: int):
        x = torch.from_numpy(maps)[:, None].to(self.device)
        out = self.net.vq(x)
        w = 1.0 + (self.o.vq.fg_weight - 1.0) * (x > -0.99).float()
        rec = (w * (out.sample.float() - x) ** 2).mean()
        commit = out.commit_loss.float().mean()
        return rec + commit, {"rec": float(rec.detach()), "commit": float(commit.detach())}

    def evaluate(self) -> float:
        return recon_count_mae(self.net, self.val, self.o, self.device)


def recon_count_mae(net: LDMNet, val: ValSet, o: LDMOptions, device: str,
                    stage_name: str = "reconstruct: val image") -> float:
    """Count MAE of D(E(x)) of the val images' ground-truth maps (tiled, reconstructed, stitched, contour-counted);
    ``stage_name``: its dry-run stage (:mod:`harness.stages`)."""
    errs = []
    with stage(stage_name, units=len(val.maps), unit="val image (tiles through E and D)",
               params=count_params(net.vq), per_cell=True) as st:
        for cmap, c in zip(val.maps, val.counts):
            if st.done:  # a dry run (harness.stages)
                break
            with st.unit():
                grid = TileGrid.for_image(cmap.shape[0], cmap.shape[1], o.crop_size, 0)
                tiles = torch.from_numpy(grid.split(cmap, -1.0))[:, None].to(device)
                rec = reconstruct(net, tiles, o.sampling.batch_size).numpy()
                errs.append(abs(heads_of(grid.stitch(rec), o).count - c))
    return float(np.mean(errs)) if errs else 0.0


class DiffusionTask:
    """ε_θ and T as a :class:`harness.training.loop.TrainTask` (see the module notes)."""

    def __init__(self, net: LDMNet, pool: CropPool, val: ValSet, o: LDMOptions, device: str, fingerprint: dict,
                 precision: str = "fp32"):
        self.net, self.pool, self.val, self.o, self.device = net, pool, val, o, device
        self._fingerprint = fingerprint
        self.scheduler = ddpm_scheduler(o)
        self._mods = {"unet": net.unet} if o.space == "pixel" else {"unet": net.unet, "cond": net.cond}
        self.ema = tuple(self._mods) if o.diffusion.ema_decay is not None else ()
        self.sampler = LDMCounter(net, replace_sampling(o, hypotheses=1, ddim_steps=o.diffusion.val_ddim_steps),
                                  device=device, precision=precision, name="ldm-val", stage_label="validate")

    def modules(self) -> dict:
        return dict(self._mods)

    def fingerprint(self) -> dict:
        return self._fingerprint

    def cost_key(self) -> dict:
        """What fixes the work of a step and a selection pass (the dry run's stage key: harness.stages)."""
        return _cost_key(self.o, self.val, "diffusion")

    def objectives(self) -> list:
        d = self.o.diffusion
        params = [p for m in self._mods.values() for p in m.parameters()]
        return [Objective("diffusion", params, self.loss,
                          OptimConfig(name="adamw", lr=d.lr, weight_decay=d.weight_decay, grad_clip=d.grad_clip))]

    def train_mode(self) -> None:
        for m in self._mods.values():
            m.train()
        if self.net.vq is not None:
            self.net.vq.eval()

    def batch(self, step: int, rng: np.random.Generator):
        return self.pool.draw(rng, self.o.diffusion.batch_size)

    def loss(self, batch, step: int):
        images, maps = batch
        net = self.net
        with torch.no_grad():
            z0 = net.encode_maps(torch.from_numpy(maps)[:, None].to(self.device)).float()
        cond = net.cond(to_unit(images, self.device))
        noise = torch.randn_like(z0)
        t = torch.randint(0, self.o.diffusion.train_timesteps, (z0.shape[0],), device=z0.device)
        z_t = self.scheduler.add_noise(z0, noise, t)
        kind = self.o.diffusion.prediction_type
        target = noise if kind == "epsilon" else z0 if kind == "sample" else self.scheduler.get_velocity(z0, noise, t)
        return F.mse_loss(net.eps(z_t, t, cond).float(), target)

    def evaluate(self) -> float:
        """Val count MAE of the cheap sampler, one fixed generator per val image (docs/design.md §6 selection)."""
        errs = []
        for i, (img, c) in enumerate(zip(self.val.images, self.val.counts)):
            maps = self.sampler.sample_maps(img, torch.Generator().manual_seed(1000 + i))
            errs.append(abs(heads_of(maps[0], self.o).count - c))
        return float(np.mean(errs))


@torch.no_grad()
def latent_std(net: LDMNet, pool: CropPool, seed: int, n: int = 256, batch: int = 32) -> float:
    """Standard deviation of E(x) (unscaled) over ``n`` seeded random training crops."""
    rng = np.random.default_rng([seed % 2**32, 77])
    vals = []
    with stage("latent scale: encode", units=-(-n // batch), unit=f"batch of {batch} crops",
               params=count_params(net.vq)) as st:
        for i in range(0, n, batch):
            if st.done:  # a dry run (harness.stages)
                break
            with st.unit():
                maps = pool.draw(rng, min(batch, n - i))[1]
                z = net.vq.encode(torch.from_numpy(maps)[:, None].to(net.device)).latents
                vals.append(z.float().flatten().cpu())
    return float(torch.cat(vals).std())


def train_model(o: LDMOptions, train_samples: Sequence[Any], val_samples: Sequence[Any], *, seed: int,
                device: str = "cpu", precision: str = "fp32", checkpoint_dir: Path | None = None,
                log: logging.Logger | None = None, cache_root: Any = None, fingerprint: dict | None = None
                ) -> tuple[LDMNet, dict]:
    """Train both stages (see the module notes) on loaded labelled samples (``.image``, ``.points``).

    Returns ``(net, info)``: the selected networks (eval mode) and the facts for the cell's provenance notes
    (``vq``: steps, best step, reconstruction / ground-truth-map count MAE, seconds; ``diffusion``: steps, best step,
    val MAE, seconds; ``latent_scale``, ``normaliser``)."""
    from .crowdmap import normaliser

    log = log or _log
    t0 = time.perf_counter()
    pool, val = CropPool(train_samples, o), ValSet(val_samples, o)
    log.info("ldm: %d train images (%d heads), %d val images at network resolution (max_side %s, crop %d)",
             len(pool), int(sum(pool.counts)), len(val.images), o.max_side, o.crop_size)
    net = LDMNet(o, seed=derive_seed(seed, 21), cache_root=cache_root).to(device)
    net.normaliser.fill_(normaliser(o.sigma))
    fp = dict(fingerprint or {})
    info: dict = {"normaliser": normaliser(o.sigma), "n_train_images": len(pool), "n_val_images": len(val.images),
                  "gt_map_count_mae": val.map_count_mae(o)}
    log.info("ldm: contour counting on the ground-truth val maps: count MAE %.3f (the counting floor)",
             info["gt_map_count_mae"])
    ck = None if checkpoint_dir is None else Path(checkpoint_dir)
    if o.space == "latent":
        t1 = time.perf_counter()
        task = VQTask(net, pool, val, o, device, {**fp, "stage": "vq"})
        cfg = LoopConfig(steps=o.vq.steps, eval_every=o.vq.eval_every, checkpoint_every=o.checkpoint_every,
                         precision=precision, log_every=max(1, min(50, o.vq.steps)))
        res = train(task, cfg, seed=derive_seed(seed, 22), device=device, log=log, name="ldm vq",
                    checkpoint_dir=None if ck is None else ck / "ldm-vq")
        net.vq.requires_grad_(False)
        net.vq.eval()
        mae = recon_count_mae(net, val, o, device, stage_name="reconstruct: val image (final)")
        info["vq"] = {"steps": res.steps_done, "best_step": res.best_step, "recon_count_mae": mae,
                      "seconds": round(time.perf_counter() - t1, 2),
                      "history": [h for h in res.history if "eval" in h]}
        log.info("ldm: first stage done: reconstruction count MAE %.3f on %d val images (ground-truth maps: %.3f)",
                 mae, len(val.images), info["gt_map_count_mae"])
        std = latent_std(net, pool, seed)
        net.latent_scale.fill_(1.0 / max(std, 1e-6))
        info["latent_scale"] = float(net.latent_scale)
    t2 = time.perf_counter()
    task = DiffusionTask(net, pool, val, o, device, {**fp, "stage": "diffusion",
                                                     "latent_scale": round(float(net.latent_scale), 6)}, precision)
    d = o.diffusion
    cfg = LoopConfig(steps=d.steps, eval_every=d.eval_every, checkpoint_every=o.checkpoint_every, precision=precision,
                     ema_decay=d.ema_decay, log_every=max(1, min(50, d.steps)))
    res = train(task, cfg, seed=derive_seed(seed, 23), device=device, log=log, name="ldm diffusion",
                checkpoint_dir=None if ck is None else ck / "ldm-diffusion")
    net.eval()
    info["diffusion"] = {"steps": res.steps_done, "best_step": res.best_step,
                         "best_val_mae": None if res.best_step is None else res.best_metric,
                         "val_ddim_steps": d.val_ddim_steps, "seconds": round(time.perf_counter() - t2, 2),
                         "history": [h for h in res.history if "eval" in h]}
    info["train_seconds"] = round(time.perf_counter() - t0, 2)
    log.info("ldm: diffusion done: best val MAE %s at step %s (%.1fs in all)", info["diffusion"]["best_val_mae"],
             res.best_step, info["train_seconds"])
    return net, info


__all__ = ["CropPool", "ValSet", "VQTask", "DiffusionTask", "train_model", "recon_count_mae", "latent_std",
           "network_view"]
