"""Which header names a registry's entries inject: what recorders, caches and tracers must
redact, so that a cassette, a cached response or a span never holds a secret."""

from __future__ import annotations

from collections.abc import Iterable

from .. import Registry, SecureSession, ServiceEntry

__all__ = ["injected_header_names"]

#: Always redacted: the registry's own Authorization modes write it, and so do the
#: challenge answers of Digest and NTLM; a proxy may get its own credential.
ALWAYS: tuple[str, ...] = ("Authorization", "Proxy-Authorization")


def injected_header_names(
    source: Registry | SecureSession | Iterable[ServiceEntry],
) -> tuple[str, ...]:
    """Every header name that *source*'s entries can inject, sorted, case as written.

    *source* is a registry, a session (its registry) or entries. The names are read
    when this is called: call it again after adding entries with new header names.
    ``Authorization`` and ``Proxy-Authorization`` are always included. Reading the
    names decrypts every entry, so call it once (at test or tracer set-up), not per
    request.
    """
    if isinstance(source, SecureSession):
        registry = source.registry
        if not isinstance(registry, Registry):
            raise TypeError(
                f"the session's registry ({type(registry).__name__}) cannot list its "
                "entries; pass the entries themselves"
            )
        source = registry
    entries = source.entries() if isinstance(source, Registry) else source
    names = {name.lower(): name for name in ALWAYS}
    for entry in entries:
        for credential, mode, headers in (
            (entry.gateway, entry.gateway_auth, entry.gateway_headers),
            (entry.request, entry.request_auth, entry.request_headers),
        ):
            if credential is not None and mode == "headers":
                for name in headers:
                    names.setdefault(name.lower(), name)
        for name in entry.secret_headers:
            names.setdefault(name.lower(), name)
    return tuple(sorted(names.values(), key=str.lower))
