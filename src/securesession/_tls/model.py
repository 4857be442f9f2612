"""The TLS model an entry stores: :class:`TLSProfile`, :class:`ClientCertificate`,
:func:`spki_pin`, and the PEM and PKCS#12 loaders behind them.

This module speaks only ``cryptography``, and only once a certificate, a CA
bundle or a CRL is actually read: ``cryptography.x509`` and the PKCS#12 and key
serialisation modules are imported by the functions that use them, so a process
that never builds or loads a profile (a registry tool, an entry without one)
does not pay for them. It never imports ``ssl``: contexts are built by
:mod:`securesession._tls.context`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import time
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Final,
    Generic,
    Literal,
    NamedTuple,
    TypeVar,
    cast,
    get_args,
    overload,
)

from .._exceptions import TLSConfigError
from .._record import Record
from .._secret import Secret

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    #: Private key types a TLS client certificate can use.
    _PrivateKey = (
        rsa.RSAPrivateKey
        | ec.EllipticCurvePrivateKey
        | ed25519.Ed25519PrivateKey
        | ed448.Ed448PrivateKey
        | dsa.DSAPrivateKey
    )

__all__ = [
    "EXPIRY_WARNING_DAYS",
    "SYSTEM_TRUST",
    "ClientCertificate",
    "TLSProfile",
    "TLSVersionName",
    "spki_pin",
]

TLSVersionName = Literal["1.0", "1.1", "1.2", "1.3"]
CertificateFormat = Literal["pem", "pkcs12"]
CRLScope = Literal["leaf", "chain"]
#: A file path, or the file's content as bytes (a ``str`` starting with ``-----BEGIN``
#: is taken as PEM content too).
Source = str | os.PathLike[str] | bytes

_T = TypeVar("_T")

_ORDER: Final[tuple[TLSVersionName, ...]] = get_args(TLSVersionName)
_LEGACY: Final = frozenset({"1.0", "1.1"})
#: A certificate this close to its end gets a warning: a client certificate when its
#: context is built, any certificate in ``securesession check``'s hints.
EXPIRY_WARNING_DAYS: Final = 30
# A pattern, not a compiled one: only a profile with pins needs it (re caches it then).
_PIN: Final = r"sha256/[A-Za-z0-9+/]{43}="
_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----\r?\n?", re.DOTALL)
_KEY_LABELS: Final = frozenset(
    {b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
)
# DER of the OID pbeWithSHAAnd40BitRC2-CBC, which old Windows .pfx exports use.
_RC2_OID_DER: Final = bytes.fromhex("060a2a864886f70d010c0106")
#: ``TLSProfile(ca_bundle=SYSTEM_TRUST)``: the operating system's trust store, through
#: truststore, instead of CAs stored in the entry.
SYSTEM_TRUST: Final = "system"


# -- helpers -----------------------------------------------------------------------


def _read_source(source: Source, what: str) -> bytes:
    if isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode("ascii", "replace")
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise TLSConfigError(f"cannot read the {what} file {os.fspath(source)!r}: {exc}") from None


def _password_bytes(password: str | Secret | None) -> bytes | None:
    if password is None:
        return None
    clear = Secret(password).reveal()
    return clear.encode("utf-8") if clear else None


def spki_pin(certificate: bytes | x509.Certificate) -> str:
    """The ``sha256/<base64>`` pin of a certificate's SubjectPublicKeyInfo.

    *certificate* is a parsed certificate, or its PEM or DER bytes. This is the
    form OkHttp and HPKP use, and what :class:`TLSProfile` ``pins=`` expects.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if isinstance(certificate, bytes):
        if certificate.lstrip().startswith(b"-----BEGIN"):
            certificate = x509.load_pem_x509_certificate(certificate)
        else:
            certificate = x509.load_der_x509_certificate(certificate)
    spki = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256/" + base64.b64encode(hashlib.sha256(spki).digest()).decode("ascii")


