"""TLS on the command line: ``add``'s TLS options, and describing a TLS profile.

The client certificate comes from files (PEM or PKCS#12) named on the command line;
its passphrase, like every secret, from a prompt, stdin or an environment variable.
The registry stores the certificate, its key and the passphrase encrypted, so the
files can be deleted once the entry is added.
"""

from __future__ import annotations

import argparse
from typing import Any, get_args

from securesession import (
    ClientCertificate,
    ConfigurationError,
    Secret,
    TLSConfigError,
    TLSProfile,
    TLSVersionName,
    spki_pin,
)
from securesession._urls import canonicalize

from ._common import CommandError, UsageError
from ._secrets import SecretInput, add_secret_source

__all__ = [
    "ClientCertificate",
    "TLSProfile",
    "add_tls_options",
    "build_tls_profile",
    "describe_tls",
    "spki_pin",
    "tls_options_given",
    "tls_text",
    "validate_tls_options",
]

_VERSIONS = get_args(TLSVersionName)


def add_tls_options(parser: argparse._ActionsContainer) -> None:
    """Register ``add``'s TLS options on *parser* (a parser, or a group of one)."""
    group = parser.add_argument_group(
        "TLS (https:// entries)",
        "The client certificate's passphrase is read like the other secrets: a prompt, "
        "--client-cert-passphrase-stdin or --client-cert-passphrase-env NAME.",
    )
    source = group.add_mutually_exclusive_group()
    source.add_argument(
        "--client-cert",
        metavar="PEM",
        help="client certificate (chain) PEM file for mutual TLS; the key may be in it too",
    )
    source.add_argument(
        "--client-pkcs12", metavar="FILE", help="client certificate as a PKCS#12 (.pfx/.p12) file"
    )
    group.add_argument("--client-key", metavar="PEM", help="private key PEM file of --client-cert")
    add_secret_source(group, "--client-cert-passphrase", "key/PKCS#12 passphrase")
    group.add_argument("--tls-version", choices=_VERSIONS, help="use exactly this TLS version")
    group.add_argument("--tls-min", choices=_VERSIONS, help="lowest TLS version (default 1.2)")
    group.add_argument("--tls-max", choices=_VERSIONS, help="highest TLS version (default 1.3)")
    group.add_argument(
        "--ca-bundle",
        metavar="PEM",
        help="CAs trusted for this service, or 'system' for the OS trust store (needs "
        "securesession[truststore]); default: certifi",
    )
    group.add_argument(
        "--pin",
        action="append",
        metavar="sha256/BASE64",
        help="accepted server key pin (repeatable); 'securesession check URL' prints it",
    )
    group.add_argument("--crl", metavar="FILE", help="CRL (PEM or DER) to check the server with")
    group.add_argument(
        "--crl-scope",
        choices=("leaf", "chain"),
        default="leaf",
        help="check the server certificate only (leaf) or every CA too (chain)",
    )
    group.add_argument(
        "--no-revocation-check",
        action="store_true",
        help="record a deliberate opt-out of revocation checking",
    )
    group.add_argument(
        "--allow-legacy-tls",
        action="store_true",
        help="permit TLS 1.0/1.1 for this service alone (logs a warning per connection)",
    )


def tls_options_given(args: argparse.Namespace) -> bool:
    return bool(
        args.client_cert
        or args.client_pkcs12
        or args.client_key
        or args.client_cert_passphrase_stdin
        or args.client_cert_passphrase_env
        or args.client_cert_passphrase_prompt
        or args.tls_version
        or args.tls_min
        or args.tls_max
        or args.ca_bundle
        or args.pin
        or args.crl
        or args.crl_scope != "leaf"
        or args.no_revocation_check
        or args.allow_legacy_tls
    )


def _profile(args: argparse.Namespace, client_cert: ClientCertificate | None) -> TLSProfile:
    return TLSProfile(
        client_cert=client_cert,
        version=args.tls_version,
        min_version=args.tls_min,
        max_version=args.tls_max,
        ca_bundle=args.ca_bundle,
        pins=tuple(args.pin or ()),
        crl=args.crl,
        crl_scope=args.crl_scope,
        check_revocation=not args.no_revocation_check,
        allow_legacy=args.allow_legacy_tls,
    )


