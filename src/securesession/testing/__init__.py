"""Test helpers for securesession: stub registries, throw-away PKI and loopback gateways.

Everything here is for tests only; nothing is imported by the library itself.
Names are imported on first use (PEP 562), so loading the pytest plugin, which
lives in this package, does not pull in the PKI and server code.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from ._certs import CertificateAuthority, IssuedCert
    from ._gateway import GatewayServer, RecordedRequest, SilentServer
    from ._stub import CredentialSpec, EntriesSpec, EntrySpec, Lookup, StubRegistry

__all__ = [
    "CertificateAuthority",
    "CredentialSpec",
    "EntriesSpec",
    "EntrySpec",
    "GatewayServer",
    "IssuedCert",
    "Lookup",
    "RecordedRequest",
    "SilentServer",
    "StubRegistry",
]

_MODULES: Final = {
    "CertificateAuthority": "._certs",
    "IssuedCert": "._certs",
    "GatewayServer": "._gateway",
    "RecordedRequest": "._gateway",
    "SilentServer": "._gateway",
    "CredentialSpec": "._stub",
    "EntriesSpec": "._stub",
    "EntrySpec": "._stub",
    "Lookup": "._stub",
    "StubRegistry": "._stub",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