def _describe_versions(low: TLSVersionName, high: TLSVersionName) -> str:
    return f"TLS {low} only" if low == high else f"TLS {low} to {high}"


# -- client certificate ------------------------------------------------------------


class _LeafFacts(NamedTuple):
    """The public facts of a client certificate's leaf, as :class:`ClientCertificate`
    shows them (its fields of the same names). A registry stores them with the entry (a
    field of their own, encrypted and authenticated like the certificate), so that
    loading an entry reads no certificate."""

    subject: str
    issuer: str
    serial: int
    not_before: datetime
    not_after: datetime
    fingerprint: str

    @classmethod
    def of(cls, leaf: x509.Certificate) -> _LeafFacts:
        from cryptography.hazmat.primitives import hashes

        return cls(
            leaf.subject.rfc4514_string(),
            leaf.issuer.rfc4514_string(),
            leaf.serial_number,
            leaf.not_valid_before_utc,
            leaf.not_valid_after_utc,
            leaf.fingerprint(hashes.SHA256()).hex(),
        )

    def as_record(self) -> dict[str, str]:
        # Strings only: a serial number is wider than a float, and a datetime has no
        # JSON type.
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "serial": f"{self.serial:x}",
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "sha256": self.fingerprint,
        }

    @classmethod
    def from_record(cls, stored: object) -> _LeafFacts:
        """The facts :meth:`as_record` wrote; ``ValueError`` for anything else."""
        if not isinstance(stored, dict) or set(stored) != _RECORD_NAMES:
            raise ValueError("client certificate facts are not the expected object")
        if not all(isinstance(value, str) for value in stored.values()):
            raise ValueError("client certificate facts are not all strings")
        not_before = datetime.fromisoformat(stored["not_before"])
        not_after = datetime.fromisoformat(stored["not_after"])
        if not_before.utcoffset() is None or not_after.utcoffset() is None:
            raise ValueError("client certificate validity has no time zone")
        fingerprint = stored["sha256"]
        if len(fingerprint) != 64 or fingerprint.strip("0123456789abcdef"):
            raise ValueError("client certificate fingerprint is not SHA-256 hex")
        return cls(
            stored["subject"],
            stored["issuer"],
            int(stored["serial"], 16),
            not_before,
            not_after,
            fingerprint,
        )