def validate_tls_options(args: argparse.Namespace) -> None:
    """Check the TLS options that need no secret, before any prompt (usage errors)."""
    if not tls_options_given(args):
        return
    if canonicalize(args.url).scheme != "https":
        raise UsageError("TLS options need an https:// URL (plain http has no TLS)")
    if args.client_key and not args.client_cert:
        raise UsageError("--client-key goes with --client-cert (a PEM certificate)")
    has_cert = bool(args.client_cert or args.client_pkcs12)
    if not has_cert and (
        args.client_cert_passphrase_stdin
        or args.client_cert_passphrase_env
        or args.client_cert_passphrase_prompt
    ):
        raise UsageError("a --client-cert-passphrase option needs --client-cert or --client-pkcs12")
    try:
        _profile(args, None)
    except TLSConfigError as exc:
        raise UsageError(str(exc)) from None


def _load_cert(args: argparse.Namespace, password: Secret | None) -> ClientCertificate:
    if args.client_pkcs12:
        return ClientCertificate.from_pkcs12(args.client_pkcs12, password)
    return ClientCertificate.from_pem(args.client_cert, args.client_key, password)


def build_tls_profile(args: argparse.Namespace, secrets: SecretInput) -> TLSProfile | None:
    """The TLS profile ``add``'s options describe (``None`` when none is given)."""
    if not tls_options_given(args):
        return None
    client_cert: ClientCertificate | None = None
    if args.client_cert or args.client_pkcs12:
        flag = "--client-cert-passphrase"
        what = "client certificate passphrase"
        explicit = bool(
            args.client_cert_passphrase_stdin
            or args.client_cert_passphrase_env
            or args.client_cert_passphrase_prompt
        )
        password = (
            secrets.read(
                what,
                stdin=args.client_cert_passphrase_stdin,
                env=args.client_cert_passphrase_env,
                flag=flag,
            )
            if explicit
            else None
        )
        try:
            client_cert = _load_cert(args, password)
        except TLSConfigError as exc:
            if explicit or not secrets.interactive:
                hint = "" if explicit else f"; if it needs a passphrase, pass {flag}-stdin or -env"
                raise CommandError(f"client certificate: {exc}{hint}") from None
            # No passphrase given and a terminal at hand: the file probably needs one.
            client_cert = _load_cert(args, Secret(secrets.prompt(what)))
    try:
        return _profile(args, client_cert)
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None


def describe_tls(profile: TLSProfile | None) -> dict[str, Any] | None:
    """A JSON-ready summary of *profile* (no key material, no passphrase)."""
    if profile is None:
        return None
    cert = profile.client_cert
    return {
        "client_cert": None
        if cert is None
        else {
            "subject": cert.subject,
            "issuer": cert.issuer,
            "serial": f"{cert.serial:#x}",
            "not_after": cert.not_after.isoformat().replace("+00:00", "Z"),
            "sha256": cert.fingerprint,
            "format": cert.format,
        },
        "versions": profile.describe_versions(),
        "ca_bundle_certificates": profile.ca_bundle.count(b"-----BEGIN CERTIFICATE-----")
        if isinstance(profile.ca_bundle, bytes)
        else None,
        "system_trust_store": profile.system_trust,
        "pins": list(profile.pins),
        "crl": None
        if profile.crl is None
        else {"count": profile.crl.count(b"-----BEGIN X509 CRL-----"), "scope": profile.crl_scope},
        "check_revocation": profile.check_revocation,
        "allow_legacy": profile.allow_legacy,
    }


def tls_text(tls: dict[str, Any] | None, *, short: bool = False) -> str:
    """One line for a described profile (``default``: requests' own TLS settings)."""
    if not tls:
        return "default"
    parts: list[str] = []
    cert = tls["client_cert"]
    if cert is not None:
        parts.append(
            "mTLS" if short else f"client cert {cert['subject']} (until {cert['not_after']})"
        )
    parts.append(tls["versions"])
    if tls["ca_bundle_certificates"] is not None:
        parts.append("own CA" if short else f"CA bundle ({tls['ca_bundle_certificates']})")
    if tls.get("system_trust_store"):
        parts.append("OS store" if short else "OS trust store")
    if tls["pins"]:
        parts.append(f"{len(tls['pins'])} pin(s)" if short else "pins " + ", ".join(tls["pins"]))
    if tls["crl"] is not None:
        parts.append(f"CRL ({tls['crl']['scope']})")
    if not tls["check_revocation"]:
        parts.append("no revocation check")
    if tls["allow_legacy"]:
        parts.append("legacy TLS allowed")
    return ", ".join(parts)
