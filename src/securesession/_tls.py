"""Per-service TLS: profiles, client certificates, ``SSLContext`` building, server
key pins, CRLs, and handshake failures explained in plain words.

One :class:`TLSProfile` per registry entry says how that service is spoken to:
which client certificate to present, which TLS versions, which CAs to trust,
which server keys to accept, which CRL to check. :func:`build_context` turns a
profile into one :class:`ProfileContext` (an ``ssl.SSLContext``) that is built
once and never changed afterwards; transports key their connection pools on
that object, so each profile gets its own connections.

This module speaks only ``ssl``, ``socket`` and ``cryptography``: it never
imports requests or urllib3, so another HTTP client's transport can reuse it.

Private keys never reach the disk in clear. ``SSLContext.load_cert_chain`` only
reads files, so the key is re-encrypted under a one-time random passphrase and
handed over through an anonymous memory file (``memfd_create`` on Linux) or,
elsewhere, a private temporary file that holds only the encrypted key and is
removed as soon as OpenSSL has read it.

Contexts are built from the standard library's own ``ssl.SSLContext`` class,
captured when this module is imported (or recovered from behind a replacement
such as ``truststore.inject_into_ssl()`` that ran earlier), and their property
setters never go through the ``ssl`` module's global name: a profile's trust,
pins and client certificate stay its own whatever replaces ``ssl.SSLContext``
process-wide, before or after this import. ``ca_bundle="system"`` asks for the
operating system's trust store explicitly, through truststore.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import inspect
import logging
import os
import platform
import re
import secrets
import socket
import ssl
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast, get_args

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ._exceptions import (
    ClientCertificateExpiredError,
    ClientCertificateRejectedError,
    ClientCertificateRequiredError,
    PinMismatchError,
    ProtocolVersionMismatchError,
    ServerCertificateError,
    TLSConfigError,
    TLSHandshakeError,
)
from ._secret import Secret

__all__ = [
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

logger = logging.getLogger("securesession")

TLSVersionName = Literal["1.0", "1.1", "1.2", "1.3"]
CertificateFormat = Literal["pem", "pkcs12"]
CRLScope = Literal["leaf", "chain"]
#: A file path, or the file's content as bytes (a ``str`` starting with ``-----BEGIN``
#: is taken as PEM content too).
Source = str | os.PathLike[str] | bytes

_ORDER: Final[tuple[TLSVersionName, ...]] = get_args(TLSVersionName)
_LEGACY: Final = frozenset({"1.0", "1.1"})
_TLS_VERSIONS: Final = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
_LOCALLY_AVAILABLE: Final = {
    "1.0": ssl.HAS_TLSv1,
    "1.1": ssl.HAS_TLSv1_1,
    "1.2": ssl.HAS_TLSv1_2,
    "1.3": ssl.HAS_TLSv1_3,
}
#: OpenSSL 3 refuses TLS 1.0/1.1 (their handshakes sign with SHA-1/MD5) at security
#: level 1 and above; a legacy profile lowers it for its own context only.
_LEGACY_CIPHERS: Final = "DEFAULT:@SECLEVEL=0"
#: A client certificate this close to its end gets a warning when it is loaded.
EXPIRY_WARNING_DAYS: Final = 30
_PIN: Final = re.compile(r"sha256/([A-Za-z0-9+/]{43}=)")
_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.+?-----END \1-----\r?\n?", re.DOTALL)
_KEY_LABELS: Final = frozenset(
    {b"PRIVATE KEY", b"ENCRYPTED PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY"}
)
#: Private key types a TLS client certificate can use.
_PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
    | dsa.DSAPrivateKey
)
_KEY_TYPES: Final = (
    rsa.RSAPrivateKey,
    ec.EllipticCurvePrivateKey,
    ed25519.Ed25519PrivateKey,
    ed448.Ed448PrivateKey,
    dsa.DSAPrivateKey,
)
# DER of the OID pbeWithSHAAnd40BitRC2-CBC, which old Windows .pfx exports use.
_RC2_OID_DER: Final = bytes.fromhex("060a2a864886f70d010c0106")
# memfd_create gives a file that lives in memory only and vanishes with its last
# descriptor; OpenSSL opens it through /proc. Tests switch this off to exercise
# the temporary-file path.
_USE_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
_PROBE_TIMEOUT: Final = 3.0
#: ``TLSProfile(ca_bundle=SYSTEM_TRUST)``: the operating system's trust store, through
#: truststore, instead of CAs stored in the entry.
SYSTEM_TRUST: Final = "system"
_TRUSTSTORE_EXTRA: Final = "pip install 'securesession[truststore]'"


# -- the standard library's SSLContext ------------------------------------------------


def _standard_ssl_context_class() -> type[ssl.SSLContext]:
    """The standard library's own ``ssl.SSLContext``, even when something has replaced
    ``ssl.SSLContext`` before this module was imported (``truststore.inject_into_ssl()``,
    as pip and many command-line tools call it).

    A replacement subclasses the original (truststore does on CPython) or keeps a
    reference to it (truststore does everywhere).
    """
    current = ssl.SSLContext
    for klass in current.__mro__:
        if klass.__module__ == "ssl" and klass.__qualname__ == "SSLContext":
            return cast("type[ssl.SSLContext]", klass)
    saved = getattr(sys.modules.get("truststore._ssl_constants"), "_original_SSLContext", None)
    if isinstance(saved, type) and issubclass(saved, ssl.SSLContext):  # pragma: no cover
        return saved
    return current  # pragma: no cover - nothing replaced it in a way we could recognise


if TYPE_CHECKING:
    _StandardSSLContext = ssl.SSLContext
else:
    _StandardSSLContext = _standard_ssl_context_class()

#: The C-level attributes under the standard class's Python properties.
_C_LEVEL: Final[Any] = super(_StandardSSLContext, _StandardSSLContext)
#: The properties whose setters ``ssl.py`` writes as ``super(SSLContext, SSLContext)``,
#: with ``SSLContext`` looked up in the ``ssl`` module when the setter runs.
_C_LEVEL_PROPERTIES: Final = (
    "minimum_version",
    "maximum_version",
    "options",
    "verify_flags",
    "verify_mode",
)


def _c_level_property(name: str) -> property:
    """*name*'s standard getter, and a setter that writes the C-level attribute itself."""
    standard = inspect.getattr_static(_StandardSSLContext, name)
    raw = getattr(_C_LEVEL, name)

    def set_value(self: ssl.SSLContext, value: Any) -> None:
        if name == "minimum_version" and value == ssl.TLSVersion.SSLv3:  # as ssl.py does
            self.options &= ~ssl.Options.OP_NO_SSLv3
        raw.__set__(self, value)

    return property(standard.fget, set_value, None, standard.__doc__)


