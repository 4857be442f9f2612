"""Entries whose every injected value carries a unique tag (and the SECRET marker), a
reader that tells from a recorded request which entries' values reached it, and
registry doubles for the refresh and stale-on-error behaviours."""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass

from securesession import (
    ClientCertificate,
    Credential,
    RegistryError,
    ServiceEntry,
    TLSProfile,
)
from securesession._registry import EntryRef
from securesession.testing import CertificateAuthority, GatewayServer, RecordedRequest

_BASIC = re.compile(r"Basic\s+([A-Za-z0-9+/=]+)")


@dataclass
class Origins:
    ca: CertificateAuthority
    ca_file: str
    tls_a: GatewayServer  # https, asks for a client certificate
    tls_b: GatewayServer  # https, asks for a client certificate
    plain_c: GatewayServer  # http
    plain_d: GatewayServer  # http

    def all(self) -> list[GatewayServer]:
        return [self.tls_a, self.tls_b, self.plain_c, self.plain_d]


def client_cert(ca: CertificateAuthority, cn: str) -> ClientCertificate:
    issued = ca.issue_client(cn)
    return ClientCertificate.from_pkcs12(issued.pkcs12(b"p12-SECRET"), "p12-SECRET")


def profile(ca: CertificateAuthority, cn: str, **settings: object) -> TLSProfile:
    return TLSProfile(client_cert=client_cert(ca, cn), ca_bundle=ca.cert_pem, **settings)  # type: ignore[arg-type]


def tagged(
    url: str, tag: str, *, basic: bool = True, tls: TLSProfile | None = None
) -> ServiceEntry:
    """An entry whose gateway headers (and Basic credential unless *basic* is false)
    all contain *tag*."""
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
    text = values_seen(record)
    return {tag for tag in tags if f"{tag}-" in text}


class LaggingRegistry:
    """A registry whose cheap lookup lags behind its store (a change feed not caught
    up): :meth:`hold` keeps answering an entry's current revision while it is
    rewritten; loads always read the store."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self._held: dict[str, EntryRef] = {}

    def hold(self, url: str) -> None:
        ref = self.inner.lookup(url)  # type: ignore[attr-defined]
        assert ref is not None
        self._held[ref.key] = ref

    def lookup(self, url: str) -> EntryRef | None:
        ref: EntryRef | None = self.inner.lookup(url)  # type: ignore[attr-defined]
        if ref is None:
            return None
        return self._held.get(ref.key, ref)

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        entry: ServiceEntry | None = self.inner.load(ref)  # type: ignore[attr-defined]
        return entry


class FlakyRegistry:
    """A registry that can be taken down: lookups and loads raise RegistryError."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.down = False
        self._lock = threading.Lock()

    def _check(self) -> None:
        if self.down:
            raise RegistryError("registry unreachable (test)")

    def lookup(self, url: str) -> EntryRef | None:
        self._check()
        ref: EntryRef | None = self.inner.lookup(url)  # type: ignore[attr-defined]
        return ref

    def load(self, ref: EntryRef) -> ServiceEntry | None:
        self._check()
        entry: ServiceEntry | None = self.inner.load(ref)  # type: ignore[attr-defined]
        return entry
