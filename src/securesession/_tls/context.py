"""One ``SSLContext`` per :class:`~securesession._tls.model.TLSProfile`:
:func:`build_context` and the :class:`ProfileContext` it returns.

:func:`build_context` turns a profile into one :class:`ProfileContext` (an
``ssl.SSLContext``) that is built once and never changed afterwards; transports key
their connection pools on that object, so each profile gets its own connections.

Private keys never reach the disk in clear. ``SSLContext.load_cert_chain`` only
reads files, so the key is re-encrypted under a one-time random passphrase and
handed over through an anonymous memory file (``memfd_create`` on Linux) or,
elsewhere, a private temporary file that holds only the encrypted key and is
removed as soon as OpenSSL has read it. A PEM certificate whose key is already
encrypted (under the entry's password) is handed over as stored, through a memory file
only: a temporary file never holds a key encrypted under anything but a one-time
passphrase.

Contexts are built from the standard library's own ``ssl.SSLContext`` class,
captured when this module is imported (or recovered from behind a replacement
such as ``truststore.inject_into_ssl()`` that ran earlier), and their property
setters never go through the ``ssl`` module's global name: a profile's trust,
pins and client certificate stay its own whatever replaces ``ssl.SSLContext``
process-wide, before or after this import. ``ca_bundle="system"`` asks for the
operating system's trust store explicitly, through truststore.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

from .._exceptions import (
    ClientCertificateExpiredError,
    PinMismatchError,
    ServerCertificateError,
    TLSConfigError,
)
from .model import (
    _LEGACY,
    EXPIRY_WARNING_DAYS,
    ClientCertificate,
    TLSProfile,
    _describe_versions,
    spki_pin,
)

__all__ = ["ProfileContext", "build_context"]

logger = logging.getLogger("securesession")

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
# memfd_create gives a file that lives in memory only and vanishes with its last
# descriptor; OpenSSL opens it through /proc. Tests switch this off to exercise
# the temporary-file path.
_USE_MEMFD = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
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
    standard = next(k.__dict__[name] for k in _StandardSSLContext.__mro__ if name in k.__dict__)
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


# -- context -------------------------------------------------------------------------


if TYPE_CHECKING:  # a protocol only type checkers use: no class to build at import

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
            points = _crl_distribution_points(sock)
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
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).subject.rfc4514_string()
    except ValueError:
        return "unreadable certificate"


def _crl_distribution_points(sock: _PeerSocket) -> list[str]:
    """The CRL distribution point URIs of the server's certificate, as OpenSSL decoded
    them for the standard library (the context verifies the server, so its decoded
    certificate is there): no certificate is parsed in Python for them."""
    decoded = sock.getpeercert(False)
    points = decoded.get("crlDistributionPoints", ()) if isinstance(decoded, dict) else ()
    return [point for point in points if isinstance(point, str)]


class _NoMemoryFile(Exception):
    """``_private_path(memory_only=True)`` where no anonymous memory file can be made."""


@contextlib.contextmanager
def _private_path(data: bytes, *, memory_only: bool = False) -> Iterator[str]:
    """A path OpenSSL can read *data* from, valid inside the ``with`` block only.

    An anonymous memory file where the platform has one; otherwise a temporary
    file created 0600, removed on exit (or, *memory_only*, :class:`_NoMemoryFile`).
    Callers only ever pass public data or an already encrypted key.
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
    if memory_only:
        raise _NoMemoryFile
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
    import platform

    return platform.system() not in ("Windows", "Darwin")


def _default_ca_file() -> str | None:
    try:
        import certifi
    except ImportError:  # pragma: no cover - requests depends on certifi
        return None
    return str(certifi.where())


def build_context(profile: TLSProfile, *, where: str, rewrap: bool = False) -> ProfileContext:
    """Build the one ``SSLContext`` of *profile*, for the entry named *where*.

    Raises :class:`TLSConfigError` when the local OpenSSL cannot honour the profile
    and :class:`ClientCertificateExpiredError` for an expired client certificate;
    logs a warning when the certificate expires within ``EXPIRY_WARNING_DAYS`` (30).

    Where there are memory files, a PEM client certificate whose key is encrypted goes
    to OpenSSL as it is (OpenSSL decrypts the key in memory with the certificate's
    password): no certificate code is loaded in Python. Any other (PKCS#12, a key in
    clear, no memory file), or with *rewrap*, is read with ``cryptography`` and its key
    re-encrypted under a one-time passphrase first. Either way the key reaches OpenSSL
    encrypted.
    """
    context_class = ProfileContext
    if profile.system_trust:
        context_class = _system_context_class(_truststore_context_class(where))
        if profile.crl is not None and not _system_store_in_openssl():
            import platform

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
        if not _load_client_certificate(context, cert, where, rewrap=rewrap):
            # OpenSSL refused the chain as stored (it does not start with its leaf,
            # or its key cipher is one this OpenSSL lacks): start again on a clean
            # context, the key re-wrapped.
            return build_context(profile, where=where, rewrap=True)
        days = cert.expires_in() / 86400
        if days < EXPIRY_WARNING_DAYS:
            logger.warning(
                "entry %s: the client certificate %s expires in %.0f day(s); renew it",
                where,
                cert.describe(),
                days,
            )
        # TLS 1.3 servers (IIS among them) may ask for the certificate only once
        # they see the request path.
        context.post_handshake_auth = True
    # urllib3 sets ALPN on every new connection; setting the same value here keeps
    # that write a no-op on an object shared between threads.
    context.set_alpn_protocols(["http/1.1"])
    return context


def _load_client_certificate(
    context: ProfileContext, cert: ClientCertificate, where: str, *, rewrap: bool
) -> bool:
    """Load *cert* and its key into *context*; False when OpenSSL refused the PEM as
    stored (then *context* is not to be used), so that the caller re-wraps instead.

    The PEM as stored goes through a memory file only: its key is encrypted under the
    entry's password, which may be weak; whatever reaches a temporary file on disk is
    encrypted under a one-time random passphrase (re-wrapped)."""
    as_stored = None if rewrap else cert._pem_as_stored()
    if as_stored is not None:
        try:
            with _private_path(as_stored[0], memory_only=True) as path:
                context.load_cert_chain(path, password=as_stored[1])
        except _NoMemoryFile:
            pass  # no memory file here: re-wrap, below
        except ssl.SSLError:
            return False
        else:
            return True
    pem, passphrase = cert._rewrapped()
    try:
        with _private_path(pem) as path:
            context.load_cert_chain(path, password=passphrase)
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"entry {where}: OpenSSL refused the client certificate {cert.subject}: {exc}"
        ) from None
    return True
