"""A client certificate's public facts are stored with its entry, in a field of their own.

Loading an entry then reads no certificate and imports no ``cryptography.x509``, and a
PEM client certificate whose key is encrypted goes to OpenSSL as it is: a one-call
mutual-TLS script loads no certificate code at all (the cold-start target). The facts
field is encrypted like the certificate and covered by the entry tag, so a store writer
can neither read nor change them (the expiry check reads them); entries stored before
the facts, and legacy entries, read the bundle instead.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization

from securesession import (
    ClientCertificateExpiredError,
    DecryptionError,
    MasterKey,
    RegistryCorruptError,
    SecureSession,
    ServiceEntry,
    open_registry,
)
from securesession._registry import _codec
from securesession._tls import ClientCertificate, ProfileContext, TLSProfile, build_context
from securesession._tls import context as tls_context
from securesession._tls import model as tls_model
from securesession._urls import canonicalize
from securesession.registry import EncryptedRegistry
from securesession.testing import CertificateAuthority, GatewayServer, IssuedCert

from ..core.test_entry_integrity import Store
from .tls_helpers import PASSWORD, issue, pfx

FACTS = "tls.client_cert.facts"
#: What loading an entry and making one request must not import.
_CERTIFICATE_CODE = (
    "cryptography.x509",
    "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.primitives.serialization.pkcs12",
)


def _pem(cert: IssuedCert, chain: bytes | None = None) -> ClientCertificate:
    return ClientCertificate.from_pem(
        cert.chain_pem if chain is None else chain,
        cert.encrypted_key_pem(PASSWORD.encode()),
        PASSWORD,
    )


def _facts_of(cert: IssuedCert) -> dict[str, str]:
    leaf = cert.certificate
    return {
        "subject": leaf.subject.rfc4514_string(),
        "issuer": leaf.issuer.rfc4514_string(),
        "serial": f"{leaf.serial_number:x}",
        "not_before": leaf.not_valid_before_utc.isoformat(),
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "sha256": leaf.fingerprint(hashes.SHA256()).hex(),
    }


def _stored_facts(db: SQLiteFile, url: str) -> dict[str, str]:
    """The facts field of *url*'s row, decrypted as the codec does."""
    key = canonicalize(url).key
    token = db.row(url)[1][FACTS]
    context = b"securesession entry v3\x00" + key.encode() + b"\x00" + FACTS.encode()
    facts: dict[str, str] = json.loads(db.key.decrypt(token, context))
    return facts


class SQLiteFile(Store):
    """A SQLite registry file with hand access to its rows (as a store writer), and the
    master key it is opened with."""

    def __init__(self, tmp_path: Path, key: MasterKey) -> None:
        super().__init__("sqlite", tmp_path)
        self.key = key
        self.older_facts = ""  # a facts token kept from an older revision

    def registry(self) -> EncryptedRegistry:
        return self.open(self.key)


@pytest.fixture
def db(tmp_path: Path) -> SQLiteFile:
    return SQLiteFile(tmp_path, MasterKey.generate())


@pytest.fixture
def mtls(gateway: Callable[..., GatewayServer]) -> GatewayServer:
    """A TLS gateway that requires a client certificate (stopped by ``gateway``)."""
    return gateway(require_client_cert=True)


def _entry(
    server: GatewayServer, ca: CertificateAuthority, cert: ClientCertificate
) -> ServiceEntry:
    return ServiceEntry(
        url=server.url + "/api", tls=TLSProfile(client_cert=cert, ca_bundle=ca.cert_pem)
    )