class _Fact(Generic[_T]):
    """A public fact of a :class:`ClientCertificate`'s leaf: the :class:`_LeafFacts`
    field of the same name."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, cert: None, owner: type) -> _Fact[_T]: ...

    @overload
    def __get__(self, cert: ClientCertificate, owner: type) -> _T: ...

    def __get__(self, cert: ClientCertificate | None, owner: type) -> _Fact[_T] | _T:
        if cert is None:
            return self
        value: _T = getattr(cert._leaf_facts(), self._name)
        return value


_RECORD_NAMES: Final = frozenset(
    {"subject", "issuer", "serial", "not_before", "not_after", "sha256"}
)


class ClientCertificate(Record):
    """A client certificate (with its chain) and its private key, for mutual TLS.

    Build one with :meth:`from_pkcs12` (a ``.pfx``/``.p12`` bundle) or
    :meth:`from_pem` (certificate chain plus an encrypted PEM private key). The
    material is kept as given, with its password: the registry stores both as
    encrypted secret fields, and the key is decrypted only in memory, when a TLS
    context is built. The bundle is read, and the password checked, right away,
    so a wrong password fails here rather than on the first request.

    ``repr`` shows the certificate's subject, issuer and validity; never key
    material or the password. Public facts about the leaf certificate are
    attributes: :attr:`subject`, :attr:`issuer`, :attr:`serial`,
    :attr:`not_before`, :attr:`not_after`, :attr:`fingerprint` (SHA-256, hex).
    A registry stores them with the entry (encrypted and authenticated with it), so a
    certificate loaded from a registry is not parsed until a TLS context needs it.
    """

    format: CertificateFormat
    data: bytes
    password: Secret | None
    # The leaf's facts, read from the bundle once by the constructor; an entry stored
    # with them sets them, and one stored before they were (0.1) reads the bundle when
    # one is first asked for.
    subject = _Fact[str]()
    """The leaf certificate's subject, as RFC 4514 writes it (``CN=...,O=...``)."""
    issuer = _Fact[str]()
    """The leaf certificate's issuer, as RFC 4514 writes it."""
    serial = _Fact[int]()
    """The leaf certificate's serial number."""
    not_before = _Fact[datetime]()
    """The start of the leaf certificate's validity (UTC, aware)."""
    not_after = _Fact[datetime]()
    """The end of the leaf certificate's validity (UTC, aware)."""
    fingerprint = _Fact[str]()
    """The SHA-256 fingerprint of the leaf certificate (DER), in hex."""

    def __init__(
        self, format: CertificateFormat, data: bytes, password: str | Secret | None = None
    ) -> None:
        self._set_material(format, data, password)
        _key, leaf, _chain = self._load()
        self._set_facts(_LeafFacts.of(leaf))

    def _set_material(
        self, format: CertificateFormat, data: bytes, password: str | Secret | None
    ) -> None:
        if format not in get_args(CertificateFormat):
            raise TLSConfigError(
                f"client certificate format must be 'pem' or 'pkcs12', not {format!r}"
            )
        if not isinstance(data, bytes) or not data:
            raise TLSConfigError("client certificate data must be non-empty bytes")
        object.__setattr__(self, "format", format)
        object.__setattr__(self, "data", data)
        object.__setattr__(self, "password", None if password is None else Secret(password))

    def _set_facts(self, facts: _LeafFacts) -> None:
        object.__setattr__(self, "_facts", facts)

    def _leaf_facts(self) -> _LeafFacts:
        facts: _LeafFacts | None = self.__dict__.get("_facts")
        if facts is None:
            facts = _LeafFacts.of(self._load()[1])
            self._set_facts(facts)
        return facts

    @classmethod
    def _stored(
        cls,
        format: CertificateFormat,
        data: bytes,
        password: str | Secret | None,
        facts: object | None,
    ) -> ClientCertificate:
        """The certificate of an authenticated registry entry, with the *facts* stored
        with it (:meth:`_stored_facts`), and nothing read: the entry tag vouches for
        both, and they were checked when the entry was put. *facts* None (an entry
        stored before them) reads the bundle when a fact is first asked for."""
        cert = object.__new__(cls)
        cert._set_material(format, data, password)
        if facts is not None:
            cert._set_facts(_LeafFacts.from_record(facts))
        return cert

    def _stored_facts(self) -> dict[str, str]:
        """The leaf's public facts, as a registry stores them with the entry."""
        return self._leaf_facts().as_record()

    @classmethod
    def from_pkcs12(cls, source: Source, password: str | Secret | None = None) -> ClientCertificate:
        """A client certificate from a PKCS#12 bundle (``.pfx``/``.p12``): a path or bytes.

        Legacy bundles (RC2-40 or 3DES, as old Windows exports write) load when the
        local ``cryptography`` build still has OpenSSL's legacy provider; otherwise
        the error says how to convert the file.
        """
        return cls("pkcs12", _read_source(source, "PKCS#12"), password)

    @classmethod
    def from_pem(
        cls, certificate: Source, key: Source | None = None, password: str | Secret | None = None
    ) -> ClientCertificate:
        """A client certificate from PEM: the certificate (leaf first, then any
        intermediates) and the private key, which should be encrypted under
        *password*. *key* may be omitted when the certificate file holds it too.
        Each argument is a path or the PEM bytes.
        """
        cert_pem = _read_source(certificate, "certificate")
        key_pem = b"" if key is None else _read_source(key, "private key")
        blocks = [m.group(0) for m in _PEM_BLOCK.finditer(cert_pem + b"\n" + key_pem)]
        certs = [b for b in blocks if b.startswith(b"-----BEGIN CERTIFICATE-----")]
        keys = [b for b in blocks if _is_key_block(b)]
        if not certs:
            raise TLSConfigError("the client certificate PEM holds no CERTIFICATE block")
        if len(keys) != 1:
            raise TLSConfigError(
                "expected exactly one PEM private key for the client certificate, "
                f"found {len(keys)}"
            )
        data = b"".join(block if block.endswith(b"\n") else block + b"\n" for block in certs + keys)
        return cls("pem", data, password)

    # -- reading ---------------------------------------------------------------------

    def _load(self) -> tuple[_PrivateKey, x509.Certificate, list[x509.Certificate]]:
        """Decrypt in memory: (private key, leaf certificate, other certificates)."""
        password = _password_bytes(self.password)
        if self.format == "pkcs12":
            key, leaf, others = _load_pkcs12(self.data, password)
        else:
            key, leaf, others = _load_pem(self.data, password)
        if not _same_public_key(key, leaf):
            raise TLSConfigError(
                f"the private key does not belong to the client certificate "
                f"{leaf.subject.rfc4514_string()!r}"
            )
        return key, leaf, others

    def _pem_as_stored(self) -> tuple[bytes, bytes] | None:
        """``(pem, password)`` for OpenSSL as they are, when it can load them so: a PEM
        chain whose private key is encrypted under the certificate's password. None
        otherwise (PKCS#12; a key in clear, which is never handed over as it is): then
        :meth:`_rewrapped` is the way. OpenSSL still checks that the key belongs to the
        first certificate, and a chain that does not start with its leaf is refused."""
        password = _password_bytes(self.password)
        if self.format != "pem" or password is None:
            return None
        keys = [m.group(0) for m in _PEM_BLOCK.finditer(self.data) if _is_key_block(m.group(0))]
        if len(keys) != 1 or not _is_encrypted_key(keys[0]):
            return None
        return self.data, password

    def _rewrapped(self) -> tuple[bytes, bytes]:
        """``(pem, passphrase)``: the chain, leaf first, and the private key encrypted
        under a fresh random *passphrase*; what ``build_context`` hands to OpenSSL."""
        import secrets

        from cryptography.hazmat.primitives import serialization

        key, leaf, others = self._load()
        passphrase = secrets.token_urlsafe(32).encode("ascii")
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
        chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in [leaf, *others])
        return chain + key_pem, passphrase

    def expires_in(self, now: float | None = None) -> float:
        """Seconds until :attr:`not_after` (negative once expired)."""
        return self.not_after.timestamp() - (time.time() if now is None else now)

    def __hash__(self) -> int:
        # What equality compares (less the password): equal certificates hash equal,
        # and hashing one reads nothing.
        return hash((self.format, self.data))

    def __repr__(self) -> str:
        return (
            f"ClientCertificate(format={self.format!r}, subject={self.subject!r}, "
            f"issuer={self.issuer!r}, serial={self.serial:#x}, "
            f"not_after={self.not_after.isoformat()!r}, sha256={self.fingerprint[:16]!r}, "
            f"password={self.password!r})"
        )

    def describe(self) -> str:
        """Subject, issuer and validity end, for messages."""
        return (
            f"{self.subject} (issued by {self.issuer}, serial {self.serial:#x}, "
            f"valid until {self.not_after:%Y-%m-%d %H:%M} UTC)"
        )


