"""vcrpy and pytest-recording: cassettes that never hold an injected secret.

vcrpy records and replays :class:`~securesession.SecureSession` traffic over http, https
and TLS profiles (client certificates, pins) as is: ``SecureAdapter``'s pools build their
connections through vcrpy's stub while a cassette is active, so a replayed request opens
no connection and a recorded one is checked like any other. What this module adds is the
redaction: :func:`vcr_options` names every header the registry's entries inject in
vcrpy's ``filter_headers``, so a cassette holds a placeholder where the secret was.

This module does not import vcrpy; it only builds options for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from .. import Registry, SecureSession, ServiceEntry
from ._names import injected_header_names

__all__ = ["REDACTED", "vcr_options"]

#: What a cassette holds instead of an injected header's value (OpenTelemetry's word).
REDACTED: Final = "[REDACTED]"


def vcr_options(
    source: Registry | SecureSession | Iterable[ServiceEntry],
    *,
    placeholder: str | None = REDACTED,
    **options: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``vcr.VCR(...)``, ``vcr.use_cassette(...)`` or the
    ``vcr_config`` fixture of pytest-recording, redacting every injected header.

    ``filter_headers`` gets ``(name, placeholder)`` for every name of
    :func:`~securesession.integrations.injected_header_names` (*source* is a registry,
    a session or entries); ``placeholder=None`` removes those headers from the
    cassette instead. A ``filter_headers`` among *options* is kept, and wins for the
    names it lists; every other option is passed through unchanged.

    The names are read when this is called (it decrypts every entry): build the
    options after the entries exist, and again after adding entries that inject
    other header names.
    """
    given = list(options.pop("filter_headers", ()))
    taken = {(item if isinstance(item, str) else item[0]).lower() for item in given}
    filters: list[str | tuple[str, str | None]] = list(given)
    for name in injected_header_names(source):
        if name.lower() not in taken:
            filters.append((name, placeholder))
    return {**options, "filter_headers": filters}
