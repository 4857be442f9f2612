"""Helpers for the libraries securesession is combined with (recorders, caches, tracing).

Built on the public API only; the library itself never imports this package.
"""

from __future__ import annotations

from ._names import injected_header_names
from .betamax import betamax_before_record, betamax_redacting
from .otel import otel_sanitize_fields
from .vcr import vcr_options

__all__ = [
    "betamax_before_record",
    "betamax_redacting",
    "injected_header_names",
    "otel_sanitize_fields",
    "vcr_options",
]
