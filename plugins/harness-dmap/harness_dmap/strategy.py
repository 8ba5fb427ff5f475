"""The ``dmap`` strategy: the density-map report (seed 003) on the core training loop.

1. Every labelled source image is resized to ``input_size × input_size`` (the report: 224 × 224, aspect ratio not
   kept, §4) and its target map drawn at that size (:mod:`harness_dmap.maps`: PIL circles, §6, or the Gaussian maps
   of §11).
2. The map network (:mod:`harness_dmap.models`: ``vgg`` §7 or ``nopool`` §8) is trained with a pixel MSE on the
   maps (Keras' default ``loss="mse"``), selected on the source val map MSE.
3. The count regressor (§12) is trained on the maps the trained network predicts for the train images, with an MSE
   on the count (scaled by ``count_scale``), selected on the source val RMSE of the two-stage count — the report's
   train / validation RMSE protocol (§13); both RMSEs are recorded in the cell's provenance.
4. Test: resize, predict the map, regress the count (negative counts clipped to 0); head points are the map's local
   maxima mapped back to the image (:func:`harness.points_from_density`).

The two trained networks are one cached artefact (``ctx.cached_fit("dmap-model", ...)``) keyed by the options and the
train / val image ids, so cells that differ only in their target share them.
"""
from __future__ import annotations

import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from harness import (ConfigError, LoopConfig, Objective, OptimConfig, Prediction, Provenance, count_params,
                     derive_seed, imagenet_preprocess, points_from_density, read_checkpoint, stage, subset, train)

from .config import CACHE_VERSION, DmapOptions
from .maps import circle_map, gaussian_map
from .models import CountRegressor, map_network

def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """``(H, W, 3) uint8`` -> ``(size, size, 3)`` (Pillow bilinear, antialiased; aspect ratio not kept, as the
    report)."""
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR, reducing_gap=None))


def target_map(points: np.ndarray, image_hw: tuple[int, int], o: DmapOptions) -> np.ndarray:
    if o.maps == "circle":
        return circle_map(points, image_hw, o.input_size, o.radius)
    return gaussian_map(points, image_hw, o.input_size, o.sigma)


