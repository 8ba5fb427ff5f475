"""Held-out validation splits for datasets without an official one (ShanghaiTech, UCF_CC_50, UCF-QNRF).

The test split is never touched: validation images always come out of ``train``.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from ..types import SampleRef

__all__ = ["split_train_val", "n_val_for", "HeldOutVal"]


def n_val_for(n: int, fraction: float) -> int:
    """Number of held-out images: ``floor(fraction * n + 0.5)`` (round half up), at least 1 when
    ``fraction > 0`` and ``n >= 2``, and always leaving at least one training image."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val fraction must be in [0, 1), got {fraction}")
    if n < 2 or fraction == 0.0:
        return 0
    return int(min(max(int(np.floor(fraction * n + 0.5)), 1), n - 1))


def split_train_val(refs: Sequence[SampleRef], fraction: float = 0.1,
                    seed: int = 0) -> tuple[list[SampleRef], list[SampleRef]]:
    """Hold out a seeded fraction of a train split as ``val``.

    Deterministic: ``numpy.random.default_rng(seed).permutation(len(refs))`` orders the images and the
    first :func:`n_val_for` ``(len(refs), fraction)`` of that permutation are held out (e.g. 30 of the 300
    ShanghaiTech A train images at ``fraction=0.1``). The same refs (in the same order), fraction and seed
    always give the same split, independent of global random state.

    Args:
        refs: the official train split, in its stable sorted order.
        fraction: share of images held out, in ``[0, 1)``.
        seed: seed of the permutation.

    Returns:
        ``(train_refs, val_refs)``, both in the input order; the held-out refs are copies with
        ``split="val"`` that load through the ref they were drawn as (:class:`_AsDrawn`: a reader may address its
        files by ``ref.split``), the others are returned unchanged (``split="train"``).

    Raises:
        ValueError: ``fraction`` outside ``[0, 1)``.
    """
    refs = list(refs)
    n_val = n_val_for(len(refs), fraction)
    if n_val == 0:
        return refs, []
    perm = np.random.default_rng(seed).permutation(len(refs))
    held = set(int(i) for i in perm[:n_val])
    train = [r for i, r in enumerate(refs) if i not in held]
    val = [dataclasses.replace(r, split="val", loader=_AsDrawn(r), image_loader=_AsDrawn(r, image=True))
           for i, r in enumerate(refs) if i in held]
    return train, val


@dataclasses.dataclass(frozen=True)
class _AsDrawn:
    """The loader of a held-out ref: reads the train ref it was drawn as (the same image, points and labels),
    whatever the reader makes of ``split`` (the built-in synthetic crowds draw by split and index, JHU-Crowd++ and
    WIDER FACE read labels from the split's files)."""

    ref: SampleRef
    image: bool = False

    def __call__(self, _held_out: SampleRef):
        return self.ref.load_image() if self.image else self.ref.load()


class HeldOutVal:
    """A view of a dataset whose ``val`` is a seeded fraction held out of its ``train`` split (and ``train`` the
    rest), for training on a dataset whose official ``val`` split is the one it is scored on (NWPU-Crowd, whose test
    labels are withheld): the images that score the model never select it. Other splits and attributes pass
    through.

    Args:
        dataset: the wrapped dataset. fraction, seed: see :func:`split_train_val`.
    """

    def __init__(self, dataset, fraction: float = 0.1, seed: int = 0):
        self._dataset, self._fraction, self._seed = dataset, fraction, seed
        self._split = None

    def __getattr__(self, name):
        return getattr(self._dataset, name)

    def samples(self, split: str) -> list[SampleRef]:
        if split not in ("train", "val"):
            return self._dataset.samples(split)
        if self._split is None:
            self._split = split_train_val(self._dataset.samples("train"), self._fraction, self._seed)
        return list(self._split[0 if split == "train" else 1])
