"""``check URL``: the TLS handshake of the entry a URL matches, explained.

The handshake uses exactly the ``SSLContext`` a :class:`SecureSession` would (built
by the library from the entry's TLS profile). No request is ever sent, so no
credential leaves: neither by the check nor by its diagnosis. On success it prints
the protocol, cipher, server certificate and its pin, the pins the entry accepts,
and the client certificate offered; on failure, the library's plain-words diagnosis
of what failed and how to fix it, which may handshake with the server again (to ask
which TLS versions it accepts, or why it dropped the connection), never further.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import ssl
import time
from datetime import datetime, timezone
from typing import Any, Final

from cryptography import x509

from securesession import Registry, SecureSessionError, ServiceEntry
from securesession._tls import build_context, diagnose
from securesession._tls.model import EXPIRY_WARNING_DAYS
from securesession._urls import canonicalize

from ._commands import registry_from_args
from ._common import EXIT_FAILED, EXIT_OK, UsageError, emit_json, out
from ._tlsopts import describe_tls, spki_pin, tls_text

__all__ = ["cmd_check", "run_check"]

#: How long to listen after a TLS 1.3 handshake for the server's verdict on the
#: client certificate, which TLS 1.3 sends after the client considers itself done.
_VERDICT_WAIT: Final = 0.3


def _when(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _server_certificate(der: bytes) -> dict[str, Any]:
    cert = x509.load_der_x509_certificate(der)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = [str(n) for n in sans.get_values_for_type(x509.DNSName)] + [
            str(ip) for ip in sans.get_values_for_type(x509.IPAddress)
        ]
    except x509.ExtensionNotFound:
        names = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": _when(cert.not_valid_before_utc),
        "not_after": _when(cert.not_valid_after_utc),
        "expires_in_days": int((cert.not_valid_after_utc.timestamp() - time.time()) // 86400),
        "names": names,
        "pin": spki_pin(der),
    }


def _default_context(cafile: str | None) -> ssl.SSLContext:
    """What requests does for a URL without a TLS profile (certifi, unless --cacert)."""
    if cafile is None:
        import certifi

        cafile = certifi.where()
    return ssl.create_default_context(cafile=cafile)


def _diagnosis(
    entry: ServiceEntry | None,
    error: BaseException,
    *,
    host: str,
    port: int,
    context: ssl.SSLContext | None,
) -> str:
    """The plain-words reason of a failed handshake.

    For a URL with an entry, the library's TLS diagnosis explains it, as a session
    would explain it (which versions the server accepts, its verdict on our client
    certificate): it may handshake again, and sends no request.
    """
    if isinstance(error, SecureSessionError):
        return str(error)
    if entry is not None:
        diagnosed = diagnose(
            error, where=entry.url, host=host, port=port, profile=entry.tls, context=context
        )
        if diagnosed is not None:
            return str(diagnosed)
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"the server certificate was not accepted: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"the TLS handshake failed: {error.reason or error}"
    return f"the TLS handshake failed: {error}"


def run_check(
    registry: Registry, url: str, *, timeout: float = 10.0, cafile: str | None = None
) -> dict[str, Any]:
    """Handshake with the server of *url* as its entry would; describe the outcome."""
    canonical = canonicalize(url)
    if canonical.scheme != "https":
        raise UsageError("check needs an https:// URL (plain http has no TLS)")
    ref = registry.lookup(url)
    entry = None if ref is None else registry.load(ref)
    profile = entry.tls if entry is not None else None
    host = canonical.host.strip("[]")
    result: dict[str, Any] = {
        "url": canonical.origin + canonical.path,
        "entry": None if entry is None else entry.url,
        "tls_profile": describe_tls(profile),
        "ok": False,
        "protocol": None,
        "cipher": None,
        "server_certificate": None,
        "pins": {"configured": list(profile.pins) if profile else [], "match": None},
        "client_certificate": None
        if profile is None or profile.client_cert is None
        else profile.client_cert.describe(),
        "error": None,
        "hints": [],
    }
    try:
        profile_context = (
            None
            if entry is None or entry.tls is None
            else build_context(entry.tls, where=entry.url)
        )
    except SecureSessionError as exc:  # an expired certificate, an unusable profile
        result["error"] = str(exc)
        return result
    context = profile_context or _default_context(cafile)
    try:
        raw = socket.create_connection((host, canonical.port), timeout=timeout)
    except OSError as exc:
        result["error"] = f"cannot connect to {host}:{canonical.port}: {exc.strerror or exc}"
        return result
    try:
        with context.wrap_socket(raw, server_hostname=host) as sock:
            result["protocol"] = sock.version()
            cipher = sock.cipher()
            if cipher is not None:
                result["cipher"] = {"name": cipher[0], "bits": cipher[2]}
            der = sock.getpeercert(binary_form=True)
            if der:
                result["server_certificate"] = _server_certificate(der)
            if profile_context is not None:
                profile_context.check_connection(sock, host)  # type: ignore[arg-type]
            if result["protocol"] == "TLSv1.3":
                _await_verdict(sock)
    except (OSError, SecureSessionError) as exc:  # ssl.SSLError is an OSError
        result["error"] = _diagnosis(
            entry, exc, host=host, port=canonical.port, context=profile_context
        )
        if result["server_certificate"] and profile and profile.pins:
            result["pins"]["match"] = result["server_certificate"]["pin"] in profile.pins
        return result
    finally:
        raw.close()
    result["ok"] = True
    if profile is not None and profile.pins:
        result["pins"]["match"] = True
    result["hints"] = _hints(result, entry)
    return result


def _await_verdict(sock: ssl.SSLSocket) -> None:
    """Raise the alert a TLS 1.3 server sends when it refuses our certificate (or
    its absence); a server that waits for the request sends nothing."""
    sock.settimeout(_VERDICT_WAIT)
    with contextlib.suppress(TimeoutError, socket.timeout):
        sock.recv(1)


def _hints(result: dict[str, Any], entry: ServiceEntry | None) -> list[str]:
    hints: list[str] = []
    server = result["server_certificate"]
    if server is not None and not result["pins"]["configured"] and entry is not None:
        hints.append(f"the server key is not pinned; to pin it: add ... --pin {server['pin']}")
    if server is not None and server["expires_in_days"] < EXPIRY_WARNING_DAYS:
        hints.append(f"the server certificate expires in {server['expires_in_days']} day(s)")
    profile = entry.tls if entry is not None else None
    if profile is not None and profile.client_cert is not None:
        days = profile.client_cert.expires_in() / 86400
        if days < EXPIRY_WARNING_DAYS:
            hints.append(f"the client certificate expires in {days:.0f} day(s); renew it")
    if result["protocol"] in ("TLSv1", "TLSv1.1"):
        hints.append("the server speaks legacy TLS; ask for TLS 1.2 or newer")
    if entry is None:
        hints.append("no registry entry matches: this is requests' default TLS, no client cert")
    return hints


def print_check(result: dict[str, Any]) -> None:
    """The text form of :func:`run_check`'s result."""
    out(f"check      {result['url']}")
    if result["entry"] is None:
        out("entry      none (default TLS settings, no client certificate)")
    else:
        out(f"entry      {result['entry']}")
        out(f"profile    {tls_text(result['tls_profile'])}")
    if result["protocol"]:
        out(f"protocol   {result['protocol']}")
    if result["cipher"]:
        out(f"cipher     {result['cipher']['name']} ({result['cipher']['bits']} bits)")
    server = result["server_certificate"]
    if server is not None:
        out(f"server     {server['subject']}, issued by {server['issuer']}")
        out(f"validity   {server['not_before']} to {server['not_after']}")
        if server["names"]:
            out(f"names      {', '.join(server['names'])}")
        pins = result["pins"]
        if not pins["configured"]:
            verdict = "(the entry pins no key)"
        elif pins["match"]:
            verdict = "(matches a pin of the entry)"
        else:
            verdict = "(matches NONE of the entry's pins: " + ", ".join(pins["configured"]) + ")"
        out(f"pin        {server['pin']} {verdict}")
    if result["client_certificate"]:
        accepted = " -- accepted" if result["ok"] else ""
        out(f"client     {result['client_certificate']}{accepted}")
    if result["ok"]:
        out("result     ok: the handshake succeeded")
    else:
        out(f"result     FAILED: {result['error']}")
    for hint in result["hints"]:
        out(f"hint       {hint}")


def cmd_check(args: argparse.Namespace) -> int:
    with registry_from_args(args) as registry:
        result = run_check(registry, args.url, timeout=args.timeout, cafile=args.cacert)
    if args.json:
        emit_json(result)
    else:
        print_check(result)
    return EXIT_OK if result["ok"] else EXIT_FAILED
