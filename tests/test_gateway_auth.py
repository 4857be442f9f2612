"""GatewayServer as an IIS / SOA gateway authenticating with HTTP Digest or NTLM.

Plain ``requests`` clients (HTTPDigestAuth, requests-ntlm's HttpNtlmAuth), over
http and over https with a required client certificate, on keep-alive
connections. Passwords carry ``SECRET`` so the suite's log guard would catch one
leaking.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import TypedDict

import pytest
import requests
from requests.auth import HTTPDigestAuth

from securesession.testing import (
    CertificateAuthority,
    GatewayServer,
    IssuedCert,
    RecordedRequest,
    _gateway,
)

from .private_writes import spy_private_writes, umask_zero

requests_ntlm = pytest.importorskip("requests_ntlm")
pytest.importorskip("spnego")

DIGEST_USER = "digest-user"
DIGEST_PASSWORD = "digest-pw-SECRET"
NTLM_USER = "CORP\\ntlm-user"
NTLM_PASSWORD = "ntlm-pw-SECRET"

_CHALLENGE = re.compile(
    r'Digest realm="gateway", nonce="(?P<nonce>[0-9a-f]{32})", qop="auth", '
    r"algorithm=(?P<algorithm>[\w-]+)"
)


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority("gateway-auth test CA")


@pytest.fixture(scope="module")
def client_cert(ca: CertificateAuthority) -> IssuedCert:
    return ca.issue_client("soa-client")


class _TLSArgs(TypedDict):
    verify: str
    cert: tuple[str, str]


def _tls_args(server: GatewayServer, cert: IssuedCert, directory: Path) -> _TLSArgs:
    """verify= and cert= for requests (per request: REQUESTS_CA_BUNDLE beats Session.verify)."""
    ca_file = directory / "server-ca.pem"
    ca_file.write_bytes(server.ca_pem)
    cert_path, key_path = cert.write_pem(directory)
    return {"verify": str(ca_file), "cert": (str(cert_path), str(key_path))}


def _digest_field(header: str, name: str) -> str:
    match = re.search(rf'\b{name}="?([^",]+)"?', header)
    assert match is not None, name
    return match[1]


# -- HTTP Digest ------------------------------------------------------------------


def test_digest_over_http_with_a_session() -> None:
    with GatewayServer(expect_digest=(DIGEST_USER, DIGEST_PASSWORD)) as server:
        server.respond("/soa/orders", 200, '{"ok": true}')
        with requests.Session() as session:
            session.auth = HTTPDigestAuth(DIGEST_USER, DIGEST_PASSWORD)
            first = session.get(server.url + "/soa/orders?id=7", timeout=5)
            second = session.get(server.url + "/soa/orders?id=8", timeout=5)
        records = server.requests
    assert first.status_code == 200
    assert first.json() == {"ok": True}
    assert [r.status_code for r in first.history] == [401]
    challenge = first.history[0].headers["WWW-Authenticate"]
    assert _CHALLENGE.fullmatch(challenge), challenge
    assert first.history[0].json()["check"] == "digest"
    # The second request reuses the nonce with nc=2 and needs no new challenge.
    assert second.status_code == 200
    assert second.history == []
    assert [r.status for r in records] == [401, 200, 200]
    assert [r.authenticated_user for r in records] == [None, DIGEST_USER, DIGEST_USER]
    assert records[0].header("Authorization") is None
    sent = [r.header("Authorization") or "" for r in records[1:]]
    assert [_digest_field(h, "nc") for h in sent] == ["00000001", "00000002"]
    assert _digest_field(sent[0], "uri") == "/soa/orders?id=7"
    assert len({r.connection_id for r in records}) == 1
    assert DIGEST_PASSWORD not in repr(records[1])


def test_digest_over_https_with_a_required_client_cert(
    ca: CertificateAuthority, client_cert: IssuedCert, tmp_path: Path
) -> None:
    with GatewayServer(
        tls=True, ca=ca, require_client_cert=True, expect_digest=(DIGEST_USER, DIGEST_PASSWORD)
    ) as server:
        tls = _tls_args(server, client_cert, tmp_path)
        with requests.Session() as session:
            session.auth = HTTPDigestAuth(DIGEST_USER, DIGEST_PASSWORD)
            response = session.get(server.url + "/soa/ping", timeout=5, **tls)
        records = server.requests
        assert server.handshakes == 1
    assert response.status_code == 200
    assert [r.status for r in records] == [401, 200]
    assert {r.client_cert_subject_cn for r in records} == {"soa-client"}
    assert {r.tls_version for r in records} <= {"TLSv1.2", "TLSv1.3"}
    assert records[1].authenticated_user == DIGEST_USER


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5-sess"])
def test_digest_other_algorithms(algorithm: str) -> None:
    with GatewayServer(
        expect_digest=(DIGEST_USER, DIGEST_PASSWORD), digest_algorithm=algorithm.lower()
    ) as server:
        auth = HTTPDigestAuth(DIGEST_USER, DIGEST_PASSWORD)
        response = requests.get(server.url + "/x", auth=auth, timeout=5)
    assert response.status_code == 200
    assert f"algorithm={algorithm}" in response.history[0].headers["WWW-Authenticate"]
    assert _digest_field(server.requests[1].header("Authorization") or "", "algorithm") == algorithm


def test_digest_wrong_password_and_user_get_401() -> None:
    with GatewayServer(expect_digest=(DIGEST_USER, DIGEST_PASSWORD)) as server:
        wrong_password = requests.get(
            server.url, auth=HTTPDigestAuth(DIGEST_USER, "wrong-SECRET"), timeout=5
        )
        wrong_user = requests.get(
            server.url, auth=HTTPDigestAuth("mallory", DIGEST_PASSWORD), timeout=5
        )
        basic = requests.get(server.url, auth=(DIGEST_USER, DIGEST_PASSWORD), timeout=5)
    for response in (wrong_password, wrong_user):
        assert response.status_code == 401
        assert response.json() == {
            "error": "unauthorized",
            "check": "digest",
            "reason": "mismatch",
            "detail": "HTTP Digest credentials mismatch",
        }
        assert _CHALLENGE.fullmatch(response.headers["WWW-Authenticate"])
    assert basic.status_code == 401
    assert basic.json()["reason"] == "malformed"
    assert all(r.authenticated_user is None for r in server.requests)


def _manual_digest(
    nonce: str, uri: str, nc: str = "00000001", cnonce: str = "0a4f113b", method: str = "GET"
) -> str:
    def h(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()  # noqa: S324 - RFC 7616 MD5

    ha1 = h(f"{DIGEST_USER}:gateway:{DIGEST_PASSWORD}")
    ha2 = h(f"{method}:{uri}")
    response = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
    return (
        f'Digest username="{DIGEST_USER}", realm="gateway", nonce="{nonce}", uri="{uri}", '
        f'response="{response}", algorithm=MD5, qop=auth, nc={nc}, cnonce="{cnonce}"'
    )


def test_digest_rejects_foreign_nonce_replay_and_wrong_uri() -> None:
    with GatewayServer(expect_digest=(DIGEST_USER, DIGEST_PASSWORD)) as server:
        challenge = requests.get(server.url + "/a", timeout=5).headers["WWW-Authenticate"]
        match = _CHALLENGE.fullmatch(challenge)
        assert match is not None
        nonce = match["nonce"]

        def get(path: str, authorization: str) -> requests.Response:
            headers = {"Authorization": authorization}
            return requests.get(server.url + path, headers=headers, timeout=5)

        ok = get("/a", _manual_digest(nonce, "/a"))
        replay = get("/a", _manual_digest(nonce, "/a"))
        next_nc = get("/a", _manual_digest(nonce, "/a", nc="00000002"))
        foreign = get("/a", _manual_digest("f" * 32, "/a"))
        other_uri = get("/b", _manual_digest(nonce, "/a", nc="00000003"))
        no_qop = get("/a", _manual_digest(nonce, "/a", nc="00000004").replace("qop=auth, ", ""))
    assert ok.status_code == 200
    assert next_nc.status_code == 200
    assert (replay.status_code, replay.json()["reason"]) == (401, "replayed")
    assert (foreign.status_code, foreign.json()["reason"]) == (401, "stale")
    assert foreign.headers["WWW-Authenticate"].endswith(", stale=true")
    assert (other_uri.status_code, other_uri.json()["reason"]) == (401, "mismatch")
    assert (no_qop.status_code, no_qop.json()["reason"]) == (401, "malformed")


def test_auth_schemes_are_exclusive_and_algorithm_checked() -> None:
    with pytest.raises(ValueError, match="expect_request, expect_digest"):
        GatewayServer(expect_request=("u", "p"), expect_digest=("u", "p"))
    with pytest.raises(ValueError, match="digest_algorithm"):
        GatewayServer(expect_digest=("u", "p"), digest_algorithm="SHA-1")


# -- NTLM ---------------------------------------------------------------------------


def test_ntlm_over_https_with_a_required_client_cert_on_one_connection(
    ca: CertificateAuthority, client_cert: IssuedCert, tmp_path: Path
) -> None:
    with GatewayServer(
        tls=True, ca=ca, require_client_cert=True, expect_ntlm=(NTLM_USER, NTLM_PASSWORD)
    ) as server:
        server.respond("/soa/orders", 200, '{"id": 7}')
        tls = _tls_args(server, client_cert, tmp_path)
        with requests.Session() as session:
            session.auth = requests_ntlm.HttpNtlmAuth(NTLM_USER, NTLM_PASSWORD)
            response = session.get(server.url + "/soa/orders/7", timeout=5, **tls)
            # The connection is authenticated now: no new handshake for the next request.
            again = session.get(server.url + "/soa/orders/8", timeout=5, **tls)
        records = server.requests
        assert server.connections == 1
        assert server.handshakes == 1
    assert response.status_code == 200
    assert response.json() == {"id": 7}
    assert [r.status_code for r in response.history] == [401, 401]
    assert response.history[0].headers["WWW-Authenticate"] == "NTLM"
    assert response.history[1].headers["WWW-Authenticate"].startswith("NTLM TlRMTVNTUA")
    assert again.status_code == 200
    assert again.history == []
    assert [r.status for r in records] == [401, 401, 200, 200]
    assert len({r.connection_id for r in records}) == 1
    assert {r.client_cert_subject_cn for r in records} == {"soa-client"}
    assert [r.authenticated_user for r in records] == [None, None, NTLM_USER, NTLM_USER]
    negotiate, authenticate = (r.header("Authorization") or "" for r in records[1:3])
    assert negotiate.startswith("NTLM TlRMTVNTUA")  # base64 of b"NTLMSSP\0"
    assert base64.b64decode(authenticate[5:])[8:12] == b"\x03\x00\x00\x00"
    assert records[3].header("Authorization") is None


def test_ntlm_wrong_password_gets_401(
    ca: CertificateAuthority, client_cert: IssuedCert, tmp_path: Path
) -> None:
    with GatewayServer(
        tls=True, ca=ca, require_client_cert=True, expect_ntlm=(NTLM_USER, NTLM_PASSWORD)
    ) as server:
        tls = _tls_args(server, client_cert, tmp_path)
        with requests.Session() as session:
            session.auth = requests_ntlm.HttpNtlmAuth(NTLM_USER, "wrong-pw-SECRET")
            wrong = session.get(server.url + "/soa", timeout=5, **tls)
        with requests.Session() as session:
            session.auth = requests_ntlm.HttpNtlmAuth("CORP\\other", NTLM_PASSWORD)
            unknown = session.get(server.url + "/soa", timeout=5, **tls)
        records = server.requests
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert response.json()["check"] == "ntlm"
        assert response.json()["reason"] == "mismatch"
        assert response.headers["WWW-Authenticate"] == "NTLM"
    assert [r.status for r in records] == [401] * 6
    assert all(r.authenticated_user is None for r in records)
    assert server.errors == []


def test_ntlm_over_http_and_a_new_connection_starts_over() -> None:
    with GatewayServer(expect_ntlm=("plain-user", NTLM_PASSWORD)) as server:
        auth = requests_ntlm.HttpNtlmAuth("plain-user", NTLM_PASSWORD)
        with requests.Session() as session:
            assert session.get(server.url + "/one", auth=auth, timeout=5).status_code == 200
        with requests.Session() as session:
            assert session.get(server.url + "/two", auth=auth, timeout=5).status_code == 200
        records = server.requests
    assert [r.status for r in records] == [401, 401, 200] * 2
    first, second = records[:3], records[3:]
    assert len({r.connection_id for r in first}) == 1
    assert len({r.connection_id for r in second}) == 1
    assert first[0].connection_id != second[0].connection_id
    assert records[2].authenticated_user == "plain-user"


def test_ntlm_authenticate_on_another_connection_is_refused() -> None:
    spnego = pytest.importorskip("spnego")
    with GatewayServer(expect_ntlm=(NTLM_USER, NTLM_PASSWORD)) as server:
        client = spnego.client(
            NTLM_USER, NTLM_PASSWORD, protocol="ntlm", options=spnego.NegotiateOptions.use_ntlm
        )
        negotiate = "NTLM " + base64.b64encode(client.step()).decode()
        # Connection: close: the challenge leg ends its connection.
        leg2 = requests.get(
            server.url,
            headers={"Authorization": negotiate, "Connection": "close"},
            timeout=5,
        )
        token = leg2.headers["WWW-Authenticate"].split(" ", 1)[1]
        authenticate = "NTLM " + base64.b64encode(client.step(base64.b64decode(token))).decode()
        leg3 = requests.get(server.url, headers={"Authorization": authenticate}, timeout=5)
        garbage = requests.get(server.url, headers={"Authorization": "NTLM !!"}, timeout=5)
        records = server.requests
    assert leg2.status_code == 401
    assert (leg3.status_code, leg3.json()["reason"]) == (401, "unexpected")
    assert (garbage.status_code, garbage.json()["reason"]) == (401, "malformed")
    assert records[0].connection_id != records[1].connection_id


def test_ntlm_credential_file_is_private_and_removed_on_stop() -> None:
    before = os.environ.get("NTLM_USER_FILE")
    server = GatewayServer(expect_ntlm=(NTLM_USER, NTLM_PASSWORD)).start()
    try:
        files = server._ntlm_files
        assert files is not None
        directory, path = Path(files[0]), Path(files[1])
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.stat().st_uid == os.getuid()
        assert path.read_text(encoding="utf-8") == f"CORP:ntlm-user:{NTLM_PASSWORD}\n"
        # The variable is only set while pyspnego runs.
        assert os.environ.get("NTLM_USER_FILE") == before
    finally:
        server.stop()
    assert not directory.exists()
    assert os.environ.get("NTLM_USER_FILE") == before


def test_ntlm_credential_file_is_written_by_the_one_writer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """0600 from its first byte whatever the umask, and replaced whole (never truncated
    in place, where a reader could see it empty) when the expected credential changes."""
    writes = spy_private_writes(monkeypatch, _gateway)
    with umask_zero():
        server = GatewayServer(expect_ntlm=(NTLM_USER, NTLM_PASSWORD)).start()
        try:
            server.expect_ntlm = (NTLM_USER, "other-pw-SECRET")
            path = Path(server._ntlm_user_file())
            assert path.read_text(encoding="utf-8") == "CORP:ntlm-user:other-pw-SECRET\n"
            assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary
        finally:
            server.stop()
    assert [(w.path, w.overwrite, w.existed, w.mode) for w in writes] == [
        (path, True, False, 0o600),
        (path, True, True, 0o600),
    ]


def test_ntlm_credentials_pyspnego_cannot_store_are_refused() -> None:
    with pytest.raises(ValueError, match="NTLM_USER_FILE"):
        GatewayServer(expect_ntlm=("user", "pass:word"))


def test_ntlm_missing_pyspnego_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real_import = importlib.import_module

    def no_spnego(name: str, package: str | None = None) -> object:
        if name.startswith("spnego"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, package)

    monkeypatch.setattr(importlib, "import_module", no_spnego)
    with pytest.raises(ImportError, match="'pyspnego' package"):
        GatewayServer(expect_ntlm=("user", "pw"))


def test_ntlm_credentials_set_after_start_and_changed() -> None:
    with GatewayServer() as server:
        server.expect_ntlm = ("first", NTLM_PASSWORD)  # the credential file is written lazily
        first = requests.get(
            server.url, auth=requests_ntlm.HttpNtlmAuth("first", NTLM_PASSWORD), timeout=5
        )
        server.expect_ntlm = ("second", "other-pw-SECRET")
        old = requests.get(
            server.url, auth=requests_ntlm.HttpNtlmAuth("first", NTLM_PASSWORD), timeout=5
        )
        new = requests.get(
            server.url, auth=requests_ntlm.HttpNtlmAuth("second", "other-pw-SECRET"), timeout=5
        )
        files = server._ntlm_files
        assert files is not None
        assert Path(files[1]).read_text(encoding="utf-8") == ":second:other-pw-SECRET\n"
    assert [r.status_code for r in (first, old, new)] == [200, 401, 200]
    assert server.requests[-1].authenticated_user == "second"
    assert not Path(files[0]).exists()


def test_recorded_request_keeps_old_constructor_and_basic_sets_the_user() -> None:
    old_style = RecordedRequest("GET", "/", {}, b"", None, None, 1, 1234, 200)
    assert old_style.authenticated_user is None
    assert "authenticated_user=None" in repr(old_style)
    with GatewayServer(expect_request=("basic-user", "basic-pw-SECRET")) as server:
        requests.get(server.url, timeout=5)
        requests.get(server.url, auth=("basic-user", "basic-pw-SECRET"), timeout=5)
    assert [r.authenticated_user for r in server.requests] == [None, "basic-user"]
