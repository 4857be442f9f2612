"""The pytest plugin, driven through ``pytester`` (in process: the plugin is loaded from
its ``pytest11`` entry point exactly as in a user's suite)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Imported here, before any in-process run: pytester drops modules first imported during
# a run, and a second import of cryptography's Python layer no longer matches its
# compiled core ("Algorithm must be a registered hash algorithm").
import securesession.testing._certs
import securesession.testing._gateway
import securesession.testing._stub  # noqa: F401

# pytester restores sys.modules after every in-process run, so hypothesis' plugin would
# import (and assert-rewrite) hypothesis afresh each time: ~1 s a run, for nothing here.
FAST = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*FAST, *args)


def test_fixtures_are_fresh_per_test_and_closed_after(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from securesession import MasterKey, SecureSession
        from securesession.testing import StubRegistry

        seen = []

        def test_first(securesession_key, securesession_registry, secure_session):
            assert isinstance(securesession_key, MasterKey)
            assert isinstance(securesession_registry, StubRegistry)
            assert securesession_registry.key is securesession_key
            assert list(securesession_registry.entries()) == []
            assert isinstance(secure_session, SecureSession)
            assert secure_session.registry is securesession_registry
            securesession_registry.add("https://svc.test/", gateway=("gw", "gw-SECRET"))
            closed = []
            secure_session.close = lambda: closed.append(True)  # observed after teardown
            seen.append((securesession_key, securesession_registry, closed))

        def test_second(securesession_key, securesession_registry):
            key, registry, closed = seen[0]
            assert securesession_key != key
            assert securesession_registry is not registry
            assert list(securesession_registry.entries()) == []
            assert registry.closed and closed == [True]
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_marker_preloads_entries_closest_wins(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from securesession import Credential, ServiceEntry

        API = "https://svc.test/api/"
        pytestmark = pytest.mark.securesession_entries(
            {
                "https://svc.test/api/": {"gateway": ("module-gw", "m-SECRET")},
                "https://other.test/": {"request": "tok-SECRET", "request_auth": "bearer"},
            }
        )

        @pytest.mark.securesession_entries(
            {"https://svc.test/api/": {"gateway": ("class-gw", "c-SECRET")}}
        )
        class TestLayers:
            @pytest.mark.securesession_entries(
                [ServiceEntry(url=API, gateway=Credential("fn-gw", "f-SECRET"))],
                {"https://third.test/": {"gateway": ("t", "t-SECRET")}},
            )
            def test_function_marker_wins(self, securesession_registry):
                assert securesession_registry.get(API + "x").gateway.username == "fn-gw"
                assert securesession_registry.get("https://third.test/") is not None
                assert securesession_registry.get("https://other.test/").request_auth == "bearer"

            def test_class_marker_wins(self, secure_session):
                entry = secure_session.entry_for("https://svc.test/api/x")
                assert entry.gateway.username == "class-gw"

        def test_module_marker_only(securesession_registry):
            assert securesession_registry.get(API).gateway.username == "module-gw"
        """
    )
    run(pytester, "--strict-markers").assert_outcomes(passed=3)


def test_marker_is_registered(pytester: pytest.Pytester) -> None:
    result = run(pytester, "--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.securesession_entries(entries):*"])


