"""The component kinds, in one table (docs/design.md §5): adding a kind is one entry here plus its hook spec.

Each :class:`Kind` names its registration hook, its spec class, the protocol a built object must satisfy (None
for kinds that are not built per cell) and the attribute of :class:`harness.plugins.Registries` that holds it.
"""
from __future__ import annotations

from dataclasses import dataclass

from .specs import (AnnotatorSpec, CommandSpec, CounterSpec, DatasetSpec, GeneratorSpec, MethodSpec, SegmenterSpec,
                    StrategySpec, TinyModelSpec)
from .types import Annotator, Counter, Generator, Segmenter


@dataclass(frozen=True)
class Kind:
    """One component kind: ``name`` (``"counter"``), ``plural`` (registry attribute), ``hook``, ``spec`` class,
    ``protocol`` of built objects (None: not built through :meth:`harness.context.CellContext.build`)."""

    name: str
    plural: str
    spec: type
    protocol: type | None = None

    @property
    def hook(self) -> str:
        return f"harness_register_{self.plural}"


KINDS: tuple[Kind, ...] = (
    Kind("dataset", "datasets", DatasetSpec),
    Kind("counter", "counters", CounterSpec, Counter),
    Kind("generator", "generators", GeneratorSpec, Generator),
    Kind("annotator", "annotators", AnnotatorSpec, Annotator),
    Kind("segmenter", "segmenters", SegmenterSpec, Segmenter),
    Kind("strategy", "strategies", StrategySpec),
    Kind("method", "methods", MethodSpec),
    Kind("command", "commands", CommandSpec),
    Kind("tiny_model", "tiny_models", TinyModelSpec),
)

BY_NAME = {k.name: k for k in KINDS}


def kind(name: str) -> Kind:
    """The :class:`Kind` called ``name`` (singular or plural).

    Raises:
        KeyError: an unknown kind (the message lists the kinds)."""
    for k in KINDS:
        if name in (k.name, k.plural):
            return k
    raise KeyError(f"unknown component kind {name!r}; kinds: {', '.join(k.name for k in KINDS)}")


def missing_members(obj, protocol: type) -> list[str]:
    """Names of ``protocol``'s attributes and methods that ``obj`` lacks (empty when it satisfies it)."""
    names = [n for n in getattr(protocol, "__protocol_attrs__", ()) if not n.startswith("_")]
    if not names:  # older typing: read the annotations and functions
        names = list(getattr(protocol, "__annotations__", {})) + [
            n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]
    return sorted(n for n in set(names) if not hasattr(obj, n))


__all__ = ["Kind", "KINDS", "BY_NAME", "kind", "missing_members"]
