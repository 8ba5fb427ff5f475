"""Training GauGAN on the source's images and masks with the harness's one training loop (:func:`harness.train`).

Each step (Park et al. 2019 §4 and the reference's ``pix2pix_trainer`` / ``pix2pix_model``, objectives stepped in
order by the loop):

1. **discriminator** (Adam lr 4e-4, β (0, 0.9): TTUR): fake images generated without gradients (z from the VAE
   encoder of the real image); hinge loss on the two-scale PatchGAN's logits of ``(mask ‖ real)`` and
   ``(mask ‖ fake)``, both in one batch as the reference does;
2. **generator + encoder** (Adam lr 1e-4, β (0, 0.9)): hinge loss −D(fake) + feature matching × 10 + VGG-19
   perceptual loss × 10 (only with ``vgg_weights``: ImageNet weights are a local file; off by default and recorded)
   + KL divergence × 0.05 (with the VAE).

Data (report §IV-B2 "scaled and cropped to make squared images"; the reference's ``custom`` dataset mode,
``resize_and_crop``): every image and its mask are resized to ``load_size × load_size`` (bicubic / nearest; the
reference: 286 for 256 crops), then each step takes random ``crop_size`` crops and horizontal flips (from the loop's
seeded step generator) of a per-epoch seeded permutation of the images. Images are scaled to ``[-1, 1]``.

Checkpoints, resume and the options guard are the loop's (``<checkpoint_dir>/gaugan``), a snapshot every
``checkpoint_every_epochs`` (report: every 10 epochs); there is no model selection (the last weights are kept, as
in the reference).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from harness import ConfigError

UPSAMPLINGS = {"normal": 5, "more": 6, "most": 7}


@dataclass
class GauGANOptions:
    """Architecture, losses and schedule of GauGAN (a strategy's ``gan`` mapping; paper values by default).

    Attributes:
        crop_size: square training crops (report Table II: 256, 512 for SSU_V2); a multiple of 2^upsamplings.
        load_size: side images and masks are resized to before cropping (None: ``round(crop_size · 286 / 256)``,
            the reference's custom-dataset default).
        ngf, ndf: generator / discriminator base widths (paper: 64). spade_hidden: SPADE's shared conv width (128).
        upsampling: ``normal`` (5 ×2 upsamplings), ``more`` (6), ``most`` (7).
        norm: SPADE's parameter-free norm: ``batch`` (the reference's synchronised BN) or ``instance``.
        use_vae, z_dim, lambda_kld: the VAE encoder (style vectors of dimension 256, KL weight 0.05); without it
            the generator is deterministic given the mask.
        num_d, n_layers_d: multiscale PatchGAN (2 discriminators of 4 layers).
        lambda_feat: feature-matching weight (10). lambda_vgg, vgg_weights: perceptual loss weight (10) and the
            VGG-19: ``"imagenet"`` (torchvision's file, found by the core's pretrained-weights lookup) or a local
            torchvision VGG-19 weights file (None: no perceptual loss).
        epochs, batch_size: passes over the images and images per step (the reference's custom default: 1).
        lr_g, lr_d, betas: TTUR Adam (1e-4, 4e-4, β (0, 0.9)).
        max_train_images: a seeded subset of the source's train images (None: all).
        init_generator: transfer learning (the report: GauGAN "originally is trained to generate landscapes"): a
            generator checkpoint of NVlabs/SPADE — its ``latest_net_G.pth``, its ``checkpoints/<name>/`` folder, or
            the name of such a folder under ``$HARNESS_WEIGHTS/spade/`` (e.g. ``coco_pretrained``) — whose tensors
            initialise the generator where their shapes match (:func:`transfer_generator`); None: from scratch.
        checkpoint_every_epochs: snapshot period (report: 10).
        flip: random horizontal flips.
    """

    crop_size: int = 256
    load_size: int | None = None
    ngf: int = 64
    ndf: int = 64
    spade_hidden: int = 128
    upsampling: Literal["normal", "more", "most"] = "normal"
    norm: Literal["batch", "instance"] = "batch"
    use_vae: bool = True
    z_dim: int = 256
    lambda_kld: float = 0.05
    num_d: int = 2
    n_layers_d: int = 4
    lambda_feat: float = 10.0
    lambda_vgg: float = 10.0
    vgg_weights: str | None = None
    epochs: int = 200
    batch_size: int = 1
    lr_g: float = 1e-4
    lr_d: float = 4e-4
    betas: tuple[float, float] = (0.0, 0.9)
    max_train_images: int | None = None
    checkpoint_every_epochs: int = 10
    flip: bool = True
    init_generator: str | None = None

    @property
    def multiple(self) -> int:
        return 2 ** UPSAMPLINGS[self.upsampling]

    @property
    def load(self) -> int:
        return self.load_size if self.load_size is not None else int(round(self.crop_size * 286 / 256))

    def validate(self) -> list[str]:
        p = []
        if self.crop_size < 2 * self.multiple or self.crop_size % self.multiple:
            p.append(f"gan.crop_size {self.crop_size} must be a multiple of {self.multiple} (2^upsamplings for "
                     f"upsampling {self.upsampling!r}) and at least {2 * self.multiple} (the generator's start map "
                     f"must be 2 x 2 or larger for its normalisation)")
        if self.load_size is not None and self.load_size < self.crop_size:
            p.append(f"gan.load_size {self.load_size} must be >= crop_size {self.crop_size}")
        for name in ("ngf", "ndf", "spade_hidden", "z_dim", "num_d", "epochs", "batch_size", "checkpoint_every_epochs"):
            if getattr(self, name) < 1:
                p.append(f"gan.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_layers_d < 2:
            p.append(f"gan.n_layers_d must be >= 2, got {self.n_layers_d}")
        if self.upsampling == "most" and self.ngf < 2:
            p.append("gan.ngf must be >= 2 with upsampling 'most' (its last block has ngf / 2 channels)")
        for name in ("lr_g", "lr_d"):
            if not (getattr(self, name) > 0 and math.isfinite(getattr(self, name))):
                p.append(f"gan.{name} must be > 0")
        if min(self.lambda_kld, self.lambda_feat, self.lambda_vgg) < 0:
            p.append("gan loss weights must be >= 0")
        if self.max_train_images is not None and self.max_train_images < 1:
            p.append(f"gan.max_train_images must be >= 1 or null, got {self.max_train_images}")
        if self.vgg_weights not in (None, "imagenet") and not Path(self.vgg_weights).expanduser().is_file():
            p.append(f"gan.vgg_weights {self.vgg_weights} does not exist: pass torchvision's VGG-19 ImageNet file "
                     f"(vgg19-dcbb9e9d.pth), 'imagenet' or null (no perceptual loss)")
        return p

    def generator_config(self, label_nc: int) -> dict:
        """The :func:`~harness_spade.generator.build_generator` config of these options."""
        return {"label_nc": int(label_nc), "ngf": self.ngf, "upsampling": self.upsampling, "use_vae": self.use_vae,
                "z_dim": self.z_dim, "base": self.crop_size // self.multiple, "hidden": self.spade_hidden,
                "norm": self.norm, "spectral": True}


def _nvlabs_file(spec: str) -> Path:
    """The ``latest_net_G.pth`` that ``init_generator`` names: the file, a checkpoint folder holding it, or a folder
    name under ``$HARNESS_WEIGHTS/spade/`` (returned whether or not it exists)."""
    import os

    p = Path(spec).expanduser()
    if not p.exists() and "/" not in spec and os.environ.get("HARNESS_WEIGHTS"):
        p = Path(os.environ["HARNESS_WEIGHTS"]) / "spade" / spec
    return p / "latest_net_G.pth" if p.is_dir() or not p.suffix else p


def _spectral_names(key: str) -> str:
    """``conv.weight_orig`` / ``weight_u`` / ``weight_v`` (``torch.nn.utils.spectral_norm``) → the parametrisation
    API's ``conv.parametrizations.weight.original`` / ``.0._u`` / ``.0._v``."""
    for old, new in ((".weight_orig", ".parametrizations.weight.original"), (".weight_u", ".parametrizations.weight.0._u"),
                     (".weight_v", ".parametrizations.weight.0._v")):
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def transfer_generator(generator: Any, path: str) -> dict:
    """Initialise ``generator`` (:class:`~harness_spade.gaugan.SPADEGenerator`) from an NVlabs/SPADE generator
    checkpoint (``BaseModel.save_network``: a plain state dict of ``models/networks/generator.py``'s
    ``SPADEGenerator`` — ``fc``, ``head_0``, ``G_middle_0/1``, ``up_0…3``, ``conv_img``; spectral-norm
    ``weight_orig / weight_u / weight_v`` of ``torch.nn.utils.spectral_norm``, renamed to the parametrisation API's
    ``parametrizations.weight.original / .0._u / .0._v`` that ours uses; the synchronised batch norm's running
    statistics — the other names ours share). Every tensor whose name and shape match is loaded; the rest keep their fresh initialisation and are
    listed: the label-map inputs (each SPADE's ``mlp_shared.0.weight``: the released models have 184 (COCO-Stuff),
    151 (ADE20K) or 36 (Cityscapes) label channels, ours the mask layout's), and ``fc`` when we start from the VAE's
    z (the released models were trained without the encoder, their ``fc`` is a 3 × 3 convolution of the label map).

    Returns:
        ``{"file", "sha256", "loaded": n tensors, "reinitialised": [names], "unused": [names]}``.

    Raises:
        WeightsError: an unreadable file, or one that shares no tensor with this generator (not a SPADE
            generator, or another width: ``ngf``).
    """
    from harness import WeightsError, file_sha256, read_state_dict

    file = _nvlabs_file(path)
    if not file.is_file():
        raise WeightsError(f"GauGAN transfer (gan.init_generator {path!r}): {file} does not exist — download the "
                           f"pretrained models of the NVlabs/SPADE README (checkpoints.tar.gz), and put e.g. "
                           f"checkpoints/coco_pretrained/latest_net_G.pth under $HARNESS_WEIGHTS/spade/coco_pretrained/ "
                           f"(or pass the file's path); null trains GauGAN from scratch")
    state = {_spectral_names(k): v for k, v in
             read_state_dict(str(file), "GauGAN generator (NVlabs/SPADE latest_net_G.pth)").items()}
    own = generator.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not any(k.endswith(("original", "weight")) for k in loaded):
        raise WeightsError(f"{file}: no tensor of it fits this generator (is it an NVlabs SPADE latest_net_G.pth of "
                           f"the same width, ngf = {generator.ngf}?)")
    generator.load_state_dict({**own, **loaded})
    reinit = sorted(k for k in own if k not in loaded and not k.endswith("num_batches_tracked"))
    return {"file": str(file), "sha256": file_sha256(file), "loaded": len(loaded), "reinitialised": reinit,
            "unused": sorted(k for k in state if k not in loaded)}


def prepare_item(image: np.ndarray, mask: np.ndarray, load: int) -> tuple[np.ndarray, np.ndarray]:
    """``(image (load, load, 3) uint8, mask (load, load) uint8)``: resized to a square (bicubic / nearest; the aspect
    ratio is not kept, as the reference's ``resize_and_crop``)."""
    from PIL import Image

    img = Image.fromarray(np.asarray(image, np.uint8)).resize((load, load), Image.BICUBIC)
    lab = Image.fromarray(np.asarray(mask, np.uint8)).resize((load, load), Image.NEAREST)
    return np.asarray(img), np.asarray(lab)


def square_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A label map resized (nearest) to ``size × size``: the generation-time preprocessing (the reference's test
    mode: load size = crop size)."""
    from PIL import Image

    return np.asarray(Image.fromarray(np.asarray(mask, np.uint8)).resize((size, size), Image.NEAREST))


class GauGANTask:
    """The :class:`harness.training.loop.TrainTask` of GauGAN (see the module notes).

    Args:
        items: ``[(image (L, L, 3) uint8, mask (L, L) uint8)]`` from :func:`prepare_item`.
        label_nc: number of labels. opts: :class:`GauGANOptions`. seed: the training's seed. device: torch device.
        vgg: a :class:`~harness_spade.gaugan.VGGLoss` or None. fingerprint: the resume guard's facts.
    """

    def __init__(self, items: Sequence[tuple[np.ndarray, np.ndarray]], label_nc: int, opts: GauGANOptions, *,
                 seed: int, device: str = "cpu", vgg: Any = None, fingerprint: dict | None = None):
        from .gaugan import ConvEncoder, MultiscaleDiscriminator
        from .generator import build_generator

        import torch

        self.items, self.label_nc, self.o, self.seed, self.device = list(items), int(label_nc), opts, seed, device
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed alone
            torch.manual_seed(int(seed) % 2**63)
            self.generator = build_generator(opts.generator_config(label_nc))
            self.discriminator = MultiscaleDiscriminator(label_nc + 3, ndf=opts.ndf, n_layers=opts.n_layers_d,
                                                         num_d=opts.num_d)
            self.encoder = (ConvEncoder(ngf=opts.ngf, z_dim=opts.z_dim, crop_size=opts.crop_size) if opts.use_vae
                            else None)
        self.vgg = None if vgg is None else vgg.to(device).eval()
        self.steps_per_epoch = -(-len(self.items) // opts.batch_size)
        self._fingerprint = fingerprint or {}
        self._epoch, self._order = None, None

    def modules(self) -> dict:
        mods = {"generator": self.generator, "discriminator": self.discriminator}
        if self.encoder is not None:
            mods["encoder"] = self.encoder
        return mods

    def fingerprint(self) -> dict:
        return self._fingerprint

    def objectives(self) -> list:
        from harness import Objective, OptimConfig

        o = self.o
        g_params = list(self.generator.parameters()) + ([] if self.encoder is None else list(self.encoder.parameters()))
        return [Objective("discriminator", self.discriminator.parameters(), self.d_loss,
                          OptimConfig(name="adam", lr=o.lr_d, betas=tuple(o.betas))),
                Objective("generator", g_params, self.g_loss,
                          OptimConfig(name="adam", lr=o.lr_g, betas=tuple(o.betas)))]

    def batch(self, step: int, rng: np.random.Generator):
        """``(one-hot masks (B, label_nc, c, c), images (B, 3, c, c) in [-1, 1])`` on the device: step ``step``'s
        images (a per-epoch seeded order), each randomly cropped and flipped with ``rng``."""
        import torch

        from .gaugan import one_hot

        epoch, i = divmod(step, self.steps_per_epoch)
        if self._epoch != epoch:
            self._epoch = epoch
            self._order = np.random.default_rng([int(self.seed) % 2**32, 5, epoch]).permutation(len(self.items))
        idx = self._order[i * self.o.batch_size:(i + 1) * self.o.batch_size]
        c = self.o.crop_size
        imgs, masks = [], []
        for j in idx:
            img, lab = self.items[j]
            y0 = int(rng.integers(0, img.shape[0] - c + 1))
            x0 = int(rng.integers(0, img.shape[1] - c + 1))
            img, lab = img[y0:y0 + c, x0:x0 + c], lab[y0:y0 + c, x0:x0 + c]
            if self.o.flip and rng.random() < 0.5:
                img, lab = img[:, ::-1], lab[:, ::-1]
            imgs.append(np.ascontiguousarray(img))
            masks.append(np.ascontiguousarray(lab))
        x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        seg = one_hot(np.stack(masks), self.label_nc)
        return seg.to(self.device), x.to(self.device)

    def generate(self, seg, real, *, kld: bool):
        """``(fake (B, 3, c, c), KL loss or None)``: z from the encoder of ``real`` (VAE) or none."""
        from .gaugan import kld_loss, reparameterize

        if self.encoder is None:
            return self.generator(seg), None
        mu, logvar = self.encoder(real)
        fake = self.generator(seg, reparameterize(mu, logvar))
        return fake, (kld_loss(mu.float(), logvar.float(), self.o.lambda_kld) if kld else None)

    def discriminate(self, seg, fake, real):
        """``(features of fake, features of real)``: one discriminator pass over both (as the reference)."""
        import torch

        b = fake.shape[0]
        out = self.discriminator(torch.cat([torch.cat([seg, fake], 1), torch.cat([seg, real], 1)], 0))
        return [[f[:b] for f in d] for d in out], [[f[b:] for f in d] for d in out]

    def d_loss(self, batch, step: int):
        import torch

        from .gaugan import hinge_d_loss

        seg, real = batch
        with torch.no_grad():
            fake, _ = self.generate(seg, real, kld=False)
        ff, fr = self.discriminate(seg, fake.detach(), real)
        loss = hinge_d_loss([d[-1].float() for d in fr], [d[-1].float() for d in ff])
        with torch.no_grad():
            parts = {"real": float(torch.stack([d[-1].float().mean() for d in fr]).mean()),
                     "fake": float(torch.stack([d[-1].float().mean() for d in ff]).mean())}
        return loss, parts

    def g_loss(self, batch, step: int):
        from .gaugan import feature_matching_loss, hinge_g_loss

        seg, real = batch
        fake, kld = self.generate(seg, real, kld=True)
        ff, fr = self.discriminate(seg, fake, real)
        gan = hinge_g_loss([d[-1].float() for d in ff])
        feat = feature_matching_loss([[f.float() for f in d] for d in ff], [[f.float() for f in d] for d in fr],
                                     self.o.lambda_feat)
        loss, parts = gan + feat, {"gan": float(gan.detach()), "feat": float(feat.detach())}
        if self.vgg is not None and self.o.lambda_vgg > 0:
            vgg = self.vgg(fake.float(), real.float()) * self.o.lambda_vgg
            loss, parts["vgg"] = loss + vgg, float(vgg.detach())
        if kld is not None:
            loss, parts["kld"] = loss + kld, float(kld.detach())
        return loss, parts


@dataclass
class GauGANResult:
    """What :func:`train_gaugan` returns: the trained generator (eval mode), steps done (all calls), the step this
    call resumed from, the loop's history (per-epoch mean losses) and the wall time of this call."""

    generator: Any
    steps_done: int
    resumed_from: int
    history: list
    seconds: float
    transfer: dict | None = None


def train_gaugan(items: Sequence[tuple[np.ndarray, np.ndarray]], label_nc: int, opts: GauGANOptions, *, seed: int,
                 device: str = "cpu", precision: str = "fp32", checkpoint_dir: str | Path | None = None,
                 log: Any = None, fingerprint: dict | None = None, on_checkpoint=None) -> GauGANResult:
    """Train GauGAN on ``items`` (see the module notes); resumable from ``checkpoint_dir / "gaugan"``.

    Raises:
        ConfigError: invalid options or no items; a checkpoint written under other options (the loop's guard).
        WeightsError: an unreadable ``vgg_weights`` file.
    """
    import logging

    from harness import LoopConfig, train

    log = log or logging.getLogger("harness.spade")
    problems = opts.validate()
    if not items:
        problems.append("no training images")
    if problems:
        raise ConfigError("GauGAN training: " + "; ".join(problems))
    vgg = None
    if opts.vgg_weights is not None and opts.lambda_vgg > 0:
        from .gaugan import VGGLoss, load_vgg19_features

        vgg = VGGLoss(load_vgg19_features(opts.vgg_weights))
    task = GauGANTask(items, label_nc, opts, seed=seed, device=device, vgg=vgg, fingerprint=fingerprint)
    transfer = None
    if opts.init_generator is not None:
        from harness import WeightsError, architecture_only

        try:
            transfer = transfer_generator(task.generator, opts.init_generator)
        except WeightsError as exc:
            architecture_only("GauGAN generator (gan.init_generator)", exc)
    if transfer is not None:
        log.info("GauGAN generator initialised from %s: %d tensors loaded, re-initialised: %s", transfer["file"],
                 transfer["loaded"], ", ".join(transfer["reinitialised"]) or "none")
    spe = task.steps_per_epoch
    cfg = LoopConfig(steps=opts.epochs * spe, checkpoint_every=opts.checkpoint_every_epochs * spe,
                     precision=precision, log_every=spe)
    log.info("GauGAN: %d images (%d px crops of %d px squares), %d labels, %d steps per epoch, %d epochs, "
             "perceptual loss %s", len(items), opts.crop_size, opts.load, label_nc, spe, opts.epochs,
             "on" if vgg is not None else "off")
    t0 = time.perf_counter()
    res = train(task, cfg, seed=seed, device=device, log=log, name="gaugan",
                checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir) / "gaugan",
                on_checkpoint=on_checkpoint)
    gen = task.generator.eval()
    return GauGANResult(gen, res.steps_done, res.resumed_from, res.history, time.perf_counter() - t0, transfer)


__all__ = ["GauGANOptions", "GauGANTask", "GauGANResult", "train_gaugan", "transfer_generator", "prepare_item",
           "square_mask"]
