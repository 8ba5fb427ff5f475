"""The networks: first stage E / D (diffusers ``VQModel``), condition encoder T(y), denoiser ε_θ (diffusers
``UNet2DModel``), the DDPM / DDIM schedulers, and :class:`LDMNet` holding them (poster Figures 3–4).

The pattern is diffusers' ``LDMSuperResolutionPipeline``: a ``VQModel`` with f = 4 (the poster: a 1-channel latent),
a ``UNet2DModel`` whose input is the noisy latent concatenated channel-wise with the condition at every step (with
``unet.cross_attention``, the poster's conditioning: a ``UNet2DConditionModel`` on the same input whose attention
levels also attend to tokens of that concatenation, :class:`ContextTokens`), a ``DDIMScheduler``; the latent is decoded by ``VQModel.decode`` (which quantises: LDM's "quantisation absorbed into the
decoder", Rombach et al., CVPR 2022, §3). Diffusion runs on ``latent_scale · E(x)`` (E's pre-quantisation output,
scaled to unit standard deviation over the training crops, as Stable Diffusion's ``scaling_factor``).

Pixel space (CrowdDiff, Ranasinghe et al., CVPR 2024): no VQ; the denoiser sees the 1-channel crowd map concatenated
with the RGB crop in [-1, 1] (T = identity) and predicted maps are clipped to [-1, 1] at every DDIM step
(``clip_sample``, guided-diffusion's ``clip_denoised``).
"""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from harness import ConfigError, count_params, stage

from .config import LDMOptions, UNetOptions, VQOptions


@contextlib.contextmanager
def seeded(seed: int | None):
    """Run the enclosed initialisation with torch's global RNG seeded (and restored afterwards)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield


def build_vq(o: VQOptions, crop: int, cache_root: Any = None):
    """The first stage: a diffusers ``VQModel`` (1 → 1 channel, ``o.latent_channels`` latent channels, f =
    ``2**(len(block_out_channels) − 1)``), from ``o.init`` (hub id / folder / ``tiny``) or from the config.

    Raises:
        WeightsError: ``o.init`` cannot be resolved (one line, from :func:`harness.resolve_model`).
        ConfigError: a resolved model whose channels or f do not match the options."""
    from diffusers import VQModel

    if o.init is not None:
        from harness import quiet_hf, resolve_model

        quiet_hf()
        folder = resolve_model(o.init, kind="vqmodel", cache_root=cache_root, what="VQ first stage",
                               option="vq.init").folder
        vq = VQModel.from_pretrained(str(folder))
        cfg = vq.config
        if (cfg.in_channels, cfg.latent_channels, 2 ** (len(cfg.block_out_channels) - 1)) != \
                (1, o.latent_channels, o.factor):
            raise ConfigError(f"vq.init {o.init!r} has in_channels {cfg.in_channels}, latent_channels "
                              f"{cfg.latent_channels}, f {2 ** (len(cfg.block_out_channels) - 1)}; the options need 1, "
                              f"{o.latent_channels}, {o.factor} (set vq.block_out_channels / latent_channels to match)")
        return vq
    L = len(o.block_out_channels)
    return VQModel(in_channels=1, out_channels=1, block_out_channels=tuple(o.block_out_channels),
                   down_block_types=("DownEncoderBlock2D",) * L, up_block_types=("UpDecoderBlock2D",) * L,
                   latent_channels=o.latent_channels, num_vq_embeddings=o.num_vq_embeddings,
                   vq_embed_dim=o.latent_channels, norm_num_groups=o.norm_num_groups,
                   layers_per_block=o.layers_per_block, sample_size=crop, mid_block_add_attention=o.mid_attention)


def build_unet(o: UNetOptions, sample_size: int, in_channels: int, out_channels: int, cache_root: Any = None):
    """The denoiser: a diffusers ``UNet2DModel`` (``in_channels`` = diffused channels + condition channels), or with
    ``o.cross_attention`` a ``UNet2DConditionModel`` (``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D`` on the levels
    with ``attention``, ``cross_attention_dim = o.context_dim``), from ``o.init`` or from the config
    (``AttnDownBlock2D`` / ``AttnUpBlock2D`` on the levels with ``attention``).

    Raises:
        WeightsError: ``o.init`` cannot be resolved. ConfigError: its channels do not match."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    cls = UNet2DConditionModel if o.cross_attention else UNet2DModel
    if o.init is not None:
        from harness import quiet_hf, resolve_model

        quiet_hf()
        folder = resolve_model(o.init, kind="unet2d", cache_root=cache_root, what="denoising UNet",
                               option="unet.init").folder
        unet = cls.from_pretrained(str(folder))
        if (unet.config.in_channels, unet.config.out_channels) != (in_channels, out_channels):
            raise ConfigError(f"unet.init {o.init!r} maps {unet.config.in_channels} -> {unet.config.out_channels} "
                              f"channels; this model needs {in_channels} -> {out_channels}")
        return unet
    if o.cross_attention:
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in o.attention)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(o.attention))
        heads = tuple(max(1, ch // o.attention_head_dim) for ch in o.block_out_channels)
        return UNet2DConditionModel(
            sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
            layers_per_block=o.layers_per_block, block_out_channels=tuple(o.block_out_channels),
            down_block_types=down, up_block_types=up, cross_attention_dim=o.context_dim,
            attention_head_dim=heads, norm_num_groups=o.norm_num_groups,
            mid_block_type="UNetMidBlock2DCrossAttn" if o.mid_attention else None)
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in o.attention)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(o.attention))
    return UNet2DModel(sample_size=sample_size, in_channels=in_channels, out_channels=out_channels,
                       layers_per_block=o.layers_per_block, block_out_channels=tuple(o.block_out_channels),
                       down_block_types=down, up_block_types=up, attention_head_dim=o.attention_head_dim,
                       norm_num_groups=o.norm_num_groups, add_attention=o.mid_attention)


