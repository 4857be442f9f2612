"""Helpers for the libraries securesession is combined with (recorders, caches, tracing).

Built on the public API only; the library itself never imports this package.
"""

from __future__ import annotations

from ._names import injected_header_names

__all__ = ["injected_header_names"]
