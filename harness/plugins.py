"""Plugin manager: built-in default plugins plus third-party ``harness`` entry points.

- Built-ins (``DEFAULT_PLUGINS``) register through the same hooks as third-party plugins.
- Third-party distributions declare ``[project.entry-points.harness] name = "module"``.
- ``HARNESS_LOAD_PLUGINS="a,b"`` loads only those entry-point plugins (``""`` loads none); built-ins always load.
- A plugin that fails to import or to register is recorded in :data:`LoadReport.errors` (and warned about),
  never fatal to the others; duplicate component names are reported the same way, naming both plugins.
"""
from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import warnings
from dataclasses import dataclass, field
from typing import Any, Sequence

import pluggy

from . import hookspecs
from .components import KINDS
from .components import kind as kind_of
from .errors import HarnessError
from .registry import Registry
from .specs import (AnnotatorSpec, CommandSpec, CounterSpec, DatasetSpec, GeneratorSpec, MethodSpec, SegmenterSpec,
                    StrategySpec, TinyModelSpec)

DEFAULT_PLUGINS = (
    "harness.default_plugins.datasets",
    "harness.default_plugins.synthetic",
    "harness.default_plugins.counters",
    "harness.default_plugins.strategies",
    "harness.default_plugins.generators",
)



@dataclass
class PluginInfo:
    name: str
    module: str
    version: str | None
    distribution: str | None
    builtin: bool
    hooks: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)  # kind -> names
    error: str | None = None


class Registries:
    """All component registries, built once from the loaded plugins: one typed field per kind of
    :data:`harness.components.KINDS` (a test checks they match), plus ``plugins``."""

    datasets: Registry[DatasetSpec]
    counters: Registry[CounterSpec]
    generators: Registry[GeneratorSpec]
    annotators: Registry[AnnotatorSpec]
    segmenters: Registry[SegmenterSpec]
    strategies: Registry[StrategySpec]
    methods: Registry[MethodSpec]
    commands: Registry[CommandSpec]
    tiny_models: Registry[TinyModelSpec]

    def __init__(self, registries: dict[str, Registry], plugins: list[PluginInfo]):
        self._by_kind = registries
        self.plugins = plugins
        self.datasets, self.counters = registries["dataset"], registries["counter"]
        self.generators, self.annotators = registries["generator"], registries["annotator"]
        self.segmenters, self.strategies = registries["segmenter"], registries["strategy"]
        self.methods, self.commands = registries["method"], registries["command"]
        self.tiny_models = registries["tiny_model"]

    def by_kind(self, kind: str) -> Registry:
        """The registry of ``kind`` (singular or plural name)."""
        return self._by_kind[kind_of(kind).name]

    @property
    def errors(self) -> dict[str, str]:
        return {p.name: p.error for p in self.plugins if p.error}


def _allowed_entry_points() -> set[str] | None:
    value = os.environ.get("HARNESS_LOAD_PLUGINS")
    if value is None:
        return None
    return {v.strip() for v in value.split(",") if v.strip()}


def make_plugin_manager(extra_plugins: Sequence[Any] = ()) -> tuple[pluggy.PluginManager, list[PluginInfo]]:
    """A fresh plugin manager with the default plugins and the allowed entry-point plugins registered.

    ``extra_plugins``: further plugin objects (modules or instances with ``@hookimpl`` methods) registered
    after the entry points, e.g. by tests; each is named by its ``__name__`` (modules) or class name and
    is reported like any plugin (``distribution=None``). ``HARNESS_LOAD_PLUGINS`` does not filter them.
    """
    pm = pluggy.PluginManager("harness")
    pm.add_hookspecs(hookspecs)
    infos: list[PluginInfo] = []
    harness_version = _dist_version("crowd-harness")
    for modname in DEFAULT_PLUGINS:
        info = PluginInfo(name=modname.rsplit(".", 1)[-1], module=modname, version=harness_version,
                          distribution="crowd-harness", builtin=True)
        infos.append(info)
        try:
            pm.register(importlib.import_module(modname), name=modname)
        except Exception as exc:  # a broken built-in is reported like any plugin
            info.error = f"{type(exc).__name__}: {exc}"
    allowed = _allowed_entry_points()
    seen: set[str] = set()
    for ep in sorted(md.entry_points(group="harness"), key=lambda e: e.name):
        if ep.name in seen or (allowed is not None and ep.name not in allowed):
            continue
        seen.add(ep.name)
        dist = getattr(ep, "dist", None)
        info = PluginInfo(name=ep.name, module=ep.value, version=getattr(dist, "version", None),
                          distribution=getattr(dist, "name", None), builtin=False)
        infos.append(info)
        try:
            plugin = ep.load()
            _check_api(plugin, ep.name)
            pm.register(plugin, name=ep.name)
        except HarnessError as exc:
            info.error = str(exc)
            warnings.warn(f"harness plugin {ep.name!r}: {info.error}", stacklevel=2)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"harness plugin {ep.name!r} failed to load: {info.error}", stacklevel=2)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        info = PluginInfo(name=name, module=name, version=None, distribution=None, builtin=False)
        infos.append(info)
        try:
            _check_api(plugin, name)
            pm.register(plugin, name=name)
        except HarnessError as exc:
            info.error = str(exc)
            warnings.warn(f"harness plugin {name!r}: {info.error}", stacklevel=2)
        except Exception as exc:
            info.error = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"harness plugin {name!r} failed to load: {info.error}", stacklevel=2)
    return pm, infos


