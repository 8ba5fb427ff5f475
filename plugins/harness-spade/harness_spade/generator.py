"""The ``gaugan`` generator component: a trained (or tiny random) :class:`~harness_spade.gaugan.SPADEGenerator`
behind the harness's :class:`harness.Generator` contract (mode ``"mask"``).

``generate(requests)``: one image per :class:`harness.GenerationRequest` — its ``label_mask`` (``(H, W)`` ids
``0 … label_nc − 1``; ids outside are refused in one line) is resized (nearest) to :meth:`output_size` of the request's
``size`` and one-hot encoded; its ``seed`` draws the style vector z ~ N(0, I) (``torch.Generator`` seeded with it;
report eq. 6's r_vec), so k seeds give k images of one mask (a generator without the VAE ignores the seed: it is a
deterministic function of the mask). A request without a mask is generated from an all-background map.

Weights files (written by :func:`save_generator`, read by :func:`load_generator`): a ``torch.save`` dict
``{"format": "harness-spade-gaugan", "version": 1, "config", "label_names", "trained_on", "about", "generator"}``
(``generator``: the state dict). :meth:`GauGANGenerator.key` holds a SHA-256 of the state dict's tensors, so images
cached under one set of weights are never reused for another.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from harness import ConfigError, GenerationRequest, Provenance, SyntheticImage, WeightsError, load_into

FORMAT = "harness-spade-gaugan"
#: the untrained tiny generator of the contract tests (2 labels, widths 32 … 2, 8-d style vector, 32-px multiple)
TINY_CONFIG = {"label_nc": 2, "ngf": 2, "upsampling": "normal", "use_vae": True, "z_dim": 8, "base": 1, "hidden": 8,
               "norm": "batch", "spectral": True}


def build_generator(config: dict):
    """A :class:`~harness_spade.gaugan.SPADEGenerator` from its config dict."""
    from .gaugan import SPADEGenerator

    c = dict(config)
    return SPADEGenerator(c.pop("label_nc"), **c)


def state_sha256(module: Any) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and values of every tensor, in name order)."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        a = t.detach().cpu().contiguous().numpy()
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save_generator(path: str | Path, generator: Any, config: dict, *, label_names: Sequence[str],
                   trained_on: Sequence[str] = (), about: dict | None = None) -> None:
    """Write a weights file of ``generator`` (see the module notes); ``about``: JSON-ready facts (options, steps)."""
    import torch

    state = {k: v.detach().cpu() for k, v in generator.state_dict().items()}
    with open(path, "wb") as fh:
        torch.save({"format": FORMAT, "version": 1, "config": dict(config), "label_names": list(label_names),
                    "trained_on": sorted(trained_on), "about": about or {}, "generator": state}, fh)


def load_generator(path: str | Path) -> dict:
    """The dict of a weights file (see the module notes).

    Raises:
        WeightsError: missing, unreadable or not a GauGAN weights file of this plugin (one line)."""
    from harness import read_checkpoint

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"GauGAN weights {path} do not exist: pass a file written by a spade cell "
                           f"(cache spade/gaugan) as option 'generator_weights', or 'tiny'")
    doc = read_checkpoint(p, "GauGAN weights (a file written by harness-spade)")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a harness-spade GauGAN weights file (format {FORMAT!r})")
    return doc


def round_size(height: int, width: int, multiple: int) -> tuple[int, int]:
    """``(height, width)`` rounded to the nearest multiple of ``multiple`` (at least one multiple)."""
    return tuple(max(multiple, int(round(s / multiple)) * multiple) for s in (height, width))


class GauGANGenerator:
    """GauGAN as a :class:`harness.Generator` (see the module notes).

    Args:
        weights: a weights file (:func:`save_generator`) or ``"tiny[:seed]"`` (an untrained :data:`TINY_CONFIG`).
        device: ``cpu`` / ``cuda[:n]``.

    Attributes:
        label_names: the labels the generator was trained on (``label_nc = len(label_names)``).
        multiple: output sides are multiples of it (2^upsamplings).
        provenance: ``trained_on`` = the datasets whose images and masks trained it.

    Raises:
        WeightsError: an unreadable weights file.
    """

    modes = ("mask",)

    def __init__(self, weights: str = "tiny", device: str = "cpu"):
        import torch

        self.device = device
        if weights == "tiny" or (weights.startswith("tiny:") and weights[5:].isdigit()):
            config = dict(TINY_CONFIG)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(weights[5:]) if ":" in weights else 0)
                self.net = build_generator(config)
            self.label_names = ("background", "dense crowd")
            trained_on, what = (), f"random-init ({weights})"
        else:
            doc = load_generator(weights)
            config = doc["config"]
            self.net = build_generator(config)
            load_into(self.net, doc["generator"], "GauGAN generator (its saved config)", str(weights))
            self.label_names = tuple(doc["label_names"])
            trained_on, what = doc.get("trained_on", ()), str(Path(weights).name)
        if len(self.label_names) != config["label_nc"]:
            raise WeightsError(f"{weights}: {len(self.label_names)} label names for label_nc {config['label_nc']}")
        self.config = dict(config)
        self.net = self.net.to(device).eval()
        self.multiple = int(self.net.multiple)
        self.weights_sha256 = state_sha256(self.net)
        self.provenance = Provenance(weights=f"gaugan:{what}", trained_on=frozenset(trained_on),
                                     sha256=self.weights_sha256)

    @property
    def label_nc(self) -> int:
        return int(self.config["label_nc"])

    def key(self) -> dict:
        """The generator's identity for cache keys: architecture config and the weights' state-dict hash."""
        return {"model": "gaugan", "config": self.config, "label_names": list(self.label_names),
                "weights_sha256": self.weights_sha256, "dtype": "float32"}

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """The generated size for a request of ``height × width`` (rounded to :attr:`multiple`)."""
        return round_size(height, width, self.multiple)

    def style(self, seed: int):
        """The ``(1, z_dim)`` style vector of ``seed`` (None without the VAE)."""
        import torch

        if not self.config.get("use_vae", True):
            return None
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        return torch.randn(1, int(self.config["z_dim"]), generator=g).to(self.device)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[SyntheticImage]:
        """One ``(h, w, 3) uint8`` image per request (``h, w`` = :meth:`output_size` of its size).

        Raises:
            DataError: a label mask with ids outside ``0 … label_nc − 1`` or non-integer values (one line).
            ConfigError: a request with an init image (not an img2img model)."""
        import torch
        from PIL import Image

        from .gaugan import one_hot

        out = []
        for req in requests:
            if req.init_image is not None:
                raise ConfigError("gaugan takes label masks, not init images (img2img)")
            h, w = self.output_size(*req.size)
            mask = np.zeros((h, w), np.int64) if req.label_mask is None else np.asarray(req.label_mask)
            seg = one_hot(mask, self.label_nc)  # validates the ids before any resizing
            if mask.shape != (h, w):
                lab = Image.fromarray(mask.astype(np.uint8)).resize((w, h), Image.NEAREST)
                seg = one_hot(np.asarray(lab), self.label_nc)
            with torch.no_grad():
                img = self.net(seg.to(self.device), self.style(req.seed))[0]
            arr = ((img.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
            out.append(SyntheticImage(image=np.ascontiguousarray(arr), request=req,
                                      meta={"model": "gaugan", "size": [h, w], "seed": int(req.seed)}))
        return out


__all__ = ["GauGANGenerator", "TINY_CONFIG", "build_generator", "save_generator", "load_generator", "state_sha256",
           "round_size", "FORMAT"]
