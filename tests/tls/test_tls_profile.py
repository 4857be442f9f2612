"""TLSProfile and ClientCertificate: loading, validation, redaction, sealing."""

from __future__ import annotations

import os
import shutil
import ssl
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from securesession import InvalidEntryError, MasterKey, ServiceEntry, TLSConfigError, open_registry
from securesession._exceptions import ClientCertificateExpiredError
from securesession._registry._codec import ENTRY_FORMAT, ENTRY_FORMAT_TLS
from securesession._tls import ClientCertificate, ProfileContext, TLSProfile, build_context
from securesession._tls import context as tls_context
from securesession.registry import EncryptedRegistry
from securesession.testing import CertificateAuthority

from .tls_helpers import PASSWORD, issue, pfx

# -- client certificates -------------------------------------------------------------


def test_pem_with_encrypted_key_loads(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert = issue(ca, "pem-client")
    (tmp_path / "client.pem").write_bytes(cert.chain_pem)
    (tmp_path / "client.key").write_bytes(cert.encrypted_key_pem(PASSWORD.encode()))
    loaded = ClientCertificate.from_pem(
        tmp_path / "client.pem", tmp_path / "client.key", password=PASSWORD
    )
    assert loaded.format == "pem"
    assert loaded.subject == "CN=pem-client"
    assert loaded.issuer == "CN=tls test CA"
    assert loaded.serial == cert.serial
    # The stored material keeps the key encrypted, exactly as given.
    assert b"ENCRYPTED PRIVATE KEY" in loaded.data
    assert cert.key_pem not in loaded.data


def test_pkcs12_loads_from_file_and_bytes(ca: CertificateAuthority, tmp_path: Path) -> None:
    cert = issue(ca, "pfx-client")
    path = tmp_path / "client.pfx"
    path.write_bytes(cert.pkcs12(PASSWORD.encode()))
    from_file = ClientCertificate.from_pkcs12(str(path), password=PASSWORD)
    from_bytes = ClientCertificate.from_pkcs12(path.read_bytes(), password=PASSWORD)
    assert from_file == from_bytes
    assert from_file.subject == "CN=pfx-client"
    assert from_file.fingerprint == cert.certificate.fingerprint(hashes.SHA256()).hex()


def test_wrong_pem_passphrase_is_a_clear_error(ca: CertificateAuthority) -> None:
    cert = issue(ca, "pem-client")
    with pytest.raises(TLSConfigError, match="wrong passphrase") as info:
        ClientCertificate.from_pem(
            cert.chain_pem, cert.encrypted_key_pem(PASSWORD.encode()), password="nope-SECRET"
        )
    assert "SECRET" not in str(info.value)
    with pytest.raises(TLSConfigError, match="encrypted: give its passphrase"):
        ClientCertificate.from_pem(cert.chain_pem, cert.encrypted_key_pem(PASSWORD.encode()))


def test_wrong_pkcs12_password_is_a_clear_error(ca: CertificateAuthority) -> None:
    cert = issue(ca, "pfx-client")
    with pytest.raises(TLSConfigError, match="password is wrong") as info:
        ClientCertificate.from_pkcs12(cert.pkcs12(PASSWORD.encode()), password="bad-SECRET")
    assert "SECRET" not in str(info.value)


def test_key_of_another_certificate_is_refused(ca: CertificateAuthority) -> None:
    one, two = issue(ca, "one"), issue(ca, "two")
    with pytest.raises(TLSConfigError, match="does not belong"):
        ClientCertificate.from_pem(one.cert_pem, two.encrypted_key_pem(b"pw"), password="pw")


def test_legacy_3des_pkcs12_loads(ca: CertificateAuthority) -> None:
    cert = issue(ca, "legacy-3des")
    loaded = ClientCertificate.from_pkcs12(cert.pkcs12(PASSWORD.encode(), legacy=True), PASSWORD)
    assert loaded.subject == "CN=legacy-3des"


def _rc2_pfx(cert_dir: Path, ca: CertificateAuthority) -> bytes:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to write an RC2-40 PKCS#12 file")
    cert = issue(ca, "legacy-rc2")
    cert_path, key_path = cert.write_pem(cert_dir)  # test-owned tmp dir, as openssl needs files
    out = cert_dir / "rc2.pfx"
    result = subprocess.run(
        [openssl, "pkcs12", "-export", "-legacy", "-certpbe", "PBE-SHA1-RC2-40",
         "-keypbe", "PBE-SHA1-3DES", "-in", str(cert_path), "-inkey", str(key_path),
         "-passout", "env:PFX_PASSWORD", "-out", str(out)],
        env={**os.environ, "PFX_PASSWORD": PASSWORD},
        capture_output=True,
        check=False,
    )  # fmt: skip
    key_path.unlink()
    if result.returncode != 0:
        pytest.skip(f"this openssl cannot write RC2 PKCS#12: {result.stderr.decode()[:200]}")
    return out.read_bytes()


def test_legacy_rc2_pkcs12_loads_or_says_how_to_convert(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    data = _rc2_pfx(tmp_path, ca)
    loaded = ClientCertificate.from_pkcs12(data, PASSWORD)
    assert loaded.subject == "CN=legacy-rc2"
    # Without OpenSSL's legacy provider the same file must fail with directions.
    code = (
        "import sys\n"
        "from securesession._tls import ClientCertificate\n"
        "from securesession import TLSConfigError\n"
        "try:\n"
        "    ClientCertificate.from_pkcs12(sys.stdin.buffer.read(), sys.argv[1])\n"
        "except TLSConfigError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('loaded')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, PASSWORD],
        input=data,
        env={**os.environ, "CRYPTOGRAPHY_OPENSSL_NO_LEGACY": "1"},
        capture_output=True,
        check=True,
    )
    out = result.stdout.decode()
    assert out.strip() == "loaded" or (
        "RC2-40" in out and "openssl pkcs12 -legacy" in out and "SECRET" not in out
    )


def test_reprs_are_redacted(ca: CertificateAuthority) -> None:
    cert = issue(ca, "repr-client")
    profile = TLSProfile(client_cert=pfx(cert), ca_bundle=ca.cert_pem, pins=(ca.spki_sha256_pin,))
    text = repr(ServiceEntry(url="https://gw.example/pay", tls=profile))
    assert "CN=repr-client" in text
    assert "SECRET" not in text
    assert "PRIVATE KEY" not in text and "BEGIN" not in text
    assert "MII" not in text  # no base64 DER


# -- profile validation -----------------------------------------------------------------


def test_versions() -> None:
    assert TLSProfile().versions == ("1.2", "1.3")
    assert TLSProfile(version="1.3").versions == ("1.3", "1.3")
    assert TLSProfile(min_version="1.3").describe_versions() == "TLS 1.3 only"
    assert TLSProfile(allow_legacy=True).versions == ("1.0", "1.3")
    with pytest.raises(TLSConfigError, match="either version"):
        TLSProfile(version="1.2", min_version="1.2")
    with pytest.raises(TLSConfigError, match="above max_version"):
        TLSProfile(min_version="1.3", max_version="1.2")
    with pytest.raises(TLSConfigError, match="not a TLS version"):
        TLSProfile(version="1.4")  # type: ignore[arg-type]


def test_legacy_versions_need_the_explicit_opt_in() -> None:
    with pytest.raises(TLSConfigError, match="allow_legacy=True"):
        TLSProfile(version="1.0")
    with pytest.raises(TLSConfigError, match="security level"):
        TLSProfile(min_version="1.1")
    assert TLSProfile(version="1.0", allow_legacy=True).versions == ("1.0", "1.0")


def test_pins_are_validated(ca: CertificateAuthority) -> None:
    assert TLSProfile(pins=ca.spki_sha256_pin).pins == (ca.spki_sha256_pin,)
    with pytest.raises(TLSConfigError, match="sha256/<base64"):
        TLSProfile(pins=("sha1/AAAA",))


def test_crl_and_opt_out_contradict(ca: CertificateAuthority) -> None:
    with pytest.raises(TLSConfigError, match="contradict"):
        TLSProfile(crl=ca.crl(), check_revocation=False)
    crl_der = x509.load_pem_x509_crl(ca.crl()).public_bytes(serialization.Encoding.DER)
    assert TLSProfile(crl=crl_der).crl is not None  # DER is accepted and kept as PEM


def test_ca_bundle_is_stored_by_content(ca: CertificateAuthority, tmp_path: Path) -> None:
    path = ca.write_cert_pem(tmp_path)
    profile = TLSProfile(ca_bundle=path)
    path.unlink()
    assert profile == TLSProfile(ca_bundle=ca.cert_pem)
    with pytest.raises(TLSConfigError, match="cannot read the CA bundle"):
        TLSProfile(ca_bundle=tmp_path / "missing.pem")
    with pytest.raises(TLSConfigError, match="no readable PEM certificate"):
        TLSProfile(ca_bundle=b"not a pem")


def test_tls_profile_on_plain_http_entry_is_refused() -> None:
    with pytest.raises(InvalidEntryError, match="needs an https:// URL"):
        ServiceEntry(url="http://gw.example/pay", tls=TLSProfile())


# -- context building -----------------------------------------------------------------


def test_context_pins_versions_and_trust(ca: CertificateAuthority) -> None:
    context = build_context(TLSProfile(version="1.2", ca_bundle=ca.cert_pem), where="e")
    assert isinstance(context, ProfileContext)
    assert context.minimum_version == context.maximum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.cert_store_stats()["x509_ca"] == 1  # only the entry's CA, not certifi


def test_expired_client_certificate_is_refused(ca: CertificateAuthority) -> None:
    expired = pfx(issue(ca, "expired", days=-1))
    with pytest.raises(ClientCertificateExpiredError, match="has expired"):
        build_context(TLSProfile(client_cert=expired), where="https://gw.example:443")


def test_soon_expiring_certificate_warns(
    ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    soon = pfx(issue(ca, "soon", days=10))
    with caplog.at_level("WARNING", logger="securesession"):
        build_context(TLSProfile(client_cert=soon), where="https://gw.example:443")
    assert any("expires in 10 day(s)" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="securesession"):
        build_context(TLSProfile(client_cert=pfx(issue(ca, "later"))), where="e")
    assert not caplog.records


@pytest.mark.parametrize("use_memfd", [False, True])
def test_no_clear_key_file_ever_exists(
    ca: CertificateAuthority,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    use_memfd: bool,
) -> None:
    if use_memfd and not tls_context._USE_MEMFD:
        pytest.skip("this platform has no memfd_create")
    temp_root = tmp_path / "tmp"
    temp_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp_root))
    monkeypatch.setattr(tls_context, "_USE_MEMFD", use_memfd)
    seen: list[tuple[str, bytes, list[str], int]] = []

    def spy(self: ssl.SSLContext, certfile: str, keyfile: str | None = None, password=None):  # type: ignore[no-untyped-def]
        mode = stat.S_IMODE(os.stat(certfile).st_mode)
        seen.append((certfile, Path(certfile).read_bytes(), os.listdir(temp_root), mode))
        return ssl.SSLContext.load_cert_chain(self, certfile, keyfile, password)

    monkeypatch.setattr(ProfileContext, "load_cert_chain", spy)
    cert = issue(ca, "disk-check")
    build_context(TLSProfile(client_cert=pfx(cert)), where="e")

    (path, content, files_then, mode), = seen  # fmt: skip
    clear_body = b"".join(cert.key_pem.splitlines()[1:-1])
    assert clear_body[:40] not in content.replace(b"\n", b"")
    # The key on disk is encrypted: it does not load without a password ...
    key_block = content[content.index(b"-----BEGIN ENCRYPTED") :]
    with pytest.raises(TypeError, match="encrypted"):
        serialization.load_pem_private_key(key_block, None)
    # ... and is re-wrapped under a one-time passphrase, not the entry's password.
    with pytest.raises(ValueError):  # noqa: PT011 - cryptography's "bad decrypt"
        serialization.load_pem_private_key(key_block, PASSWORD.encode())
    if use_memfd:
        assert path.startswith("/proc/self/fd/") and files_then == []
    else:
        assert Path(path).parent == temp_root and len(files_then) == 1
        assert mode == 0o600
    assert os.listdir(temp_root) == []  # removed as soon as OpenSSL read it


# -- sealing ----------------------------------------------------------------------


def test_tls_profile_round_trips_through_the_registry_encrypted(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    cert = issue(ca, "sealed")
    pem_cert = ClientCertificate.from_pem(
        cert.chain_pem, cert.encrypted_key_pem(PASSWORD.encode()), PASSWORD
    )
    profile = TLSProfile(
        client_cert=pem_cert,
        min_version="1.2",
        ca_bundle=ca.cert_pem,
        pins=(ca.spki_sha256_pin,),
        crl=ca.crl(),
        crl_scope="leaf",
    )
    db = tmp_path / "registry.db"
    registry = open_registry(f"sqlite:///{db}", MasterKey.generate())
    assert isinstance(registry, EncryptedRegistry)
    try:
        registry.put(ServiceEntry(url="https://gw.example:8443/pay", tls=profile))
        registry.put(ServiceEntry(url="https://gw.example:8443/plain"))
        loaded = registry.get("https://gw.example:8443/pay/bills")
        plain = registry.get("https://gw.example:8443/plain")
        sealed = registry.store.read("https://gw.example:8443/pay")
        sealed_plain = registry.store.read("https://gw.example:8443/plain")
    finally:
        registry.close()
    assert loaded is not None and loaded.tls == profile
    assert plain is not None and plain.tls is None  # entries without a profile still load
    assert sealed is not None and sealed_plain is not None
    assert sealed.settings["format"] == ENTRY_FORMAT_TLS
    assert sealed_plain.settings["format"] == ENTRY_FORMAT
    assert sealed.settings["tls"]["pins"] == [ca.spki_sha256_pin]
    assert set(sealed.secrets) == {
        "$entry",
        "tls.client_cert",
        "tls.client_cert.password",
        "tls.client_cert.facts",  # subject, validity: encrypted too
    }
    raw = db.read_bytes()
    assert b"SECRET" not in raw and b"PRIVATE KEY" not in raw


def test_unseal_accepts_settings_written_before_tls_existed() -> None:
    registry = open_registry("memory://", MasterKey.generate())
    assert isinstance(registry, EncryptedRegistry)
    registry.put(ServiceEntry(url="https://old.example/api"))
    store = registry.store
    row = store.read("https://old.example:443/api")
    assert row is not None
    settings = {k: v for k, v in row.settings.items() if k != "tls"}
    assert settings["format"] == 1
    store.write(row.key, settings, row.secrets, key_id=registry.key_id)
    entry = registry.get("https://old.example/api")
    assert entry is not None and entry.tls is None
