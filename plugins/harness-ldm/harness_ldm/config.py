"""Options of the ``ldm`` strategy and counter, with the ``smoke``, ``paper`` and tiny profiles (no torch here).

Sizes are in pixels of the *network input*: every image is first resized by ``scale`` and shrunk so that its longer
side is at most ``max_side`` (None: full resolution, as the poster and CrowdDiff), and σ of the crowd map is in those
pixels too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from harness import options_to_dict

SPACES = ("latent", "pixel")
FUSIONS = ("pixel-median", "pixel-mean", "count-median")


@dataclass
class VQOptions:
    """The first stage E / D (poster Figure 3): a diffusers ``VQModel`` on 1-channel crowd maps.

    Attributes:
        init: ``None`` (build from the config below, random init), or a hub id / local folder / ``"tiny[:seed]"``
            (:func:`harness.resolve_model`, kind ``vqmodel``) to start from; either way it is trained on the source.
        block_out_channels: channels per level; ``len − 1`` down-samplings give ``f = 2**(len − 1)`` (paper: LDM's
            VQ-f4 (Rombach et al., CVPR 2022, Table 8): ``(128, 256, 512)``, f = 4).
        layers_per_block, norm_num_groups: ResNet blocks per level and GroupNorm groups.
        latent_channels: latent (and code) dimension (poster §"Method": z ∈ R^{1×1×64×64} for a 256 × 256 crowd map,
            i.e. 1 channel at f = 4).
        num_vq_embeddings: codebook size (LDM VQ-f4: 8192).
        mid_attention: self-attention in the encoder's and decoder's middle block (diffusers' default, LDM's).
        steps, batch_size, lr: training (AdamW; reconstruction + diffusers' commitment loss).
        fg_weight: weight of head pixels (map > −1) in the squared reconstruction error (background pixels 1): the
            maps are > 99 % background, and an unweighted error is minimised by erasing the heads. Ours; the poster
            gives no loss.
        eval_every: select on the source val split's reconstruction count MAE every this many steps.
    """

    init: str | None = None
    block_out_channels: tuple[int, ...] = (128, 256, 512)
    layers_per_block: int = 2
    norm_num_groups: int = 32
    latent_channels: int = 3
    num_vq_embeddings: int = 8192
    mid_attention: bool = True
    steps: int = 20000
    batch_size: int = 8
    lr: float = 1e-4
    fg_weight: float = 30.0
    eval_every: int = 2000

    @property
    def factor(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)


@dataclass
class UNetOptions:
    """The denoiser ε_θ on ``[z_t, T(y)]`` (channel-wise concatenation): a diffusers ``UNet2DModel``, or with
    ``cross_attention`` a ``UNet2DConditionModel`` whose attention levels also attend to tokens of the same
    concatenation (the poster: "channel-wise concatenated and further mapped to the intermediate layers of the U-Net
    via a cross-attention layer").

    Attributes:
        init: ``None`` (build from the config below) or a hub id / local folder / ``"tiny[:seed]"``
            (:func:`harness.resolve_model`, kind ``unet2d``) whose in/out channels must match.
        block_out_channels, layers_per_block, norm_num_groups: the UNet (paper latent: LDM-4's 224 · (1, 2, 3, 4),
            2 blocks; paper pixel: CrowdDiff's ``sh_scripts/train_diff.sh``, 192 · (1, 1, 2, 2, 4, 4), 2 blocks).
        attention: per level, whether its blocks have self-attention (LDM-4: at latent 32/16/8; CrowdDiff: at 32/16/8).
        attention_head_dim: channels per attention head (LDM: 32; CrowdDiff: 64).
        mid_attention: self-attention in the middle block (diffusers' default; LDM and CrowdDiff have it).
        cross_attention: the poster's cross-attention conditioning (above); ``context_dim`` is the token width and
            ``context_patch`` the side of the non-overlapping patches of ``[z_t, T(y)]`` that become tokens (a
            strided convolution: 64 × 64 latent / 8 = 64 tokens). The poster gives neither: ours.
    """

    init: str | None = None
    cross_attention: bool = False
    context_dim: int = 256
    context_patch: int = 8
    block_out_channels: tuple[int, ...] = (224, 448, 672, 896)
    layers_per_block: int = 2
    attention: tuple[bool, ...] = (False, True, True, True)
    attention_head_dim: int = 32
    norm_num_groups: int = 32
    mid_attention: bool = True


@dataclass
class DiffusionOptions:
    """DDPM training of ε_θ and T (poster eq. 1): ``‖ε − ε_θ(z_t, t, T(y))‖²`` with t uniform over a
    ``train_timesteps``-step linear β schedule (``beta_start`` → ``beta_end``; guided-diffusion's "linear", as
    CrowdDiff), diffusers ``DDPMScheduler.add_noise``; AdamW; EMA of ε_θ and T (``ema_decay``).
    ``prediction_type``: what the UNet predicts — ``epsilon`` (the poster's eq. 1, LDM, CrowdDiff), or diffusers'
    ``sample`` (z_0) / ``v_prediction`` (the same model and sampler with another regression target).

    Selection: every ``eval_every`` steps the EMA weights count ``val_images`` source val images with a cheap sampler
    (``val_ddim_steps`` DDIM steps, one hypothesis); the lowest count MAE is kept (docs/design.md §6).
    """

    steps: int = 100000
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema_decay: float | None = 0.9999
    train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "epsilon"
    eval_every: int = 5000
    val_ddim_steps: int = 50
    grad_clip: float | None = 1.0


@dataclass
class SamplingOptions:
    """Test-time sampling (poster Figure 4): DDIM with ``ddim_steps`` (poster: 500) and ``eta`` (0: deterministic
    given the start noise); ``hypotheses`` K samples per crop fused by ``fusion``:

    - ``count-median`` (default): the median of the K per-hypothesis counts (points from the hypothesis nearest to
      it);
    - ``pixel-median`` / ``pixel-mean``: the pixel-wise median / mean of the K decoded maps, counted once. These are
      consensus rules: a head survives only where most samples put it at the same pixel, so independently sampled
      dot maps lose heads (smoke, ShanghaiTech B, K = 4: mean count 12 with the pixel median against 35 for one
      sample and for the count median).

    All three are computed for K > 1 and scored as extra outputs; ``fusion`` picks the reported count.

    No rule looks at a label. ``overlap``: pixels of overlap between neighbouring tiles (even; see
    :mod:`harness_ldm.tiling`). ``batch_size``: crops per network call.
    """

    ddim_steps: int = 500
    eta: float = 0.0
    hypotheses: int = 1
    fusion: Literal["pixel-median", "pixel-mean", "count-median"] = "count-median"
    overlap: int = 0
    batch_size: int = 16


@dataclass
class CountingOptions:
    """Contour counting (:func:`harness_ldm.crowdmap.count_heads`): ``threshold`` floor in [0, 1] map units,
    ``otsu``, ``denoise``, ``opening`` (``background`` | ``heads`` | ``none``)."""

    threshold: float = 0.5
    otsu: bool = True
    denoise: bool = False
    opening: Literal["background", "heads", "none"] = "background"


@dataclass
class LDMOptions:
    """All options of the ``ldm`` strategy (and of the ``ldm`` counter's architecture).

    Attributes:
        space: ``latent`` (the poster's LDM: diffusion on VQ latents) or ``pixel`` (CrowdDiff: diffusion on the
            crowd map itself with the RGB crop concatenated; no VQ, T is the identity).
        sigma: σ of the crowd map's Gaussian in px (CrowdDiff: 0.5).
        crop_size: side of the square crops (poster, CrowdDiff: 256).
        scale, max_side: image resize before everything (see the module notes).
        source_images: train on a seeded subset of at most this many source train images (None: all).
        val_images: source val images for model selection (seeded subset).
        cond_channels, cond_width: T(y): RGB crop -> ``cond_channels × crop/f × crop/f`` (poster: 3 channels) through
            a small strided conv net of ``cond_width`` channels (latent space only).
        vq, unet, diffusion, sampling, counting: see their classes.
        report_steps: DDIM step counts of ``harness ldm steps`` (poster profile: 10, 25, 50, 100, 500).
        checkpoint_every: loop checkpoints (steps) of both trainings.
    """

    space: Literal["latent", "pixel"] = "latent"
    sigma: float = 0.5
    crop_size: int = 256
    scale: float = 1.0
    max_side: int | None = None
    source_images: int | None = None
    val_images: int = 8
    cond_channels: int = 3
    cond_width: int = 64
    vq: VQOptions = field(default_factory=VQOptions)
    unet: UNetOptions = field(default_factory=UNetOptions)
    diffusion: DiffusionOptions = field(default_factory=DiffusionOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    counting: CountingOptions = field(default_factory=CountingOptions)
    report_steps: tuple[int, ...] = (10, 25, 50, 100, 500)
    checkpoint_every: int = 1000

    @property
    def factor(self) -> int:
        """Spatial down-sampling of the diffused variable: the VQ's f (latent) or 1 (pixel)."""
        return self.vq.factor if self.space == "latent" else 1

    def validate(self) -> list[str]:
        """Every invalid option, one message each (called by the planner through :func:`harness.parse_or_raise`)."""
        p: list[str] = []
        if self.space not in SPACES:
            p.append(f"space={self.space!r} is not one of {', '.join(SPACES)}")
        if not self.sigma > 0:
            p.append(f"sigma must be > 0 px, got {self.sigma}")
        if not self.scale > 0 or (self.max_side is not None and self.max_side < 8):
            p.append(f"scale must be > 0 and max_side >= 8 or null, got {self.scale}, {self.max_side}")
        for name in ("val_images", "cond_channels", "cond_width", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                p.append(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.source_images is not None and self.source_images < 1:
            p.append(f"source_images must be >= 1 or null, got {self.source_images}")
        v, u, d, s, c = self.vq, self.unet, self.diffusion, self.sampling, self.counting
        if self.space == "latent":
            if len(v.block_out_channels) < 1 or any(ch % v.norm_num_groups for ch in v.block_out_channels):
                p.append(f"vq.block_out_channels {list(v.block_out_channels)} must be non-empty multiples of "
                         f"vq.norm_num_groups {v.norm_num_groups}")
            if v.latent_channels < 1 or v.num_vq_embeddings < 2:
                p.append("vq.latent_channels must be >= 1 and vq.num_vq_embeddings >= 2")
            if v.steps < 0 or v.batch_size < 1 or not v.lr > 0 or v.eval_every < 1 or not v.fg_weight > 0:
                p.append("vq.steps must be >= 0, vq.batch_size and vq.eval_every >= 1, vq.lr and vq.fg_weight > 0")
            if self.cond_width % 8:
                p.append(f"cond_width must be a multiple of 8 (GroupNorm of T), got {self.cond_width}")
        if u.cross_attention and (u.context_dim < 1 or u.context_patch < 1 or (self.crop_size // self.factor)
                                  % u.context_patch):
            p.append(f"unet.context_patch {u.context_patch} must divide the diffused size "
                     f"{self.crop_size // self.factor} and unet.context_dim must be >= 1")
        if len(u.attention) != len(u.block_out_channels):
            p.append(f"unet.attention has {len(u.attention)} entries for {len(u.block_out_channels)} levels")
        if any(ch % u.norm_num_groups for ch in u.block_out_channels) or u.attention_head_dim < 1:
            p.append(f"unet.block_out_channels {list(u.block_out_channels)} must be multiples of unet.norm_num_groups "
                     f"{u.norm_num_groups}, and attention_head_dim >= 1")
        unit = self.factor * 2 ** (len(u.block_out_channels) - 1)
        if not isinstance(self.crop_size, int) or self.crop_size < unit or self.crop_size % unit:
            p.append(f"crop_size must be a multiple of {unit} px (the first stage's f = {self.factor} times the UNet's "
                     f"{2 ** (len(u.block_out_channels) - 1)}), got {self.crop_size}")
        if d.steps < 0 or d.batch_size < 1 or not d.lr > 0 or d.eval_every < 1:
            p.append("diffusion.steps must be >= 0, diffusion.batch_size and eval_every >= 1, diffusion.lr > 0")
        if d.ema_decay is not None and not 0 < d.ema_decay < 1:
            p.append(f"diffusion.ema_decay must lie in (0, 1) or be null, got {d.ema_decay}")
        if d.train_timesteps < 2 or not 0 < d.beta_start < d.beta_end < 1:
            p.append("diffusion.train_timesteps must be >= 2 and 0 < beta_start < beta_end < 1")
        steps = [("sampling.ddim_steps", s.ddim_steps), ("diffusion.val_ddim_steps", d.val_ddim_steps)]
        steps += [(f"report_steps[{i}]", n) for i, n in enumerate(self.report_steps)]
        for name, n in steps:
            if not isinstance(n, int) or not 1 <= n <= d.train_timesteps:
                p.append(f"{name}={n!r} must be an integer in [1, diffusion.train_timesteps={d.train_timesteps}]")
        if not self.report_steps:
            p.append("report_steps must list at least one DDIM step count")
        if s.hypotheses < 1 or s.batch_size < 1:
            p.append(f"sampling.hypotheses and sampling.batch_size must be >= 1, got {s.hypotheses}, {s.batch_size}")
        if s.fusion not in FUSIONS:
            p.append(f"sampling.fusion={s.fusion!r} is not one of {', '.join(FUSIONS)}")
        if not 0 <= s.eta <= 1:
            p.append(f"sampling.eta must lie in [0, 1], got {s.eta}")
        if s.overlap < 0 or s.overlap % 2 or s.overlap > self.crop_size // 2:
            p.append(f"sampling.overlap must be an even number of px in [0, crop_size / 2], got {s.overlap}")
        if not 0 < c.threshold < 1:
            p.append(f"counting.threshold must lie in (0, 1), got {c.threshold}")
        return p

    def to_dict(self) -> dict:
        return options_to_dict(self)

    def training_key(self) -> dict:
        """The options that determine the trained networks (everything but test-time sampling and the report): the
        ``ldm`` and ``ldm-k4`` methods of one source share one training."""
        d = self.to_dict()
        d.pop("sampling")
        d.pop("report_steps")
        return d


def parse_options(values: dict | None, where: str = "ldm") -> LDMOptions:
    """:class:`LDMOptions` from a mapping (a profile, or a saved model's options).

    Raises:
        ConfigError: every unknown key and invalid value, in one line."""
    from harness import parse_or_raise

    return parse_or_raise(LDMOptions, values or {}, where)


#: the poster's sizes and conditioning (256 crops, VQ f = 4 with a 1-channel 64 × 64 latent, T(y) 3 × 64 × 64
#: concatenated channel-wise and attended to by cross-attention, 500 DDIM steps) on LDM-4's denoiser; training lengths
#: and the token embedding are not in the poster (ours, in the range of LDM's and CrowdDiff's schedules); GPU
PAPER = {
    "space": "latent", "sigma": 0.5, "crop_size": 256, "scale": 1.0, "max_side": None, "source_images": None,
    "val_images": 8, "cond_channels": 3, "cond_width": 64,
    "vq": {"block_out_channels": [128, 256, 512], "layers_per_block": 2, "norm_num_groups": 32, "latent_channels": 1,
           "num_vq_embeddings": 8192, "mid_attention": True, "steps": 20000, "batch_size": 8, "lr": 1e-4,
           "fg_weight": 30.0, "eval_every": 2000},
    "unet": {"block_out_channels": [224, 448, 672, 896], "layers_per_block": 2,
             "attention": [False, True, True, True], "attention_head_dim": 32, "norm_num_groups": 32,
             "cross_attention": True, "context_dim": 256, "context_patch": 8},
    "diffusion": {"steps": 100000, "batch_size": 16, "lr": 1e-4, "ema_decay": 0.9999, "train_timesteps": 1000,
                  "beta_start": 1e-4, "beta_end": 0.02, "prediction_type": "epsilon", "eval_every": 5000,
                  "val_ddim_steps": 50},
    "sampling": {"ddim_steps": 500, "eta": 0.0, "hypotheses": 1, "fusion": "count-median", "overlap": 0,
                 "batch_size": 16},
    "counting": {"threshold": 0.5, "otsu": True, "denoise": False, "opening": "background"},
    "report_steps": [10, 25, 50, 100, 500], "checkpoint_every": 1000,
}

#: CrowdDiff's pixel-space model (``sh_scripts/train_diff.sh``: 192 channels, mult (1, 1, 2, 2, 4, 4), attention at
#: 32/16/8, head channels 64, batch 4, lr 1e-4, linear 1000-step schedule) with the same sampler and counting
PAPER_PIXEL = {
    **PAPER, "space": "pixel",
    "unet": {"block_out_channels": [192, 192, 384, 384, 768, 768], "layers_per_block": 2, "cross_attention": False,
             "attention": [False, False, False, True, True, True], "attention_head_dim": 64, "norm_num_groups": 32},
    "diffusion": {**PAPER["diffusion"], "batch_size": 4},
}

#: CPU smoke profile (minutes per cell on two cores): images shrunk to 256 px, 64-px crops, a small VQ (f = 4, 64
#: codes) and UNet built from configs, short schedules, 10 DDIM steps. Two deliberate departures from the paper
#: profile, both measured on ShanghaiTech B (16 test images, same budget): σ = 1 px (a 500-step VQ does not learn
#: 1-px dots: heads decode at −0.3 < the 0.5 level) and v-prediction (ε-prediction: counts correlate 0.22 with the
#: truth after 800 steps; v: 0.84). The ``paper`` profile keeps σ = 0.5 and ε (the poster's eq. 1).
SMOKE = {
    "space": "latent", "sigma": 1.0, "crop_size": 64, "scale": 1.0, "max_side": 256, "source_images": 60,
    "val_images": 4, "cond_channels": 3, "cond_width": 32,
    "vq": {"block_out_channels": [8, 16, 32], "layers_per_block": 1, "norm_num_groups": 8, "latent_channels": 3,
           "num_vq_embeddings": 64, "mid_attention": False, "steps": 500, "batch_size": 4, "lr": 2e-3,
           "fg_weight": 30.0, "eval_every": 100},
    "unet": {"block_out_channels": [16, 32], "layers_per_block": 1, "attention": [False, True],
             "attention_head_dim": 16, "norm_num_groups": 8, "mid_attention": False},
    "diffusion": {"steps": 800, "batch_size": 16, "lr": 2e-3, "ema_decay": 0.99, "train_timesteps": 1000,
                  "beta_start": 1e-4, "beta_end": 0.02, "prediction_type": "v_prediction", "eval_every": 400,
                  "val_ddim_steps": 10},
    "sampling": {"ddim_steps": 10, "eta": 0.0, "hypotheses": 1, "fusion": "count-median", "overlap": 0,
                 "batch_size": 64},
    "counting": {"threshold": 0.5, "otsu": True, "denoise": False, "opening": "background"},
    "report_steps": [2, 5, 10, 20], "checkpoint_every": 200,
}

#: CrowdDiff's pixel-space model in the smoke budget: a (8, 16) UNet on the 64-px map + RGB (its cost grows with the
#: 16× larger diffused variable), 600 steps of batch 8. It does not learn in this budget (ShanghaiTech B, 16 test
#: images: counts correlate −0.2 with the truth; (16, 32) channels or x0-prediction did no better, at 1.6–2.7× the cost)
SMOKE_PIXEL = {
    **SMOKE, "space": "pixel",
    "unet": {"block_out_channels": [8, 16], "layers_per_block": 1, "attention": [False, False],
             "attention_head_dim": 8, "norm_num_groups": 4, "mid_attention": False},
    "diffusion": {**SMOKE["diffusion"], "steps": 600, "batch_size": 8, "eval_every": 300},
}

#: the contract tests' options: seconds on the synthetic pair
TINY = {
    **SMOKE, "crop_size": 32, "max_side": 64, "source_images": 2, "val_images": 1, "cond_width": 8,
    "vq": {**SMOKE["vq"], "block_out_channels": [8, 8, 8], "num_vq_embeddings": 16, "steps": 2, "batch_size": 2,
           "eval_every": 2},
    "unet": {"block_out_channels": [8, 16], "layers_per_block": 1, "attention": [False, False],
             "attention_head_dim": 8, "norm_num_groups": 4},
    "diffusion": {**SMOKE["diffusion"], "steps": 2, "batch_size": 2, "eval_every": 2, "val_ddim_steps": 2},
    "sampling": {**SMOKE["sampling"], "ddim_steps": 2}, "report_steps": [1, 2], "checkpoint_every": 2,
}

__all__ = ["LDMOptions", "VQOptions", "UNetOptions", "DiffusionOptions", "SamplingOptions", "CountingOptions",
           "parse_options", "PAPER", "PAPER_PIXEL", "SMOKE", "SMOKE_PIXEL", "TINY", "SPACES", "FUSIONS"]
