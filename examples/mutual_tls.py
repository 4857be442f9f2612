"""Mutual TLS: a service entry that carries its client certificate, end to end.

Runs anywhere with no network: the "gateway" is a local TLS server on 127.0.0.1
that demands a client certificate, and every key and certificate is generated at
run time by a throw-away test CA.

    python examples/mutual_tls.py

Steps: export a client certificate as a ``.pfx`` (as Windows' certificate manager
does), turn it into a registry entry with the gateway's CA and a pin of its key,
delete the file, call the service, then show the error an entry without a
certificate gets. Everything lives in a temporary directory removed at the end.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from securesession import (
    ClientCertificate,
    MasterKey,
    SecureSession,
    ServiceEntry,
    TLSHandshakeError,
    TLSProfile,
    open_registry,
    spki_pin,
)
from securesession.testing import CertificateAuthority, GatewayServer

PFX_PASSWORD = "example-pfx-password"


def main(directory: Path) -> None:
    ca = CertificateAuthority("example gateway CA")
    a_year = datetime.now(timezone.utc) + timedelta(days=365)
    client = ca.issue_client("billing-service", not_after=a_year)

    # What the Windows export hands you: a password-protected PKCS#12 bundle,
    # and the CA certificate of the gateway you talk to.
    pfx_file = directory / "billing.pfx"
    pfx_file.write_bytes(client.pkcs12(PFX_PASSWORD.encode()))
    ca_file = ca.write_cert_pem(directory)

    registry = open_registry(f"sqlite://{directory / 'registry.db'}", MasterKey.generate())
    with GatewayServer(tls=True, ca=ca, require_client_cert=True) as gateway:
        assert gateway.server_cert is not None
        entry = registry.put(
            ServiceEntry(
                url=f"{gateway.url}/billing/",
                tls=TLSProfile(
                    client_cert=ClientCertificate.from_pkcs12(pfx_file, password=PFX_PASSWORD),
                    version="1.3",
                    ca_bundle=ca_file,
                    pins=(spki_pin(gateway.server_cert.cert_pem),),
                ),
            )
        )
        pfx_file.unlink()  # the registry now holds the bundle and its password, encrypted
        print(f"entry     {entry!r}")

        with SecureSession(registry) as session:
            for number in range(3):
                response = session.get(f"{gateway.url}/billing/invoices/{number}")
                print(f"GET invoices/{number}: {response.status_code}")
            seen = {r.client_cert_subject_cn or "(none)" for r in gateway.requests}
            print(f"gateway saw client certificate(s) {sorted(seen)} "
                  f"over {gateway.handshakes} TLS handshake(s)")  # fmt: skip

            # An entry for the same gateway without a certificate: the error says so.
            registry.put(
                ServiceEntry(url=f"{gateway.url}/reports/", tls=TLSProfile(ca_bundle=ca_file))
            )
            try:
                session.get(f"{gateway.url}/reports/daily")
            except TLSHandshakeError as exc:
                print(f"{type(exc).__name__}: {exc}")
    registry.close()
    print("ok")


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="securesession-mtls-") as tmp:
        main(Path(tmp))
