"""Pretrained initialisations and the one state-dict loader (docs/design.md §9).

Two jobs, each done once for the core and every plugin:

- :func:`read_checkpoint` / :func:`read_state_dict` read a local weights file — a torch pickle (read with
  ``weights_only=True``), ``.safetensors`` or ``.npz`` — and unwrap the usual containers (``{"state_dict": …}``,
  ``{"model": …}``, ``module.`` prefixes of DataParallel); :func:`load_into` loads a state dict into a module and
  reports, in one line naming the file, keys that do not fit. Nothing else in the project calls ``torch.load``.
- :func:`pretrained_backbone` resolves ``weights="imagenet"`` (or a local file) for the backbones the methods use —
  torchvision's ImageNet-1k files of ResNet-18/50, VGG-16, VGG-16-BN and VGG-19 — without downloading: the file is
  looked up as ``$HARNESS_WEIGHTS/imagenet/<file>``, ``$HARNESS_WEIGHTS/<file>`` and in torch's hub cache
  (``$TORCH_HOME/hub/checkpoints/<file>``, where ``torchvision`` itself keeps it). Absent, one line names the file,
  the URL it comes from and where to put it. The result records the file's SHA-256 and that its labels are
  ImageNet's (an "other" dataset: neither source nor target, but the leaderboard lists it under labels used).

File names and URLs are torchvision's (``torchvision.models.*_Weights.IMAGENET1K_V1``), read from torchvision's
weight enums (reading them downloads nothing).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import WeightsError

#: backbone name -> torchvision weights enum (class name, member) of its ImageNet-1k file
IMAGENET_WEIGHTS = {"resnet18": ("ResNet18_Weights", "IMAGENET1K_V1"),
                    "resnet50": ("ResNet50_Weights", "IMAGENET1K_V1"),
                    "vgg16": ("VGG16_Weights", "IMAGENET1K_V1"),
                    "vgg16_bn": ("VGG16_BN_Weights", "IMAGENET1K_V1"),
                    "vgg19": ("VGG19_Weights", "IMAGENET1K_V1")}
#: labels an ImageNet initialisation carries into a cell (for the leakage flags; never a benchmark's name)
IMAGENET_LABELS = "ImageNet"
_CONTAINERS = ("state_dict", "model", "state", "net")


def read_checkpoint(path: str | os.PathLike, what: str = "weights") -> Any:
    """The object stored in a local weights file (``.safetensors`` / ``.npz``: a dict of tensors; anything else:
    ``torch.load(..., map_location="cpu", weights_only=True)``).

    Raises:
        WeightsError: the file does not exist or cannot be read (one line naming ``what`` and the file)."""
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"{what}: {p} does not exist")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(p))
        if p.suffix == ".npz":
            import numpy as np

            with np.load(p, allow_pickle=False) as z:
                return {k: torch.from_numpy(np.asarray(z[k])) for k in z.files}
        return torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one line
        raise WeightsError(f"{what}: {p} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                           f"give a torch state dict (.pth/.pt), .safetensors or .npz file") from None


def unwrap_state_dict(obj: Any, what: str = "weights", source: str = "") -> dict:
    """The ``{name: tensor}`` state dict inside ``obj`` (itself, or under ``state_dict`` / ``model`` / ``state`` /
    ``net``), with DataParallel's ``module.`` prefixes removed.

    Raises:
        WeightsError: no state dict inside."""
    import torch

    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _CONTAINERS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{what}: {source or 'the file'} holds no state dict (a mapping of names to tensors)")
    return {str(k).removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def read_state_dict(path: str | os.PathLike, what: str = "weights", *, select: str | None = None) -> dict:
    """:func:`read_checkpoint` + :func:`unwrap_state_dict`; ``select``: keep only keys under this prefix (e.g.
    ``"features."`` of a torchvision VGG), with the prefix removed.

    Raises:
        WeightsError: missing or unreadable file, no state dict, nothing under ``select``."""
    state = unwrap_state_dict(read_checkpoint(path, what), what, str(path))
    if select is not None:
        state = {k[len(select):]: v for k, v in state.items() if k.startswith(select)}
        if not state:
            raise WeightsError(f"{what}: {path} has no keys under {select!r}: give a file of the expected layout")
    return state


@dataclass(frozen=True)
class LoadReport:
    """What :func:`load_into` loaded: ``loaded`` keys, module keys left at their initialisation (``missing``) and
    file keys not used (``ignored``)."""

    loaded: int
    missing: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


def load_into(module: Any, state: Mapping, what: str = "weights", source: str = "", *,
              ignore: Iterable[str] = (), allow_missing: Iterable[str] = (), allow_unused: bool = False,
              rename: Callable[[str], str] | None = None) -> LoadReport:
    """Load ``state`` into ``module`` strictly, except where told otherwise.

    Args:
        ignore: key prefixes of the file to drop (e.g. ``("fc.",)``: the ImageNet classifier).
        allow_missing: key prefixes of the module that may stay at their initialisation (new heads).
        allow_unused: keys of the file that the module does not have are dropped (a truncated backbone, e.g. the
            first ten convolutions of VGG-16) instead of refused.
        rename: maps a file key to the module's name for it.

    Raises:
        WeightsError: a key of the file whose shape differs from the module's (e.g. another width), an unused key
            (unless ``allow_unused``), or a module key missing from the file outside ``allow_missing`` — one line
            naming ``what``, the file and the first offending keys."""
    ignore, allow_missing = tuple(ignore), tuple(allow_missing)
    own = module.state_dict()
    state = {(rename(k) if rename else k): v for k, v in state.items() if not k.startswith(ignore)}
    shape = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    unused = sorted(k for k in state if k not in own)
    missing = sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked"))
    bad_missing = [k for k in missing if not k.startswith(allow_missing)]
    where = f"{what}: {source or 'the state dict'}"
    if shape:
        k = shape[0]
        raise WeightsError(f"{where} does not fit: {len(shape)} keys of another shape (e.g. {k} "
                           f"{tuple(state[k].shape)} vs {tuple(own[k].shape)}); build the network at the file's "
                           f"size (width 1.0) or give a file of the same architecture")
    if unused and not allow_unused:
        raise WeightsError(f"{where} does not fit: {len(unused)} keys the network lacks (e.g. {unused[:2]}); give a "
                           f"file of the same architecture")
    if bad_missing:
        raise WeightsError(f"{where} does not fit: {len(bad_missing)} keys of the network are not in the file (e.g. "
                           f"{bad_missing[:2]}); give a file of the same architecture")
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    return LoadReport(loaded=len(state) - len(unused), missing=tuple(missing), ignored=tuple(unused))


# ------------------------------------------------------------------------------------------ ImageNet backbones


def imagenet_file(arch: str) -> tuple[str, str]:
    """``(file name, url)`` of torchvision's ImageNet-1k weights of ``arch`` (e.g. ``resnet50-0676ba61.pth``).

    Raises:
        WeightsError: ``arch`` is not one of :data:`IMAGENET_WEIGHTS`."""
    if arch not in IMAGENET_WEIGHTS:
        raise WeightsError(f"no ImageNet weights are known for backbone {arch!r}: choose one of "
                           f"{', '.join(IMAGENET_WEIGHTS)}, or pass a local state-dict file")
    import torchvision.models as tvm

    enum_name, member = IMAGENET_WEIGHTS[arch]
    url = getattr(getattr(tvm, enum_name), member).url
    return url.rsplit("/", 1)[-1], url


def imagenet_candidates(arch: str) -> list[Path]:
    """Where ``weights="imagenet"`` looks for ``arch``'s file, in order (see the module notes)."""
    import torch

    fname, _ = imagenet_file(arch)
    out = []
    if os.environ.get("HARNESS_WEIGHTS"):
        root = Path(os.environ["HARNESS_WEIGHTS"]).expanduser()
        out += [root / "imagenet" / fname, root / fname]
    out.append(Path(torch.hub.get_dir()) / "checkpoints" / fname)
    return out