def _block_label(block: bytes) -> bytes:
    return block[len(b"-----BEGIN ") : block.index(b"-----", len(b"-----BEGIN "))]


def _is_key_block(block: bytes) -> bool:
    return _block_label(block) in _KEY_LABELS


def _is_encrypted_key(block: bytes) -> bool:
    # PKCS#8 encrypted, or a traditional (OpenSSL) key with a DEK-Info header.
    return _block_label(block) == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block


def _same_public_key(key: _PrivateKey, cert: x509.Certificate) -> bool:
    from cryptography.hazmat.primitives import serialization

    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def _client_key(key: object) -> _PrivateKey:
    """*key*, if it is of a type a TLS client certificate can use."""
    from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

    if not isinstance(
        key,
        (
            rsa.RSAPrivateKey,
            ec.EllipticCurvePrivateKey,
            ed25519.Ed25519PrivateKey,
            ed448.Ed448PrivateKey,
            dsa.DSAPrivateKey,
        ),
    ):
        raise TLSConfigError(f"unsupported client key type {type(key).__name__}")
    return key


def _load_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[_PrivateKey, x509.Certificate, list[x509.Certificate]]:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.serialization import pkcs12

    try:
        key, cert, others = pkcs12.load_key_and_certificates(data, password)
    except (ValueError, UnsupportedAlgorithm) as exc:
        message = "cannot open the PKCS#12 bundle: the password is wrong, or the file is damaged"
        if _RC2_OID_DER in data:
            message += (
                ". This bundle uses RC2-40 encryption (an old Windows export); if the password "
                "is right, this cryptography/OpenSSL build lacks the legacy provider. Convert it "
                "without writing the key in clear: openssl pkcs12 -legacy -in old.pfx -nodes "
                "| openssl pkcs12 -export -out new.pfx (then use new.pfx), or on Windows re-export "
                "with 'AES256-SHA256' encryption"
            )
        raise TLSConfigError(message) from exc
    if key is None:
        raise TLSConfigError("the PKCS#12 bundle holds no private key (export it with the key)")
    if cert is None:
        raise TLSConfigError("the PKCS#12 bundle holds no certificate")
    return _client_key(key), cert, list(others)