@pytest.mark.parametrize(
    ("marker", "message"),
    [
        ("securesession_entries()", "takes entries as positional arguments"),
        ("securesession_entries(url='https://x.test/')", "takes entries as positional"),
        (
            "securesession_entries({'https://x.test/': {'gateway': ('g', 'p-SECRET', 3)}})",
            "gateway must be (user, password)*",
        ),
        (
            "securesession_entries({'ftp://x.test/': {'gateway': ('g', 'p-SECRET')}})",
            "*invalid entry URL*",
        ),
    ],
)
def test_bad_marker_fails_the_test_with_a_plain_message(
    pytester: pytest.Pytester, marker: str, message: str
) -> None:
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.{marker}
        def test_it(securesession_registry):
            pass
        """
    )
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*securesession_entries*{message}*"])
    assert "p-SECRET" not in result.stdout.str()
    assert "Traceback" not in result.stdout.str()


def test_gateway_server_is_shared_and_pristine_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        state = {}

        def test_use_it(gateway_server, securesession_registry, secure_session):
            gateway_server.expect_gateway = ("gw", "gw-SECRET")
            gateway_server.expect_request = ("u", "u-SECRET")
            gateway_server.respond("/api/teapot", 418, "short and stout")
            securesession_registry.add(
                gateway_server.url + "/api", gateway=("gw", "gw-SECRET"), request=("u", "u-SECRET")
            )
            assert secure_session.get(gateway_server.url + "/api/x").status_code == 200
            assert secure_session.get(gateway_server.url + "/api/teapot").status_code == 418
            assert secure_session.get(gateway_server.url + "/nothing").status_code == 401
            paths = [r.path for r in gateway_server.requests]
            assert paths == ["/api/x", "/api/teapot", "/nothing"]
            assert gateway_server.requests[0].header("X-Gateway-Password") == "gw-SECRET"
            securesession_registry.assert_used(gateway_server.url + "/api", times=2)
            state["port"] = gateway_server.port

        def test_next_test_sees_a_pristine_server(gateway_server):
            import requests

            assert gateway_server.port == state["port"]  # one server per session
            assert gateway_server.requests == []
            assert gateway_server.expect_gateway is None and gateway_server.expect_request is None
            assert requests.get(gateway_server.url + "/api/teapot", timeout=5).status_code == 200
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_gateway_server_digest_setting_is_restored_per_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from securesession import Credential, ServiceEntry

        def test_digest(gateway_server, securesession_registry, secure_session):
            gateway_server.expect_digest = ("d-user", "d-SECRET")
            securesession_registry.put(
                ServiceEntry(
                    url=gateway_server.url + "/api",
                    request=Credential("d-user", "d-SECRET"),
                    request_auth="digest",
                )
            )
            assert secure_session.get(gateway_server.url + "/api/x").status_code == 200
            assert gateway_server.requests[-1].authenticated_user == "d-user"

        def test_next_test_has_no_digest(gateway_server):
            import requests

            assert gateway_server.expect_digest is None
            assert requests.get(gateway_server.url + "/api/x", timeout=5).status_code == 200
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_tls_gateway_with_a_client_certificate(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_tls(gateway_server_tls, gateway_server_tls_ca, secure_session, tmp_path):
            gateway_server_tls.expect_gateway = ("gw", "gw-SECRET")
            secure_session.registry.add(gateway_server_tls.url, gateway=("gw", "gw-SECRET"))
            client = gateway_server_tls.ca.issue_client("svc-client")
            cert = tuple(str(p) for p in client.write_pem(tmp_path))
            response = secure_session.get(
                gateway_server_tls.url + "/x", verify=gateway_server_tls_ca, cert=cert
            )
            assert response.status_code == 200
            (record,) = gateway_server_tls.requests
            assert record.client_cert_subject_cn == "svc-client"
            assert record.tls_version is not None
        """
    )
    run(pytester).assert_outcomes(passed=1)


def test_marker_entry_with_a_tls_profile(pytester: pytest.Pytester) -> None:
    """The marker takes the dict form's ``tls=`` too: the session presents the profile's
    client certificate to a gateway that requires one."""
    pytester.makepyfile(
        """
        import pytest

        from securesession import ClientCertificate, TLSProfile
        from securesession.testing import GatewayServer

        SERVER = GatewayServer(
            tls=True, require_client_cert=True, expect_gateway=("gw", "gw-SECRET")
        ).start()
        ISSUED = SERVER.ca.issue_client("marker-client")
        PROFILE = TLSProfile(
            client_cert=ClientCertificate.from_pkcs12(
                ISSUED.pkcs12(b"pfx-SECRET"), "pfx-SECRET"
            ),
            ca_bundle=SERVER.ca_pem,
        )


        @pytest.fixture(scope="module", autouse=True)
        def _stop_the_server():
            yield
            SERVER.stop()


        @pytest.mark.securesession_entries(
            {SERVER.url + "/api": {"gateway": ("gw", "gw-SECRET"), "tls": PROFILE}}
        )
        def test_presents_the_client_certificate(securesession_registry, secure_session):
            assert securesession_registry.get(SERVER.url + "/api").tls == PROFILE
            response = secure_session.get(SERVER.url + "/api/orders/7", timeout=5)
            assert response.status_code == 200
            (record,) = SERVER.requests
            assert record.client_cert_subject_cn == "marker-client"


        @pytest.mark.securesession_entries({"https://svc.test/": {"tls": "pfx-SECRET"}})
        def test_a_bad_profile_fails_plainly(securesession_registry):
            pass
        """
    )
    result = run(pytester, "--strict-markers")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*securesession_entries: entry *tls must be a TLSProfile*"])
    assert "pfx-SECRET" not in result.stdout.str()


def test_a_suite_that_does_not_use_it_starts_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.parametrize("n", range(3))
        def test_plain(n):
            assert n < 3
        """
    )

    def setups(*args: str) -> list[str]:
        result = run(pytester, "--strict-markers", "--setup-show", *args)
        result.assert_outcomes(passed=3)
        return [line.strip() for line in result.stdout.lines if "SETUP" in line]

    # Other installed plugins (pytest-recording's autouse fixtures, say) set up what
    # they set up either way; the plugin adds nothing to it.
    with_plugin = setups()
    assert with_plugin == setups("-p", "no:securesession")
    assert len([line for line in with_plugin if line.startswith("SETUP    F n[")]) == 3
    assert not [line for line in with_plugin if "securesession" in line or "gateway" in line]


def test_importing_the_plugin_loads_no_server_or_pki_code() -> None:
    code = (
        "import sys, securesession.testing.pytest_plugin\n"
        "heavy = [m for m in ('securesession.testing._gateway', 'securesession.testing._certs',"
        " 'securesession.testing._stub', 'http.server') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_the_plugin_can_be_disabled(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_it(securesession_registry): pass")
    result = run(pytester, "-p", "no:securesession")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'securesession_registry' not found*"])
