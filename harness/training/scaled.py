"""The trained density counter at prediction time: :class:`ScaledCounter` resizes each full-resolution image as the
counter was trained (:func:`harness.data.transforms.scale_factor`), runs it in its precision and divides the
density map by the training's ``density_scale`` (:mod:`harness.training.density`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..data.transforms import resize_sample, scale_factor
from ..types import Prediction
from .precision import autocast

__all__ = ["ScaledCounter"]


class ScaledCounter:
    """A trained density counter that predicts at its training resolution.

    ``predict(image)`` resizes the full-resolution image by :func:`scale_factor` (``scale``, ``max_side``), runs
    the wrapped counter (in ``precision``), and divides the density by ``density_scale``. Head points (local
    maxima of the density) are returned in pixels of the *original* image.

    Attributes:
        inner: the wrapped counter (``model``, ``stride``, ``preprocess``, ``predict``, ``to``).
        scale / max_side / density_scale: as trained.
        name, provenance: the counter's (settable; the strategy records where the weights came from).
    """

    def __init__(self, inner: Any, *, scale: float = 1.0, max_side: int | None = None,
                 density_scale: float = 1.0, name: str | None = None, provenance: Any = None,
                 precision: str = "fp32"):
        self.inner = inner
        self.scale = float(scale)
        self.max_side = max_side
        self.density_scale = float(density_scale)
        self.precision = precision
        self.name = name or getattr(inner, "name", "counter")
        self.provenance = provenance if provenance is not None else getattr(inner, "provenance", None)

    def __repr__(self) -> str:
        return (f"ScaledCounter({self.inner!r}, scale={self.scale}, max_side={self.max_side}, "
                f"density_scale={self.density_scale})")

    @property
    def model(self):
        return self.inner.model

    @property
    def device(self):
        """The wrapped counter's device (``"cpu"`` when it does not say)."""
        return getattr(self.inner, "device", "cpu")

    @property
    def stride(self) -> int:
        """Output stride of the wrapped network, in pixels of the *resized* input."""
        return self.inner.stride

    def to(self, device) -> "ScaledCounter":
        self.inner.to(device)
        return self

    def input_factor(self, image: np.ndarray) -> float:
        """The resize factor applied to ``image`` before the network (see :func:`scale_factor`)."""
        return scale_factor(image.shape[0], image.shape[1], self.scale, self.max_side)

    def predict(self, image: np.ndarray) -> Prediction:
        """``image``: ``(H, W, 3) uint8`` RGB at full resolution -> :class:`Prediction` whose ``density`` is at
        stride ``stride`` of the resized image (``extras["input_factor"]``) and sums to ``count``."""
        from ..metrics import points_from_density

        f = self.input_factor(image)
        small, _ = resize_sample(image, None, f, min_side=self.inner.stride)
        with autocast(getattr(self.inner, "device", "cpu"), self.precision):
            pred = self.inner.predict(small)
        density = None if pred.density is None else (pred.density / self.density_scale).astype(np.float32)
        points, scores = pred.points, pred.scores
        fx, fy = small.shape[1] / image.shape[1], small.shape[0] / image.shape[0]
        if points is not None:
            points = np.asarray(points, dtype=np.float64) / np.array([fx, fy])
        elif density is not None:  # here, where the integer stride is known (W / w is not an integer)
            pts, scores = points_from_density(density, stride=self.inner.stride)
            points = np.asarray(pts, dtype=np.float64).reshape(-1, 2) / np.array([fx, fy])
        extras = dict(pred.extras)
        extras["input_factor"] = f
        return Prediction(count=float(pred.count) / self.density_scale, density=density, points=points,
                          scores=scores, extras=extras)
