"""securesession for httpx: the same registry, wire guard and TLS profiles for
``httpx.Client`` and ``httpx.AsyncClient`` (``pip install 'securesession[httpx]'``).

::

    from securesession.httpx import SecureClient, SecureAsyncClient

    with SecureClient(registry, follow_redirects=True) as client:
        client.get("https://gw.example.com:8443/payments/bills/42")

    async with SecureAsyncClient(registry, http2=True) as client:
        await client.get("https://gw.example.com:8443/payments/bills/42")

The guard lives in the transport, the one place every httpx request passes (each
redirect hop and auth leg included): :class:`SecureTransport` and
:class:`AsyncSecureTransport` can also be given to a client of your own as
``transport=``. See ``docs/httpx.md``.
"""

from __future__ import annotations

try:
    import httpx as _httpx  # noqa: F401
except ImportError:  # pragma: no cover - the extra is not installed
    raise ImportError(
        "securesession.httpx needs httpx: pip install 'securesession[httpx]'"
    ) from None

from ._client import SecureAsyncClient, SecureClient
from ._core import InvalidRequestURLError
from ._options import AsyncClientOptions, ClientOptions, TransportOptions
from ._transport import AsyncSecureTransport, SecureTransport

__all__ = [
    "AsyncClientOptions",
    "AsyncSecureTransport",
    "ClientOptions",
    "InvalidRequestURLError",
    "SecureAsyncClient",
    "SecureClient",
    "SecureTransport",
    "TransportOptions",
]
