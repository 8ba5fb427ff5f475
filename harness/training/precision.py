"""Device placement and precision of training and inference: the :class:`accelerate.Accelerator` of a cell and
``torch.autocast`` for ``fp32`` / ``bf16`` / ``fp16`` (docs/design.md §6), on CPU too, so the mixed-precision logic is
exercised without a GPU."""
from __future__ import annotations

from ..errors import ConfigError

PRECISIONS = ("fp32", "bf16", "fp16")
#: the torch dtype (``torch.<name>``) of each precision's tensors
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def make_accelerator(device: str = "cpu", precision: str = "fp32"):
    """An :class:`accelerate.Accelerator` for ``device`` (``cpu`` or ``cuda[:n]``) and ``precision``.

    accelerate keeps one process-wide state; a cell that asks for another device or precision than the last
    one resets it first (a harness process runs many cells).

    Raises:
        ConfigError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    mixed = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[precision]
    cpu = not str(device).startswith("cuda")
    if AcceleratorState._shared_state:
        state = AcceleratorState()
        if str(state.mixed_precision) != mixed or (state.device.type == "cpu") != cpu:
            AcceleratorState._reset_state(reset_partial_state=True)
    if not cpu and ":" in str(device):
        import torch

        torch.cuda.set_device(int(str(device).split(":")[1]))
    return Accelerator(cpu=cpu, mixed_precision=mixed)


def autocast_dtype(precision: str):
    """torch dtype of autocast for ``precision`` (None for fp32)."""
    import torch

    return None if precision == "fp32" else getattr(torch, DTYPE_NAMES[precision])


def autocast(device: str, precision: str):
    """A context manager running the enclosed forward passes in ``precision`` on ``device`` (``torch.autocast``
    with :func:`autocast_dtype`; a no-op for fp32). Used for training losses, evaluation and inference, on CPU
    too, so the mixed-precision logic is exercised without a GPU."""
    import contextlib

    import torch

    dtype = autocast_dtype(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda" if str(device).startswith("cuda") else "cpu", dtype=dtype)


__all__ = ["PRECISIONS", "DTYPE_NAMES", "make_accelerator", "autocast", "autocast_dtype"]
