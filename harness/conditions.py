"""The conditions a number is made under, as part of its identity (docs/design.md §8).

A trained model or a finished cell depends on more than its options and data: the precision, the kind of device
(float reductions differ between a CPU and each GPU model) and, on a CPU, the number of intra-op threads (torch
splits reductions by thread: measured on SYN-SPARSE→SYN-DENSE, smoke ResCSRNet, 8 test images, MAE 117.52 with one
thread and 120.57 with two). This module names those conditions once; :func:`harness.cell.cell_config` records them
in ``config.json`` (a finished cell made under other conditions is refused in one line) and
:meth:`harness.context.CellContext.cached_fit` puts them in every cached model's key.

Thread count: the harness *pins* it per cell (``torch.set_num_threads``) instead of inheriting whatever the process
has: the local executor uses ``--threads`` (default :func:`default_threads`), Ray ``--cpus-per-cell``, Slurm
``--slurm-cpus-per-task``. It is part of the identity only on a CPU (on a GPU the device does the arithmetic).
"""
from __future__ import annotations

import os
from typing import Any, Iterable

from .errors import ConfigError

#: conditions keys of a cell's ``config.json`` that decide whether an existing cell is the same cell
CONDITION_KEYS = ("device_kind", "threads")


def default_threads() -> int:
    """Intra-op threads of a local cell: ``$OMP_NUM_THREADS`` when it is a positive integer, else the CPUs this
    process may run on (``os.sched_getaffinity``; ``os.cpu_count()`` where that does not exist)."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def device_type(device: str | None) -> str | None:
    """``"cpu"``, ``"cuda"``, ``"mps"`` … of a torch device string; None for ``"auto"`` / None (not resolved)."""
    if not device or device == "auto":
        return None
    return str(device).split(":", 1)[0].lower()


def device_kind(device: str | None) -> str | None:
    """The kind of device that does the arithmetic: ``"cpu"``, ``"cuda:<GPU model>"`` (e.g.
    ``"cuda:NVIDIA H100 80GB HBM3"``, from ``torch.cuda.get_device_name``) or the bare type where the model cannot
    be read; None for an unresolved ``"auto"``. Imports torch only for a CUDA device."""
    kind = device_type(device)
    if kind != "cuda":
        return kind
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.get_device_name(torch.device(device))}"
    except Exception:  # noqa: BLE001 - a driver that cannot be queried: the type alone
        pass
    return "cuda"


def same_device_kind(a: str | None, b: str | None) -> bool:
    """Whether two recorded device kinds can be the same device: equal, or one of them known only by its type (a
    driver that does not see the workers' GPUs records ``"cuda"``) and the types agree. None matches anything."""
    if a is None or b is None or a == b:
        return True
    if ":" in a and ":" in b:
        return False
    return device_type(a) == device_type(b)


def conditions(device: str | None, threads: int | None) -> dict:
    """``{"device_kind", "threads"}`` for ``config.json`` and cache keys (threads None off the CPU)."""
    kind = device_kind(device)
    return {"device_kind": kind, "threads": int(threads) if threads and device_type(kind) in ("cpu", None)
            else None}


def resolve_device(device: str) -> str:
    """``"auto"`` -> ``"cuda"`` when torch sees a GPU, else ``"cpu"``; ``"cpu"``/``"cuda[:n]"`` pass through.

    Raises:
        ConfigError: ``cuda`` asked for but not available, or an unknown device string.
    """
    device = (device or "auto").strip().lower()
    if device == "cpu":
        return device
    if device == "auto" or device.startswith("cuda"):
        try:
            import torch
            has_cuda = torch.cuda.is_available()
        except ImportError:
            has_cuda = False
        if device == "auto":
            return "cuda" if has_cuda else "cpu"
        if not has_cuda:
            raise ConfigError(f"device {device!r} asked for but CUDA is not available; use --device cpu or auto")
        return device
    raise ConfigError(f"unknown device {device!r}; use auto, cpu or cuda")


def fit_conditions(*, seed: int, source: str, precision: str, device: str, threads: int | None) -> dict:
    """What every cached model's key holds besides the method's own options (seed, source dataset, precision,
    device kind, CPU threads, harness version): a bf16 cell never reuses an fp32 model, a two-thread cell never a
    one-thread model, a new harness version never an old one."""
    from . import __version__

    return {"seed": int(seed), "source": source, "precision": precision, **conditions(device, threads),
            "harness_version": __version__}


#: the libraries whose versions a result records (numerics of training, image decoding and resizing, model code)
RECORDED_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "pillow", "opencv-python-headless", "accelerate",
                     "diffusers", "transformers", "timm", "open_clip_torch", "pandas")


def package_versions(plugins: Iterable[Any] | None = None) -> dict:
    """``{distribution: version}`` of :data:`RECORDED_PACKAGES` and the ``harness`` plugin distributions (None where
    not installed): recorded in each cell's ``config.json``, so a number that changes with a library release can be
    traced (not part of the identity: a cell is not refused for another library version).

    ``plugins``: the :class:`harness.plugins.PluginInfo` s of the loaded registries (a run's
    ``plan.registries.plugins``: the distributions that made the result, without listing the entry points a second
    time, ~70 ms); None: every installed entry point of the ``harness`` group."""
    import importlib.metadata as md

    out: dict = {}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    if plugins is None:
        dists = [getattr(ep, "dist", None) for ep in md.entry_points(group="harness")]
        out.update({d.name: d.version for d in dists if d is not None})
    else:
        out.update({p.distribution: p.version for p in plugins if p.distribution and not p.builtin})
    return dict(sorted(out.items()))


__all__ = ["CONDITION_KEYS", "RECORDED_PACKAGES", "package_versions", "default_threads", "resolve_device", "device_type",
           "device_kind", "same_device_kind", "conditions", "fit_conditions"]