def _load_pem(
    data: bytes, password: bytes | None
) -> tuple[_PrivateKey, x509.Certificate, list[x509.Certificate]]:
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    key_blocks = [b for b in blocks if _is_key_block(b)]
    if len(key_blocks) != 1:
        raise TLSConfigError("the client certificate PEM must hold exactly one private key")
    try:
        loaded = serialization.load_pem_private_key(key_blocks[0], password)
    except TypeError:
        if password is None:
            raise TLSConfigError(
                "the client private key is encrypted: give its passphrase as password="
            ) from None
        raise TLSConfigError(
            "the client private key is not encrypted, but a password was given; "
            "encrypt the key (openssl pkcs8 -topk8 -v2 aes-256-cbc) or drop password="
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TLSConfigError(
            "cannot decrypt the client private key: wrong passphrase, or the key is damaged"
        ) from None
    key = _client_key(loaded)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TLSConfigError(f"cannot read the client certificate PEM: {exc}") from None
    leaf = next((c for c in certs if _same_public_key(key, c)), certs[0])
    return key, leaf, [c for c in certs if c is not leaf]


# -- profile -------------------------------------------------------------------------


def _pem_certificates(data: bytes, what: str) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(f"the {what} holds no readable PEM certificate") from None
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _pem_crls(data: bytes) -> bytes:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        if b"-----BEGIN X509 CRL-----" in data:
            crls = [
                x509.load_pem_x509_crl(m.group(0))
                for m in _PEM_BLOCK.finditer(data)
                if _block_label(m.group(0)) == b"X509 CRL"
            ]
        else:
            crls = [x509.load_der_x509_crl(data)]
    except ValueError:
        raise TLSConfigError(
            "the CRL is neither a PEM nor a DER certificate revocation list"
        ) from None
    return b"".join(crl.public_bytes(serialization.Encoding.PEM) for crl in crls)


class TLSProfile(Record):
    """How one service is spoken to over TLS: client certificate, versions, trust.

    ``client_cert``      a :class:`ClientCertificate` to present (mutual TLS), or None
    ``version``          ``"1.2"`` or ``"1.3"``: pin exactly that version; or give a
                         range with ``min_version`` / ``max_version`` (default 1.2 to 1.3)
    ``ca_bundle``        CAs trusted for this service's server certificate (path or PEM
                         bytes; stored by content); ``"system"``: the operating system's
                         trust store, through truststore (``securesession[truststore]``);
                         default: the certifi store, as requests
    ``pins``             server SubjectPublicKeyInfo pins, ``sha256/<base64>``; the
                         server's (leaf) key must match one, checked right after the
                         handshake, before any request byte is sent
    ``crl``              a local CRL (path, PEM or DER bytes; several PEM CRLs for a
                         chain) checked against the server certificate
    ``crl_scope``        ``"leaf"`` (the server certificate) or ``"chain"`` (every CA too;
                         then the CRL of every CA in the chain must be given)
    ``check_revocation`` False records a deliberate opt-out: no CRL is checked and no
                         warning is logged when the server certificate names a CRL
                         distribution point (for networks that cannot reach it)
    ``allow_legacy``     permit TLS 1.0/1.1 for this service alone; lowers OpenSSL's
                         security level for this profile's context only, and every new
                         connection logs a warning

    Everything is checked on construction (a wrong version range, a bad pin, an
    unreadable bundle raise :class:`TLSConfigError` naming the field); whether the
    local OpenSSL can honour the profile is checked when its context is built.
    """

    client_cert: ClientCertificate | None
    version: TLSVersionName | None
    min_version: TLSVersionName | None
    max_version: TLSVersionName | None
    ca_bundle: bytes | Literal["system"] | None
    pins: tuple[str, ...]
    crl: bytes | None
    crl_scope: CRLScope
    check_revocation: bool
    allow_legacy: bool

    def __init__(
        self,
        *,
        client_cert: ClientCertificate | None = None,
        version: TLSVersionName | None = None,
        min_version: TLSVersionName | None = None,
        max_version: TLSVersionName | None = None,
        ca_bundle: Source | Literal["system"] | None = None,
        pins: Iterable[str] | str = (),
        crl: Source | None = None,
        crl_scope: CRLScope = "leaf",
        check_revocation: bool = True,
        allow_legacy: bool = False,
    ) -> None:
        trust: bytes | Literal["system"] | None
        if ca_bundle is None or (isinstance(ca_bundle, str) and ca_bundle == SYSTEM_TRUST):
            trust = cast('Literal["system"] | None', ca_bundle)
        else:
            trust = _pem_certificates(_read_source(ca_bundle, "CA bundle"), "CA bundle")
        crl_pem = None if crl is None else _pem_crls(_read_source(crl, "CRL"))
        versions = (version, min_version, max_version)
        switches = (crl_scope, check_revocation, allow_legacy)
        self._set(client_cert, *versions, trust, pins, crl_pem, *switches)  # _set's order

    @classmethod
    def _stored(cls, **fields: Any) -> TLSProfile:
        """The profile of an authenticated registry entry, from its stored *fields* (the
        constructor's keywords): every setting is checked as by the constructor, but
        ``ca_bundle`` and ``crl`` are taken as the PEM bytes the constructor made of
        them when the entry was put (the entry tag vouches that they are), not parsed
        again: OpenSSL reads them when the context is built."""
        profile = object.__new__(cls)
        profile._set(**fields)
        return profile

    def _set(
        self,
        client_cert: ClientCertificate | None,
        version: TLSVersionName | None,
        min_version: TLSVersionName | None,
        max_version: TLSVersionName | None,
        ca_bundle: bytes | Literal["system"] | None,
        pins: Iterable[str] | str,
        crl: bytes | None,
        crl_scope: CRLScope,
        check_revocation: bool,
        allow_legacy: bool,
    ) -> None:
        """Check and set every field; *ca_bundle* and *crl* are PEM already."""
        if client_cert is not None and not isinstance(client_cert, ClientCertificate):
            raise TLSConfigError("client_cert must be a ClientCertificate")
        for name, value in (
            ("version", version),
            ("min_version", min_version),
            ("max_version", max_version),
        ):
            if value is not None and value not in _ORDER:
                raise TLSConfigError(
                    f"{name}={value!r} is not a TLS version; use one of {', '.join(_ORDER)}"
                )
        if version is not None and (min_version is not None or max_version is not None):
            raise TLSConfigError("give either version= (an exact pin) or min_version/max_version")
        if crl_scope not in get_args(CRLScope):
            raise TLSConfigError(f"crl_scope must be 'leaf' or 'chain', not {crl_scope!r}")
        if isinstance(pins, str):
            pins = (pins,)
        pin_tuple = tuple(pins)
        for pin in pin_tuple:
            if not isinstance(pin, str) or not re.fullmatch(_PIN, pin):
                raise TLSConfigError(
                    f"pin {pin!r} is not of the form sha256/<base64 of the SHA-256 digest of the "
                    "server's SubjectPublicKeyInfo> (44 base64 characters)"
                )
        if crl is not None and not check_revocation:
            raise TLSConfigError("crl= and check_revocation=False contradict each other")
        object.__setattr__(self, "client_cert", client_cert)
        object.__setattr__(self, "version", version)
        object.__setattr__(self, "min_version", min_version)
        object.__setattr__(self, "max_version", max_version)
        object.__setattr__(self, "ca_bundle", ca_bundle)
        object.__setattr__(self, "pins", pin_tuple)
        object.__setattr__(self, "crl", crl)
        object.__setattr__(self, "crl_scope", crl_scope)
        object.__setattr__(self, "check_revocation", bool(check_revocation))
        object.__setattr__(self, "allow_legacy", bool(allow_legacy))
        low, high = self.versions
        if _ORDER.index(low) > _ORDER.index(high):
            raise TLSConfigError(f"min_version {low} is above max_version {high}")
        if low in _LEGACY and not self.allow_legacy:
            raise TLSConfigError(
                f"TLS {low} is refused by default: OpenSSL's default security level rejects "
                f"it, and so does securesession. If the service cannot do TLS 1.2, set "
                f"allow_legacy=True in this entry's TLSProfile (it lowers the security level "
                f"for this entry's connections only); otherwise ask for min_version='1.2'"
            )

    @property
    def versions(self) -> tuple[TLSVersionName, TLSVersionName]:
        """The effective ``(lowest, highest)`` TLS version of this profile."""
        if self.version is not None:
            return self.version, self.version
        default_low: TLSVersionName = "1.0" if self.allow_legacy else "1.2"
        return self.min_version or default_low, self.max_version or "1.3"

    def describe_versions(self) -> str:
        """``"TLS 1.2 only"`` or ``"TLS 1.2 to 1.3"``."""
        return _describe_versions(*self.versions)

    @property
    def system_trust(self) -> bool:
        """True when the server is verified against the operating system's trust store
        (``ca_bundle="system"``)."""
        return isinstance(self.ca_bundle, str)

    def __hash__(self) -> int:
        return hash((self.client_cert, self.versions, self.pins, self.ca_bundle, self.crl))

    def __repr__(self) -> str:
        parts = [f"client_cert={self.client_cert!r}", f"versions={self.describe_versions()!r}"]
        if self.system_trust:
            parts.append("ca_bundle='system'")
        elif isinstance(self.ca_bundle, bytes):
            parts.append(f"ca_bundle=<{self.ca_bundle.count(b'-----BEGIN')} certificate(s)>")
        if self.pins:
            parts.append(f"pins={self.pins!r}")
        if self.crl is not None:
            parts.append(f"crl=<{self.crl.count(b'-----BEGIN')} CRL(s), {self.crl_scope}>")
        parts.append(f"check_revocation={self.check_revocation}")
        parts.append(f"allow_legacy={self.allow_legacy}")
        return f"TLSProfile({', '.join(parts)})"
