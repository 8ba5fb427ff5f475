"""The one way to resolve pretrained models: a hub id or a local folder -> files + an identity for cache keys
(docs/design.md §9).

- A **local folder** is used as it is; its identity is its path and a fingerprint of its files (names, sizes).
- A **hub id** (``owner/name``) is looked up in the local Hugging Face cache first, and downloaded only where the
  hub is reachable and ``HF_HUB_OFFLINE`` is not set. When neither works, :class:`harness.errors.WeightsError`
  says in one line which model is missing and how to provide it (``huggingface-cli download ID`` elsewhere, or a
  local folder as the named option).
- In a dry run (``harness run --dry-run``) a hub id that does not resolve but whose configuration ships with the
  harness (:mod:`harness.models.architecture`) is built with random weights and recorded as "architecture only".
- ``"tiny"`` / ``"tiny:<seed>"`` builds a tiny, randomly initialised model of the same architecture from configs
  into the harness cache, with the builder registered for the model's kind (``harness_register_tiny_models``; the
  core's own: :mod:`harness.models.tiny`): tests and ``smoke`` profiles run with no download and no weights.

Nothing here downloads at import time; transformers/diffusers are imported lazily.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..io import content_key
from . import tiny

#: version of the core's tiny builders' configs (:mod:`harness.models.tiny`; part of every cache key that involves
#: one of their models)
TINY_VERSION = 1

#: the core's tiny builders, registered by the built-in ``generators`` plugin: kind -> builder(folder, seed)
CORE_TINY_BUILDERS = {"stable-diffusion": tiny.build_tiny_stable_diffusion, "unet2d": tiny.build_tiny_unet2d,
                      "vqmodel": tiny.build_tiny_vqmodel, "blip": tiny.build_tiny_blip}


def quiet_hf() -> None:
    """Silence diffusers'/transformers' progress bars and info logs (the harness has its own progress)."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    for log in (dlog, tlog):
        log.set_verbosity_error()
        log.disable_progress_bar()


def parse_tiny(model_id: str) -> int | None:
    """The seed of a ``"tiny"`` / ``"tiny:<seed>"`` model id, or None for any other id."""
    if model_id == "tiny":
        return 0
    if model_id.startswith("tiny:") and model_id[5:].isdigit():
        return int(model_id[5:])
    return None


def folder_fingerprint(folder: Path) -> str:
    """Cheap identity of a model folder for cache keys: its resolved path and the relative paths and sizes of its
    files (a hub snapshot's path also carries the commit hash)."""
    files = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in Path(folder).rglob("*") if p.is_file())
    return content_key({"folder": str(Path(folder).resolve()), "files": files})


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")


def resolve_model_dir(model_id: str, what: str, option: str) -> Path:
    """A local folder holding ``model_id``: the folder itself, or the hub snapshot in the Hugging Face cache.

    Raises:
        WeightsError: neither a folder nor an obtainable hub id (one line: the model and how to provide it).
    """
    path = Path(model_id).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or model_id.startswith((".", "~")) or model_id.count("/") != 1:
        raise WeightsError(f"{what} folder {model_id} does not exist: pass an existing folder or a hub id "
                           f"(owner/name) as option {option!r}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:
        pass
    if _offline():
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            return Path(snapshot_download(model_id))
        except Exception as exc:
            reason = type(exc).__name__
    raise WeightsError(f"{what} {model_id!r} is not in the local Hugging Face cache and cannot be downloaded "
                       f"({reason}): run `huggingface-cli download {model_id}` where the hub is reachable, or pass a "
                       f"local folder as option {option!r} (or 'tiny' for a random test model)")


@dataclass(frozen=True)
class ResolvedModel:
    """A model's files and identity: ``folder`` (loadable with ``from_pretrained``), ``identity`` (a dict for cache
    keys: the id plus a file fingerprint, or the tiny version and seed), ``tiny`` (built from configs)."""

    folder: Path
    identity: dict
    tiny: bool = False


def resolve_model(model_id: str, *, kind: str, cache_root: str | Path, what: str = "model",
                  option: str = "model", registries: Any = None) -> ResolvedModel:
    """Resolve ``model_id`` (see the module notes).

    Args:
        model_id: ``"tiny[:seed]"``, a local folder, or a hub id.
        kind: the registered tiny model builder to use for ``"tiny"`` (``registries.tiny_models``).
        cache_root: where tiny models are built (``<cache_root>/tiny/<kind>-v<version>-seed<seed>``).
        what: how an error names the model.
        option: how an error names the option that sets it.
        registries: where the tiny builders are registered (default: the process-wide registries).

    Raises:
        WeightsError: the model cannot be found or obtained (one line).
        UnknownNameError: no tiny builder is registered for ``kind`` (with "did you mean").
    """
    seed = parse_tiny(model_id)
    if seed is not None:
        if registries is None:
            from ..plugins import get_registries
            registries = get_registries()
        spec = registries.tiny_models.get(kind)
        folder = Path(cache_root) / "tiny" / f"{spec.name}-v{spec.version}-seed{seed}"
        spec.build(folder, seed)
        return ResolvedModel(folder, {"model": model_id, "kind": spec.name, "tiny_version": spec.version}, tiny=True)
    try:
        folder = resolve_model_dir(model_id, what, option)
    except WeightsError as exc:
        from ..stages import architecture_only
        from .architecture import ARCHITECTURE_VERSION, build_architecture, has_architecture

        if not has_architecture(model_id):
            raise
        architecture_only(f"{what} {model_id}", exc)
        folder = build_architecture(model_id, cache_root)  # a dry run: the real architecture, random weights
        return ResolvedModel(folder, {"model": model_id, "architecture_only": ARCHITECTURE_VERSION})
    return ResolvedModel(folder, {"model": model_id, "files": folder_fingerprint(folder)})


__all__ = ["resolve_model", "ResolvedModel", "resolve_model_dir", "folder_fingerprint", "parse_tiny", "quiet_hf",
           "CORE_TINY_BUILDERS", "TINY_VERSION"]