def load_set(refs, o: DmapOptions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(images (N, 3, S, S) ImageNet-normalised, maps (N, 1, S, S) × map_scale, counts (N,))`` of labelled refs."""
    xs, ys, cs = [], [], []
    for ref in refs:
        s = ref.load()
        xs.append(imagenet_preprocess(resize_square(s.image, o.input_size))[0])
        ys.append(torch.from_numpy(target_map(s.points, s.image.shape[:2], o))[None] * o.map_scale)
        cs.append(float(len(s.points)))
    if not xs:
        raise ConfigError("dmap needs labelled source images: the source split is empty")
    return torch.stack(xs), torch.stack(ys), torch.tensor(cs)


class _Batches:
    """Indices of step ``k``: a fresh permutation of the set every epoch (seeded), ``batch_size`` per step."""

    def __init__(self, n: int, batch: int, seed: int):
        self.n, self.batch, self.seed = n, min(batch, n), seed
        self.per_epoch = math.ceil(n / self.batch)

    def __call__(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.per_epoch)
        order = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return order[i * self.batch:(i + 1) * self.batch]


class MapTask:
    """Stage 1: pixel MSE of the map network, selected on the source val map MSE."""

    def __init__(self, net, train_set, val_set, o: DmapOptions, seed: int):
        self.net, self.o = net, o
        self.x, self.y = train_set[0], train_set[1]
        self.vx, self.vy = val_set[0], val_set[1]
        self.batches = _Batches(len(self.x), o.batch_size, seed)

    def modules(self) -> dict:
        return {"map": self.net}

    def objectives(self) -> list:
        return [Objective("map", list(self.net.parameters()), self.loss, OptimConfig(name="adam", lr=self.o.map_lr))]

    def batch(self, step: int, rng):
        idx = torch.from_numpy(self.batches(step))
        dev = next(self.net.parameters()).device
        return self.x[idx].to(dev), self.y[idx].to(dev)

    def loss(self, batch, step: int):
        x, y = batch
        return F.mse_loss(self.net(x).float(), y)

    @torch.no_grad()
    def evaluate(self) -> float:
        dev = next(self.net.parameters()).device
        err = []
        with stage("validate: map network", units=math.ceil(len(self.vx) / 8), unit="batch of 8",
                   key=self.cost_key(), per_cell=True) as st:
            for i in range(0, len(self.vx), 8):
                if st.done:  # a dry run (harness.stages)
                    break
                with st.unit():
                    err.append(F.mse_loss(self.net(self.vx[i:i + 8].to(dev)).float(), self.vy[i:i + 8].to(dev),
                                          reduction="sum"))
        return float(sum(err) / max(1, self.vy.numel()))

    def fingerprint(self) -> dict:
        return {"stage": "map", **asdict(self.o)}

    def cost_key(self) -> dict:
        """What fixes the work of one step (the dry run's stage key: harness.stages)."""
        o = self.o
        return {"network": o.network, "width": o.width, "input_size": o.input_size, "batch": self.batches.batch,
                "val_images": len(self.vx)}


class RegressorTask:
    """Stage 2: count MSE of the regressor on predicted maps, selected on the val RMSE (people)."""

    def __init__(self, reg, train_maps, train_counts, val_maps, val_counts, o: DmapOptions, seed: int):
        self.reg, self.o = reg, o
        self.m, self.c, self.vm, self.vc = train_maps, train_counts, val_maps, val_counts
        self.batches = _Batches(len(self.m), o.batch_size, seed)

    def modules(self) -> dict:
        return {"regressor": self.reg}

    def objectives(self) -> list:
        return [Objective("count", list(self.reg.parameters()), self.loss,
                          OptimConfig(name="adam", lr=self.o.regressor_lr))]

    def batch(self, step: int, rng):
        idx = torch.from_numpy(self.batches(step))
        dev = next(self.reg.parameters()).device
        return self.m[idx].to(dev), (self.c[idx] / self.o.count_scale).to(dev)

    def loss(self, batch, step: int):
        m, c = batch
        return F.mse_loss(self.reg(m).float(), c)

    @torch.no_grad()
    def evaluate(self) -> float:
        return rmse(self.reg, self.vm, self.vc, self.o)

    def fingerprint(self) -> dict:
        return {"stage": "regressor", **asdict(self.o)}


@torch.no_grad()
def predict_maps(net, x: torch.Tensor, o: DmapOptions, batch: int = 8) -> torch.Tensor:
    """Maps (``/ map_scale``) the network predicts for normalised images ``x``, on the CPU."""
    dev = next(net.parameters()).device
    net.eval()
    out = []
    with stage("predict: maps for the regressor", units=math.ceil(len(x) / batch), unit=f"batch of {batch}",
               params=count_params(net)) as st:
        for i in range(0, len(x), batch):
            if st.done and out:  # a dry run (harness.stages): the maps made stand in for the rest
                out.append(out[0][:len(x[i:i + batch])])
                continue
            with st.unit():
                out.append(net(x[i:i + batch].to(dev)).float().cpu())
    return torch.cat(out) / o.map_scale


@torch.no_grad()
def rmse(reg, maps: torch.Tensor, counts: torch.Tensor, o: DmapOptions) -> float:
    """Root mean squared count error (people) of the regressor on ``maps``."""
    dev = next(reg.parameters()).device
    pred = torch.cat([reg(maps[i:i + 64].to(dev)).float().cpu() for i in range(0, len(maps), 64)]) * o.count_scale
    return float(torch.sqrt(torch.mean((pred.clamp(min=0) - counts) ** 2)))


class DmapCounter:
    """The two-stage counter: ``predict(image)`` resizes to ``input_size``, predicts the map, regresses the count;
    ``points``: the map's local maxima in original pixels; ``extras["count:integral"]``: the map's sum (the count a
    Gaussian map implies)."""

    name = "dmap"
    localises = True

    def __init__(self, net, reg, o: DmapOptions, device: str, provenance: Provenance):
        self.net, self.reg, self.o, self.device = net.eval(), reg.eval(), o, device
        self.provenance = provenance

    @torch.no_grad()
    def predict(self, image: np.ndarray) -> Prediction:
        o = self.o
        x = imagenet_preprocess(resize_square(image, o.input_size)).to(self.device)
        m = self.net(x).float() / o.map_scale
        count = max(0.0, float(self.reg(m).float()[0]) * o.count_scale)
        dmap = m[0, 0].cpu().numpy()
        pts, scores = points_from_density(np.maximum(dmap, 0), stride=1)
        h, w = image.shape[:2]
        pts = pts * np.array([w / o.input_size, h / o.input_size]) if len(pts) else pts.reshape(0, 2)
        return Prediction(count=count, density=dmap, points=pts, scores=scores,
                          extras={"count:integral": float(dmap.sum())})


class Dmap:
    """The ``dmap`` strategy (see the module notes); options :class:`DmapOptions`."""

    def __init__(self, options: DmapOptions):
        self.o = options

    def build(self, seed: int):
        o = self.o
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = map_network(o.network, o.width)
            reg = CountRegressor(o.input_size, o.regressor_hidden, o.regressor_layers)
        init = None
        if o.network == "vgg" and o.vgg_init == "imagenet":
            from harness import pretrained_backbone

            init = pretrained_backbone(net.features, "vgg16", "imagenet", option="vgg_init", select="features.",
                                       allow_unused=True)
        return net, reg, init

    def fit(self, ctx) -> DmapCounter:
        o = self.o
        train_refs = subset(ctx.source.samples("train"), o.train_images, ctx.seed, 1)
        val_refs = subset(ctx.source.samples("val"), o.val_images, ctx.seed, 2)
        net, reg, init = self.build(ctx.seed)
        key = {"version": CACHE_VERSION, "options": asdict(o), "train": [r.key for r in train_refs],
               "val": [r.key for r in val_refs]}
        notes: dict = {}

        def create(tmp: Path) -> None:
            tr, va = load_set(train_refs, o), load_set(val_refs, o)
            ckpt = Path(ctx.workdir) / "checkpoints"
            net.to(ctx.device)
            steps = o.map_epochs * math.ceil(len(tr[0]) / min(o.batch_size, len(tr[0])))
            res1 = train(MapTask(net, tr, va, o, ctx.seed),
                         _loop(steps, o, ctx.precision), seed=derive_seed(ctx.seed, 31), device=ctx.device,
                         checkpoint_dir=ckpt / "dmap-map", log=ctx.log, name="dmap map network")
            tm, vm = predict_maps(net, tr[0], o), predict_maps(net, va[0], o)
            reg.to(ctx.device)
            steps = o.regressor_epochs * math.ceil(len(tm) / min(o.batch_size, len(tm)))
            res2 = train(RegressorTask(reg, tm, tr[2], vm, va[2], o, ctx.seed),
                         _loop(steps, o, ctx.precision), seed=derive_seed(ctx.seed, 32), device=ctx.device,
                         checkpoint_dir=ckpt / "dmap-regressor", log=ctx.log, name="dmap count regressor")
            facts = {"train_rmse": rmse(reg, tm, tr[2], o), "val_rmse": rmse(reg, vm, va[2], o),
                     "val_map_mse": res1.best_metric, "map_best_step": res1.best_step,
                     "regressor_best_step": res2.best_step, "train_images": len(tr[0]), "val_images": len(va[0])}
            torch.save({"map": net.state_dict(), "regressor": reg.state_dict(), "facts": facts}, tmp)

        path, hit = ctx.cached_fit("dmap-model", key, create)
        st = read_checkpoint(path, "cached dmap model")
        net.load_state_dict(st["map"])
        reg.load_state_dict(st["regressor"])
        notes.update(st["facts"])
        seen = {ctx.source_name} | ({"ImageNet"} if init is not None else set())
        ctx.provenance_notes.update({"selection_split": "source val", "trained_in_run": True, "cached": hit,
                                     "init_weights": None if init is None else init.path, **notes})
        ctx.log.info("dmap: train RMSE %.2f, val RMSE %.2f (%s)", notes["train_rmse"], notes["val_rmse"],
                     "cached" if hit else "trained")
        prov = Provenance(f"trained-in-run (dmap {o.network}, {o.maps} maps)", trained_on=frozenset(seen))
        return DmapCounter(net.to(ctx.device), reg.to(ctx.device), o, ctx.device, prov)


def _loop(steps: int, o: DmapOptions, precision: str) -> LoopConfig:
    every = max(1, steps // max(1, min(10, steps)))
    return LoopConfig(steps=steps, eval_every=every, checkpoint_every=o.checkpoint_every, precision=precision,
                      log_every=every)


__all__ = ["Dmap", "DmapOptions", "DmapCounter", "MapTask", "RegressorTask", "resize_square", "target_map"]
