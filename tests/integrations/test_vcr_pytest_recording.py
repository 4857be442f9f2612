"""pytest-recording with the ``vcr_config`` recipe of docs/integrations.md, driven through
``pytester``: a run that records over a client certificate, then a replay with the server
stopped and the network blocked; the cassette holds no secret."""

from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
import vcr  # noqa: F401 - imported before the in-process runs, see below
import yaml

# Imported here, before any in-process run: pytester drops modules first imported during a
# run, and a second import of cryptography's Python layer no longer matches its compiled
# core (see tests/testing/test_pytest_plugin.py).
import securesession.testing._certs
import securesession.testing._gateway
import securesession.testing._stub  # noqa: F401
from securesession.testing import CertificateAuthority, GatewayServer

from ..secretscan import leaks

FAST = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")

CONFTEST = """
import pytest


@pytest.fixture
def vcr_config(securesession_header_names):
    return {"filter_headers": [(name, "[REDACTED]") for name in securesession_header_names]}
"""

TEST_MODULE = """
from pathlib import Path

import pytest

from securesession import ClientCertificate, Credential, ServiceEntry, TLSProfile

HERE = Path(__file__).parent
URL = {url!r}
ENTRY = ServiceEntry(
    url=URL + "/orders",
    gateway=Credential("bridge", "gw-SECRET"),
    request=Credential("alice", "alice-SECRET"),
    secret_headers={{"X-Api-Key": "key-SECRET"}},
    tls=TLSProfile(
        client_cert=ClientCertificate.from_pkcs12((HERE / "client.p12").read_bytes(), "pfx-SECRET"),
        ca_bundle=(HERE / "ca.pem").read_bytes(),
    ),
)
pytestmark = pytest.mark.securesession_entries([ENTRY])


@pytest.mark.vcr
def test_order(secure_session):
    response = secure_session.get(URL + "/orders/7", timeout=5)
    assert response.status_code == 200
    assert response.json() == {{"method": "GET", "path": "/orders/7"}}
"""


def test_record_then_replay_through_pytest_recording(pytester: pytest.Pytester) -> None:
    ca = CertificateAuthority("pytest-recording CA")
    issued = ca.issue_client("recorder", not_after=datetime.now(timezone.utc) + timedelta(days=365))
    (pytester.path / "ca.pem").write_bytes(ca.cert_pem)
    (pytester.path / "client.p12").write_bytes(issued.pkcs12(b"pfx-SECRET"))
    server = GatewayServer(
        tls=True,
        ca=ca,
        require_client_cert=True,
        expect_gateway=("bridge", "gw-SECRET"),
        expect_request=("alice", "alice-SECRET"),
    ).start()
    try:
        pytester.makeconftest(CONFTEST)
        pytester.makepyfile(test_orders=TEST_MODULE.format(url=server.url))
        pytester.runpytest(*FAST, "--record-mode=once").assert_outcomes(passed=1)
        (sent,) = server.requests
        assert sent.status == 200 and sent.client_cert_subject_cn == "recorder"
        assert sent.header("X-Api-Key") == "key-SECRET"
    finally:
        server.stop()

    cassette = pytester.path / "cassettes" / "test_orders" / "test_order.yaml"
    text = cassette.read_text(encoding="utf-8")
    assert not leaks(text)
    for value in ("gw-SECRET", "alice-SECRET", "key-SECRET"):
        assert value not in text
    assert base64.b64encode(b"alice:alice-SECRET").decode() not in text
    (interaction,) = yaml.safe_load(text)["interactions"]
    headers = interaction["request"]["headers"]
    for name in ("Authorization", "X-Api-Key", "X-Gateway-Password", "X-Gateway-User"):
        assert headers[name] == ["[REDACTED]"]

    # The server is stopped and the network blocked: only a replay can pass.
    result = pytester.runpytest(*FAST, "--record-mode=none", "--block-network")
    result.assert_outcomes(passed=1)
    assert len(server.requests) == 1


def test_the_header_names_fixture(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        ENTRY = {"gateway": ("gw", "gw-SECRET"), "gateway_headers": ("X-U", "X-P")}

        @pytest.mark.securesession_entries({"https://svc.test/": ENTRY})
        def test_marker_entries(securesession_header_names):
            assert securesession_header_names == (
                "Authorization", "Proxy-Authorization", "X-P", "X-U"
            )

        def test_no_entries(securesession_header_names):
            assert securesession_header_names == ("Authorization", "Proxy-Authorization")
        """
    )
    pytester.runpytest(*FAST).assert_outcomes(passed=2)
