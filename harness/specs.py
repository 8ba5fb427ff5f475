"""Core types shared by the harness and every plugin.

Conventions (DESIGN.md §3):

- ``points``: ``(N, 2) float64`` head positions ``(x, y)`` in pixels of the original image, origin top-left.
- images: ``(H, W, 3) uint8`` RGB on read (grayscale expanded, alpha dropped, 16-bit scaled to 8-bit).
- ``density``: ``(h, w) float32``; ``density.sum()`` is the count.

Plugins register *specs* (cheap, importable without torch) whose ``factory`` builds the heavy object lazily.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np


def canonical(name: str) -> str:
    """Canonical form of a component name for lookups: case-insensitive, ``_`` and ``-`` equivalent."""
    return name.strip().lower().replace("_", "-")


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


class Dataset(Protocol):
    """A dataset on disk (or synthetic). ``samples(split)`` lists the split in a stable, sorted order.

    Splits are ``"train"``, ``"val"`` and ``"test"``; datasets without an official val split hold out a
    seeded fraction of train (see :func:`harness.data.split_train_val`), never the test split.
    """

    name: str
    root: Path | None

    def samples(self, split: str) -> list[SampleRef]: ...


# --------------------------------------------------------------------------------------------- models


@dataclass(frozen=True)
class Provenance:
    """Where a set of weights came from.

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
        count: predicted number of people.
        density: ``(h, w) float32`` density map at the counter's output stride (sums to ``count``), or None.
        points: ``(M, 2) float`` predicted head points ``(x, y)`` in pixels of the input image, or None
            (the runner then takes local maxima of ``density``).
        scores: ``(M,) float`` confidence per point (higher first), or None.
        extras: further named outputs, e.g. ``{"count_regression": 12.3, "count_detection": 11.0}``.
    """

    count: float
    density: np.ndarray | None = None
    points: np.ndarray | None = None
    scores: np.ndarray | None = None
    extras: dict = field(default_factory=dict)


@runtime_checkable
class Counter(Protocol):
    """A crowd counter: one RGB image in, a :class:`Prediction` out."""

    name: str
    provenance: Provenance

    def predict(self, image: np.ndarray) -> Prediction:
        """``image``: ``(H, W, 3) uint8`` RGB at full resolution."""
        ...


class Strategy(Protocol):
    """A transfer strategy: labelled source data + unlabelled target images -> a trained counter."""

    def fit(self, ctx: "CellContext") -> Counter: ...


@dataclass
class SyntheticImage:
    """A generated image and how it was made (for generators)."""

    image: np.ndarray
    prompt: str = ""
    seed: int | None = None
    meta: dict = field(default_factory=dict)


@dataclass
class PseudoLabel:
    """An annotator's label for an (unlabelled or synthetic) image; ``quality`` is higher-is-better or None."""

    count: float
    density: np.ndarray | None = None
    points: np.ndarray | None = None
    quality: float | None = None
    meta: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class DatasetSpec:
    """Registers a dataset reader.

    ``factory(root: Path | None) -> Dataset``; ``root`` is the data root (the folder that *contains* the
    dataset's own folder, e.g. ``.../data`` for ``.../data/ShanghaiTech/part_A``). ``needs_root=False``
    for built-in datasets that need no files.
    """

    name: str
    factory: Callable[[Path | None], Dataset]
    aliases: tuple[str, ...] = ()
    description: str = ""
    needs_root: bool = True


@dataclass(frozen=True)
class CounterSpec:
    """Registers a counter. ``factory(device: str = "cpu", **options) -> Counter``.

    ``trained_on`` declares the datasets whose labels trained the weights the factory loads by default
    (empty for random init or trainable-from-scratch counters).
    """

    name: str
    factory: Callable[..., Counter]
    trained_on: frozenset[str] = frozenset()
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class GeneratorSpec:
    """Registers an image generator. ``factory(device: str = "cpu", **options)`` returns an object with
    ``generate(prompts: Sequence[str], seeds: Sequence[int], **kw) -> list[SyntheticImage]``."""

    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class AnnotatorSpec:
    """Registers a pseudo-labeller. ``factory(device: str = "cpu", **options)`` returns an object with
    ``annotate(image: (H, W, 3) uint8) -> PseudoLabel`` and a ``provenance: Provenance``."""

    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class StrategySpec:
    """Registers a transfer strategy. ``factory(**options) -> Strategy``.

    ``uses_target_images``: the strategy looks at the target domain's unlabelled train images
    (recorded in results and shown in leaderboards).
    """

    name: str
    factory: Callable[..., Strategy]
    aliases: tuple[str, ...] = ()
    description: str = ""
    uses_target_images: bool = False


@dataclass(frozen=True)
class CommandSpec:
    """A ``harness`` sub-command contributed by a plugin (e.g. ``harness promptmix inspect RUN_DIR``).

    ``command`` is a :class:`click.Command` or :class:`click.Group`; it is added under ``name`` next to the
    built-in commands (built-in names cannot be taken).
    """

    name: str
    command: Any
    aliases: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class MethodSpec:
    """A leaderboard row: a strategy plus its options, per profile (``"smoke"``: CPU, minutes, tiny sizes;
    ``"paper"``: the paper's hyperparameters)."""

    name: str
    strategy: str
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    description: str = ""

    def options(self, profile: str) -> dict:
        from .errors import ConfigError

        if profile not in self.profiles:
            raise ConfigError(f"method {self.name!r} has no profile {profile!r}; it has: "
                              f"{', '.join(sorted(self.profiles))}")
        return dict(self.profiles[profile])


# --------------------------------------------------------------------------------------------- runs


@dataclass
class CellContext:
    """Everything a strategy may see for one cell (source -> target, one seed).

    The source dataset's ``train`` and ``val`` splits are labelled; the target is visible only through
    ``target_images`` (its train split, labels hidden). The target's test split is never passed in.

    Attributes:
        source: the source :class:`Dataset`.
        source_name / target_name: canonical dataset names.
        target_images: target train images, unlabelled.
        profile: ``"smoke"`` or ``"paper"``.
        seed: the run seed (set globally by the runner before ``fit``).
        device: ``"cpu"`` or ``"cuda"``.
        workdir: this cell's directory (checkpoints go in ``workdir / "checkpoints"``).
        cache: content-addressed artefact cache shared across cells and runs.
        registries: the loaded component registries (to build counters, generators, annotators).
        options: the method's resolved options for this profile.
        log: a ``logging.Logger`` writing to the cell's log file.
        provenance_notes: strategies append facts for the results (e.g. ``{"uses_target_images": True}``).
    """

    source: Dataset
    source_name: str
    target_name: str
    target_images: Sequence[UnlabelledRef]
    profile: str
    seed: int
    device: str
    workdir: Path
    cache: Any
    registries: Any
    options: dict
    log: Any
    provenance_notes: dict = field(default_factory=dict)
