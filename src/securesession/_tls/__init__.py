"""Per-service TLS: profiles, client certificates, ``SSLContext`` building, server
key pins, CRLs, and handshake failures explained in plain words.

One :class:`TLSProfile` per registry entry says how that service is spoken to:
which client certificate to present, which TLS versions, which CAs to trust,
which server keys to accept, which CRL to check. One module per concern, the
dependencies pointing one way (``model`` ← ``context`` ← ``diagnosis``):

``model``      :class:`TLSProfile`, :class:`ClientCertificate`, :func:`spki_pin`, the
               PEM and PKCS#12 loaders (``cryptography``, imported on first use;
               never ``ssl``): all that registries and entries need
``context``    :func:`build_context`, :class:`ProfileContext` (``ssl``)
``diagnosis``  :func:`diagnose`, :func:`find_ssl_error`, the probes (``ssl``, ``socket``)
``iis``        IIS 403 sub-statuses (standalone)

None of them imports requests or urllib3, so another HTTP client's transport can
reuse them. This package loads each module when one of its names is first used
(PEP 562), so ``from securesession._tls.model import TLSProfile`` or
``from securesession._tls import TLSProfile`` loads neither ``ssl`` nor the
failure-diagnosis code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .context import ProfileContext, build_context
    from .diagnosis import diagnose, find_ssl_error, probe_server_versions
    from .iis import describe_iis_403, iis_substatus
    from .model import EXPIRY_WARNING_DAYS, ClientCertificate, TLSProfile, TLSVersionName, spki_pin

#: Each submodule and the names it defines that are used from the package.
_SUBMODULES: Final = {
    "model": (
        "EXPIRY_WARNING_DAYS",
        "ClientCertificate",
        "TLSProfile",
        "TLSVersionName",
        "spki_pin",
    ),
    "context": ("ProfileContext", "build_context"),
    "diagnosis": ("diagnose", "find_ssl_error", "probe_server_versions"),
    "iis": ("describe_iis_403", "iis_substatus"),
}

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "ClientCertificate",
    "ProfileContext",
    "TLSProfile",
    "TLSVersionName",
    "build_context",
    "describe_iis_403",
    "diagnose",
    "find_ssl_error",
    "iis_substatus",
    "probe_server_versions",
    "spki_pin",
]


def __getattr__(name: str) -> object:
    for module, names in _SUBMODULES.items():
        if name in names:
            value = getattr(importlib.import_module(f".{module}", __name__), name)
            globals()[name] = value  # later lookups are plain attribute reads
            return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
