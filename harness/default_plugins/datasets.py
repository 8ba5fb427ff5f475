"""Built-in plugin: readers of the original dataset layouts (see :mod:`harness.data.readers`).

Registered names (lookups are case-insensitive, ``_`` and ``-`` alike):

- ``SHA`` (aliases ``shanghaitech-a``, ``part_a``), ``SHB`` (``shanghaitech-b``, ``part_b``): ShanghaiTech.
- ``UCF50`` (``UCF_CC_50``): UCF_CC_50 scored by the 5-fold protocol, pooled over all 50 images;
  ``UCF50-F1`` .. ``UCF50-F5``: the single folds.
- ``QNRF`` (``UCF-QNRF``), ``JHU`` (``JHU-Crowd++``, ``jhu-crowd``), ``NWPU`` (``NWPU-Crowd``).

Each factory takes the data root (``None``: the ``HARNESS_DATA`` environment variable).
"""
from __future__ import annotations

from ..hookspecs import hookimpl
from ..specs import DatasetSpec


@hookimpl
def harness_register_datasets(register) -> None:
    from ..data import readers, readers_official_val  # numpy/scipy only; no torch

    register(DatasetSpec(
        "SHA", factory=lambda root: readers.ShanghaiTech(root, "A"), aliases=("shanghaitech-a", "part_a"),
        description="ShanghaiTech part A (dense, web images): 300 train (10% held out as val) / 182 test"))
    register(DatasetSpec(
        "SHB", factory=lambda root: readers.ShanghaiTech(root, "B"), aliases=("shanghaitech-b", "part_b"),
        description="ShanghaiTech part B (sparse, street views): 400 train (10% held out as val) / 316 test"))
    register(DatasetSpec(
        "UCF50", factory=lambda root: readers.UCFCC50Pooled(root), aliases=("UCF_CC_50",),
        description="UCF_CC_50, 50 grayscale images, 5-fold protocol pooled over all 50 (UCF50→UCF50: "
                    "cross-validation in one cell)"))
    for k in range(1, 6):
        register(DatasetSpec(
            f"UCF50-F{k}", factory=lambda root, k=k: readers.UCFCC50(root, k),
            description=f"UCF_CC_50 fold {k} of 5 (test on images {10 * k - 9}-{10 * k}, train on the rest)"))
    register(DatasetSpec(
        "QNRF", factory=lambda root: readers.UCFQNRF(root), aliases=("UCF-QNRF",),
        description="UCF-QNRF: 1201 train (10% held out as val) / 334 test, high resolution"))
    register(DatasetSpec(
        "JHU", factory=lambda root: readers_official_val.JHUCrowd(root), aliases=("JHU-Crowd++", "jhu-crowd"),
        description="JHU-Crowd++ v2.0: official 2272 train / 500 val / 1600 test, weather labels"))
    register(DatasetSpec(
        "NWPU", factory=lambda root: readers_official_val.NWPUCrowd(root), aliases=("NWPU-Crowd",),
        description="NWPU-Crowd: official 3109 train / 500 val / 1500 test (labels withheld): scored on val"))