class _IsolatedSSLContext(_StandardSSLContext):
    """The standard ``SSLContext`` class, whatever ``ssl.SSLContext`` names now.

    Once ``ssl.SSLContext`` is replaced by a subclass of itself (truststore's),
    the standard setters' ``super(SSLContext, SSLContext)`` resolves back to the
    very same setter, forever: a RecursionError on the first ``verify_mode`` urllib3
    sets. These setters go to the C level directly. (``_msg_callback``, a private
    debugging hook nobody here sets, keeps the standard code.)
    """

    if not TYPE_CHECKING:
        minimum_version = _c_level_property("minimum_version")
        maximum_version = _c_level_property("maximum_version")
        options = _c_level_property("options")
        verify_flags = _c_level_property("verify_flags")
        verify_mode = _c_level_property("verify_mode")


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


def _describe_accepted(versions: Iterable[str]) -> str:
    names = list(versions)
    if not names:
        return "none of TLS 1.0 to 1.3"
    if len(names) == 1:
        return f"TLS {names[0]} only"
    return "TLS " + ", ".join(names[:-1]) + " and " + names[-1]


# -- client certificate ------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class ClientCertificate:
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
    """

    format: CertificateFormat
    data: bytes
    password: Secret | None
    subject: str = field(compare=False)
    issuer: str = field(compare=False)
    serial: int = field(compare=False)
    not_before: datetime = field(compare=False)
    not_after: datetime = field(compare=False)
    fingerprint: str = field(compare=False)

    def __init__(
        self, format: CertificateFormat, data: bytes, password: str | Secret | None = None
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
        _key, leaf, _chain = self._load()
        object.__setattr__(self, "subject", leaf.subject.rfc4514_string())
        object.__setattr__(self, "issuer", leaf.issuer.rfc4514_string())
        object.__setattr__(self, "serial", leaf.serial_number)
        object.__setattr__(self, "not_before", leaf.not_valid_before_utc)
        object.__setattr__(self, "not_after", leaf.not_valid_after_utc)
        object.__setattr__(self, "fingerprint", leaf.fingerprint(hashes.SHA256()).hex())

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
        keys = [b for b in blocks if _block_label(b) in _KEY_LABELS]
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

    def _rewrapped(self) -> tuple[bytes, bytes]:
        """``(pem, passphrase)``: the chain, leaf first, and the private key encrypted
        under a fresh random *passphrase*; what :func:`build_context` hands to OpenSSL."""
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
        return hash(self.fingerprint)

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


def _same_public_key(key: _PrivateKey, cert: x509.Certificate) -> bool:
    der, spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)


def _load_pkcs12(
    data: bytes, password: bytes | None
) -> tuple[_PrivateKey, x509.Certificate, list[x509.Certificate]]:
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
    if not isinstance(key, _KEY_TYPES):
        raise TLSConfigError(f"unsupported client key type {type(key).__name__}")
    return key, cert, list(others)


def _load_pem(
    data: bytes, password: bytes | None
) -> tuple[_PrivateKey, x509.Certificate, list[x509.Certificate]]:
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    key_blocks = [b for b in blocks if _block_label(b) in _KEY_LABELS]
    if len(key_blocks) != 1:
        raise TLSConfigError("the client certificate PEM must hold exactly one private key")
    try:
        key = serialization.load_pem_private_key(key_blocks[0], password)
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
    if not isinstance(key, _KEY_TYPES):
        raise TLSConfigError(f"unsupported client key type {type(key).__name__}")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TLSConfigError(f"cannot read the client certificate PEM: {exc}") from None
    leaf = next((c for c in certs if _same_public_key(key, c)), certs[0])
    return key, leaf, [c for c in certs if c is not leaf]


# -- profile -------------------------------------------------------------------------


def _pem_certificates(data: bytes, what: str) -> bytes:
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TLSConfigError(f"the {what} holds no readable PEM certificate") from None
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def _pem_crls(data: bytes) -> bytes:
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


@dataclass(frozen=True, repr=False)
class TLSProfile:
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
            if not isinstance(pin, str) or not _PIN.fullmatch(pin):
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
        trust: bytes | Literal["system"] | None
        if ca_bundle is None or (isinstance(ca_bundle, str) and ca_bundle == SYSTEM_TRUST):
            trust = cast('Literal["system"] | None', ca_bundle)
        else:
            trust = _pem_certificates(_read_source(ca_bundle, "CA bundle"), "CA bundle")
        object.__setattr__(self, "ca_bundle", trust)
        object.__setattr__(self, "pins", pin_tuple)
        object.__setattr__(
            self, "crl", None if crl is None else _pem_crls(_read_source(crl, "CRL"))
        )
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


# -- context -------------------------------------------------------------------------


class _PeerSocket(Protocol):
    def getpeercert(self, binary_form: bool = ...) -> object: ...

    def version(self) -> str | None: ...


class ProfileContext(_IsolatedSSLContext):
    """The ``ssl.SSLContext`` of one :class:`TLSProfile`, built by :func:`build_context`.

    It is complete when built and never changed afterwards; a new profile (a
    rotated certificate) gets a new context. It also carries what must be checked
    once per connection, after the handshake: see :meth:`check_connection`.

    It is an instance of the standard library's ``SSLContext`` even when
    ``ssl.SSLContext`` has been replaced process-wide (``truststore.inject_into_ssl()``),
    before or after this module was imported: the profile's CA scope holds either
    way. A ``ca_bundle="system"`` profile's context is also a ``truststore.SSLContext``.
    """

    profile: TLSProfile
    where: str
    _not_before: float
    _not_after: float
    _crl_dp_warned: bool
    _warn_lock: threading.Lock

    def refuse_if_expired(self, now: float | None = None) -> None:
        """Raise :class:`ClientCertificateExpiredError` if the client certificate is not
        valid at *now*; cheap enough to call before every request."""
        cert = self.profile.client_cert
        if cert is None:
            return
        now = time.time() if now is None else now
        if now > self._not_after:
            raise ClientCertificateExpiredError(
                f"entry {self.where}: the client certificate {cert.describe()} has expired; "
                f"nothing was sent. Get a renewed certificate and store it in the entry"
            )
        if now < self._not_before:
            raise ClientCertificateExpiredError(
                f"entry {self.where}: the client certificate {cert.subject} is not valid before "
                f"{cert.not_before:%Y-%m-%d %H:%M} UTC; nothing was sent (check the clock)"
            )

    def check_connection(self, sock: _PeerSocket, host: str) -> None:
        """After the handshake, before any request byte: check the server key pins,
        and log what a new connection of this profile should log."""
        der = sock.getpeercert(binary_form=True)
        if not isinstance(der, bytes):
            raise ServerCertificateError(f"{host}: the server presented no certificate")
        profile = self.profile
        if profile.pins:
            actual = spki_pin(der)
            if actual not in profile.pins:
                error = PinMismatchError(
                    f"entry {self.where}: the public key of {host}'s certificate "
                    f"({_subject_of(der)}) matches none of the entry's pins, so nothing was "
                    f"sent. Expected one of: {', '.join(profile.pins)}; the server presented: "
                    f"{actual}. If the service changed its key on purpose, add the new pin to "
                    f"the entry; otherwise something is intercepting the connection"
                )
                error.expected = profile.pins
                error.actual = (actual,)
                raise error
        if profile.allow_legacy:
            negotiated = sock.version() or "an unknown version"
            if negotiated in ("TLSv1", "TLSv1.1"):
                logger.warning(
                    "entry %s: new connection to %s uses legacy %s (allowed by allow_legacy=True "
                    "for this entry only); ask the service to support TLS 1.2",
                    self.where,
                    host,
                    negotiated,
                )
            else:
                logger.warning(
                    "entry %s: new connection to %s negotiated %s, yet the entry still has "
                    "allow_legacy=True, which lowers its security level; remove it",
                    self.where,
                    host,
                    negotiated,
                )
        if profile.check_revocation and profile.crl is None and not self._crl_dp_warned:
            points = _crl_distribution_points(der)
            if points:
                with self._warn_lock:
                    first, self._crl_dp_warned = not self._crl_dp_warned, True
                if first:
                    logger.warning(
                        "entry %s: %s's certificate lists CRL distribution point(s) %s, but the "
                        "entry has no crl=, so revocation is not checked; download the CRL into "
                        "the entry, or set check_revocation=False to record the opt-out",
                        self.where,
                        host,
                        ", ".join(points),
                    )


def _subject_of(der: bytes) -> str:
    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return "unreadable certificate"


def _crl_distribution_points(der: bytes) -> list[str]:
    try:
        ext = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(
            x509.CRLDistributionPoints
        )
    except (ValueError, x509.ExtensionNotFound):
        return []
    return [
        name.value
        for point in ext.value
        for name in point.full_name or ()
        if isinstance(name, x509.UniformResourceIdentifier)
    ]


@contextlib.contextmanager
def _private_path(data: bytes) -> Iterator[str]:
    """A path OpenSSL can read *data* from, valid inside the ``with`` block only.

    An anonymous memory file where the platform has one; otherwise a temporary
    file created 0600, removed on exit. Callers only ever pass public data or an
    already encrypted key.
    """
    if _USE_MEMFD:
        try:
            fd = os.memfd_create("securesession-tls", os.MFD_CLOEXEC)
        except OSError:
            fd = -1
        if fd >= 0:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                yield f"/proc/self/fd/{fd}"
            finally:
                os.close(fd)
            return
    fd, path = tempfile.mkstemp(prefix="securesession-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _truststore_context_class(where: str) -> type[ssl.SSLContext]:
    try:
        import truststore
    except ImportError:
        raise TLSConfigError(
            f"entry {where}: ca_bundle='system' (the operating system's trust store) needs "
            f"the truststore package: {_TRUSTSTORE_EXTRA}"
        ) from None
    return truststore.SSLContext


_SYSTEM_CLASSES: dict[type[ssl.SSLContext], type[ProfileContext]] = {}
_SYSTEM_CLASSES_LOCK: Final = threading.Lock()


def _system_context_class(base: type[ssl.SSLContext]) -> type[ProfileContext]:
    """A :class:`ProfileContext` that is also a ``truststore.SSLContext`` (*base*).

    truststore's context hands every setting to an inner standard context, which
    does the handshake, and verifies the server against the operating system's
    store. Its property setters, not ``_IsolatedSSLContext``'s, must be the ones
    that run: they reach that inner context, and are safe from the recursion.
    """
    missing = [name for name in _C_LEVEL_PROPERTIES if name not in base.__dict__]
    if missing:
        raise TLSConfigError(
            f"ca_bundle='system': this truststore does not forward {', '.join(missing)} to "
            f"its inner context; upgrade it ({_TRUSTSTORE_EXTRA} asks for a recent one)"
        )
    with _SYSTEM_CLASSES_LOCK:
        made = _SYSTEM_CLASSES.get(base)
        if made is None:
            namespace: dict[str, Any] = {name: base.__dict__[name] for name in _C_LEVEL_PROPERTIES}
            namespace["__module__"] = __name__
            namespace["__doc__"] = "A ProfileContext verifying against the OS store (truststore)."
            made = cast(
                "type[ProfileContext]",
                type("SystemProfileContext", (ProfileContext, base), namespace),
            )
            _SYSTEM_CLASSES[base] = made
    return made


def _system_store_in_openssl() -> bool:
    """Whether truststore verifies with OpenSSL here (its Linux/BSD path, which loads
    OpenSSL's default verify paths) rather than with the platform's own verifier
    after the handshake (Windows, macOS), which never reads an entry's CRL."""
    return platform.system() not in ("Windows", "Darwin")


def _default_ca_file() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - requests depends on certifi
        return None
    return str(certifi.where())


def build_context(profile: TLSProfile, *, where: str) -> ProfileContext:
    """Build the one ``SSLContext`` of *profile*, for the entry named *where*.

    Raises :class:`TLSConfigError` when the local OpenSSL cannot honour the profile
    and :class:`ClientCertificateExpiredError` for an expired client certificate;
    logs a warning when the certificate expires within 30 days.
    """
    context_class = ProfileContext
    if profile.system_trust:
        context_class = _system_context_class(_truststore_context_class(where))
        if profile.crl is not None and not _system_store_in_openssl():
            raise TLSConfigError(
                f"entry {where}: crl= cannot be checked with ca_bundle='system' on "
                f"{platform.system()}: the operating system verifies the server there and "
                f"does not read the entry's CRL; give the gateway's CA as ca_bundle to check "
                f"a local CRL"
            )
    context = context_class(ssl.PROTOCOL_TLS_CLIENT)  # verifies the server and its name
    context.profile = profile
    context.where = where
    context._crl_dp_warned = False
    context._warn_lock = threading.Lock()
    context._not_before = float("-inf")
    context._not_after = float("inf")
    low, high = profile.versions
    for name in dict.fromkeys((low, high)):
        if not _LOCALLY_AVAILABLE[name]:
            raise TLSConfigError(
                f"entry {where}: this Python's OpenSSL ({ssl.OPENSSL_VERSION}) was built without "
                f"TLS {name}; use a Python linked to an OpenSSL that has it, or change the "
                f"entry's TLS versions"
            )
    try:
        if low in _LEGACY:
            context.set_ciphers(_LEGACY_CIPHERS)
        # Naming TLS 1.0/1.1 raises a DeprecationWarning; asking for them is the
        # whole point of allow_legacy, and that is already logged loudly.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = _TLS_VERSIONS[low]
            context.maximum_version = _TLS_VERSIONS[high]
    except (ssl.SSLError, ValueError) as exc:
        raise TLSConfigError(
            f"entry {where}: the local OpenSSL ({ssl.OPENSSL_VERSION}) refuses "
            f"{_describe_versions(low, high)} ({exc}); change the entry's TLS versions"
        ) from None
    if context.minimum_version != _TLS_VERSIONS[low]:
        raise TLSConfigError(
            f"entry {where}: the local OpenSSL ({ssl.OPENSSL_VERSION}) will not go down to "
            f"TLS {low}; change the entry's TLS versions"
        )
    try:
        if isinstance(profile.ca_bundle, bytes):
            context.load_verify_locations(cadata=profile.ca_bundle.decode("ascii"))
        elif profile.system_trust:
            pass  # truststore consults the operating system's store at every handshake
        else:
            default = _default_ca_file()
            if default is not None:
                context.load_verify_locations(cafile=default)
            else:  # pragma: no cover
                context.load_default_certs()
        if profile.crl is not None:
            # cadata parses certificates only; CRLs have to come from a file.
            with _private_path(profile.crl) as path:
                context.load_verify_locations(cafile=path)
            context.verify_flags |= (
                ssl.VERIFY_CRL_CHECK_CHAIN
                if profile.crl_scope == "chain"
                else ssl.VERIFY_CRL_CHECK_LEAF
            )
    except ssl.SSLError as exc:
        raise TLSConfigError(f"entry {where}: cannot load the CA bundle or CRL: {exc}") from None
    cert = profile.client_cert
    if cert is not None:
        context._not_before = cert.not_before.timestamp()
        context._not_after = cert.not_after.timestamp()
        context.refuse_if_expired()
        days = cert.expires_in() / 86400
        if days < EXPIRY_WARNING_DAYS:
            logger.warning(
                "entry %s: the client certificate %s expires in %.0f day(s); renew it",
                where,
                cert.describe(),
                days,
            )
        pem, passphrase = cert._rewrapped()
        try:
            with _private_path(pem) as path:
                context.load_cert_chain(path, password=passphrase)
        except ssl.SSLError as exc:
            raise TLSConfigError(
                f"entry {where}: OpenSSL refused the client certificate {cert.subject}: {exc}"
            ) from None
        # TLS 1.3 servers (IIS among them) may ask for the certificate only once
        # they see the request path.
        context.post_handshake_auth = True
    # urllib3 sets ALPN on every new connection; setting the same value here keeps
    # that write a no-op on an object shared between threads.
    context.set_alpn_protocols(["http/1.1"])
    return context


# -- diagnosis ----------------------------------------------------------------------

_VERSION_REASONS: Final = frozenset(
    {
        "TLSV1_ALERT_PROTOCOL_VERSION",
        "UNSUPPORTED_PROTOCOL",
        "NO_PROTOCOLS_AVAILABLE",
        "VERSION_TOO_LOW",
        "VERSION_TOO_HIGH",
        "TLSV1_ALERT_INAPPROPRIATE_FALLBACK",
    }
)
_REJECTED: Final = {
    "TLSV1_ALERT_UNKNOWN_CA": (
        "unknown_ca",
        "it does not trust the CA that issued our certificate ({issuer}); ask the service "
        "which CA it accepts, or have it add ours",
    ),
    "SSLV3_ALERT_CERTIFICATE_REVOKED": (
        "revoked",
        "it reports the certificate as revoked; get a new certificate issued and store it "
        "in the entry",
    ),
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": (
        "expired",
        "it reports the certificate as expired or not yet valid (ours is valid until "
        "{not_after}); renew it, or check the server's clock",
    ),
    "SSLV3_ALERT_BAD_CERTIFICATE": ("refused", "it calls the certificate bad"),
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": (
        "refused",
        "it does not support this kind of certificate (key type or key usage)",
    ),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": ("refused", "it could not accept the certificate"),
    "TLSV1_ALERT_ACCESS_DENIED": ("refused", "it denies access to this certificate"),
    "TLSV1_ALERT_DECRYPT_ERROR": (
        "refused",
        "it could not verify our handshake signature (wrong key for the certificate?)",
    ),
}
_VERIFY_HINTS: Final = {
    2: "the CA bundle lacks the certificate of the server certificate's issuer",
    3: "the entry's CRL holds no CRL from the issuer of a certificate it must check "
    "(with crl_scope='chain' every CA's CRL is needed)",
    9: "the server certificate is not valid yet (check both clocks)",
    10: "the server certificate has expired",
    11: "the entry's CRL is not valid yet",
    12: "the entry's CRL has expired (its next update has passed); download a fresh one",
    18: "the server certificate is self-signed; put it in the entry's ca_bundle if that is "
    "intended",
    19: "the chain ends in a CA that is not in the entry's CA bundle",
    20: "the CA that issued the server certificate is not in the trusted store; add that CA "
    "to the entry's ca_bundle",
    21: "the server sent no chain up to a trusted CA; add the intermediate and root CAs to "
    "the entry's ca_bundle",
    23: "the entry's CRL lists the server certificate as revoked",
    62: "the certificate does not name the host in the URL (hostname mismatch)",
    64: "the certificate does not name the IP address in the URL",
}


