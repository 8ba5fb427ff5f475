"""Registration specs: what a plugin passes to a hook's ``register`` callback (docs/design.md §5).

Specs are cheap and importable without torch; each ``factory`` builds the heavy object lazily. Every spec of a
buildable component kind carries ``tiny_options``: the options that build a tiny, fast instance needing no
downloaded weights (the contract tests build every registered component with them).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .types import Counter, Dataset


#: the cell's arguments a component factory may declare in its spec's ``build_args``; :meth:`CellContext.build`
#: passes exactly those (unless given as options): ``device`` (``"cpu"`` / ``"cuda[:n]"``), ``cache_root`` (the
#: artefact cache folder), ``registries`` (the loaded registries), ``seed`` (the cell seed, for a seeded random init)
BUILD_ARGS = ("device", "cache_root", "registries", "seed")


def _check_build_args(spec) -> None:
    unknown = [a for a in spec.build_args if a not in BUILD_ARGS]
    if unknown:
        raise ValueError(f"{type(spec).__name__} {spec.name!r}: build_args {unknown} are not cell arguments; "
                         f"use some of {', '.join(BUILD_ARGS)}")


def canonical(name: str) -> str:
    """Canonical form of a component name for lookups: case-insensitive, ``_`` and ``-`` equivalent."""
    return name.strip().lower().replace("_", "-")


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
    """Registers a counter. ``factory(device: str = "cpu", **options) -> Counter`` (plus the other
    :data:`BUILD_ARGS` it declares in ``build_args``, e.g. ``("device", "seed")`` for a seeded random init).

    ``trained_on`` declares the datasets whose labels trained the weights the factory loads by default
    (empty for random init or trainable-from-scratch counters); ``tiny_options`` build it without weights
    files (e.g. ``{"weights": "random"}``).
    """

    name: str
    factory: Callable[..., Counter]
    trained_on: frozenset[str] = frozenset()
    aliases: tuple[str, ...] = ()
    description: str = ""
    tiny_options: Mapping[str, Any] = field(default_factory=dict)
    build_args: tuple[str, ...] = ("device",)

    def __post_init__(self):
        _check_build_args(self)


@dataclass(frozen=True)
class GeneratorSpec:
    """Registers an image generator: ``factory(device="cpu", **options) -> Generator`` (plus the
    :data:`BUILD_ARGS` declared in ``build_args``, e.g. ``cache_root``)
    (:class:`harness.types.Generator`: ``generate(requests) -> list[SyntheticImage]``, ``key()``,
    ``provenance``). ``modes`` lists what its requests may carry: ``"text"`` (prompt), ``"image"`` (init image
    + strength, img2img), ``"mask"`` (label map)."""

    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    description: str = ""
    modes: tuple[str, ...] = ("text",)
    tiny_options: Mapping[str, Any] = field(default_factory=dict)
    build_args: tuple[str, ...] = ("device",)

    def __post_init__(self):
        _check_build_args(self)


@dataclass(frozen=True)
class AnnotatorSpec:
    """Registers a pseudo-labeller: ``factory(device="cpu", **options) -> Annotator``
    (:class:`harness.types.Annotator`: ``annotate(image) -> PseudoLabel``, ``key()``, ``provenance``)."""

    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    description: str = ""
    tiny_options: Mapping[str, Any] = field(default_factory=dict)
    build_args: tuple[str, ...] = ("device",)

    def __post_init__(self):
        _check_build_args(self)


@dataclass(frozen=True)
class SegmenterSpec:
    """Registers a segmenter: ``factory(device="cpu", **options) -> Segmenter``
    (:class:`harness.types.Segmenter`: image (+ points) -> ``(H, W)`` label map and label names)."""

    name: str
    factory: Callable[..., Any]
    aliases: tuple[str, ...] = ()
    description: str = ""
    tiny_options: Mapping[str, Any] = field(default_factory=dict)
    build_args: tuple[str, ...] = ("device",)

    def __post_init__(self):
        _check_build_args(self)


@dataclass(frozen=True)
class StrategySpec:
    """Registers a transfer strategy.

    Attributes:
        factory: ``factory(options) -> Strategy`` where ``options`` is an instance of ``options`` (the strategy's
            options dataclass, parsed and validated by :func:`harness.options.parse` when the run is planned).
        options: the options dataclass (see :mod:`harness.options`).
        uses_target_images: the strategy looks at the target domain's unlabelled train images (recorded in
            results and shown in leaderboards).
        tiny_options: options of a seconds-long fit on the built-in synthetic datasets (contract tests).
    """

    name: str
    factory: Callable[..., Any]
    options: type
    aliases: tuple[str, ...] = ()
    description: str = ""
    uses_target_images: bool = False
    tiny_options: Mapping[str, Any] = field(default_factory=dict)


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


@dataclass(frozen=True)
class TinyModelSpec:
    """A builder of tiny, randomly initialised models of one architecture family: what ``"tiny"`` /
    ``"tiny:<seed>"`` resolves to in :func:`harness.resolve_model` (``kind=name``), so tests and ``smoke`` profiles
    run with no download and no weights.

    ``build(folder: Path, seed: int) -> Path`` writes the model in the layout its loader reads (from configs, seeded
    random weights) and returns the folder; it must reuse an existing complete folder. ``version``: bump it when the
    configs change (it is part of the folder name and of every cache key involving the model)."""

    name: str
    build: Callable[[Path, int], Path]
    version: int = 1
    aliases: tuple[str, ...] = ()
    description: str = ""


__all__ = ["canonical", "BUILD_ARGS", "TinyModelSpec", "DatasetSpec", "CounterSpec", "GeneratorSpec", "AnnotatorSpec", "SegmenterSpec",
           "StrategySpec", "CommandSpec", "MethodSpec"]
