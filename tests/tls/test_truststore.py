"""truststore: ``inject_into_ssl()`` before or after securesession is imported, and
``TLSProfile(ca_bundle="system")``, the operating system's trust store.

``inject_into_ssl()`` replaces ``ssl.SSLContext`` process-wide, so every case that
injects runs as its own small client script in a subprocess (``sys.executable``),
against loopback gateways started here; nothing in this process is ever patched
(an autouse fixture checks it around every test). On Linux truststore verifies
with OpenSSL's default verify paths, which ``SSL_CERT_FILE`` points at a file of
the test CA in the subprocesses that need "the OS store trusts the gateway's CA".
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3.util.ssl_

from securesession import (
    MasterKey,
    Registry,
    SecureSession,
    ServiceEntry,
    TLSConfigError,
    open_registry,
)
from securesession._exceptions import ServerCertificateError
from securesession._tls import ProfileContext, TLSProfile, build_context, diagnosis
from securesession._tls import context as tls_context
from securesession.cli import main as cli_main
from securesession.testing import CertificateAuthority, GatewayServer

from ..secretscan import leaks
from .tls_helpers import PASSWORD, issue, pfx

Gateway = Callable[..., GatewayServer]
Put = Callable[..., ServiceEntry]

_STANDARD = ssl.SSLContext  # this process never injects: the standard class

# The client half of every subprocess case. It reads its case from TS_CASE (JSON):
# when to inject ("before" / "after" the import of securesession, or "none") and the
# entries to store; it gets <entry URL>/x for each and prints one JSON object.
_CLIENT = r"""
import json, os, socket, ssl, sys

case = json.loads(os.environ["TS_CASE"])
report = {}
if case["inject"] == "before":
    import truststore
    truststore.inject_into_ssl()

from securesession import ClientCertificate, MasterKey, SecureSession, ServiceEntry, open_registry
from securesession._tls import TLSProfile
from securesession._tls.context import ProfileContext, _StandardSSLContext

if case["inject"] == "after":
    import truststore
    truststore.inject_into_ssl()
report["ssl.SSLContext"] = f"{ssl.SSLContext.__module__}.{ssl.SSLContext.__qualname__}"
report["standard"] = f"{_StandardSSLContext.__module__}.{_StandardSSLContext.__qualname__}"


def read(path):
    with open(path, "rb") as file:
        return file.read()


def handshake(context, port):
    # One bare handshake with a gateway that asks for no client certificate.
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                return "accepted"
    except Exception as exc:
        return type(exc).__name__


# The bugs, shown with what a naive library would do under injection.
control = case.get("control")
if control == "recursion":
    # A subclass of the standard class, as ProfileContext used to be: its setters
    # look ssl.SSLContext up at call time and land on themselves.
    class Naive(_StandardSSLContext):
        pass

    try:
        Naive(ssl.PROTOCOL_TLS_CLIENT).verify_mode = ssl.CERT_REQUIRED
        report["control"] = "no error"
    except RecursionError:
        report["control"] = "RecursionError"
elif control == "scope":
    # ssl.SSLContext (truststore's now) told to trust another CA only: it still
    # trusts the OS store, and so the gateway.
    naive = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    naive.load_verify_locations(cadata=read(case["other_ca"]).decode("ascii"))
    report["control"] = handshake(naive, case["open_port"])

client = ClientCertificate.from_pkcs12(read(case["pfx"]), os.environ["TS_PFX_PASSWORD"])
registry = open_registry("memory://", MasterKey.generate())
outcomes = {}
with SecureSession(registry) as session:
    for spec in case["entries"]:
        ca, crl = spec.get("ca"), spec.get("crl")
        entry = registry.put(
            ServiceEntry(
                url=spec["url"],
                tls=TLSProfile(
                    client_cert=client if spec.get("cert", True) else None,
                    ca_bundle=ca if ca in (None, "system") else read(ca),
                    pins=tuple(spec.get("pins", ())),
                    crl=None if crl is None else read(crl),
                    version=spec.get("version"),
                ),
            )
        )
        try:
            response = session.get(spec["url"] + "/x", timeout=10)
            outcome = {"outcome": response.status_code}
        except Exception as exc:
            outcome = {
                "outcome": type(exc).__name__,
                "message": str(exc)[:600],
                "verify_code": getattr(exc, "verify_code", None),
            }
        context = session.adapter._context_for(entry)
        mro = [f"{k.__module__}.{k.__qualname__}" for k in type(context).__mro__]
        outcome["profile_context"] = isinstance(context, ProfileContext)
        outcome["truststore_context"] = "truststore._api.SSLContext" in mro
        outcomes[spec["name"]] = outcome
