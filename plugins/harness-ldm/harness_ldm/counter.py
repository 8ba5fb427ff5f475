"""The LDM counter: whole image -> tiles -> K DDIM samples per tile -> decoded crowd maps -> stitched -> fused ->
contour count and head points (poster Figure 4).

``predict(image, generator=None)`` (a *stochastic* counter, docs/design.md §7):

1. resize the ``(H, W, 3) uint8`` image by ``scale`` / ``max_side`` (as in training);
2. pad and tile it into ``crop × crop`` crops (:class:`harness_ldm.tiling.TileGrid`, optional overlap);
3. T(y) of every crop once; K = ``hypotheses`` DDIM samples per crop (``ddim_steps``, η), all start noise drawn from
   ``generator`` — the only source of randomness, so the harness's per-image seeds make a killed-and-resumed
   evaluation identical to an uninterrupted one; decode (VQ decoder, or the pixel map itself);
4. stitch each hypothesis' crops into a full map (each pixel from the one tile whose core holds it);
5. fuse without ground truth (``fusion``): ``pixel-median`` / ``pixel-mean`` of the K maps, counted once, or
   ``count-median`` of the K counts; heads by contour detection (:func:`harness_ldm.crowdmap.count_heads`).

The image alone goes in: no label, dataset or reference is reachable from ``predict``.

Outputs: ``count``; ``points`` (contour centroids, original pixels) and ``scores`` (peak map value), so mAP is real;
``density``: the shown map (fused, or the median-count hypothesis) as density (:func:`map_to_density`) rescaled to
sum to ``count``, at the resized resolution; ``extras``: ``count@k`` per hypothesis, ``count:map-sum`` (the poster's
eq. 5, Σ of the map's density before rescaling), and with K > 1 ``count:pixel-median``, ``count:pixel-mean``,
``count:count-median`` (each fusion rule, scored as extra outputs).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import ConfigError, Prediction, Provenance, WeightsError, read_checkpoint

from .config import LDMOptions, parse_options
from .crowdmap import Heads, count_heads, map_to_density
from .models import LDMNet, configs, ddim_sample, ddim_scheduler, to_unit
from .tiling import TileGrid

#: version of the saved model file
MODEL_FORMAT = 1


def heads_of(crowd_map: np.ndarray, o: LDMOptions) -> Heads:
    c = o.counting
    return count_heads(crowd_map, threshold=c.threshold, otsu=c.otsu, denoise=c.denoise, opening=c.opening)


def fuse(maps: np.ndarray, o: LDMOptions) -> dict:
    """Fuse K stitched maps ``(K, h, w)`` without ground truth (see the module notes).

    Returns ``{"count", "heads": Heads, "map": the map shown (h, w), "counts": [K ints], "by_rule": {rule: count}}``;
    ``by_rule`` is empty for K = 1."""
    rule = o.sampling.fusion
    per = [heads_of(m, o) for m in maps]
    counts = [h.count for h in per]
    by_rule: dict[str, float] = {}
    fused: dict[str, tuple[float, Heads, np.ndarray]] = {}
    med = float(np.median(counts))
    k = int(np.argmin([abs(c - med) for c in counts]))
    fused["count-median"] = (med, per[k], maps[k])
    if len(maps) == 1:
        fused["pixel-median"] = fused["pixel-mean"] = (float(counts[0]), per[0], maps[0])
    else:
        for name, fn in (("pixel-median", np.median), ("pixel-mean", np.mean)):
            m = fn(maps, axis=0).astype(np.float32)
            h = heads_of(m, o)
            fused[name] = (float(h.count), h, m)
        by_rule = {name: v[0] for name, v in fused.items()}
    count, heads, shown = fused[rule]
    return {"count": count, "heads": heads, "map": shown, "counts": counts, "by_rule": by_rule}


class LDMCounter:
    """An LDM crowd-map counter (see the module notes); ``stochastic`` (``predict`` takes ``generator=``).

    Attributes:
        net: the :class:`harness_ldm.models.LDMNet` (eval mode, on ``device``).
        options: :class:`harness_ldm.config.LDMOptions` (sampling and counting options used at test time).
        seed: seed of the generator used when ``predict`` gets none (a plain call is deterministic too).
    """

    stochastic = True
    localises = True

    def __init__(self, net: LDMNet, options: LDMOptions, *, device: str = "cpu", precision: str = "fp32",
                 name: str = "ldm", provenance: Provenance | None = None, seed: int = 0,
                 stage_label: str = "sample"):
        self.net = net.to(device).eval()
        self.options = options
        self.device, self.precision, self.name, self.seed = device, precision, name, int(seed)
        self.provenance = provenance or Provenance("random-init")
        self.scheduler = ddim_scheduler(options)
        self.stage_label = stage_label  # its dry-run stages (harness_ldm.models.ddim_sample); training's: "validate"

    def __repr__(self) -> str:
        s = self.options.sampling
        return (f"LDMCounter({self.options.space}, crop {self.options.crop_size}, ddim {s.ddim_steps}, "
                f"K {s.hypotheses}, {s.fusion})")

    def with_sampling(self, **changes) -> "LDMCounter":
        """A counter sharing the networks with other sampling options (e.g. ``ddim_steps=50``).

        Raises:
            ConfigError: an unknown or invalid sampling option."""
        d = self.options.to_dict()
        d["sampling"].update(changes)
        return LDMCounter(self.net, parse_options(d, "ldm sampling"), device=self.device, precision=self.precision,
                          name=self.name, provenance=self.provenance, seed=self.seed, stage_label=self.stage_label)

    def resize(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """``(network-resolution image, factor)`` (``harness.scale_factor`` of ``scale`` / ``max_side``)."""
        from harness import resize_sample, scale_factor

        f = scale_factor(image.shape[0], image.shape[1], self.options.scale, self.options.max_side)
        small, _ = resize_sample(image, None, f, min_side=8)
        return small, f

    @torch.no_grad()
    def sample_maps(self, small: np.ndarray, generator: torch.Generator, *, steps: int | None = None,
                    hypotheses: int | None = None) -> np.ndarray:
        """K stitched crowd maps ``(K, h, w) float32`` in [-1, 1] of a network-resolution image ``(h, w, 3) uint8``
        (K = ``hypotheses``, default the options'); every random draw comes from ``generator``."""
        from harness import autocast

        o, net = self.options, self.net
        K = int(hypotheses or o.sampling.hypotheses)
        grid = TileGrid.for_image(small.shape[0], small.shape[1], o.crop_size, o.sampling.overlap)
        tiles = grid.split(small, 0)
        bs = o.sampling.batch_size
        with autocast(self.device, self.precision):
            cond = torch.cat([net.cond(to_unit(tiles[i:i + bs], self.device)) for i in range(0, len(tiles), bs)])
            cond = cond.float().repeat(K, 1, 1, 1)  # hypothesis-major: row k * n + i is tile i of hypothesis k
            maps = ddim_sample(net, cond, self.scheduler, steps=int(steps or o.sampling.ddim_steps),
                               eta=o.sampling.eta, generator=generator, batch_size=bs,
                               stage_label=self.stage_label)
        maps = maps.numpy().reshape(K, len(grid), o.crop_size, o.crop_size)
        return np.stack([grid.stitch(m) for m in maps])

    def predict(self, image: np.ndarray, generator: torch.Generator | None = None) -> Prediction:
        """``image``: ``(H, W, 3) uint8`` RGB -> :class:`harness.Prediction` (see the module notes); ``generator``: a
        seeded CPU ``torch.Generator`` (default: one seeded with ``seed``).

        Raises:
            DataError: not an ``(H, W, 3) uint8`` image."""
        from harness import check_image

        check_image(image)
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        small, f = self.resize(image)
        maps = self.sample_maps(small, generator)
        out = fuse(maps, self.options)
        norm = float(self.net.normaliser)
        dens = map_to_density(out["map"], norm).astype(np.float64)
        total = float(dens.sum())
        density = (dens * (out["count"] / total) if total > 0 else np.zeros_like(dens)).astype(np.float32)
        fx, fy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        pts = out["heads"].points.reshape(-1, 2) / np.array([fx, fy])
        extras: dict[str, float] = {f"count@{k}": float(c) for k, c in enumerate(out["counts"])}
        extras["count:map-sum"] = total
        extras.update({f"count:{rule}": float(c) for rule, c in out["by_rule"].items()})
        extras["input_factor"] = float(f)
        return Prediction(count=float(out["count"]), density=density, points=pts,
                          scores=np.asarray(out["heads"].scores, np.float64), extras=extras)


# ------------------------------------------------------------------------------------------ files


def save_model(path: Path, net: LDMNet, options: LDMOptions, info: dict) -> None:
    """Write the trained model (state dict, diffusers configs, options, training facts) to ``path`` (not atomic:
    callers write through :func:`harness.atomic_save` or the cache)."""
    torch.save({"format": MODEL_FORMAT, "options": options.to_dict(), "configs": configs(net),
                "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}, "info": info}, path)


def load_model(path: str | Path, device: str = "cpu") -> tuple[LDMNet, LDMOptions, dict]:
    """``(net, options, info)`` of a model written by :func:`save_model`.

    Raises:
        ConfigError: the file is missing, unreadable or of another format (one line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"LDM model file {path} not found: train one with `harness run --methods ldm ...` "
                          f"(cells keep it as checkpoints/ldm-model.pt)")
    try:
        d = read_checkpoint(path, "LDM model file")
    except WeightsError as exc:
        raise ConfigError(f"{exc}; train it again") from None
    if not isinstance(d, dict) or d.get("format") != MODEL_FORMAT:
        raise ConfigError(f"{path} is not an LDM model file of format {MODEL_FORMAT}")
    options = parse_options(d["options"], f"options in {path.name}")
    net = LDMNet(options, seed=None, saved_configs=d["configs"])
    net.load_state_dict(d["state"])
    return net.to(device).eval(), options, dict(d.get("info") or {})


def load_counter(path: str | Path, device: str = "cpu", precision: str = "fp32", *, name: str = "ldm",
                 sampling: dict | None = None, counting: dict | None = None) -> LDMCounter:
    """An :class:`LDMCounter` from a saved model; ``sampling`` / ``counting`` override the saved test-time options.

    Raises:
        ConfigError: see :func:`load_model`; invalid overrides."""
    net, options, info = load_model(path, device)
    if sampling or counting:
        d = options.to_dict()
        d["sampling"].update(sampling or {})
        d["counting"].update(counting or {})
        options = parse_options(d, "ldm counter options")
    prov = Provenance(str(info.get("weights", f"trained-in-run ({path})")),
                      trained_on=frozenset(info.get("trained_on", ())))
    return LDMCounter(net, options, device=device, precision=precision, name=name, provenance=prov)


def replace_sampling(options: LDMOptions, **changes: Any) -> LDMOptions:
    """``options`` with ``sampling`` fields replaced (no validation)."""
    return dataclasses.replace(options, sampling=dataclasses.replace(options.sampling, **changes))


__all__ = ["LDMCounter", "fuse", "heads_of", "save_model", "load_model", "load_counter", "replace_sampling",
           "MODEL_FORMAT"]
