"""``demo``: the README's first command, a self-contained tour with no network.

It creates a throwaway key and SQLite registry in a temporary directory, a test CA
with a client certificate (as a passphrase-protected PKCS#12 file, like a Windows
export), and a local mutual-TLS gateway on 127.0.0.1 that checks the gateway
headers, the HTTP Basic request credentials and the client certificate. Then it
runs the real commands an operator would (``init``, ``add``, ``match``, ``check``,
``request``) in this process, printing each one, and finally shows what a mistake
(an entry without the client certificate) looks like. Everything is deleted at the
end unless ``--keep`` is given.

The demo's secrets are random and generated here; they are fed to ``add`` through
its ``--...-stdin`` options and never printed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import secrets
import shlex
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Final

from securesession._files import write_private_file

from ._common import EXIT_OK, CommandError, out

if TYPE_CHECKING:
    from securesession.testing import GatewayServer

__all__ = ["cmd_demo"]

_GATEWAY_USER: Final = "demo-gateway"
_REQUEST_USER: Final = "demo-user"
_CLIENT_CN: Final = "demo-client"


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _shown(argv: Sequence[str], home: Path) -> str:
    text = " ".join(shlex.quote(arg) for arg in argv)
    return text.replace(str(home) + os.sep, "")


def _step(number: int, title: str) -> None:
    out()
    out(f"{number}. {title}")


def _run(argv: list[str], home: Path, *, stdin: str = "", expect: int = EXIT_OK) -> int:
    """Run one real command in this process, echoing it like a shell session."""
    from ._app import run

    out(f"   $ securesession {_shown(argv, home)}")
    sys.stdout.flush()
    saved_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        # Its stderr (status lines, notes, errors) joins stdout so the story reads
        # in order even when the output is piped.
        with contextlib.redirect_stderr(sys.stdout):
            code = run(argv)
    finally:
        sys.stdin = saved_stdin
        sys.stdout.flush()
    if code != expect:
        raise CommandError(
            f"demo step 'securesession {argv[0]}' exited with {code}, expected {expect}"
        )
    return code


def cmd_demo(args: argparse.Namespace) -> int:
    # The test PKI and gateway are test helpers; only the demo needs them.
    from securesession.testing import CertificateAuthority, GatewayServer

    home = Path(tempfile.mkdtemp(prefix="securesession-demo-"))
    gateway_password = "gw-" + secrets.token_urlsafe(12)
    request_password = "rq-" + secrets.token_urlsafe(12)
    pfx_passphrase = "pfx-" + secrets.token_urlsafe(12)
    out("securesession demo: a throwaway registry, a local mutual-TLS gateway, one call.")
    out(f"Nothing leaves this machine; the files live in {home}.")
    try:
        with _environment(
            {
                "SECURESESSION_REGISTRY": f"sqlite://{home / 'registry.db'}",
                "SECURESESSION_KEY_FILE": str(home / "master.key"),
                # The gateway is on 127.0.0.1: a proxy configured on this host must
                # not be asked to reach it.
                "NO_PROXY": "127.0.0.1,localhost",
                "no_proxy": "127.0.0.1,localhost",
            }
        ):
            _step(1, "A throwaway master key and registry (set by environment variables here)")
            _run(["init"], home)

            _step(2, "A test CA, a client certificate, and a local gateway that checks all")
            ca = CertificateAuthority("securesession demo CA")
            a_year = datetime.now(timezone.utc) + timedelta(days=365)
            client = ca.issue_client(_CLIENT_CN, not_after=a_year)
            pfx = home / "client.p12"
            write_private_file(
                pfx,
                client.pkcs12(pfx_passphrase.encode()),
                overwrite=False,
                what="PKCS#12 file",
                error=CommandError,
            )
            ca_file = home / "ca.pem"
            ca_file.write_bytes(ca.cert_pem)
            gateway = GatewayServer(
                tls=True,
                ca=ca,
                require_client_cert=True,
                expect_gateway=(_GATEWAY_USER, gateway_password),
                expect_request=(_REQUEST_USER, request_password),
            )
            with gateway:
                out(f"   CA        {ca.common_name}")
                out(f"   client    CN={_CLIENT_CN}, in client.p12 (passphrase-protected)")
                out(f"   gateway   {gateway.url}: demands a client certificate from the demo CA,")
                out("             X-Gateway-User/X-Gateway-Password headers and HTTP Basic")
                _tour(
                    home,
                    gateway,
                    pfx,
                    ca_file,
                    (gateway_password, request_password, pfx_passphrase),
                )
    finally:
        if args.keep:
            out(f"\nKept {home} (the key file inside decrypts its registry).")
        else:
            shutil.rmtree(home, ignore_errors=True)
    out()
    out("Done. For real use: 'securesession init', then 'securesession add URL ...';")
    out("see 'securesession add --help' and docs/cli.md.")
    return EXIT_OK


def _tour(
    home: Path, gateway: GatewayServer, pfx: Path, ca_file: Path, passwords: tuple[str, str, str]
) -> None:
    assert gateway.server_cert is not None
    base, pin = gateway.url, gateway.server_cert.spki_sha256_pin
    gateway_password, request_password, pfx_passphrase = passwords
    entry_url = f"{base}/payments"
    call_url = f"{base}/payments/bills/42"

    _step(3, "Add the entry; secrets come from stdin here (a prompt when typed by hand)")
    add = ["add", entry_url, "--description", "demo payments API"]
    add += ["--gateway-user", _GATEWAY_USER, "--gateway-password-stdin"]
    add += ["--request-user", _REQUEST_USER, "--request-password-stdin"]
    add += ["--client-pkcs12", str(pfx), "--client-cert-passphrase-stdin"]
    add += ["--ca-bundle", str(ca_file), "--pin", pin, "--tls-min", "1.2"]
    _run(add, home, stdin=f"{gateway_password}\n{request_password}\n{pfx_passphrase}\n")
    pfx.unlink()
    out("   (client.p12 deleted: the registry holds the certificate, encrypted)")

    _step(4, "Which entry the call will use, and why")
    _run(["match", call_url], home)

    _step(5, "The TLS handshake that entry prescribes (no request sent)")
    _run(["check", call_url], home)

    _step(6, "The call, through SecureSession (injected values are redacted)")
    _run(["request", "GET", call_url, "-v"], home)
    out()  # the body need not end with a line break
    if gateway.requests:
        seen = gateway.requests[-1]
        out(
            f"   the gateway saw: {seen.tls_version}, client certificate "
            f"CN={seen.client_cert_subject_cn}, gateway and Basic credentials valid "
            f"(HTTP {seen.status})"
        )

    _step(7, "What a mistake looks like: an entry for the same gateway without the client cert")
    _run(["add", f"{base}/reports", "--ca-bundle", str(ca_file)], home)
    _run(["request", "GET", f"{base}/reports/daily"], home, expect=1)
    out("   (the gateway refused the connection; the fix: add --replace ... --client-pkcs12 FILE)")