class ContextTokens(nn.Module):
    """Tokens of ``[z_t, T(y)]`` for the UNet's cross-attention: non-overlapping ``patch × patch`` patches of the
    ``(B, C, s, s)`` concatenation embedded by a strided convolution into ``(B, (s / patch)², dim)`` (the poster maps
    the concatenation "to the intermediate layers of the U-Net via a cross-attention layer" without giving the
    embedding: ours, as a ViT patch embedding)."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.embed = nn.Conv2d(in_channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x).flatten(2).transpose(1, 2)


class CondEncoder(nn.Module):
    """T(y): RGB crop ``(B, 3, S, S)`` in [-1, 1] -> ``(B, out_channels, S/f, S/f)`` (the poster's "domain-specific
    encoder that adjusts the dimensions"): a 3×3 conv, ``log2 f`` stride-2 3×3 convs (GroupNorm + SiLU), a 3×3 conv
    out. Our design: the poster gives only its input and output shapes."""

    def __init__(self, out_channels: int = 3, width: int = 64, factor: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.SiLU()]
        f = 1
        while f < factor:
            layers += [nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GroupNorm(8, width), nn.SiLU()]
            f *= 2
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.SiLU(), nn.Conv2d(width, out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        return self.net(rgb)


def ddpm_scheduler(o: LDMOptions):
    """diffusers ``DDPMScheduler`` of training: ``train_timesteps`` steps, linear β from ``beta_start`` to ``beta_end``,
    ``prediction_type`` (ε: poster eq. 1)."""
    from diffusers import DDPMScheduler

    d = o.diffusion
    return DDPMScheduler(num_train_timesteps=d.train_timesteps, beta_schedule="linear", beta_start=d.beta_start,
                         beta_end=d.beta_end, prediction_type=d.prediction_type, clip_sample=o.space == "pixel")


def ddim_scheduler(o: LDMOptions):
    """diffusers ``DDIMScheduler`` over the training schedule (same β); predictions clipped to [-1, 1] in pixel
    space."""
    from diffusers import DDIMScheduler

    d = o.diffusion
    return DDIMScheduler(num_train_timesteps=d.train_timesteps, beta_schedule="linear", beta_start=d.beta_start,
                         beta_end=d.beta_end, prediction_type=d.prediction_type, clip_sample=o.space == "pixel",
                         set_alpha_to_one=True)


def to_unit(images: np.ndarray, device) -> torch.Tensor:
    """``(B, S, S, 3) uint8`` -> ``(B, 3, S, S) float32`` in [-1, 1] (x / 127.5 − 1, CrowdDiff's image scaling)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class LDMNet(nn.Module):
    """The LDM crowd-map model: ``vq`` (E / D; None in pixel space), ``cond`` (T), ``unet`` (ε_θ), and the buffers
    ``latent_scale`` (diffusion runs on ``latent_scale · E(x)``) and ``normaliser`` (crowd map -> density).
    ``saved_configs`` (:func:`configs` of a saved model) rebuild the diffusers networks without resolving ``init``.

    Shapes: crops ``S × S``; diffused variable ``(B, C, S/f, S/f)`` with ``C`` = ``vq.latent_channels`` (latent) or 1
    (pixel), ``f`` = VQ factor or 1."""

    def __init__(self, options: LDMOptions, *, seed: int | None = 0, cache_root: Any = None,
                 saved_configs: dict | None = None):
        super().__init__()
        o = options
        self.space = o.space
        self.crop = int(o.crop_size)
        self.factor = o.factor
        saved = saved_configs or {}
        with seeded(seed):
            if o.space == "latent":
                if saved.get("vq") is not None:
                    from diffusers import VQModel

                    self.vq = VQModel.from_config(saved["vq"])
                else:
                    self.vq = build_vq(o.vq, self.crop, cache_root)
                self.channels = int(o.vq.latent_channels)
                self.cond = CondEncoder(o.cond_channels, o.cond_width, self.factor)
                cond_ch = o.cond_channels
            else:
                self.vq = None
                self.channels = 1
                self.cond = nn.Identity()
                cond_ch = 3
            if saved.get("unet") is not None:
                from diffusers import UNet2DConditionModel, UNet2DModel

                cls = UNet2DConditionModel if saved["unet"].get("cross_attention_dim") else UNet2DModel
                self.unet = cls.from_config(saved["unet"])
            else:
                self.unet = build_unet(o.unet, self.crop // self.factor, self.channels + cond_ch, self.channels,
                                       cache_root)
            self.context = ContextTokens(self.channels + cond_ch, o.unet.context_dim, o.unet.context_patch) \
                if o.unet.cross_attention else None
        self.register_buffer("latent_scale", torch.tensor(1.0))
        self.register_buffer("normaliser", torch.tensor(1.0))

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def latent_shape(self, n: int) -> tuple[int, int, int, int]:
        s = self.crop // self.factor
        return (n, self.channels, s, s)

    def encode_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """Crowd maps ``(B, 1, S, S)`` in [-1, 1] -> the diffused variable (``latent_scale · E(x)``, or ``x``)."""
        if self.vq is None:
            return maps
        return self.vq.encode(maps).latents * self.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """The diffused variable -> crowd maps ``(B, 1, S, S)`` clipped to [-1, 1] (D quantises first)."""
        if self.vq is None:
            return z.clamp(-1, 1)
        return self.vq.decode(z / self.latent_scale).sample.clamp(-1, 1)

    def eps(self, z_t: torch.Tensor, t, cond: torch.Tensor) -> torch.Tensor:
        """ε_θ(z_t, t, T(y)): the UNet on ``[z_t, cond]`` (channel-wise concatenation); with cross-attention its
        attention levels also attend to the tokens of that concatenation (:class:`ContextTokens`)."""
        x = torch.cat([z_t, cond], dim=1)
        if self.context is None:
            return self.unet(x, t).sample
        return self.unet(x, t, encoder_hidden_states=self.context(x)).sample


def configs(net: LDMNet) -> dict:
    """The diffusers configs of the networks (to rebuild them from a saved state dict)."""
    return {"vq": None if net.vq is None else dict(net.vq.config), "unet": dict(net.unet.config)}


@torch.no_grad()
def ddim_sample(net: LDMNet, cond: torch.Tensor, scheduler, *, steps: int, eta: float, generator: torch.Generator,
                batch_size: int, stage_label: str = "sample") -> torch.Tensor:
    """DDIM sampling (Song et al., ICLR 2021; diffusers ``DDIMScheduler``) of one map per condition, decoded.

    Args:
        net: the model (eval mode).
        cond: ``(B, c, S/f, S/f)`` conditions T(y) (computed once, reused at every step).
        scheduler: a ``DDIMScheduler`` (its timesteps are set here).
        steps: DDIM steps.
        eta: DDIM η (0: deterministic given the start noise).
        generator: the only source of randomness: the start noise ``(B, C, S/f, S/f)`` is drawn from it on the CPU
            in one call, then (η > 0) each step's noise, chunk by chunk.
        batch_size: conditions per network call.
        stage_label: the dry-run stages' prefix (``"<label>: DDIM step"``, ``"<label>: decode"``): the validation
            sampler of training and the test-time sampler are separate stages, each nested in its caller.

    Returns:
        ``(B, S, S) float32`` crowd maps in [-1, 1] on the CPU.
    """
    scheduler.set_timesteps(int(steps))
    device = cond.device
    z_all = torch.randn(net.latent_shape(cond.shape[0]), generator=generator, dtype=torch.float32)
    z_all = z_all * scheduler.init_noise_sigma
    out = []
    n_batches = -(-cond.shape[0] // batch_size)
    # dry-run stages (harness.stages): a unit is one network call on a batch; once a stage has run its units the
    # remaining calls are skipped (a dry run measures cost, the maps are not used)
    with stage(f"{stage_label}: DDIM step", units=n_batches * len(scheduler.timesteps), per_cell=True,
               unit=f"U-Net call (≤{batch_size} crops)", params=count_params(net.unet)) as steps_stage, \
            stage(f"{stage_label}: decode", units=n_batches, unit=f"decode (≤{batch_size} crops)",
                  per_cell=True) as decode_stage:
        for i in range(0, cond.shape[0], batch_size):
            z = z_all[i:i + batch_size].to(device)
            c = cond[i:i + batch_size]
            for t in scheduler.timesteps:
                if steps_stage.done:
                    break
                with steps_stage.unit():
                    eps = net.eps(z, t.to(device).expand(z.shape[0]), c).float()
                    z = scheduler.step(eps, t, z, eta=eta, generator=generator if eta > 0 else None).prev_sample
            if decode_stage.done:
                out.append(torch.zeros((z.shape[0], net.crop, net.crop)))
                continue
            with decode_stage.unit():
                out.append(net.decode(z).float()[:, 0].cpu())
    return torch.cat(out) if out else torch.zeros((0, net.crop, net.crop))


@torch.no_grad()
def reconstruct(net: LDMNet, maps: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """D(E(x)): crowd maps ``(B, 1, S, S)`` through the first stage (quantised), ``(B, S, S)`` on the CPU."""
    out = []
    for i in range(0, maps.shape[0], batch_size):
        out.append(net.decode(net.encode_maps(maps[i:i + batch_size])).float()[:, 0].cpu())
    return torch.cat(out)


__all__ = ["LDMNet", "CondEncoder", "ContextTokens", "build_vq", "build_unet", "ddpm_scheduler", "ddim_scheduler", "ddim_sample",
           "reconstruct", "to_unit", "seeded", "configs"]
