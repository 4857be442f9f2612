"""What each import costs: a path loads only what it needs.

Each check runs in a fresh interpreter (this process has imported everything) and
reads ``sys.modules`` there. Registry and entry code depend on the TLS *model*
only: no ``ssl``, no sockets, no urllib3 or requests, and no ``cryptography.x509``
until a certificate is actually read. The command line's ``--help`` loads no
cryptography at all.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from securesession import ClientCertificate, MasterKey, ServiceEntry, TLSProfile, open_registry
from securesession.testing import CertificateAuthority, GatewayServer

#: What registry and entry code must never pull in.
_NETWORK = ("ssl", "_ssl", "urllib3", "requests", "http.client")
_TLS_MACHINERY = (
    "securesession._tls.context",
    "securesession._tls.diagnosis",
    "securesession._tls.iis",
)
#: Loaded when a certificate, CA bundle or CRL is read, not before.
_CERTIFICATES = ("cryptography.x509", "cryptography.hazmat.primitives.serialization.pkcs12")
#: AES-GCM is taken from cryptography's binding, without the ciphers package around it;
#: the public records become dataclasses only when something asks (securesession._record).
_NOT_AT_IMPORT = ("cryptography.hazmat.primitives.ciphers", "dataclasses", "inspect")


def _loaded(code: str, stdin: str = "") -> dict[str, list[str]]:
    """Run *code*, which calls ``report(label)`` at each point of interest; for each
    label, the modules loaded by then that were not loaded when the interpreter started
    (coverage, measuring subprocesses in CI, loads sqlite3 and socket itself)."""
    prelude = (
        "import json, sys\n"
        "started = set(sys.modules)\n"
        "loaded = {}\n"
        "def report(label):\n"
        "    loaded[label] = sorted(set(sys.modules) - started)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", prelude + code + "\nprint(json.dumps(loaded))"],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    )
    reported: dict[str, list[str]] = json.loads(result.stdout.splitlines()[-1])
    return reported


def _present(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if name in modules]


def test_entry_code_loads_no_ssl_socket_or_http_machinery() -> None:
    loaded = _loaded("import securesession._entry\nreport('entry')")["entry"]
    assert "securesession._tls.model" in loaded
    assert _present(loaded, (*_NETWORK, "socket", *_TLS_MACHINERY, *_CERTIFICATES)) == []


@pytest.mark.parametrize("module", ["securesession._registry.sqlite", "securesession._registry"])
def test_registry_code_loads_no_ssl_or_http_machinery(module: str) -> None:
    # open_registry looks plugins up with the standard library's importlib.metadata,
    # which imports socket itself (through email.utils); loaded first, it is left out
    # of what the registry adds.
    loaded = _loaded(f"import importlib.metadata\nimport {module}\nreport('registry')")
    modules = loaded["registry"]
    assert "securesession._tls.model" in modules
    assert _present(modules, (*_NETWORK, *_TLS_MACHINERY, *_CERTIFICATES)) == []


def test_certificates_are_read_with_x509_loaded_on_first_use() -> None:
    client = CertificateAuthority("imports CA").issue_client("imports-client")
    code = (
        "from securesession import ClientCertificate, MasterKey, TLSProfile, open_registry\n"
        "open_registry('memory://', MasterKey.generate())\n"
        "TLSProfile(version='1.3')\n"
        "report('no certificate read')\n"
        "ClientCertificate.from_pem(sys.stdin.read().encode())\n"
        "report('certificate read')\n"
    )
    loaded = _loaded(code, stdin=(client.chain_pem + client.key_pem).decode())
    assert _present(loaded["no certificate read"], _CERTIFICATES) == []
    assert "cryptography.x509" in loaded["certificate read"]


def test_the_session_loads_tls_but_no_certificate_code() -> None:
    loaded = _loaded("from securesession import SecureSession\nreport('session')")["session"]
    assert "securesession._tls.context" in loaded
    assert _present(loaded, _CERTIFICATES) == []


def test_cli_help_loads_no_cryptography_requests_or_ssl() -> None:
    code = (
        "import contextlib, io\n"
        "from securesession.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as help_text:\n"
        "    assert main(['--help']) == 0\n"
        "assert 'rotate-key' in help_text.getvalue()\n"
        "report('help')\n"
    )
    loaded = _loaded(code)["help"]
    assert [m for m in loaded if m.split(".")[0] in ("cryptography", "requests", "urllib3")] == []
    assert _present(loaded, ("ssl", "sqlite3", *_TLS_MACHINERY)) == []


def test_the_tls_package_loads_only_the_module_of_the_name_used() -> None:
    code = (
        "from securesession._tls import TLSProfile\n"
        "report('model')\n"
        "from securesession._tls import find_ssl_error\n"
        "report('diagnosis')\n"
    )
    loaded = _loaded(code)
    assert _present(loaded["model"], ("ssl", *_TLS_MACHINERY)) == []
    assert "securesession._tls.diagnosis" in loaded["diagnosis"]
    assert "securesession._tls.iis" not in loaded["diagnosis"]


def test_every_name_imported_from_the_tls_package_still_resolves() -> None:
    import securesession._tls as tls
    from securesession._tls import diagnosis

    used = {
        "ClientCertificate", "TLSProfile", "TLSVersionName", "spki_pin", "EXPIRY_WARNING_DAYS",
        "ProfileContext", "build_context", "diagnose", "find_ssl_error",
        "probe_server_versions", "describe_iis_403", "iis_substatus",
    }  # fmt: skip
    assert used == set(tls.__all__)
    for name in used:
        assert getattr(tls, name) is not None, name
    # The function, not the module, even once the submodules are all loaded.
    assert tls.diagnose is diagnosis.diagnose
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        _ = tls.nothing_here


#: What a process that only reads its registry never needs: the audit code (and getpass,
#: for the default actor), scrypt (passphrase keys), the memory backend, file writing.
_WRITERS_ONLY = (
    "securesession._audit",
    "getpass",
    "cryptography.hazmat.primitives.kdf.scrypt",
    "securesession._registry.memory",
    "securesession._files",
)


def test_a_one_call_mutual_tls_script_loads_no_write_audit_or_certificate_code(
    tmp_path: Path,
) -> None:
    ca = CertificateAuthority("one-call CA")
    client = ca.issue_client("one-call-client")
    password = "one-call-SECRET"
    certificate = ClientCertificate.from_pem(
        client.chain_pem, client.encrypted_key_pem(password.encode()), password
    )
    key_file, database = tmp_path / "master.key", tmp_path / "registry.db"
    key = MasterKey.generate()
    key.save(key_file)
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as server:
        with open_registry(f"sqlite://{database}", key) as registry:
            tls = TLSProfile(client_cert=certificate, ca_bundle=ca.cert_pem)
            registry.put(ServiceEntry(url=server.url + "/api", tls=tls))
        # The benchmark's script (benchmarks/coldstart.py), then a write for contrast.
        url, key_path = f"sqlite://{database}", str(key_file)
        code = (
            "from securesession import MasterKey, SecureSession, ServiceEntry, open_registry\n"
            f"registry = open_registry({url!r}, MasterKey.from_file({key_path!r}))\n"
            "with SecureSession(registry) as session:\n"
            f"    assert session.get({server.url + '/api/v1'!r}).status_code == 200\n"
            "report('one call')\n"
            f"registry.put(ServiceEntry(url={server.url + '/other'!r}))\n"
            "report('write')\n"
            "SecureSession(registry, stale_on_error=1.0).close()\n"
            "report('stale_on_error')\n"
        )
        loaded = _loaded(code)
        assert [r.client_cert_subject_cn for r in server.requests] == ["one-call-client"]
    unneeded = (*_WRITERS_ONLY, *_CERTIFICATES, *_NOT_AT_IMPORT, "cachetools")
    assert _present(loaded["one call"], unneeded) == []
    # Loaded where it is needed: the write's audit record names the OS user, and only
    # a session that serves stale entries remembers its lookups (in a cachetools TTLCache).
    assert _present(loaded["write"], _WRITERS_ONLY) == ["securesession._audit", "getpass"]
    assert "cachetools" not in loaded["write"] and "cachetools" in loaded["stale_on_error"]


def test_open_registry_imports_only_the_backend_of_its_scheme() -> None:
    code = (
        "from securesession import MasterKey, open_registry\n"
        "report('import')\n"
        "open_registry('memory://', MasterKey.generate())\n"
        "report('memory')\n"
    )
    loaded = _loaded(code)
    backends = ("securesession._registry.memory", "securesession._registry.sqlite")
    assert _present(loaded["import"], backends) == []
    assert _present(loaded["memory"], backends) == ["securesession._registry.memory"]