report["outcomes"] = outcomes
registry.close()
print(json.dumps(report))
"""


@pytest.fixture(autouse=True)
def _nothing_injected_here() -> Iterator[None]:
    """Whatever the subprocesses do, this process keeps the standard classes."""
    assert ssl.SSLContext is _STANDARD
    assert urllib3.util.ssl_.SSLContext is _STANDARD
    yield
    assert ssl.SSLContext is _STANDARD
    assert urllib3.util.ssl_.SSLContext is _STANDARD


@pytest.fixture
def truststore() -> Any:
    return pytest.importorskip("truststore")


@pytest.fixture
def files(
    tmp_path: Path, ca: CertificateAuthority, other_ca: CertificateAuthority
) -> dict[str, str]:
    """The material the client scripts read: both CAs, and a client certificate of ``ca``."""
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "other-ca.pem").write_bytes(other_ca.cert_pem)
    (tmp_path / "client.p12").write_bytes(issue(ca, "ts-client").pkcs12(PASSWORD.encode()))
    return {
        "ca": str(tmp_path / "ca.pem"),
        "other_ca": str(tmp_path / "other-ca.pem"),
        "pfx": str(tmp_path / "client.p12"),
    }


def run_client(case: dict[str, Any], files: dict[str, str], *, os_store: str | None) -> Any:
    """Run the client script for *case*; *os_store*: a PEM file the subprocess's OpenSSL
    default verify paths (and so truststore on Linux) trust, or None for the machine's."""
    env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    if os_store is not None:
        env["SSL_CERT_FILE"] = os_store
    env["TS_CASE"] = json.dumps({**case, "pfx": files["pfx"], "other_ca": files["other_ca"]})
    env["TS_PFX_PASSWORD"] = PASSWORD
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    completed = subprocess.run(
        [sys.executable, "-c", _CLIENT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert not leaks(completed.stdout + completed.stderr), "a test secret was printed"
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _linux_only() -> None:
    if not tls_context._system_store_in_openssl():  # pragma: no cover - Windows, macOS
        pytest.skip("SSL_CERT_FILE feeds truststore's OpenSSL path only (Linux, BSD)")


# -- inject_into_ssl() after the import: no RecursionError -----------------------------


def test_inject_after_import_profiles_still_work(
    truststore: Any,
    ca: CertificateAuthority,
    gateway: Gateway,
    files: dict[str, str],
) -> None:
    server = gateway(require_client_cert=True)
    tls13 = gateway(require_client_cert=True, tls_versions=(ssl.TLSVersion.TLSv1_3,) * 2)
    wrong_pin = ca.spki_sha256_pin
    case = {
        "inject": "after",
        "control": "recursion",
        "entries": [
            {"name": "good", "url": server.url + "/good", "ca": files["ca"]},
            {"name": "other", "url": server.url + "/other", "ca": files["other_ca"]},
            {
                "name": "pinned",
                "url": server.url + "/pinned",
                "ca": files["ca"],
                "pins": [wrong_pin],
            },
            {"name": "system", "url": server.url + "/system", "ca": "system"},
            {"name": "v12", "url": tls13.url + "/v12", "ca": files["ca"], "version": "1.2"},
        ],
    }
    report = run_client(case, files, os_store=None)
    # The injection did happen, and it does break the standard class's setters.
    assert report["ssl.SSLContext"] == "truststore._api.SSLContext"
    assert report["standard"] == "ssl.SSLContext"
    assert report["control"] == "RecursionError"
    outcomes = report["outcomes"]
    assert outcomes["good"]["outcome"] == 200
    assert server.requests[-1].client_cert_subject_cn == "ts-client"
    assert outcomes["other"]["outcome"] == "ServerCertificateError"
    assert outcomes["pinned"]["outcome"] == "PinMismatchError"
    # The test CA is in no OS store: "system" refuses the gateway.
    assert outcomes["system"]["outcome"] == "ServerCertificateError"
    assert "operating system's trust store" in outcomes["system"]["message"]
    # The diagnosis probes build their own contexts under the injection too.
    assert outcomes["v12"]["outcome"] == "ProtocolVersionMismatchError"
    assert "the server accepts TLS 1.3 only" in outcomes["v12"]["message"]
    for name in ("good", "other", "pinned", "v12"):
        assert outcomes[name]["profile_context"] is True
        assert outcomes[name]["truststore_context"] is False
    assert outcomes["system"]["truststore_context"] is True


# -- inject_into_ssl() before the import: the CA scope holds ---------------------------


def test_inject_before_import_keeps_ca_scope(
    truststore: Any,
    ca: CertificateAuthority,
    gateway: Gateway,
    files: dict[str, str],
) -> None:
    _linux_only()
    server = gateway(require_client_cert=True)
    open_server = gateway()
    case = {
        "inject": "before",
        "control": "scope",
        "open_port": open_server.port,
        "entries": [
            {"name": "good", "url": server.url + "/good", "ca": files["ca"]},
            {"name": "other", "url": server.url + "/other", "ca": files["other_ca"]},
            {
                "name": "pinned",
                "url": server.url + "/pinned",
                "ca": files["ca"],
                "pins": [ca.spki_sha256_pin],
            },
            {
                "name": "pinned-ok",
                "url": server.url + "/pinned-ok",
                "ca": files["other_ca"],
                "pins": [server.server_cert.spki_sha256_pin],  # type: ignore[union-attr]
            },
            {"name": "system", "url": server.url + "/system", "ca": "system"},
        ],
    }
    # The OS store trusts the gateway's CA here, the way a corporate CA would be.
    report = run_client(case, files, os_store=files["ca"])
    assert report["ssl.SSLContext"] == "truststore._api.SSLContext"
    assert report["standard"] == "ssl.SSLContext"
    # The bug: a context of (injected) ssl.SSLContext ignores its own CA scope.
    assert report["control"] == "accepted"
    outcomes = report["outcomes"]
    assert outcomes["good"]["outcome"] == 200
    assert server.requests[-1].client_cert_subject_cn == "ts-client"
    # The entry trusts the other CA alone, whatever the OS store holds.
    assert outcomes["other"]["outcome"] == "ServerCertificateError"
    assert outcomes["other"]["verify_code"] in (19, 20)
    assert "the entry's CA bundle" in outcomes["other"]["message"]
    assert outcomes["pinned"]["outcome"] == "PinMismatchError"
    assert outcomes["pinned-ok"]["outcome"] == "ServerCertificateError"  # pins add, never replace
    # ca_bundle="system" is the way to ask for the OS store.
    assert outcomes["system"]["outcome"] == 200
    for name in ("good", "other", "pinned"):
        assert outcomes[name]["truststore_context"] is False


# -- ca_bundle="system" ------------------------------------------------------------------


def test_system_trust_uses_the_os_store_not_certifi(
    truststore: Any,
    ca: CertificateAuthority,
    gateway: Gateway,
    put: Put,
    session: SecureSession,
) -> None:
    server = gateway(require_client_cert=True)
    entry = put(
        server.url + "/api", client_cert=pfx(issue(ca, "system-client")), ca_bundle="system"
    )
    context = session.adapter._context_for(entry)
    assert isinstance(context, ProfileContext)
    assert isinstance(context, truststore.SSLContext)
    # Nothing of certifi (nor any CA) was loaded into the context doing the handshake.
    assert context._ctx.cert_store_stats()["x509_ca"] == 0
    with pytest.raises(ServerCertificateError) as info:
        session.get(server.url + "/api/x")
    assert info.value.verify_code in (19, 20)
    message = str(info.value)
    assert "operating system's trust store (ca_bundle='system', through truststore)" in message
    assert "(certifi)" not in message
    assert server.requests == []


def test_system_trust_positive_through_ssl_cert_file(
    truststore: Any,
    ca: CertificateAuthority,
    gateway: Gateway,
    files: dict[str, str],
    tmp_path: Path,
) -> None:
    _linux_only()
    server_cert = ca.issue_server()
    server = gateway(require_client_cert=True, server_cert=server_cert)
    tls13 = gateway(
        require_client_cert=True,
        server_cert=server_cert,
        tls_versions=(ssl.TLSVersion.TLSv1_3,) * 2,
    )
    (tmp_path / "revoked.crl").write_bytes(ca.crl([server_cert]))
    (tmp_path / "fresh.crl").write_bytes(ca.crl())
    entries: dict[str, dict[str, object]] = {  # each entry's settings beyond name, url and ca
        "system": {},
        "no-cert": {"cert": False},
        "pin-wrong": {"pins": [ca.spki_sha256_pin]},
        "pin-right": {"pins": [server_cert.spki_sha256_pin]},
        "crl-revoked": {"crl": str(tmp_path / "revoked.crl")},
        "crl-fresh": {"crl": str(tmp_path / "fresh.crl")},
        "certifi": {"ca": None},
    }
    case: dict[str, object] = {
        "inject": "none",
        "entries": [
            *(
                {"name": name, "url": f"{server.url}/{name}", "ca": "system", **extra}
                for name, extra in entries.items()
            ),
            {"name": "v12", "url": tls13.url + "/v12", "ca": "system", "version": "1.2"},
        ],
    }
    outcomes = run_client(case, files, os_store=files["ca"])["outcomes"]
    # SSL_CERT_FILE (the OS store as OpenSSL sees it) trusts the test CA: "system" too.
    assert outcomes["system"]["outcome"] == 200
    assert {r.client_cert_subject_cn for r in server.requests} == {"ts-client"}
    assert outcomes["system"]["truststore_context"] is True
    # The client certificate, pins, CRL and versions of the profile still apply.
    assert outcomes["no-cert"]["outcome"] == "ClientCertificateRequiredError"
    assert outcomes["pin-wrong"]["outcome"] == "PinMismatchError"
    assert outcomes["pin-right"]["outcome"] == 200
    assert outcomes["crl-revoked"]["outcome"] == "ServerCertificateError"
    assert outcomes["crl-revoked"]["verify_code"] == 23
    assert outcomes["crl-fresh"]["outcome"] == 200
    assert outcomes["v12"]["outcome"] == "ProtocolVersionMismatchError"
    # certifi (no ca_bundle) ignores SSL_CERT_FILE: the positive above is the OS store's.
    assert outcomes["certifi"]["outcome"] == "ServerCertificateError"
    assert "(certifi)" in outcomes["certifi"]["message"]


def test_system_trust_needs_truststore(
    monkeypatch: pytest.MonkeyPatch, gateway: Gateway, put: Put, session: SecureSession
) -> None:
    server = gateway()
    entry = put(server.url + "/api", ca_bundle="system")  # stored fine without truststore
    monkeypatch.setitem(sys.modules, "truststore", None)  # import truststore: ImportError
    with pytest.raises(TLSConfigError, match=r"securesession\[truststore\]"):
        build_context(entry.tls, where=entry.url)  # type: ignore[arg-type]
    with pytest.raises(TLSConfigError, match=r"pip install 'securesession\[truststore\]'"):
        session.get(server.url + "/api/x")
    assert server.requests == []


def test_system_trust_refuses_a_crl_where_the_os_verifies(
    truststore: Any, ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    profile = TLSProfile(ca_bundle="system", crl=ca.crl())
    monkeypatch.setattr(tls_context, "_system_store_in_openssl", lambda: False)
    with pytest.raises(TLSConfigError, match=r"crl= cannot be checked with ca_bundle='system'"):
        build_context(profile, where="https://gw.example/")
    build_context(TLSProfile(ca_bundle="system"), where="https://gw.example/")  # no CRL: fine


def test_system_trust_profile_value(tmp_path: Path, ca: CertificateAuthority) -> None:
    profile = TLSProfile(ca_bundle="system", pins=[ca.spki_sha256_pin])
    assert profile.ca_bundle == "system"
    assert profile.system_trust
    assert "ca_bundle='system'" in repr(profile)
    assert profile == TLSProfile(ca_bundle="system", pins=[ca.spki_sha256_pin])
    assert hash(profile) == hash(TLSProfile(ca_bundle="system", pins=[ca.spki_sha256_pin]))
    assert profile != TLSProfile(pins=[ca.spki_sha256_pin])
    assert not TLSProfile().system_trust
    # A file that happens to be called "system" is still a file when given as a path.
    (tmp_path / "system").write_bytes(ca.cert_pem)
    from_file = TLSProfile(ca_bundle=tmp_path / "system")
    assert from_file.ca_bundle == ca.cert_pem
    assert not from_file.system_trust


@pytest.mark.parametrize("scheme", ["memory", "sqlite"])
def test_system_trust_round_trips_through_the_registry(
    scheme: str, ca: CertificateAuthority, tmp_path: Path
) -> None:
    url = "memory://" if scheme == "memory" else f"sqlite:///{tmp_path / 'r.db'}"
    key = MasterKey.generate()
    profile = TLSProfile(
        client_cert=pfx(issue(ca, "stored")), ca_bundle="system", pins=[ca.spki_sha256_pin]
    )
    registry: Registry = open_registry(url, key)
    try:
        registry.put(ServiceEntry(url="https://gw.example/api", tls=profile))
        stored = registry.get("https://gw.example/api")
        assert stored is not None and stored.tls == profile
        assert stored.tls.ca_bundle == "system"
    finally:
        registry.close()
    if scheme == "sqlite":  # and from the disk, in a registry opened afresh
        with contextlib.closing(open_registry(url, key)) as reopened:
            stored = reopened.get("https://gw.example/api")
            assert stored is not None and stored.tls == profile


def test_cli_add_accepts_ca_bundle_system(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = MasterKey.generate()
    key.save(tmp_path / "master.key")
    registry_url = f"sqlite:///{tmp_path / 'r.db'}"
    open_registry(registry_url, key).close()
    common = ["--registry", registry_url, "--key-file", str(tmp_path / "master.key")]
    assert cli_main(["add", "https://gw.example/api", "--ca-bundle", "system", *common]) == 0
    capsys.readouterr()
    assert cli_main(["show", "https://gw.example/api", "--json", *common]) == 0
    described = json.loads(capsys.readouterr().out)["tls"]
    assert described["system_trust_store"] is True
    assert described["ca_bundle_certificates"] is None
    assert cli_main(["show", "https://gw.example/api", *common]) == 0
    assert "OS trust store" in capsys.readouterr().out
    registry = open_registry(registry_url, key)
    try:
        stored = registry.get("https://gw.example/api")
        assert stored is not None and stored.tls is not None and stored.tls.system_trust
    finally:
        registry.close()


def test_profile_contexts_are_standard_contexts() -> None:
    """In a process nothing patched, the captured class is ssl.SSLContext itself, and
    profile contexts keep the standard property behaviour."""
    assert tls_context._StandardSSLContext is ssl.SSLContext
    context = build_context(TLSProfile(version="1.2"), where="https://gw.example/")
    assert type(context).__mro__[1:3] == (tls_context._IsolatedSSLContext, ssl.SSLContext)
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert context.maximum_version is ssl.TLSVersion.TLSv1_2
    assert isinstance(context.options, ssl.Options)
    assert isinstance(context.verify_flags, ssl.VerifyFlags)
    assert context.verify_mode is ssl.CERT_REQUIRED
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    assert context.verify_flags & ssl.VERIFY_X509_STRICT


def test_system_trust_diagnosis_of_a_platform_verifier_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On Windows and macOS truststore raises its own SSLCertVerificationError: codes
    that are not OpenSSL's (or none at all) get no OpenSSL hint, and no crash."""
    monkeypatch.setattr(diagnosis, "_system_store_in_openssl", lambda: False)
    profile = TLSProfile(ca_bundle="system")
    platform_error = ssl.SSLCertVerificationError("certificate is not trusted")
    platform_error.verify_message = "“127.0.0.1” certificate is not trusted"
    platform_error.verify_code = 20  # an OS status code, not OpenSSL's X509_V_ERR 20
    bare = ssl.SSLCertVerificationError("Peer sent no certificates to verify")  # no code
    for error in (platform_error, bare):
        diagnosed = diagnosis.diagnose(
            error, where="https://gw.example/", host="gw.example", port=443, profile=profile
        )
        assert isinstance(diagnosed, ServerCertificateError)
        text = str(diagnosed)
        assert "In plain words" not in text
        assert "Trusted here: the operating system's trust store" in text
