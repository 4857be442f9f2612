"""Commands that talk to services, against local gateways on 127.0.0.1: request,
add with TLS options, check, and the demo end to end."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from securesession import Credential, ServiceEntry, TLSProfile
from securesession.testing import CertificateAuthority, GatewayServer, SilentServer

from ..secretscan import leaks
from .clihelp import CLI, one_error_line

GW = ("gw-user", "gwSECRET-net")
REQ = ("alice", "reqSECRET-net")
PFX_PASSPHRASE = "pfxSECRET-pass"


@dataclass(frozen=True)
class PKI:
    ca: CertificateAuthority
    ca_file: Path
    pfx_file: Path
    cert_file: Path
    key_file: Path
    client_cn: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority("cli test CA")
    client = ca.issue_client(
        "cli-client", not_after=datetime.now(timezone.utc) + timedelta(days=365)
    )
    pfx_file = directory / "client.p12"
    pfx_file.write_bytes(client.pkcs12(PFX_PASSPHRASE.encode()))
    cert_file = directory / "client.pem"
    cert_file.write_bytes(client.cert_pem)
    key_file = directory / "client-key.pem"
    key_file.write_bytes(client.encrypted_key_pem(PFX_PASSPHRASE.encode()))
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.cert_pem)
    return PKI(ca, ca_file, pfx_file, cert_file, key_file, "cli-client")


@pytest.fixture(scope="module")
def _plain_gateway() -> Iterator[GatewayServer]:
    with GatewayServer(expect_gateway=GW, expect_request=REQ) as server:
        yield server


@pytest.fixture
def plain_gateway(_plain_gateway: GatewayServer) -> GatewayServer:
    _plain_gateway.reset()
    _plain_gateway.clear_routes()
    return _plain_gateway


@pytest.fixture(scope="module")
def mtls_gateway(pki: PKI) -> Iterator[GatewayServer]:
    with GatewayServer(
        tls=True, ca=pki.ca, require_client_cert=True, expect_gateway=GW, expect_request=REQ
    ) as server:
        yield server


def _put_plain(cli: CLI, url: str, *, request: tuple[str, str] = REQ) -> None:
    registry = cli.open()
    registry.put(ServiceEntry(url, gateway=Credential(*GW), request=Credential(*request)))
    registry.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- request --------------------------------------------------------------------------------


def test_request_injects_credentials_and_redacts_them(
    ready: CLI, plain_gateway: GatewayServer, tmp_path: Path
) -> None:
    _put_plain(ready, f"{plain_gateway.url}/api")
    body_file = tmp_path / "body.bin"
    body_file.write_bytes(b"from a file")
    out_file = tmp_path / "out.json"
    header_file = tmp_path / "headers.txt"
    header_file.write_text("X-Api-Key: fileSECRET-key\n\nX-Other: plain\n")
    get, post_json, post_file = ready.run_many(
        [
            (
                [
                    "request",
                    "GET",
                    f"{plain_gateway.url}/api/items?x=1",
                    "-v",
                    "-i",
                    "-H",
                    f"@{header_file}",
                ],
                {},
            ),
            (
                [
                    "request",
                    "post",
                    f"{plain_gateway.url}/api/items",
                    "--json",
                    '{"a": 1}',
                    "-o",
                    str(out_file),
                ],
                {},
            ),
            (
                [
                    "request",
                    "PUT",
                    f"{plain_gateway.url}/api/items",
                    "--data",
                    f"@{body_file}",
                    "-H",
                    "X-Trace: abc",
                ],
                {},
            ),
        ]
    )
    assert get.code == 0, get
    assert json.loads(get.stdout) == {"method": "GET", "path": "/api/items?x=1"}
    assert "HTTP 200 OK" in get.stderr
    assert f"entry {plain_gateway.url}/api matched" in get.stderr
    assert "> X-Gateway-Password: <redacted>" in get.stderr
    assert "> Authorization: <redacted>" in get.stderr
    assert "> X-Gateway-User: <redacted>" in get.stderr
    assert "< Content-Type: application/json" in get.stderr
    assert "> X-Api-Key: <redacted>" in get.stderr and "> X-Other: plain" in get.stderr
    assert post_json.code == 0 and json.loads(out_file.read_text())["method"] == "POST"
    assert post_file.code == 0, post_file
    by_method = {r.method: r for r in plain_gateway.requests}
    assert by_method["GET"].header("X-Gateway-Password") == GW[1]
    assert by_method["GET"].header("X-Api-Key") == "fileSECRET-key"
    assert json.loads(by_method["POST"].body) == {"a": 1}
    assert by_method["POST"].header("Content-Type") == "application/json"
    assert by_method["PUT"].body == b"from a file"
    assert by_method["PUT"].header("X-Trace") == "abc"


HOP_GW = ("hop-user", "hopSECRET-second")
HOP_REQ = ("bob", "bobSECRET-second")
HOP_HEADERS = ("X-Hop-User", "X-Hop-Proof")  # names entry A never injects
HOP_SIG = "routeSECRET-second-hop"


def test_request_verbose_redacts_the_secrets_of_every_redirect_hop(
    ready: CLI, plain_gateway: GatewayServer
) -> None:
    """Entry A redirects to entry B (other secrets, other header names): ``-v`` shows
    the headers of both hops, and must redact B's as well as A's."""
    with GatewayServer(
        expect_gateway=HOP_GW, gateway_headers=HOP_HEADERS, expect_request=HOP_REQ
    ) as second:
        registry = ready.open()
        registry.put(
            ServiceEntry(
                f"{plain_gateway.url}/a",
                gateway=Credential(*GW),
                request=Credential(*REQ),
                secret_headers={"X-Api-Key": "akeySECRET-first"},
            )
        )
        registry.put(
            ServiceEntry(
                f"{second.url}/b",
                gateway=Credential(*HOP_GW),
                gateway_headers=HOP_HEADERS,
                request=Credential(*HOP_REQ),
                secret_headers={"X-Route-Sig": HOP_SIG},
            )
        )
        registry.close()
        plain_gateway.redirect("/a/start", f"{second.url}/b/landing")
        # ready.run fails the test if any output holds a test secret (clear or base64).
        result = ready.run("request", "GET", f"{plain_gateway.url}/a/start", "-v", "-i")
        assert result.code == 0, result
        recorded = second.requests[-1]
    assert json.loads(result.stdout) == {"method": "GET", "path": "/b/landing"}
    assert "< HTTP 302 Found" in result.stderr and "HTTP 200 OK" in result.stderr
    assert f"> GET {second.url}/b/landing" in result.stderr
    for header in ("X-Hop-User", "X-Hop-Proof", "X-Route-Sig", "Authorization"):
        assert f"> {header}: <redacted>" in result.stderr, header
    assert not leaks(result.output)
    # The second hop really carried B's secrets, so redaction had something to hide.
    assert recorded.header("X-Route-Sig") == HOP_SIG
    assert recorded.header("X-Hop-Proof") == HOP_GW[1]
    assert recorded.header("X-Api-Key") is None  # A's secret header stayed behind


def test_request_failures(ready: CLI, plain_gateway: GatewayServer) -> None:
    _put_plain(ready, f"{plain_gateway.url}/wrong", request=("alice", "badSECRET"))
    with SilentServer() as silent:
        results = ready.run_many(
            [
                (["request", "GET", f"{plain_gateway.url}/wrong/x"], {}),
                (["request", "GET", f"{plain_gateway.url}/nothing"], {}),
                (["request", "GET", f"{plain_gateway.url}/nothing", "--strict"], {}),
                (["request", "GET", f"http://127.0.0.1:{_closed_port()}/x?token=abc"], {}),
                (["request", "GET", f"{silent.url}/slow", "--timeout", "0.3"], {}),
                (["request", "GET", f"{plain_gateway.url}/x", "-H", "no colon"], {}),
                (["request", "GET", f"{plain_gateway.url}/x", "-H", "Authorization: xSECRET"], {}),
                (["request", "GET", f"{plain_gateway.url}/x", "-H", "X-Auth-Token: xSECRET"], {}),
                (["request", "GET", f"{plain_gateway.url}/x", "--json", "{bad"], {}),
                (["request", "GET", f"{plain_gateway.url}/x", "--data", "a", "--json", "1"], {}),
                (["request", "G T", f"{plain_gateway.url}/x"], {}),
                (["request", "GET", "ftp://127.0.0.1/x"], {}),
            ]
        )
    unauthorized, no_entry, strict, refused, timeout, *usage = results
    assert unauthorized.code == 1 and "HTTP 401" in unauthorized.stderr
    assert no_entry.code == 1 and "sending without credentials" in no_entry.stderr
    assert strict.code == 1 and "strict" in one_error_line(strict)
    assert refused.code == 1 and "cannot connect" in one_error_line(refused)
    assert "token=abc" not in refused.stderr
    assert timeout.code == 1 and "0.3 s" in one_error_line(timeout)
    for result in usage:
        assert result.code == 2, result
        one_error_line(result)


# -- TLS: add, show, check, request -----------------------------------------------------------


def test_add_client_certificate_then_check_and_call(
    ready: CLI, pki: PKI, mtls_gateway: GatewayServer
) -> None:
    assert mtls_gateway.server_cert is not None
    pin = mtls_gateway.server_cert.spki_sha256_pin
    base = mtls_gateway.url
    ready.ok(
        "add",
        f"{base}/pfx",
        "--gateway-user",
        GW[0],
        "--gateway-password-stdin",
        "--request-user",
        REQ[0],
        "--request-password-stdin",
        "--client-pkcs12",
        str(pki.pfx_file),
        "--client-cert-passphrase-stdin",
        "--ca-bundle",
        str(pki.ca_file),
        "--pin",
        pin,
        "--tls-version",
        "1.3",
        input=f"{GW[1]}\n{REQ[1]}\n{PFX_PASSPHRASE}\n",
    )
    ready.ok(
        "add",
        f"{base}/pem",
        "--gateway-user",
        GW[0],
        "--gateway-password-env",
        "GWPW",
        "--request-user",
        REQ[0],
        "--request-password-env",
        "REQPW",
        "--client-cert",
        str(pki.cert_file),
        "--client-key",
        str(pki.key_file),
        "--client-cert-passphrase-env",
        "KEYPW",
        "--ca-bundle",
        str(pki.ca_file),
        "--tls-min",
        "1.2",
        "--tls-max",
        "1.2",
        env={"GWPW": GW[1], "REQPW": REQ[1], "KEYPW": PFX_PASSPHRASE},
    )
    show, check_pfx, check_pem, call_pfx, call_pem, listing = ready.run_many(
        [
            (["show", f"{base}/pfx", "--json"], {}),
            (["check", f"{base}/pfx/x", "--json"], {}),
            (["check", f"{base}/pem/x"], {}),
            (["request", "GET", f"{base}/pfx/data"], {}),
            (["request", "GET", f"{base}/pem/data"], {}),
            (["list"], {}),
        ]
    )
    tls = json.loads(show.stdout)["tls"]
    assert tls["client_cert"]["subject"] == f"CN={pki.client_cn}"
    assert tls["versions"] == "TLS 1.3 only"
    assert tls["pins"] == [pin]
    assert tls["ca_bundle_certificates"] == 1
    assert "mTLS" in listing.stdout

    result = json.loads(check_pfx.stdout)
    assert check_pfx.code == 0, check_pfx
    assert result["ok"] is True
    assert result["protocol"] == "TLSv1.3"
    assert result["server_certificate"]["pin"] == pin
    assert result["pins"] == {"configured": [pin], "match": True}
    assert f"CN={pki.client_cn}" in result["client_certificate"]
    assert check_pem.code == 0, check_pem
    assert "protocol   TLSv1.2" in check_pem.stdout
    assert "result     ok" in check_pem.stdout
    assert f"pin        {pin} (the entry pins no key)" in check_pem.stdout

    assert call_pfx.code == 0 and call_pem.code == 0, (call_pfx, call_pem)
    seen = {r.path: r for r in mtls_gateway.requests}
    assert seen["/pfx/data"].client_cert_subject_cn == pki.client_cn
    assert seen["/pfx/data"].tls_version == "TLSv1.3"
    assert seen["/pem/data"].tls_version == "TLSv1.2"


def test_check_explains_failures(
    ready: CLI, pki: PKI, mtls_gateway: GatewayServer, tmp_path: Path
) -> None:
    base = mtls_gateway.url
    wrong_pin = "sha256/" + "A" * 43 + "="
    down_url = f"https://127.0.0.1:{_closed_port()}/down"
    registry = ready.open()  # set up through the library: `add` has its own tests
    for url, profile in (
        (f"{base}/nocert", TLSProfile(ca_bundle=pki.ca_file)),
        (f"{base}/pinned", TLSProfile(ca_bundle=pki.ca_file, pins=(wrong_pin,))),
        (f"{base}/untrusted", TLSProfile()),  # certifi does not know the test CA
        (down_url, TLSProfile(ca_bundle=pki.ca_file)),
    ):
        registry.put(ServiceEntry(url, tls=profile))
    registry.close()
    nocert, pinned, untrusted, down, no_entry, plain = ready.run_many(
        [
            (["check", f"{base}/nocert/x"], {}),
            (["check", f"{base}/pinned/x", "--json"], {}),
            (["check", f"{base}/untrusted/x"], {}),
            (["check", down_url], {}),
            (["check", f"{base}/elsewhere"], {}),
            (["check", "http://127.0.0.1:1/x"], {}),
        ]
    )
    assert nocert.code == 1 and "demands a client certificate" in nocert.stdout
    assert pinned.code == 1
    result = json.loads(pinned.stdout)
    assert result["ok"] is False and result["pins"]["match"] is False
    assert "none of the entry's pins" in result["error"]
    assert untrusted.code == 1 and "not accepted" in untrusted.stdout
    assert down.code == 1 and "cannot connect" in down.stdout
    assert no_entry.code == 1 and "entry      none" in no_entry.stdout
    assert plain.code == 2 and "https" in one_error_line(plain)


def test_add_tls_option_errors(ready: CLI, pki: PKI, tmp_path: Path) -> None:
    url = "https://a.example.com/"
    pfx = ["--client-pkcs12", str(pki.pfx_file)]
    results = ready.run_many(
        [
            (["add", "http://a.example.com/", "--ca-bundle", str(pki.ca_file)], {}),
            (["add", url, "--pin", "md5/abc"], {}),
            (["add", url, "--tls-version", "1.3", "--tls-min", "1.2"], {}),
            (["add", url, "--client-key", str(pki.key_file)], {}),
            (["add", url, "--ca-bundle", str(tmp_path / "none.pem")], {}),
            (["add", url, "--tls-min", "1.0"], {}),
            (["add", url, "--client-cert-passphrase-env", "X"], {}),
            # operation failures: the certificate cannot be opened
            (["add", url, *pfx, "--client-cert-passphrase-stdin"], {"input": "wrong-SECRET\n"}),
            (["add", url, *pfx], {}),
        ]
    )
    *usage, wrong, missing = results
    for result in usage:
        assert result.code == 2, result
        one_error_line(result)
    assert wrong.code == 1 and "password is wrong" in one_error_line(wrong)
    assert missing.code == 1 and "--client-cert-passphrase-stdin" in one_error_line(missing)
    assert ready.open().get(url) is None


# -- demo ---------------------------------------------------------------------------------------


def test_demo_end_to_end(cli: CLI) -> None:
    result = cli.run("demo")
    assert result.code == 0, result
    text = result.stdout
    steps = [int(n) for n in re.findall(r"^(\d)\. ", text, flags=re.MULTILINE)]
    assert steps == [1, 2, 3, 4, 5, 6, 7]
    assert "entry  <- match" in text  # what matched
    assert "> X-Gateway-Password: <redacted>" in text  # what was injected, redacted
    assert "> Authorization: <redacted>" in text
    assert "protocol   TLSv1.3" in text and "result     ok" in text
    assert "the gateway saw: TLSv1.3, client certificate CN=demo-client" in text
    assert "HTTP 200 OK" in text and '"path": "/payments/bills/42"' in text
    assert "demands a client certificate" in text  # the mistake, diagnosed
    # The demo's random secrets (gw-/rq-/pfx- + 16 characters) are never printed.
    assert not re.search(r"\b(gw|rq|pfx)-[A-Za-z0-9_-]{16}(?![A-Za-z0-9_-])", result.output)
    home = Path(re.search(r"the files live in (\S+)\.", text).group(1))  # type: ignore[union-attr]
    assert not home.exists()  # cleaned up
    # Nothing the demo did touched the configured (test) registry or key.
    assert not cli.key_file.exists() and not cli.registry_path.exists()
