"""Options of the ``dmap`` strategy (importable without torch: the plugin registers them at load time)."""
from __future__ import annotations

from dataclasses import dataclass

NETWORKS = ("vgg", "nopool")
MAPS = ("circle", "gaussian")
VGG_INITS = ("imagenet", "random")
#: bump when a change invalidates cached models
CACHE_VERSION = 1


@dataclass
class DmapOptions:
    """Options of ``dmap`` (sizes in pixels of the resized network input).

    Attributes:
        network: ``vgg`` (§7) | ``nopool`` (§8). width: channel multiplier (1.0 = the report's).
        vgg_init: ``imagenet`` (torchvision's VGG-16 file for the VGG layers; width 1 only) | ``random``.
        maps: ``circle`` (§6) | ``gaussian`` (§11). radius: circle radius; sigma: Gaussian σ (both ours: the report
            gives neither). map_scale: the map target multiplier (Gaussian maps hold ~1e-2 per pixel).
        input_size: the side every image is resized to (224).
        regressor_hidden / regressor_layers: the count regressor (4028 × 3, §12). count_scale: the regressor's target
            is count / count_scale.
        train_images / val_images: caps on the source images used (None: all; the report trained on 1000 and 2000).
        batch_size, map_epochs, map_lr, regressor_epochs, regressor_lr: Adam (Keras' default optimiser settings
            are not given: ours).
        checkpoint_every: optimiser steps between checkpoints.
    """

    network: str = "nopool"
    width: float = 1.0
    vgg_init: str = "imagenet"
    maps: str = "circle"
    radius: float = 2.0
    sigma: float = 2.0
    map_scale: float = 1.0
    input_size: int = 224
    regressor_hidden: int = 4028
    regressor_layers: int = 3
    count_scale: float = 100.0
    train_images: int | None = None
    val_images: int | None = None
    batch_size: int = 8
    map_epochs: int = 20
    map_lr: float = 1e-3
    regressor_epochs: int = 20
    regressor_lr: float = 1e-4
    checkpoint_every: int = 200

    def validate(self) -> list[str]:
        p = []
        if self.network not in NETWORKS:
            p.append(f"network {self.network!r} is not one of {', '.join(NETWORKS)}")
        if self.maps not in MAPS:
            p.append(f"maps {self.maps!r} is not one of {', '.join(MAPS)}")
        if self.vgg_init not in VGG_INITS:
            p.append(f"vgg_init {self.vgg_init!r} is not one of {', '.join(VGG_INITS)}")
        if self.network == "vgg" and self.vgg_init == "imagenet" and self.width != 1.0:
            p.append(f"vgg_init imagenet needs width 1.0 (the file's channels), got width {self.width}")
        if self.network == "vgg" and self.input_size % 4:
            p.append(f"input_size must be a multiple of 4 for the vgg network (two pools, × 4 up-sampling), got "
                     f"{self.input_size}")
        if self.input_size < 8 or not self.width > 0 or not self.radius > 0 or not self.sigma > 0:
            p.append("input_size must be >= 8 and width, radius and sigma > 0")
        if not (self.map_scale > 0 and self.count_scale > 0 and self.map_lr > 0 and self.regressor_lr > 0):
            p.append("map_scale, count_scale, map_lr and regressor_lr must be > 0")
        for name in ("batch_size", "map_epochs", "regressor_epochs", "regressor_hidden", "regressor_layers",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                p.append(f"{name} must be >= 1, got {getattr(self, name)}")
        return p


__all__ = ["DmapOptions", "NETWORKS", "MAPS", "VGG_INITS", "CACHE_VERSION"]
