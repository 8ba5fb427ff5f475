"""Built-in plugin: datasets (filled in by its module's owner)."""
from __future__ import annotations

from ..hookspecs import hookimpl  # noqa: F401
