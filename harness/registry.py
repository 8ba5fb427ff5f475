"""Name -> component registries with plugin attribution, aliases and "did you mean" errors."""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Generic, Iterator, TypeVar

from .errors import DuplicateNameError, RegistryError, UnknownNameError
from .specs import canonical

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    spec: T
    plugin: str


#: a component name: a letter or digit, then letters, digits, ``.``, ``_``, ``+``, ``-`` (it names folders of the run
#: directory and appears in matrices, so no path separators, ``..``, commas, arrows or spaces)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_name(name: Any, kind: str, plugin: str) -> str:
    """``name`` if it is a safe component name (:data:`NAME_PATTERN`, no ``..``).

    Raises:
        RegistryError: one line naming the plugin, the kind and the name, and the rule."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name) or ".." in name:
        raise RegistryError(f"plugin {plugin!r} registers {kind} name {name!r}, which is not allowed: use letters, "
                            f"digits, '.', '_', '+', '-' (at most 100, starting with a letter or digit, no '..'): "
                            f"names become folders of the run directory")
    return name


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
        for n in (name, *getattr(spec, "aliases", ())):
            check_name(n, self.kind, plugin)
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
