"""Name -> component registries with plugin attribution, aliases and "did you mean" errors."""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Generic, Iterator, TypeVar

from .errors import DuplicateNameError, UnknownNameError
from .specs import canonical

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    spec: T
    plugin: str


class Registry(Generic[T]):
    """Components of one kind (``"dataset"``, ``"counter"``, ...), looked up case-insensitively by name
    or alias.

    Raises:
        DuplicateNameError: a name or alias is registered twice (the message names both plugins).
        UnknownNameError: ``get`` of an unknown name (the message lists close matches and all names).
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}
        self._lookup: dict[str, str] = {}  # canonical name or alias -> name

    def register(self, spec: T, plugin: str) -> None:
        name = getattr(spec, "name")
        keys = [canonical(name)] + [canonical(a) for a in getattr(spec, "aliases", ())]
        for key in keys:
            if key in self._lookup:
                other = self._entries[self._lookup[key]]
                raise DuplicateNameError(
                    f"{self.kind} name {key!r} is registered by both plugin {other.plugin!r} "
                    f"({other.spec.name}) and plugin {plugin!r} ({name}); rename one or uninstall a plugin")
        self._entries[name] = Entry(spec, plugin)
        for key in keys:
            self._lookup[key] = name

    def get(self, name: str) -> T:
        return self.entry(name).spec

    def entry(self, name: str) -> Entry[T]:
        key = canonical(name)
        if key not in self._lookup:
            close = difflib.get_close_matches(key, list(self._lookup), n=3, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(self._lookup[c]) for c in close)}?" if close else ""
            raise UnknownNameError(f"unknown {self.kind} {name!r}{hint} Known {self.kind}s: "
                                   f"{', '.join(self.names()) or '(none)'}")
        return self._entries[self._lookup[key]]

    def resolve(self, name: str) -> str:
        """The registered (canonical) name for ``name`` or an alias of it."""
        return self.entry(name).spec.name

    def __contains__(self, name: str) -> bool:
        return canonical(name) in self._lookup

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)
