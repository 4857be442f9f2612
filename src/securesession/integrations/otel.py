"""OpenTelemetry: spans that never carry an injected secret.

With request-header capture on (``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST``),
opentelemetry-instrumentation-requests puts every captured header on the span, the ones a
:class:`~securesession.SecureSession` injected included: it instruments
``requests.Session.send``, which runs after the injection. Its sanitize list
(``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS``, read when
``RequestsInstrumentor().instrument()`` runs) replaces the values of the headers it names
with ``[REDACTED]``; :func:`otel_sanitize_fields` is that list for a registry.

This module does not import OpenTelemetry.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

from .. import Registry, SecureSession, ServiceEntry
from ._names import injected_header_names

__all__ = ["SANITIZE_FIELDS_ENV", "otel_sanitize_fields"]

#: The environment variable OpenTelemetry's HTTP instrumentations read the list from.
SANITIZE_FIELDS_ENV: Final = "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS"

# Header names made of these characters match themselves as regular expressions.
_PLAIN: Final = re.compile(r"[A-Za-z0-9_-]+")


def otel_sanitize_fields(source: Registry | SecureSession | Iterable[ServiceEntry]) -> str:
    """The value for ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SANITIZE_FIELDS``: every
    name :func:`~securesession.integrations.injected_header_names` lists for *source*
    (a registry, a session or entries), comma-separated.

    OpenTelemetry reads the entries as case-insensitive regular expressions; a name
    holding a character that means something in one (``.``, ``*``, ``+``, ``|``, ...)
    is escaped, so that each entry matches its header. Set the variable before
    ``RequestsInstrumentor().instrument()``; append to a value already set rather
    than replacing it. The names are read when this is called (it decrypts every
    entry).
    """
    return ",".join(
        name if _PLAIN.fullmatch(name) else re.escape(name)
        for name in injected_header_names(source)
    )
