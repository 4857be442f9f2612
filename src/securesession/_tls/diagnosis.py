"""TLS failures explained in plain words: :func:`diagnose` and the probes it may use.

When a handshake fails, :func:`diagnose` finds the ``ssl.SSLError`` under whatever
the HTTP library wrapped it in and turns it into the
:class:`~securesession.TLSHandshakeError` subclass that says what happened and how
to fix it: a server certificate that was not accepted, a client certificate that
was required, refused or expired, no TLS version in common. It may ask the server
again, without sending a request byte: which versions it accepts, or why it dropped
the connection right after a handshake.

This module speaks only ``ssl`` and ``socket``: it never imports requests or
urllib3, so another HTTP client's transport can reuse it.
"""

from __future__ import annotations

import re
import socket
import ssl
import warnings
from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from .._exceptions import (
    ClientCertificateRejectedError,
    ClientCertificateRequiredError,
    ProtocolVersionMismatchError,
    ServerCertificateError,
    TLSHandshakeError,
)
from .context import (
    _LEGACY_CIPHERS,
    _LOCALLY_AVAILABLE,
    _TLS_VERSIONS,
    _IsolatedSSLContext,
    _system_store_in_openssl,
)
from .model import _LEGACY, _ORDER, _describe_versions

if TYPE_CHECKING:
    from .model import TLSProfile

__all__ = ["diagnose", "find_ssl_error", "probe_client_verdict", "probe_server_versions"]

_PROBE_TIMEOUT: Final = 3.0


def _describe_accepted(versions: Iterable[str]) -> str:
    names = list(versions)
    if not names:
        return "none of TLS 1.0 to 1.3"
    if len(names) == 1:
        return f"TLS {names[0]} only"
    return "TLS " + ", ".join(names[:-1]) + " and " + names[-1]


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