def resolve_pretrained(arch: str, weights: str | os.PathLike, option: str = "weights") -> Path:
    """The local file of ``weights`` (``"imagenet"``, or a path) for backbone ``arch``; never downloads.

    Raises:
        WeightsError: not found — one line: the file, its URL and where to put it (or the missing path)."""
    if str(weights).lower() == "imagenet":
        cands = imagenet_candidates(arch)
        for c in cands:
            if c.is_file():
                return c
        fname, url = imagenet_file(arch)
        raise WeightsError(f"ImageNet weights of {arch} ({fname}) not found: download {url} where the internet is "
                           f"reachable and put it at {cands[0]} (or {cands[-1]}), or pass a local file as option "
                           f"{option!r}")
    p = Path(weights).expanduser()
    if not p.is_file():
        raise WeightsError(f"{arch} weights file {p} does not exist: pass a local state dict as option {option!r}, "
                           f"or 'imagenet' for torchvision's ImageNet file")
    return p


@dataclass(frozen=True)
class PretrainedInit:
    """A pretrained initialisation that was loaded: backbone, the option's value, the file, its SHA-256 and the
    datasets whose labels it was trained on (``("ImageNet",)`` for ``"imagenet"``)."""

    arch: str
    weights: str
    path: str
    sha256: str
    trained_on: tuple[str, ...] = (IMAGENET_LABELS,)
    report: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"arch": self.arch, "weights": self.weights, "path": self.path, "sha256": self.sha256,
                "trained_on": list(self.trained_on), **self.report}

    def provenance(self):
        """A :class:`harness.types.Provenance` of the initialisation (weights ``arch:file``, its hash and labels)."""
        from ..types import Provenance

        return Provenance(weights=f"{self.arch}:{Path(self.path).name}", trained_on=frozenset(self.trained_on),
                          sha256=self.sha256)


