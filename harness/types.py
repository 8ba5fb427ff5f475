"""Core data types and component contracts shared by the harness and every plugin (docs/design.md §3, §5).

Conventions:

- ``points``: ``(N, 2) float64`` head positions ``(x, y)`` in pixels of the original image, origin top-left.
- images: ``(H, W, 3) uint8`` RGB on read (grayscale expanded, alpha dropped, 16-bit scaled to 8-bit).
- ``density``: ``(h, w) float32``; ``density.sum()`` is the count.
- label maps (segmenters, mask-to-image generators): ``(H, W)`` integer ids ``0 .. len(label_names) - 1``.

Component contracts are :class:`typing.Protocol` s checked when a strategy builds a component through
:meth:`CellContext.build` (and by the contract tests): counters, generators, annotators and segmenters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from .context import CellContext

# --------------------------------------------------------------------------------------------- data


@dataclass
class Sample:
    """One loaded, labelled image.

    Attributes:
        id: image id within its dataset split (e.g. ``"IMG_12"``).
        image: ``(H, W, 3) uint8`` RGB.
        points: ``(N, 2) float64`` head points ``(x, y)`` in pixels; points outside the image are dropped
            (counted in ``meta["n_points_dropped"]``).
        meta: dataset-specific extras: ``original_mode`` (PIL mode), ``n_points_dropped``, ``image_path``,
            ``annotation_path``, and e.g. JHU's ``boxes``/``occlusion``/``weather``.
    """

    id: str
    image: np.ndarray
    points: np.ndarray
    meta: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(len(self.points))


@dataclass(frozen=True)
class SampleRef:
    """A cheap reference to one image of a dataset split; nothing is read until :meth:`load`.

    ``loader(ref) -> Sample`` reads image and points; ``image_loader(ref) -> (H, W, 3) uint8`` reads the
    image alone (used for the target domain's *unlabelled* images).
    """

    dataset: str
    split: str
    id: str
    image_path: Path | None
    annotation_path: Path | None
    loader: Callable[["SampleRef"], Sample] = field(repr=False, compare=False)
    image_loader: Callable[["SampleRef"], np.ndarray] = field(repr=False, compare=False)

    def load(self) -> Sample:
        return self.loader(self)

    def load_image(self) -> np.ndarray:
        return self.image_loader(self)

    @property
    def key(self) -> str:
        """``"<dataset>/<split>/<id>"``: a stable identity for cache keys and per-image seeds."""
        return f"{self.dataset}/{self.split}/{self.id}"

    def unlabelled(self) -> "UnlabelledRef":
        """A view of this image with no access to its annotation (for target-domain train images)."""
        return UnlabelledRef(dataset=self.dataset, split=self.split, id=self.id, _ref=self)


@dataclass(frozen=True)
class UnlabelledRef:
    """An image of the target domain whose labels a strategy must not see: only :meth:`load_image`."""

    dataset: str
    split: str
    id: str
    _ref: SampleRef = field(repr=False, compare=False)

    def load_image(self) -> np.ndarray:
        return self._ref.load_image()

    @property
    def image_path(self) -> Path | None:
        return self._ref.image_path

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.split}/{self.id}"


class Dataset(Protocol):
    """A dataset on disk (or synthetic). ``samples(split)`` lists the split in a stable, sorted order.

    Splits are ``"train"``, ``"val"`` and ``"test"``; datasets without an official val split hold out a
    seeded fraction of train (see :func:`harness.data.split_train_val`), never the test split. A dataset may
    declare ``eval_split`` (the split a target is scored on when its test labels are withheld, e.g. NWPU's
    ``"val"``) and ``protocol`` (a one-line description of its evaluation protocol).
    """

    name: str
    root: Path | None

    def samples(self, split: str) -> list[SampleRef]: ...


# --------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Provenance:
    """Where a set of weights (or a synthetic-data source) came from.

    Attributes:
        weights: what the weights are (file name, hub id, or ``"random-init"`` / ``"trained-in-run"``).
        trained_on: canonical dataset names (e.g. ``{"SHA"}``) whose *labels* trained these weights.
        licence: licence of the weights.
        sha256: hash of the weights file, when there is one.
    """

    weights: str
    trained_on: frozenset[str] = frozenset()
    licence: str = ""
    sha256: str = ""

    def saw_labels_of(self, dataset: str) -> bool:
        return dataset.upper() in {d.upper() for d in self.trained_on}

    def to_dict(self) -> dict:
        return {"weights": self.weights, "trained_on": sorted(self.trained_on), "licence": self.licence,
                "sha256": self.sha256}


@dataclass
class Prediction:
    """What a counter says about one image.

    Attributes:
        count: predicted number of people (finite, any sign a model gives).
        density: ``(h, w) float32`` density map at the counter's output stride (sums to ``count``), or None.
        points: ``(M, 2) float`` predicted head points ``(x, y)`` in pixels of the input image, or None
            (the evaluation then takes local maxima of ``density`` when the counter localises).
        scores: ``(M,) float`` confidence per point (higher first), or None.
        extras: further named numbers, e.g. ``{"count:regression": 12.3, "count:detection": 11.0}`` (keys
            ``count:<output>`` are scored as extra outputs) or per-hypothesis counts ``{"count@0": ...}``.
    """

    count: float
    density: np.ndarray | None = None
    points: np.ndarray | None = None
    scores: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


@runtime_checkable
class Counter(Protocol):
    """A crowd counter: one RGB image in, a :class:`Prediction` out.

    Optional attributes: ``localises`` (bool, default True: points or a density map whose local maxima are
    head positions; False for count-only counters, whose mAP is reported as missing), ``stochastic``
    (bool, default False: ``predict`` accepts ``generator=`` a seeded ``torch.Generator``, one per image),
    ``stride`` (int: output stride of the density map in input pixels).
    """

    name: str
    provenance: Provenance

    def predict(self, image: np.ndarray) -> Prediction:
        """``image``: ``(H, W, 3) uint8`` RGB at full resolution."""
        ...


def counter_localises(counter: Counter) -> bool:
    """A counter's optional ``localises`` (default True)."""
    return bool(getattr(counter, "localises", True))


def counter_is_stochastic(counter: Counter) -> bool:
    """A counter's optional ``stochastic`` (default False)."""
    return bool(getattr(counter, "stochastic", False))


def output_stride(counter: Any, default: int | None = None) -> int | None:
    """A counter's (or annotator's) optional ``stride``: output stride of its density map in input pixels."""
    stride = getattr(counter, "stride", None)
    return default if stride is None else int(stride)


def eval_split(dataset: Dataset) -> str:
    """The split a target dataset is scored on: its optional ``eval_split`` (e.g. NWPU's ``"val"``), else
    ``"test"``."""
    return getattr(dataset, "eval_split", "test")


def dataset_folds(dataset: Dataset) -> list | None:
    """A dataset's optional ``folds`` (UCF_CC_50's five cross-validation folds, each a dataset), else None."""
    return getattr(dataset, "folds", None)


class Strategy(Protocol):
    """A transfer strategy: labelled source data + unlabelled target images -> a trained counter."""

    def fit(self, ctx: "CellContext") -> Counter:
        """Train (or load) the cell's counter from what ``ctx`` shows of the source and target domains."""
        ...


# --------------------------------------------------------------------------------------------- generators


@dataclass(frozen=True)
class GenerationRequest:
    """One image to generate; everything that determines it, so it can be regenerated or cached.

    Attributes:
        seed: the image's own seed (``torch.Generator(...).manual_seed(seed)``), ``0 <= seed < 2**63``.
        size: ``(height, width)`` in pixels of the generated image (a generator may round it to its multiple).
        prompt: text prompt (text-to-image and img2img).
        negative_prompt: what to steer away from (classifier-free guidance), or ``""``.
        init_image: ``(H, W, 3) uint8`` RGB start image for img2img, or None.
        strength: img2img noise strength in ``(0, 1]`` (SD img2img runs ``int(steps * strength)`` steps).
        label_mask: ``(H, W)`` integer label map for mask-to-image generators (SPADE), or None.
        meta: free-form provenance of the request (e.g. ``{"source_image": "SHA/train/IMG_3"}``); not part of
            what the generator sees.
    """

    seed: int
    size: tuple[int, int]
    prompt: str = ""
    negative_prompt: str = ""
    init_image: np.ndarray | None = field(default=None, repr=False, compare=False)
    strength: float | None = None
    label_mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    meta: dict = field(default_factory=dict, compare=False)

    def key(self) -> dict:
        """The request's identity for cache keys (arrays by content hash)."""
        from .io import array_sha256

        return {"seed": int(self.seed), "size": [int(s) for s in self.size], "prompt": self.prompt,
                "negative_prompt": self.negative_prompt, "strength": self.strength,
                "init_image": None if self.init_image is None else array_sha256(self.init_image),
                "label_mask": None if self.label_mask is None else array_sha256(self.label_mask)}


@dataclass
class SyntheticImage:
    """A generated image and how it was made.

    Attributes:
        image: ``(H, W, 3) uint8`` RGB.
        request: the :class:`GenerationRequest` it answers (None for legacy generators).
        meta: generator facts (model id, steps, actual size).
    """

    image: np.ndarray
    request: GenerationRequest | None = None
    meta: dict = field(default_factory=dict)

    @property
    def prompt(self) -> str:
        return self.request.prompt if self.request is not None else str(self.meta.get("prompt", ""))

    @property
    def seed(self) -> int | None:
        return self.request.seed if self.request is not None else self.meta.get("seed")


@runtime_checkable
class Generator(Protocol):
    """A synthetic-image generator: ``generate(requests) -> list[SyntheticImage]`` (one per request, in order).

    ``key() -> dict`` names everything of the generator that determines its images (model identity, steps,
    guidance, dtype), for content-addressed caching; ``provenance`` says which labels trained it.
    """

    provenance: Provenance

    def key(self) -> dict: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[SyntheticImage]: ...


# --------------------------------------------------------------------------------------------- annotators


@dataclass
class PseudoLabel:
    """An annotator's label for an (unlabelled or synthetic) image.

    Attributes:
        count: estimated number of people.
        density: ``(h, w) float32`` map at ``meta["stride"]`` that sums to ``count``, or None.
        points: ``(N, 2) float`` head points ``(x, y)`` px, or None.
        quality: higher-is-better confidence, or None.
        meta: e.g. ``{"annotator": name, "stride": 8}``.
    """

    count: float
    density: np.ndarray | None = None
    points: np.ndarray | None = None
    quality: float | None = None
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Annotator(Protocol):
    """A pseudo-labeller: ``annotate(image (H, W, 3) uint8) -> PseudoLabel``.

    ``name``; ``provenance`` (whose labels trained it: the leakage flags use it); ``key() -> dict`` (its
    identity for cache keys: name and weights).
    """

    name: str
    provenance: Provenance

    def key(self) -> dict: ...

    def annotate(self, image: np.ndarray) -> PseudoLabel: ...


# --------------------------------------------------------------------------------------------- segmenters


@dataclass
class Segmentation:
    """A label map: ``labels (H, W) int32`` with ids ``0 .. len(label_names) - 1``; ``label_names[i]`` names id i."""

    labels: np.ndarray
    label_names: tuple[str, ...]
    meta: dict = field(default_factory=dict)


@runtime_checkable
class Segmenter(Protocol):
    """Image (and, for label-derived masks, its head points) -> :class:`Segmentation`.

    ``segment(image (H, W, 3) uint8, points (N, 2) | None) -> Segmentation``; ``label_names`` (the ids it
    emits); ``provenance``; ``key() -> dict`` for cache keys. A segmenter that needs ``points`` (e.g. a
    mask from the ground-truth density) raises :class:`harness.errors.ConfigError` when given None.
    """

    name: str
    label_names: tuple[str, ...]
    provenance: Provenance

    def key(self) -> dict: ...

    def segment(self, image: np.ndarray, points: np.ndarray | None = None) -> Segmentation: ...


__all__ = ["Sample", "SampleRef", "UnlabelledRef", "Dataset", "Provenance", "Prediction", "Counter", "Strategy",
           "GenerationRequest", "SyntheticImage", "Generator", "PseudoLabel", "Annotator", "Segmentation",
           "Segmenter", "counter_localises", "counter_is_stochastic", "output_stride", "eval_split", "dataset_folds"]
