"""Errors the harness raises for bad input.

Every error here carries a one-line message that names the file (or name) at fault and what to do about it.
The CLI prints ``str(error)`` and exits non-zero instead of showing a traceback.
"""
from __future__ import annotations


class HarnessError(Exception):
    """Base class: a user-facing, one-line error."""

    def __str__(self) -> str:  # keep messages on one line whatever callers pass
        return " ".join(str(self.args[0]).split()) if self.args else self.__class__.__name__


class DataError(HarnessError):
    """A dataset file is missing, corrupt or in the wrong format."""


class DataRootError(DataError):
    """The data root is missing or does not hold the expected layout."""


class RegistryError(HarnessError):
    """A component name is unknown or registered twice."""


class UnknownNameError(RegistryError):
    """An unknown component name; the message lists close matches and all known names."""


class DuplicateNameError(RegistryError):
    """Two plugins registered the same component name; the message names both plugins."""


class WeightsError(HarnessError):
    """Pretrained weights are missing, unreadable or cannot be fetched (e.g. offline)."""


class WeightsUnavailable(WeightsError):
    """Released weights are absent from this machine and cannot be fetched (no weights folder, file not there,
    offline): what a dry run replaces with the same architecture's random weights. A wrong path the user set, or a
    file that fails its checks, stays a plain :class:`WeightsError` everywhere."""


class ConfigError(HarnessError):
    """An invalid run configuration (matrix, methods, seeds, profile, options)."""


class PluginError(HarnessError):
    """A plugin's component broke its contract (missing method, invalid prediction); names the component."""