#: OpenSSL verify codes meaning "no trusted CA for this chain".
_UNTRUSTED_CODES: Final = frozenset({2, 18, 19, 20, 21})


def find_ssl_error(error: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` somewhere under *error* (through ``reason``, ``args``,
    ``__cause__`` and ``__context__``, as HTTP libraries wrap it), or None."""
    found = _find(error, (ssl.SSLError,))
    return found if isinstance(found, ssl.SSLError) else None


def _find(error: BaseException, types: tuple[type[BaseException], ...]) -> BaseException | None:
    seen: set[int] = set()
    stack: list[BaseException] = [error]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, types):
            return current
        nested: list[object] = [
            getattr(current, "reason", None),
            current.__cause__,
            current.__context__,
            *current.args,
        ]
        stack.extend(item for item in nested if isinstance(item, BaseException))
    return None


def probe_server_versions(
    host: str, port: int, *, timeout: float = _PROBE_TIMEOUT
) -> tuple[str, ...] | None:
    """Which TLS versions *host* accepts, tried one by one without verification or
    client certificate; for diagnosis only. None if the server cannot be reached."""
    accepted: list[str] = []
    for name in _ORDER:
        if not _LOCALLY_AVAILABLE[name]:
            continue
        probe = _IsolatedSSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        try:
            if name in _LEGACY:
                probe.set_ciphers(_LEGACY_CIPHERS)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                probe.minimum_version = probe.maximum_version = _TLS_VERSIONS[name]
        except (ssl.SSLError, ValueError):
            continue
        try:
            with (
                socket.create_connection((host, port), timeout=timeout) as raw,
                probe.wrap_socket(raw, server_hostname=_sni(host)),
            ):
                accepted.append(name)
        except ssl.SSLError as exc:
            # Any failure after version negotiation (a demanded client certificate,
            # say) still means the server speaks this version.
            if exc.reason not in _VERSION_REASONS and exc.reason != "WRONG_VERSION_NUMBER":
                accepted.append(name)
        except OSError:
            return None
    return tuple(accepted)


def probe_client_verdict(
    context: ssl.SSLContext | None, host: str, port: int, *, timeout: float = _PROBE_TIMEOUT
) -> ssl.SSLError | None:
    """Handshake with *host* again and listen, without sending a byte of request:
    the alert a TLS 1.3 server sends when it refuses our client certificate (or the
    lack of one), or None if it sends none within *timeout*. For diagnosis only.

    With TLS 1.3 the client finishes its handshake before the server has judged the
    client certificate, so the server's refusal can arrive after the request was
    written, as a bare connection reset that hides the reason.
    """
    if context is None:
        # No profile: only the server's verdict on "no certificate" matters here,
        # and nothing is sent, so the probe need not verify the server.
        context = _IsolatedSSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=_sni(host)) as sock,
        ):
            sock.recv(1)
    except ssl.SSLError as exc:
        return None if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)) else exc
    except OSError:  # a timeout included: the server was waiting for our request
        return None
    return None


#: How a server that refuses us after the handshake shows up on our side (a refused
#: connection is not one of them: there was no handshake to ask about).
_CLOSED: Final = (
    ssl.SSLEOFError,
    ssl.SSLZeroReturnError,
    ConnectionResetError,
    ConnectionAbortedError,
    BrokenPipeError,
)


def _sni(host: str) -> str:
    # Python sends no SNI for an IP address but still checks the certificate
    # against it, so the bare host (IPv6 without brackets) is right either way.
    return host.strip("[]")


def diagnose(
    error: BaseException,
    *,
    where: str,
    host: str,
    port: int,
    profile: TLSProfile | None,
    context: ssl.SSLContext | None = None,
    probe: bool = True,
) -> TLSHandshakeError | None:
    """Explain the TLS failure inside *error* for entry *where* talking to
    ``host:port``, or None when *error* holds no TLS failure.

    *profile* is the entry's profile and *context* its context (None: requests'
    default TLS settings). With *probe*, the server may be asked again, without
    any request byte: which versions it accepts (on a version mismatch), or why
    it dropped the connection right after a handshake (see
    :func:`probe_client_verdict`).
    """
    if isinstance(error, TLSHandshakeError):
        return error
    ssl_error = find_ssl_error(error)
    dropped = ssl_error is None or isinstance(ssl_error, _CLOSED)
    if probe and dropped and _find(error, _CLOSED) is not None:
        ssl_error = probe_client_verdict(context, host, port) or ssl_error
    if ssl_error is None:
        return None
    origin = f"{host}:{port}"
    cert = profile.client_cert if profile is not None else None
    reason = getattr(ssl_error, "reason", None) or ""  # unset on errors truststore raises
    detail = _openssl_text(ssl_error)

    if isinstance(ssl_error, ssl.SSLCertVerificationError):
        code = int(getattr(ssl_error, "verify_code", 0) or 0)
        message = getattr(ssl_error, "verify_message", None) or detail
        system = profile is not None and profile.system_trust
        # Codes are OpenSSL's unless the platform's verifier (truststore on Windows and
        # macOS) raised the error.
        openssl_code = not system or _system_store_in_openssl()
        hint = _VERIFY_HINTS.get(code, "") if openssl_code else ""
        if system and openssl_code and code in _UNTRUSTED_CODES:
            hint = "the CA of the server's certificate is not in the operating system's store"
        if system:
            store = (
                "the operating system's trust store (ca_bundle='system', through truststore); "
                "if the gateway's CA is a private one, add it to that store or give it as the "
                "entry's ca_bundle"
            )
        elif profile is not None and profile.ca_bundle is not None:
            store = "the entry's CA bundle"
        else:
            store = "the default CA store (certifi)"
        server_error = ServerCertificateError(
            f"entry {where}: the certificate of {origin} was not accepted: {message}. "
            + (f"In plain words: {hint}. " if hint else "")
            + f"Trusted here: {store}."
        )
        server_error.verify_code = code
        return server_error

    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED" or (
        reason == "SSLV3_ALERT_HANDSHAKE_FAILURE" and cert is None
    ):
        if cert is None:
            likely = "" if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED" else "most likely "
            return ClientCertificateRequiredError(
                f"entry {where}: {origin} {likely}demands a client certificate, and the entry "
                f"has none configured ({detail}). Add client_cert=ClientCertificate.from_pkcs12"
                f"(...) or .from_pem(...) to the entry's TLSProfile"
            )
        rejected = ClientCertificateRejectedError(
            f"entry {where}: {origin} demanded a client certificate and did not take ours "
            f"({cert.describe()}): {detail}"
        )
        return rejected

    if reason in _REJECTED and cert is not None:
        kind, text = _REJECTED[reason]
        rejected = ClientCertificateRejectedError(
            f"entry {where}: {origin} rejected our client certificate {cert.subject}: "
            + text.format(issuer=cert.issuer, not_after=f"{cert.not_after:%Y-%m-%d}")
            + f" ({detail})"
        )
        rejected.reason = kind
        return rejected

    if reason in _VERSION_REASONS:
        low, high = profile.versions if profile is not None else ("1.2", "1.3")
        ours = tuple(_ORDER[_ORDER.index(low) : _ORDER.index(high) + 1])
        theirs = probe_server_versions(host, port) if probe else None
        if theirs is None:
            server_side = "the server accepts none of them (its versions could not be probed)"
        else:
            server_side = f"the server accepts {_describe_accepted(theirs)}"
        advice = "Set version=, or min_version=/max_version=, in the entry's TLSProfile"
        if theirs and all(v in _LEGACY for v in theirs):
            advice += (
                "; the server only speaks legacy TLS, which also needs allow_legacy=True "
                "(better: ask the service to enable TLS 1.2)"
            )
        elif theirs:
            advice += f" to include TLS {theirs[-1]}"
        mismatch = ProtocolVersionMismatchError(
            f"entry {where}: no TLS version in common with {origin}: this entry allows "
            f"{_describe_versions(low, high)}"
            + ("" if profile is not None else " (the default)")
            + f"; {server_side}. {advice} ({detail})"
        )
        mismatch.ours = ours
        mismatch.theirs = theirs or ()
        return mismatch

    if reason == "WRONG_VERSION_NUMBER":
        return TLSHandshakeError(
            f"entry {where}: {origin} did not answer in TLS (is it a plain http:// port?) "
            f"({detail})"
        )
    return TLSHandshakeError(f"entry {where}: the TLS handshake with {origin} failed: {detail}")


def _openssl_text(error: ssl.SSLError) -> str:
    """OpenSSL's short reason, e.g. ``tlsv1 alert unknown ca``; no file/line noise."""
    text = str(error.args[1]) if len(error.args) > 1 else str(error)
    return re.sub(r"\s*\(_ssl\.c:\d+\)$", "", re.sub(r"^\[[A-Z0-9_: ]+\]\s*", "", text))


# -- IIS 403 sub-statuses --------------------------------------------------------------

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