def _check_api(plugin: Any, name: str) -> None:
    """Refuse a plugin that declares another plugin API version (``HARNESS_API``) than :data:`hookspecs.API_VERSION`.

    Raises:
        HarnessError: one line naming both versions and the fix."""
    declared = getattr(plugin, "HARNESS_API", None)
    if declared is not None and declared != hookspecs.API_VERSION:
        raise HarnessError(f"written for harness plugin API {declared}, this crowd-harness provides API "
                           f"{hookspecs.API_VERSION}: install a version of the plugin made for it (or of "
                           f"crowd-harness made for the plugin); the plugin is not loaded")


def _dist_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def build_registries(extra_plugins: Sequence[Any] = ()) -> Registries:
    """Load all plugins (plus ``extra_plugins``, see :func:`make_plugin_manager`) and call every
    registration hook, isolating failures per plugin."""
    pm, infos = make_plugin_manager(extra_plugins)
    by_pm_name: dict[str, PluginInfo] = {}
    for info in infos:
        by_pm_name[info.module if info.builtin else info.name] = info
    regs = {k.name: Registry(k.name) for k in KINDS}
    for k in KINDS:
        hook_name, kind = k.hook, k.name
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            info = by_pm_name.get(impl.plugin_name)
            if info is None or info.error:
                continue
            if hook_name not in info.hooks:
                info.hooks.append(hook_name)
            registered: list[Any] = []
            try:
                impl.function(register=registered.append)
                for spec in registered:
                    if not isinstance(spec, k.spec):
                        raise HarnessError(f"{hook_name} registered a {type(spec).__name__}; it takes "
                                           f"harness.{k.spec.__name__} objects")
                    regs[kind].register(spec, info.name)
                    info.components.setdefault(kind, []).append(spec.name)
            except HarnessError as exc:
                info.error = str(exc)
                warnings.warn(f"harness plugin {info.name!r}: {exc}", stacklevel=2)
            except Exception as exc:
                info.error = f"{hook_name}: {type(exc).__name__}: {exc}"
                warnings.warn(f"harness plugin {info.name!r} failed in {hook_name}: {exc}", stacklevel=2)
    return Registries(regs, infos)


def plugin_modules(names) -> list:
    """Import extra plugin modules by name (``harness run --plugin MODULE``: a plugin used without installing it
    as a distribution; it must be importable, on every worker too).

    Raises:
        HarnessError: a module that cannot be imported (one line naming it)."""
    out = []
    for name in names or ():
        try:
            out.append(importlib.import_module(name))
        except Exception as exc:
            raise HarnessError(f"--plugin {name}: cannot import it ({type(exc).__name__}: {exc}); put its folder on "
                               f"PYTHONPATH or pip-install it") from None
    return out


_REGISTRIES: Registries | None = None


def get_registries(refresh: bool = False, extra_plugins: Sequence[Any] = ()) -> Registries:
    """The process-wide registries (built on first use; ``refresh=True`` reloads plugins, adding
    ``extra_plugins`` as in :func:`build_registries`)."""
    global _REGISTRIES
    if _REGISTRIES is None or refresh:
        _REGISTRIES = build_registries(extra_plugins)
    return _REGISTRIES


def get_plugins() -> list[PluginInfo]:
    """Loaded plugins with versions, hooks, registered components and load errors."""
    return get_registries().plugins