def pretrained_backbone(module: Any, arch: str, weights: str | os.PathLike, *, option: str = "weights",
                        select: str | None = None, ignore: Iterable[str] = ("fc.", "classifier."),
                        allow_unused: bool = False, allow_missing: Iterable[str] = (),
                        rename: Callable[[str], str] | None = None,
                        trained_on: tuple[str, ...] | None = None) -> PretrainedInit:
    """Initialise ``module`` (a torchvision / timm backbone, or a part of one) from ``weights``.

    Args:
        module: the network or sub-network to load into (e.g. a timm ``resnet50`` with ``num_classes=0``, or the
            ``features`` of a VGG).
        arch: ``resnet18``, ``resnet50``, ``vgg16``, ``vgg16_bn`` or ``vgg19`` (the file's architecture).
        weights: ``"imagenet"`` (torchvision's ImageNet-1k file, see :func:`resolve_pretrained`) or a local file.
        select: the sub-tree of the file to keep (see :func:`read_state_dict`).
        ignore: key prefixes dropped (default: the ImageNet classifier ``fc.*`` / ``classifier.*``).
        allow_unused: keys of the file the module lacks are allowed (see :func:`load_into`).
        allow_missing: prefixes of the module's keys the file may lack (see :func:`load_into`).
        rename: maps the file's keys to the module's (see :func:`read_state_dict`).
        trained_on: datasets whose labels trained the file (default ``("ImageNet",)`` for ``"imagenet"``, none
            known for another file).

    Returns:
        :class:`PretrainedInit` (recorded in the cell's provenance by the caller).

    In a dry run (``harness run --dry-run``) a file that does not resolve leaves ``module`` randomly initialised
    and is recorded as "architecture only".

    Raises:
        WeightsError: file missing offline (one line: which file, from where, where to put it), unreadable, or not
            of ``module``'s architecture and size.
    """
    from ..io import file_sha256

    try:
        path = resolve_pretrained(arch, weights, option)
    except WeightsError as exc:
        from ..stages import architecture_only

        architecture_only(f"{arch} ({option})", exc)  # a dry run: the module keeps its random initialisation
        return PretrainedInit(arch=arch, weights=str(weights), path="", sha256="",
                              trained_on=tuple(trained_on if trained_on is not None else
                                               (IMAGENET_LABELS,) if str(weights).lower() == "imagenet" else ()),
                              report={"architecture_only": True})
    what = f"{arch} weights ({option})"
    state = read_state_dict(path, what, select=select)
    rep = load_into(module, state, what, str(path), ignore=ignore, allow_unused=allow_unused,
                    allow_missing=allow_missing, rename=rename)
    if trained_on is None:
        trained_on = (IMAGENET_LABELS,) if str(weights).lower() == "imagenet" else ()
    return PretrainedInit(arch=arch, weights=str(weights), path=str(path), sha256=file_sha256(path),
                          trained_on=tuple(trained_on), report={"loaded_keys": rep.loaded,
                                                                "initialised_keys": len(rep.missing)})


__all__ = ["IMAGENET_WEIGHTS", "IMAGENET_LABELS", "read_checkpoint", "unwrap_state_dict", "read_state_dict",
           "load_into", "LoadReport", "imagenet_file", "imagenet_candidates", "resolve_pretrained", "PretrainedInit",
           "pretrained_backbone"]
