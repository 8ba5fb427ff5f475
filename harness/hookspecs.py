"""pluggy hook specifications of the ``harness`` project.

Every hook receives a ``register`` callback and nothing else; a plugin calls it once per component. Plugins
never touch globals and import heavy libraries (torch, diffusers) lazily, inside their factories, so that
``harness plugins`` stays fast and one broken dependency does not stop the others from loading.

Hooks are called once each when the registries are first built (:func:`harness.plugins.get_registries`),
in plugin registration order: built-in default plugins first, then ``harness`` entry-point plugins.

:data:`API_VERSION` is the version of this plugin API (the hooks, the specs and the public ``harness`` names plugins
use). A plugin module declares the version it was written for as ``HARNESS_API = <int>``; a plugin declaring another
version is refused at load time in one line (reported by ``harness plugins``), never half-loaded.
"""
from __future__ import annotations

from typing import Callable

from pluggy import HookimplMarker, HookspecMarker

from .specs import (AnnotatorSpec, CommandSpec, CounterSpec, DatasetSpec, GeneratorSpec, MethodSpec, SegmenterSpec,
                    StrategySpec, TinyModelSpec)

#: the plugin API version of this harness (see the module notes)
API_VERSION = 1

hookspec = HookspecMarker("harness")
hookimpl = HookimplMarker("harness")


@hookspec
def harness_register_datasets(register: Callable[[DatasetSpec], None]) -> None:
    """Register dataset readers: ``register(DatasetSpec(name, factory, aliases=...))``.

    ``factory(root)`` returns a :class:`harness.specs.Dataset` reading the original on-disk layout.
    """


@hookspec
def harness_register_counters(register: Callable[[CounterSpec], None]) -> None:
    """Register counters: ``register(CounterSpec(name, factory, trained_on=frozenset({...})))``.

    ``factory(device="cpu", **options)`` returns a :class:`harness.specs.Counter` (image -> count, density
    map and/or scored points). ``trained_on`` names the datasets whose labels trained the default weights.
    """


@hookspec
def harness_register_generators(register: Callable[[GeneratorSpec], None]) -> None:
    """Register synthetic-image generators: ``register(GeneratorSpec(name, factory, modes=("text",)))``.

    The built object is a :class:`harness.types.Generator`: ``generate(requests: list[GenerationRequest]) ->
    list[SyntheticImage]``, ``key()`` and ``provenance``.
    """


@hookspec
def harness_register_annotators(register: Callable[[AnnotatorSpec], None]) -> None:
    """Register pseudo-labellers: ``register(AnnotatorSpec(name, factory))``.

    The built object is a :class:`harness.types.Annotator`: ``annotate(image) -> PseudoLabel``, ``key()`` and
    ``provenance``.
    """


@hookspec
def harness_register_segmenters(register: Callable[[SegmenterSpec], None]) -> None:
    """Register segmenters: ``register(SegmenterSpec(name, factory))``.

    The built object is a :class:`harness.types.Segmenter`: ``segment(image, points=None) -> Segmentation``
    (``(H, W)`` integer label map + label names), ``key()`` and ``provenance``.
    """


@hookspec
def harness_register_strategies(register: Callable[[StrategySpec], None]) -> None:
    """Register transfer strategies: ``register(StrategySpec(name, factory, options=OptionsDataclass))``.

    ``factory(options).fit(ctx: CellContext) -> Counter``; ``options`` is the parsed options dataclass.
    """


@hookspec
def harness_register_methods(register: Callable[[MethodSpec], None]) -> None:
    """Register methods (leaderboard rows): ``register(MethodSpec(name, strategy, profiles={...}))``.

    A method names a registered strategy and its options for the ``smoke`` and ``paper`` profiles.
    """


@hookspec
def harness_register_commands(register: Callable[[CommandSpec], None]) -> None:
    """Register ``harness`` sub-commands: ``register(CommandSpec(name, command=<click.Command>))``.

    They appear in ``harness --help`` beside the built-in commands, whose names they cannot take.
    """


@hookspec
def harness_register_tiny_models(register: Callable[[TinyModelSpec], None]) -> None:
    """Register tiny random model builders: ``register(TinyModelSpec(kind, build))``; ``"tiny[:seed]"`` model ids of
    that ``kind`` resolve through them (:func:`harness.resolve_model`).
    """