@pytest.fixture
def no_certificate_reading(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every bundle read (decrypting the key, parsing the chain) is recorded."""
    reads: list[str] = []
    original_pem, original_pkcs12 = tls_model._load_pem, tls_model._load_pkcs12

    def load_pem(data: bytes, password: bytes | None) -> Any:
        reads.append("pem")
        return original_pem(data, password)

    def load_pkcs12(data: bytes, password: bytes | None) -> Any:
        reads.append("pkcs12")
        return original_pkcs12(data, password)

    monkeypatch.setattr(tls_model, "_load_pem", load_pem)
    monkeypatch.setattr(tls_model, "_load_pkcs12", load_pkcs12)
    return reads


# -- stored, and used without reading the certificate ------------------------------------


@pytest.mark.parametrize("kind", ["pem", "pkcs12"])
def test_the_facts_are_stored_and_loading_reads_no_certificate(
    kind: str,
    db: SQLiteFile,
    mtls: GatewayServer,
    ca: CertificateAuthority,
    no_certificate_reading: list[str],
) -> None:
    issued = issue(ca, f"facts-{kind}")
    cert = _pem(issued) if kind == "pem" else pfx(issued)
    registry = db.registry()
    try:
        registry.put(_entry(mtls, ca, cert))
        assert _stored_facts(db, mtls.url + "/api") == _facts_of(issued)
        # Encrypted like the certificate: the row shows no subject, serial or date.
        row = json.dumps(db.row(mtls.url + "/api"))
        assert f"facts-{kind}" not in row and f"{issued.serial:x}" not in row
        no_certificate_reading.clear()
        loaded = registry.get(mtls.url + "/api/x")
        assert loaded is not None and loaded.tls is not None
        stored = loaded.tls.client_cert
        assert stored is not None
        assert (stored.subject, stored.issuer, stored.serial) == (
            f"CN=facts-{kind}",
            "CN=tls test CA",
            issued.serial,
        )
        assert stored.not_after == issued.certificate.not_valid_after_utc
        assert stored.fingerprint == _facts_of(issued)["sha256"]
        assert stored == cert and hash(stored) == hash(cert)
        assert no_certificate_reading == []  # loading, and every fact, read nothing
        with SecureSession(registry) as session:
            assert session.get(mtls.url + "/api/x").status_code == 200
    finally:
        registry.close()
    assert [r.client_cert_subject_cn for r in mtls.requests] == [f"facts-{kind}"]
    # OpenSSL reads a PEM with an encrypted key as it is; PKCS#12 is read to re-wrap.
    assert no_certificate_reading == ([] if kind == "pem" else ["pkcs12"])


_ONE_CALL = """\
import json, sys
from securesession import MasterKey, SecureSession, open_registry
registry = open_registry("sqlite://" + sys.argv[2], MasterKey.from_file(sys.argv[3]))
with SecureSession(registry) as session:
    status = session.get(sys.argv[1]).status_code
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def test_a_one_call_mutual_tls_script_loads_no_certificate_code(
    db: SQLiteFile, mtls: GatewayServer, ca: CertificateAuthority, tmp_path: Path
) -> None:
    registry = db.registry()
    registry.put(_entry(mtls, ca, _pem(issue(ca, "one-call"))))
    registry.close()
    key_file = tmp_path / "master.key"
    db.key.save(key_file)
    child = subprocess.run(
        [sys.executable, "-c", _ONE_CALL, mtls.url + "/api/v1", str(db.path), str(key_file)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": "error::DeprecationWarning"},
    )
    report = json.loads(child.stdout.splitlines()[-1])
    assert report["status"] == 200
    assert [r.client_cert_subject_cn for r in mtls.requests] == ["one-call"]
    assert [name for name in _CERTIFICATE_CODE if name in report["modules"]] == []
    assert "securesession._tls.diagnosis" not in report["modules"]  # nothing failed


# -- authenticated with the entry -------------------------------------------------------


def _swap_in_facts_of_another_entry(db: SQLiteFile, url: str, other: str) -> None:
    settings, secrets = db.row(url)
    secrets[FACTS] = db.row(other)[1][FACTS]
    db.set_row(url, settings, secrets)


def _drop_facts(db: SQLiteFile, url: str, other: str) -> None:
    settings, secrets = db.row(url)
    del secrets[FACTS]
    db.set_row(url, settings, secrets)


def _facts_of_an_older_revision(db: SQLiteFile, url: str, other: str) -> None:
    settings, secrets = db.row(url)
    secrets[FACTS] = db.older_facts
    db.set_row(url, settings, secrets)


@pytest.mark.parametrize(
    "edit",
    [_swap_in_facts_of_another_entry, _drop_facts, _facts_of_an_older_revision],
    ids=["swapped from another entry", "removed", "rolled back"],
)
def test_tampered_facts_are_refused_and_nothing_is_sent(
    edit: Callable[[SQLiteFile, str, str], None],
    db: SQLiteFile,
    mtls: GatewayServer,
    ca: CertificateAuthority,
) -> None:
    """A store writer who wants an expired certificate to pass the expiry check (or
    another subject to show) can only move facts tokens around: each way is refused."""
    url, other = mtls.url + "/api", mtls.url + "/other"
    registry = db.registry()
    try:
        registry.put(_entry(mtls, ca, _pem(issue(ca, "renewed-later", days=3650))))
        db.older_facts = db.row(url)[1][FACTS]
        registry.put(_entry(mtls, ca, _pem(issue(ca, "tampered", days=-1))))
        registry.put(
            ServiceEntry(
                url=other,
                tls=TLSProfile(client_cert=_pem(issue(ca, "lasting", days=3650))),
            )
        )
        edit(db, url, other)
        with pytest.raises((RegistryCorruptError, DecryptionError)):
            registry.get(url + "/x")
        with (
            SecureSession(registry) as session,
            pytest.raises((RegistryCorruptError, DecryptionError)),
        ):
            session.get(url + "/x")
    finally:
        registry.close()
    assert mtls.requests == []


def test_the_expiry_check_reads_the_stored_facts(
    db: SQLiteFile, mtls: GatewayServer, ca: CertificateAuthority
) -> None:
    """An expired certificate is refused from its stored not_after, before any byte."""
    registry = db.registry()
    try:
        registry.put(_entry(mtls, ca, _pem(issue(ca, "expired", days=-1))))
        with (
            SecureSession(registry) as session,
            pytest.raises(ClientCertificateExpiredError, match="has expired"),
        ):
            session.get(mtls.url + "/api/x")
    finally:
        registry.close()
    assert mtls.requests == []


def test_malformed_stored_facts_are_a_corrupt_entry_not_a_crash() -> None:
    issued = CertificateAuthority("malformed facts CA").issue_client("malformed")
    data = _pem(issued).data
    good = _facts_of(issued)
    for bad in (
        "facts",
        {**good, "serial": 12},
        {**good, "not_after": "2030-01-01T00:00:00"},  # no time zone
        {k: v for k, v in good.items() if k != "issuer"},
        {**good, "sha256": "not hex"},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - mapped to RegistryCorruptError by the codec
            ClientCertificate._stored("pem", data, PASSWORD, bad)


# -- entries stored without the facts --------------------------------------------------


def test_an_entry_stored_before_the_facts_reads_them_from_its_bundle(
    db: SQLiteFile,
    mtls: GatewayServer,
    ca: CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
    no_certificate_reading: list[str],
) -> None:
    """As the previous release wrote it: an authenticated entry without the facts."""
    sealed_with_facts = _codec._seal_tls

    def without_facts(profile: TLSProfile, clear: dict[str, str]) -> dict[str, Any]:
        settings = sealed_with_facts(profile, clear)
        del clear[FACTS]  # as securesession 0.1 wrote it
        return settings

    issued = issue(ca, "older-entry")
    registry = db.registry()
    try:
        with monkeypatch.context() as patch:
            patch.setattr(_codec, "_seal_tls", without_facts)
            registry.put(_entry(mtls, ca, _pem(issued)))
        assert FACTS not in db.row(mtls.url + "/api")[1]
        no_certificate_reading.clear()
        loaded = registry.get(mtls.url + "/api/x")
        assert loaded is not None and loaded.tls is not None and loaded.tls.client_cert
        assert no_certificate_reading == []  # read when a fact is first needed
        assert loaded.tls.client_cert.not_after == issued.certificate.not_valid_after_utc
        assert loaded.tls.client_cert.subject == "CN=older-entry"
        assert no_certificate_reading == ["pem"]  # once
        with SecureSession(registry) as session:
            assert session.get(mtls.url + "/api/x").status_code == 200
        # Put again (any edit does; `securesession rotate-key` keeps the fields as
        # they are), it gains the facts.
        registry.put(loaded)
        assert _stored_facts(db, mtls.url + "/api") == _facts_of(issued)
    finally:
        registry.close()
    assert [r.client_cert_subject_cn for r in mtls.requests] == ["older-entry"]


def test_a_legacy_entry_is_read_from_its_bundle_whatever_facts_it_holds(
    db: SQLiteFile, mtls: GatewayServer, ca: CertificateAuthority
) -> None:
    """A 0.1.0 entry (no entry tag), read with the opt-in, is read as 0.1.0 wrote it:
    its facts come from the bundle; a facts field found in such a row is not believed."""
    issued = issue(ca, "legacy-entry")
    registry = db.open(db.key, legacy_entries="accept")
    try:
        registry.put(_entry(mtls, ca, _pem(issued)))
        settings, _ = db.row(mtls.url + "/api")
        key = canonicalize(mtls.url + "/api").key
        forged = {
            **_facts_of(issued),
            "subject": "CN=forged",
            "not_after": "2999-01-01T00:00:00+00:00",
        }
        clear = {
            "tls.client_cert": base64.b64encode(_pem(issued).data).decode("ascii"),
            "tls.client_cert.password": PASSWORD,
            FACTS: json.dumps(forged),
        }
        legacy_tokens = {
            name: db.key.encrypt(
                value.encode(), b"securesession entry\x00" + key.encode() + b"\x00" + name.encode()
            )
            for name, value in clear.items()
        }
        db.set_row(mtls.url + "/api", settings, legacy_tokens)
        loaded = registry.get(mtls.url + "/api/x")
        assert loaded is not None and loaded.tls is not None and loaded.tls.client_cert
        assert loaded.tls.client_cert.subject == "CN=legacy-entry"
        assert loaded.tls.client_cert.not_after == issued.certificate.not_valid_after_utc
    finally:
        registry.close()


# -- the context: as stored where OpenSSL can, re-wrapped otherwise -----------------------


def _key_block(pem: bytes) -> bytes:
    """The one private-key block of *pem* (generated by the test), found as the model
    finds it."""
    (block,) = [
        m.group(0)
        for m in tls_model._PEM_BLOCK.finditer(pem)
        if tls_model._is_key_block(m.group(0))
    ]
    return block


@pytest.fixture
def rewraps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = ClientCertificate._rewrapped

    def rewrapped(self: ClientCertificate) -> tuple[bytes, bytes]:
        calls.append(self.subject)
        return original(self)

    monkeypatch.setattr(ClientCertificate, "_rewrapped", rewrapped)
    return calls


@pytest.mark.parametrize("with_chain", [True, False])
def test_a_pem_with_an_encrypted_key_goes_to_openssl_as_stored(
    with_chain: bool,
    mtls: GatewayServer,
    ca: CertificateAuthority,
    monkeypatch: pytest.MonkeyPatch,
    rewraps: list[str],
) -> None:
    if not tls_context._USE_MEMFD:
        pytest.skip("this platform has no memfd_create: the key is re-wrapped there")
    issued = issue(ca, "as-stored")
    cert = _pem(issued, None if with_chain else issued.cert_pem)
    handed: list[bytes] = []

    def spy(self: ProfileContext, certfile: str, keyfile: None = None, password: Any = None) -> Any:
        handed.append(Path(certfile).read_bytes())
        ssl.SSLContext.load_cert_chain(self, certfile, keyfile, password)

    monkeypatch.setattr(ProfileContext, "load_cert_chain", spy)
    context = build_context(TLSProfile(client_cert=cert, ca_bundle=ca.cert_pem), where="e")
    assert rewraps == []
    assert handed == [cert.data]  # the key in it is encrypted under the entry's password
    key_block = _key_block(cert.data)
    with pytest.raises(TypeError, match="encrypted"):
        serialization.load_pem_private_key(key_block, None)
    connection = http.client.HTTPSConnection("127.0.0.1", mtls.port, context=context)
    try:
        connection.request("GET", "/api")
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert [r.client_cert_subject_cn for r in mtls.requests] == ["as-stored"]


def test_a_chain_not_starting_with_its_leaf_is_rewrapped_on_a_clean_context(
    mtls: GatewayServer, ca: CertificateAuthority, rewraps: list[str]
) -> None:
    issued = issue(ca, "leaf-second")
    cert = _pem(issued, ca.cert_pem + issued.cert_pem)  # the CA first
    registry = open_registry("memory://", MasterKey.generate())
    try:
        registry.put(_entry(mtls, ca, cert))
        with SecureSession(registry) as session:
            assert session.get(mtls.url + "/api/x").status_code == 200
    finally:
        registry.close()
    assert rewraps == ["CN=leaf-second"]
    assert [r.client_cert_subject_cn for r in mtls.requests] == ["leaf-second"]


def test_a_key_in_clear_is_never_handed_over_as_stored(
    ca: CertificateAuthority, rewraps: list[str]
) -> None:
    issued = issue(ca, "clear-key")
    cert = ClientCertificate.from_pem(issued.chain_pem, issued.key_pem)  # no password
    assert cert._pem_as_stored() is None
    build_context(TLSProfile(client_cert=cert), where="e")
    assert rewraps == ["CN=clear-key"]


def test_without_memory_files_a_pem_key_is_rewrapped_before_it_reaches_a_file(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch, rewraps: list[str]
) -> None:
    """A temporary file on disk only ever holds a key under a one-time passphrase, never
    under the entry's own (perhaps weak) password."""
    monkeypatch.setattr(tls_context, "_USE_MEMFD", False)
    handed: list[bytes] = []

    def spy(self: ProfileContext, certfile: str, keyfile: None = None, password: Any = None) -> Any:
        handed.append(Path(certfile).read_bytes())
        ssl.SSLContext.load_cert_chain(self, certfile, keyfile, password)

    monkeypatch.setattr(ProfileContext, "load_cert_chain", spy)
    cert = _pem(issue(ca, "no-memfd"))
    build_context(TLSProfile(client_cert=cert), where="e")
    assert rewraps == ["CN=no-memfd"]
    (content,) = handed
    key_block = _key_block(content)
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's "bad decrypt"
        serialization.load_pem_private_key(key_block, PASSWORD.encode())
