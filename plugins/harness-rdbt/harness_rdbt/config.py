"""Options of the RDBT strategies, with the ``smoke`` and ``paper`` profiles (every knob the paper ablates is one).

Sizes (crops, patches, head sizes, ``merge_px``) are in pixels of the network input, i.e. after the images are
shrunk so that their longer side is at most ``max_side`` (None: full resolution).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from harness import parse_or_raise

MODES = ("rdbt", "regnet", "detnet")
PATCH_SELECTIONS = ("paper", "random")
VGG_INITS = ("random", "csrnet-sha", "imagenet")
CSP_INITS = ("random", "imagenet")
CSP_PRETRAINS = ("none", "widerface")
PHI_ENCODERS = ("vgg10", "dilated-vgg16")


@dataclass
class RDBTConfig:
    """All options (see the module notes for units). Groups:

    - networks: ``vgg_width`` (R), ``resnet_width`` (D), ``phi_width`` (Φ), ``dssinet_scales``,
      ``crf_iterations``, ``csp_backbone`` (timm name), ``vgg_init`` (``random`` | ``imagenet``: torchvision's
      ImageNet VGG-16 (VGG-16-BN with ``vgg_batchnorm``) for the front ends of R and Φ, the paper's §4.2 |
      ``csrnet-sha``: the VGG-16 front end of CSRNet-SHA, its SHA labels recorded in the provenance; both width 1
      only), ``csp_init`` (``random`` | ``imagenet``: torchvision's ImageNet ResNet-50 for D's backbone, §4.2),
      ``vgg_batchnorm`` (R's front end as VGG-16-BN: trains from scratch in a short CPU schedule),
      ``phi_encoder`` (``vgg10``: UNet++ on VGG-16's first 10 convolutions | ``dilated-vgg16``: plus CSRNet's
      dilated back end as the deepest level, the paper's "dilated VGG-16 structure [14]", §3.3).
    - D's WIDER FACE stage (§4.2: CSP is pre-trained on WIDER FACE, then trained on the source's points):
      ``csp_pretrain`` (``none`` | ``widerface``), ``widerface_root`` (the data root holding ``WIDER_FACE/``; None:
      ``$HARNESS_DATA``), ``widerface_images`` (cap on the train images; None: all 12 880), ``widerface_steps``,
      ``widerface_lr`` (Adam); boxes flagged invalid are dropped, a face's box side is ``sqrt(w·h)``.
    - targets/transforms: ``density_scale`` (R's target multiplier), ``ssim_weight`` (λ of DMS-SSIM in R's
      loss), ``mse_weight`` (weight of a pixel MSE term in R's loss: 0 in the paper profile, whose R is trained with
      DMS-SSIM alone, §3.2; 1 in smoke), ``phi_stride`` (Φ's map stride), ``phi_threshold`` (0.2), ``merge_px`` (10), ``psi_beta`` (σ = β ·
      box side), ``det_keep_threshold`` (kept for AP), ``det_count_threshold`` (counted heads), ``nms_iou``,
      ``min_head`` / ``max_head`` / ``default_head`` (pseudo box sides).
    - source training: ``source_images`` (cap), ``crop_size``, ``batch_size``, ``r_steps`` / ``d_steps`` /
      ``phi_steps``, ``r_lr`` / ``d_lr`` / ``phi_lr`` (Adam), ``checkpoint_every`` (steps).
    - target cycles: ``mode`` (``rdbt`` co-training; ``regnet`` / ``detnet`` source-only R / D), ``cycles`` (T),
      ``target_images`` (cap), ``patch_size`` (224), ``patches_per_image`` (2), ``density_range`` ([0.5, 0.7]),
      ``patch_selection`` (``paper`` | ``random``: Table 2 "w/ RS"), ``fusion`` (False: Table 2 "w/o fusion",
      each model fine-tunes on its own predictions), ``finetune_epochs``, ``r_finetune_lr`` (1e-6, last two
      layers), ``d_finetune_lr`` (1e-5), ``allow_target_label_weights`` (accept CSRNet-SHA init on an SHA target).
    """

    mode: str = "rdbt"
    max_side: int | None = None
    vgg_width: float = 1.0
    resnet_width: float = 1.0
    phi_width: float = 1.0
    dssinet_scales: tuple[float, ...] = (1.0, 0.5, 2.0)
    crf_iterations: int = 2
    csp_backbone: str = "resnet50"
    vgg_init: str = "random"
    csp_init: str = "random"
    vgg_batchnorm: bool = False
    phi_encoder: str = "vgg10"
    csp_pretrain: str = "none"
    widerface_root: str | None = None
    widerface_images: int | None = None
    widerface_steps: int = 1000
    widerface_lr: float = 1e-4
    density_scale: float = 100.0
    ssim_weight: float = 1.0
    mse_weight: float = 1.0
    phi_stride: int = 1
    phi_threshold: float = 0.2
    merge_px: float = 10.0
    psi_beta: float = 0.3
    det_keep_threshold: float = 0.05
    det_count_threshold: float = 0.5
    nms_iou: float = 0.5
    min_head: float = 4.0
    max_head: float = 64.0
    default_head: float = 16.0
    source_images: int | None = None
    crop_size: int = 224
    batch_size: int = 4
    r_steps: int = 1000
    d_steps: int = 1000
    phi_steps: int = 1000
    r_lr: float = 1e-5
    d_lr: float = 1e-4
    phi_lr: float = 1e-5
    checkpoint_every: int = 50
    cycles: int = 4
    target_images: int | None = None
    patch_size: int = 224
    patches_per_image: int = 2
    density_range: tuple[float, ...] = (0.5, 0.7)
    patch_selection: str = "paper"
    fusion: bool = True
    finetune_epochs: int = 1
    r_finetune_lr: float = 1e-6
    d_finetune_lr: float = 1e-5
    allow_target_label_weights: bool = False

    @classmethod
    def from_options(cls, options: dict) -> "RDBTConfig":
        """Build from a mapping of options (e.g. a checkpoint's), as the planner does.

        Raises:
            ConfigError: every unknown key and invalid value, in one line."""
        return parse_or_raise(cls, options, "strategy rdbt")

    def validate(self) -> list[str]:
        """Every invalid option, one message each (called by :func:`harness.parse_or_raise` and the planner)."""
        problems: list[str] = []

        def bad(opt, why):
            problems.append(f"option {opt}={getattr(self, opt)!r} {why}")

        if self.mode not in MODES:
            bad("mode", f"is not one of {', '.join(MODES)}")
        if self.patch_selection not in PATCH_SELECTIONS:
            bad("patch_selection", f"is not one of {', '.join(PATCH_SELECTIONS)}")
        if self.phi_encoder not in PHI_ENCODERS:
            bad("phi_encoder", f"is not one of {', '.join(PHI_ENCODERS)}")
        if self.csp_pretrain not in CSP_PRETRAINS:
            bad("csp_pretrain", f"is not one of {', '.join(CSP_PRETRAINS)}")
        if self.widerface_steps < 1:
            bad("widerface_steps", "must be >= 1")
        if self.widerface_images is not None and self.widerface_images < 1:
            bad("widerface_images", "must be >= 1 or null (all)")
        if self.vgg_init not in VGG_INITS:
            bad("vgg_init", f"is not one of {', '.join(VGG_INITS)}")
        if self.mse_weight < 0 or self.ssim_weight < 0 or not (self.mse_weight or self.ssim_weight):
            bad("mse_weight", "and ssim_weight must be >= 0 and not both 0 (R needs a loss)")
        if self.csp_init not in CSP_INITS:
            bad("csp_init", f"is not one of {', '.join(CSP_INITS)}")
        if self.vgg_init == "csrnet-sha" and self.vgg_batchnorm:
            bad("vgg_batchnorm", "cannot be used with vgg_init: csrnet-sha (CSRNet's VGG has no BatchNorm)")
        for opt in ("crop_size", "patch_size"):
            v = getattr(self, opt)
            if not isinstance(v, int) or v < 16 or v % 16:
                bad(opt, "must be a multiple of 16 pixels (R's stride 8, D's padding to 16)")
        if self.phi_stride not in (1, 2, 4, 8):
            bad("phi_stride", "must be 1, 2, 4 or 8")
        for opt in ("r_steps", "d_steps", "phi_steps", "cycles", "finetune_epochs"):
            if not isinstance(getattr(self, opt), int) or getattr(self, opt) < 0:
                bad(opt, "must be a non-negative integer")
        for opt in ("batch_size", "patches_per_image", "checkpoint_every"):
            if not isinstance(getattr(self, opt), int) or getattr(self, opt) < 1:
                bad(opt, "must be a positive integer")
        lo, hi = self.density_range if len(self.density_range) == 2 else (None, None)
        if lo is None or not 0 <= lo <= hi <= 1:
            bad("density_range", "must be [low, high] with 0 <= low <= high <= 1 (paper: [0.5, 0.7])")
        if self.max_side is not None and (not isinstance(self.max_side, int) or self.max_side < 32):
            bad("max_side", "must be an integer >= 32 or null")
        if not 0 < self.phi_threshold < 1:
            bad("phi_threshold", "must lie in (0, 1) (paper: 0.2)")
        if not 0 < self.min_head <= self.default_head <= self.max_head:
            bad("min_head", "must satisfy 0 < min_head <= default_head <= max_head")
        return problems

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dssinet_scales"] = list(self.dssinet_scales)
        d["density_range"] = list(self.density_range)
        return d

    def subset(self, *keys: str) -> dict:
        d = self.to_dict()
        return {k: d[k] for k in keys}


#: CPU smoke profile: images at most 384 px, quarter-width networks, two image scales for DSSINet, short schedules,
#: T = 2 cycles on 16 target images; patches 96 px (≈ the paper's 224 px at the 0.375 image scale of ShanghaiTech).
SMOKE = {
    "max_side": 384, "vgg_width": 0.25, "vgg_batchnorm": True, "resnet_width": 0.25, "phi_width": 0.25,
    "dssinet_scales": [1.0, 0.5],
    "crf_iterations": 1, "phi_stride": 2, "min_head": 2.0, "max_head": 32.0, "default_head": 8.0,
    "det_count_threshold": 0.3, "source_images": 40, "crop_size": 128, "batch_size": 4, "r_steps": 400,
    "d_steps": 200, "phi_steps": 150, "r_lr": 1e-3, "d_lr": 1e-3, "phi_lr": 1e-3, "checkpoint_every": 50,
    "cycles": 2, "target_images": 16, "patch_size": 96, "finetune_epochs": 2, "r_finetune_lr": 1e-4,
    "d_finetune_lr": 1e-4,
}

#: paper profile (§4.2): full-width DSSINet (scales 0.5/1/2) and Φ on ImageNet VGG-16, CSP on ImageNet ResNet-50, Φ
#: trained with Adam 1e-5 on 224 px crops; target: T = 4 cycles on every target train image, two 224 px patches per
#: image, R's last two layers with Adam 1e-6, D with Adam 1e-5; CSP pre-trained on WIDER FACE before the source, Φ's
#: encoder the dilated VGG-16 (CSRNet) structure. Source and WIDER FACE schedules (steps) are not given in the
#: paper: ours.
PAPER = {"vgg_init": "imagenet", "csp_init": "imagenet", "mse_weight": 0.0, "ssim_weight": 1.0,
    "phi_encoder": "dilated-vgg16", "csp_pretrain": "widerface", "widerface_steps": 40000, "widerface_lr": 1e-4,
    "max_side": None, "vgg_width": 1.0, "resnet_width": 1.0, "phi_width": 1.0, "dssinet_scales": [1.0, 0.5, 2.0],
    "crf_iterations": 2, "phi_stride": 1, "source_images": None, "crop_size": 224, "batch_size": 4,
    "r_steps": 40000, "d_steps": 40000, "phi_steps": 20000, "r_lr": 1e-5, "d_lr": 1e-4, "phi_lr": 1e-5,
    "checkpoint_every": 500, "cycles": 4, "target_images": None, "patch_size": 224, "finetune_epochs": 1,
    "r_finetune_lr": 1e-6, "d_finetune_lr": 1e-5,
}

#: the contract tests' options: a few steps on two tiny synthetic images, one cycle on two target images
TINY = {**SMOKE, "max_side": 96, "vgg_width": 0.125, "resnet_width": 0.125, "phi_width": 0.125, "source_images": 2,
        "crop_size": 64, "batch_size": 1, "r_steps": 2, "d_steps": 2, "phi_steps": 2, "checkpoint_every": 2,
        "cycles": 1, "target_images": 2, "patch_size": 32, "finetune_epochs": 1}
