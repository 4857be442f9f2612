"""Test helpers for securesession: throw-away PKI and loopback gateway servers.

Everything here is for tests only; nothing is imported by the library itself.
"""

from ._certs import CertificateAuthority, IssuedCert
from ._gateway import GatewayServer, RecordedRequest, SilentServer

__all__ = [
    "CertificateAuthority",
    "GatewayServer",
    "IssuedCert",
    "RecordedRequest",
    "SilentServer",
]
