"""Typed options: every strategy declares a dataclass of its options (docs/design.md §5).

A method's profile is a plain mapping (``{"counter": "rescsrnet", "train": {"epochs": 10}}``); :func:`parse`
turns it into the strategy's options dataclass, checking every key and value, and reports **all** problems at
once so that :func:`harness.planning.plan_run` can list every bad option of every method before any work.

Field conventions:

- ``int``, ``float`` (ints accepted), ``str``, ``bool``, ``X | None``, ``Literal[...]``, ``tuple[...]`` /
  ``list[...]`` (from lists), ``dict``, and nested option dataclasses (from mappings);
- component references are typed fields made with :func:`component` (``counter: str = component("counter")``,
  ``annotators: tuple[str, ...] = component("counter", many=True, default=(...))``): the planner checks them
  against the registries, never guessing from key names;
- a dataclass may define ``validate(self) -> list[str]`` for checks across fields (one message per problem).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any, Literal, Mapping, Union, get_args, get_origin

COMPONENT = "harness_component"


def component(kind: str, *, many: bool = False, default: Any = MISSING, doc: str = "") -> Any:
    """A dataclass field naming registered component(s) of ``kind`` (``"counter"``, ``"generator"``, ...).

    ``many=True``: a tuple of names. Without ``default`` the option is required."""
    meta = {COMPONENT: kind, "many": many, "doc": doc}
    if isinstance(default, (list, tuple)):
        value = tuple(default)
        return field(default_factory=lambda: value, metadata=meta)
    return field(default=default, metadata=meta)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _is_none_ok(tp) -> bool:
    return tp is type(None) or (get_origin(tp) in (Union, types.UnionType) and type(None) in get_args(tp))


def _convert(value: Any, tp: Any, where: str, problems: list[str]) -> Any:
    """``value`` converted to ``tp`` (or the value itself with a problem recorded)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(args) < len(get_args(tp)):
            return None
        if len(args) == 1:  # Optional[X]: X's own problems are the useful message
            return _convert(value, args[0], where, problems)
        for arg in args:
            trial: list[str] = []
            out = _convert(value, arg, where, trial)
            if not trial:
                return out
        problems.append(f"{where}={value!r} is not {_describe(tp)}")
        return value
    if origin is Literal:
        if value not in get_args(tp):
            problems.append(f"{where}={value!r} is not one of {', '.join(repr(a) for a in get_args(tp))}")
        return value
    if is_dataclass(tp):
        if is_dataclass(value) and isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            problems.append(f"{where} must be a mapping of options, got {value!r}")
            return value
        obj, sub = _parse(tp, value, where)
        problems.extend(sub)
        return obj
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            problems.append(f"{where}={value!r} must be a list")
            return value
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                problems.append(f"{where}={value!r} must have {len(args)} items")
                return value
            items = [_convert(v, a, f"{where}[{i}]", problems) for i, (v, a) in enumerate(zip(value, args))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(v, item_tp, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        return tuple(items) if (origin is tuple or tp is tuple) else list(items)
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            problems.append(f"{where}={value!r} must be a mapping")
            return value
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{where}={value!r} must be true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}={value!r} must be an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{where}={value!r} must be a number")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{where}={value!r} must be a string")
        return value
    if value is None and not _is_none_ok(tp):
        problems.append(f"{where} must not be null")
    return value


def _describe(tp) -> str:
    return str(tp).replace("typing.", "")


def _parse(cls, values: Mapping, where: str) -> tuple[Any, list[str]]:
    problems: list[str] = []
    hints = _hints(cls)
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = sorted(set(values) - set(known))
    if unknown:
        problems.append(f"{where}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(known))}")
    kwargs = {}
    for name, f in known.items():
        key = f"{where}.{name}" if where else name
        if name not in values:
            if f.default is MISSING and f.default_factory is MISSING:  # type: ignore[misc]
                problems.append(f"{where}: option {name!r} is required")
            continue
        kwargs[name] = _convert(values[name], hints[name], key, problems)
    if problems:
        return None, problems
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as exc:
        return None, [f"{where}: {exc}"]
    if hasattr(obj, "validate"):
        problems.extend(f"{where}: {p}" for p in (obj.validate() or []))
    return obj, problems


def parse(cls, values: Mapping | None, where: str = "options") -> tuple[Any, list[str]]:
    """``(options object or None, problems)`` for the mapping ``values`` read as dataclass ``cls``.

    ``where`` prefixes every message (e.g. ``"method 'x' (smoke)"``)."""
    return _parse(cls, dict(values or {}), where)


def parse_or_raise(cls, values: Mapping | None, where: str = "options"):
    """:func:`parse`, raising :class:`harness.errors.ConfigError` with every problem."""
    from .errors import ConfigError

    obj, problems = parse(cls, values, where)
    if problems:
        raise ConfigError("; ".join(problems))
    return obj


def component_refs(obj: Any, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(option path, kind, name)`` of every component reference in an options object (nested included)."""
    out = []
    if not is_dataclass(obj):
        return out
    for f in fields(obj):
        value = getattr(obj, f.name)
        path = f"{prefix}{f.name}"
        kind = f.metadata.get(COMPONENT)
        if kind:
            names = value if f.metadata.get("many") else [value]
            out += [(path, kind, n) for n in (names or ()) if isinstance(n, str)]
        elif is_dataclass(value):
            out += component_refs(value, path + ".")
    return out


def to_dict(obj: Any) -> dict:
    """JSON-ready dict of an options object (tuples become lists)."""
    return _plain(dataclasses.asdict(obj)) if is_dataclass(obj) else dict(obj or {})


def _plain(v):
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


__all__ = ["component", "parse", "parse_or_raise", "component_refs", "to_dict"]
