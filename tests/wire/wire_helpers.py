"""Helpers of the wire-guard tests: the loopback origins, entries whose secrets are
unique strings, and a reader that tells from any recorded request which entry's
values reached it."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from securesession import Credential, ServiceEntry
from securesession._tls import ClientCertificate, TLSProfile
from securesession.testing import CertificateAuthority, GatewayServer, RecordedRequest

DIGEST_USER = "digest-user"
DIGEST_PASSWORD = "digest-SECRET-pw"
NTLM_USER = "ntlm-user"
NTLM_PASSWORD = "ntlm-SECRET-pw"
_BASIC = re.compile(r"Basic\s+([A-Za-z0-9+/=]+)")


@dataclass
class Origins:
    ca: CertificateAuthority
    ca_file: str
    tls_a: GatewayServer  # https, asks for a client certificate
    tls_b: GatewayServer  # https, asks for a client certificate
    digest: GatewayServer  # https, asks for a client certificate, HTTP Digest
    plain_c: GatewayServer  # http
    plain_d: GatewayServer  # http
    ntlm: GatewayServer  # https, asks for a client certificate, NTLM (pyspnego acceptor)

    def all(self) -> list[GatewayServer]:
        return [self.tls_a, self.tls_b, self.digest, self.plain_c, self.plain_d, self.ntlm]

    def reset(self) -> None:
        for server in self.all():
            server.reset()
            server.clear_routes()


def client_cert(ca: CertificateAuthority, cn: str) -> ClientCertificate:
    issued = ca.issue_client(cn)
    return ClientCertificate.from_pkcs12(issued.pkcs12(b"p12-SECRET"), "p12-SECRET")


def profile(ca: CertificateAuthority, cn: str, **settings: object) -> TLSProfile:
    return TLSProfile(client_cert=client_cert(ca, cn), ca_bundle=ca.cert_pem, **settings)  # type: ignore[arg-type]


def gateway_entry(
    url: str, tag: str, *, basic: bool = True, tls: TLSProfile | None = None
) -> ServiceEntry:
    """An entry whose every injected value contains *tag* (and the SECRET marker):
    gateway headers, and HTTP Basic unless *basic* is false."""
    return ServiceEntry(
        url=url,
        gateway=Credential(f"{tag}-gw-user", f"{tag}-gw-SECRET"),
        request=Credential(f"{tag}-rq-user", f"{tag}-rq-SECRET") if basic else None,
        tls=tls,
    )


def values_seen(record: RecordedRequest) -> str:
    """Every header value of *record*, with Basic credentials decoded."""
    text = " ".join(record.headers.values())
    decoded = [
        base64.b64decode(match.group(1)).decode("utf-8", "replace")
        for match in _BASIC.finditer(text)
    ]
    return " ".join([text, *decoded])


def tags_seen(record: RecordedRequest, tags: list[str]) -> set[str]:
    """Which of *tags* (entry markers) appear in *record*'s headers."""
    text = values_seen(record)
    return {tag for tag in tags if f"{tag}-" in text}


def ntlm_user_seen(record: RecordedRequest) -> bool:
    """Whether *record* carries an NTLM message naming :data:`NTLM_USER` (the
    Authenticate message holds the user name in UTF-16LE)."""
    scheme, _, token = (record.header("Authorization") or "").partition(" ")
    if scheme.upper() != "NTLM" or not token:
        return False
    message = base64.b64decode(token + "=" * (-len(token) % 4))
    return NTLM_USER.split("\\")[-1].encode("utf-16-le") in message
