"""IIS-style HTTP 403 sub-statuses about client certificates (403.7, .13, .16, .17).

IIS answers a refused client certificate after the handshake, with a 403 whose
sub-status says why: :func:`iis_substatus` reads it from a header or the error
page, and :func:`describe_iis_403` says it in plain words. This module imports
nothing of the TLS code it describes.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .model import TLSProfile

__all__ = ["describe_iis_403", "iis_substatus"]

_IIS_SUBSTATUS: Final = {
    7: (
        "client certificate required",
        "the service wants a client certificate",
    ),
    13: (
        "client certificate revoked",
        "the service considers our client certificate revoked; get a new one issued",
    ),
    16: (
        "client certificate untrusted or invalid",
        "the service does not trust our client certificate (its CA, chain or key usage)",
    ),
    17: (
        "client certificate expired or not yet valid",
        "renew the client certificate, or check the server's clock",
    ),
}
_IIS_BODY: Final = re.compile(rb"\b403\.(\d{1,2})\b")


def iis_substatus(headers: Mapping[str, str], body: bytes = b"") -> int | None:
    """The IIS-style sub-status of a 403 response (``403.7`` and so on), from an
    ``X-IIS-SubStatus``-like header or the error page body; None if there is none."""
    for name, value in headers.items():
        if name.lower().replace("_", "-") in ("x-iis-substatus", "x-substatus", "substatus"):
            with contextlib.suppress(ValueError):
                return int(value.strip())
    match = _IIS_BODY.search(body[:65536])
    return int(match.group(1)) if match else None


def describe_iis_403(
    substatus: int, *, where: str, url: str, profile: TLSProfile | None
) -> str | None:
    """A plain-words message for the client-certificate sub-statuses (7, 13, 16,
    17), or None for the others."""
    known = _IIS_SUBSTATUS.get(substatus)
    if known is None:
        return None
    name, meaning = known
    cert = profile.client_cert if profile is not None else None
    if cert is None:
        ours = "the entry has no client certificate configured"
    else:
        ours = f"we presented {cert.describe()}"
    return f"entry {where}: {url} answered HTTP 403.{substatus} ({name}): {meaning}; {ours}"
