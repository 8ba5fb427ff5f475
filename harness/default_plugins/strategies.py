"""Built-in plugin: strategies (filled in by its module's owner)."""
from __future__ import annotations

from ..hookspecs import hookimpl  # noqa: F401
