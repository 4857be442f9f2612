"""Target 4: TLS handshakes and connection pools with per-service client certificates.

    python -m benchmarks.handshakes [--quick]

Against :class:`securesession.testing.GatewayServer` (TLS, client certificate
required), which counts handshakes and records the client certificate and the
connection of every request. These are counts, so they are checked exactly:

* 1,000 sequential requests to one service: 1 handshake, 1 connection;
* 10 services on one host (``/svc0`` ... ``/svc9``), each entry with its own
  client certificate, called in turn: 10 handshakes, 10 pools, and every request
  to ``/svc<i>`` arrived with certificate ``bench-client-<i>`` on a connection no
  other certificate used (no cross-use);
* the cold path of an entry with a TLS profile decrypts each of its secret
  fields (the certificate bundle and its password included) exactly once.

The plain-Session baseline (``cert=`` and ``verify=`` set by hand per call) runs
the same checks. The cost of a fresh session's first request (decryption,
certificate loading, context build and handshake, paid once per service and
process) is timed for information; warm throughput is the overhead benchmark's.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/handshakes.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as common

SERVICES = 10


def _pools_for(session: Any, port: int) -> int:
    adapter = session.get_adapter(f"https://127.0.0.1:{port}/")
    keys = adapter.poolmanager.pools.keys()
    return sum(1 for k in keys if (k.key_host, k.key_port) == ("127.0.0.1", port))


def one_service(report: common.Report, quick: bool, pki: common.PKI, directory: Path) -> None:
    from requests import Session

    from benchmarks.cache import counting_key
    from securesession import Credential, SecureSession, ServiceEntry, open_registry
    from securesession.testing import GatewayServer

    count = 100 if quick else 1000
    key = counting_key()
    with GatewayServer(tls=True, ca=pki.ca, require_client_cert=True) as server:
        registry = open_registry(f"sqlite://{directory}/one.db", key)
        registry.put(
            ServiceEntry(
                url=server.url + "/api",
                request=Credential("bench-user", "bench-SECRET"),
                tls=pki.profile(0),
            )
        )
        fields = len(registry.store.read(server.url + "/api").secrets)  # type: ignore[attr-defined]
        plain = Session()
        plain.cert = tuple(str(p) for p in pki.client_files[0])  # type: ignore[assignment]
        plain.verify = str(pki.ca_file)
        plain.auth = ("bench-user", "bench-SECRET")
        secure = SecureSession(registry)
        url = server.url + "/api/v1/orders/42"
        results: dict[str, tuple[int, int]] = {}
        for name, session in (("securesession", secure), ("plain", plain)):
            server.reset()
            key.decryptions = 0
            first = session.get(url)
            report.check(first.status_code == 200, f"{name}: first request {first.status_code}")
            if name == "securesession":
                decrypted = key.decryptions
                report.add(
                    common.Row(
                        "4 handshakes",
                        "cold path, entry with a TLS profile: decryptions for the first request",
                        str(decrypted),
                        f"{fields} secret fields",
                        None,
                        "= 1 per secret field",
                        decrypted == fields,
                    )
                )
                report.check(decrypted == fields, f"TLS cold path: {decrypted} != {fields}")
            for _ in range(count - 1):
                session.get(url)
            results[name] = (server.handshakes, server.connections)
        secure_hs, secure_conns = results["securesession"]
        plain_hs, plain_conns = results["plain"]
        report.add(
            common.Row(
                "4 handshakes",
                f"{count:,} requests to one service: TLS handshakes / connections",
                f"{secure_hs} / {secure_conns}",
                f"{plain_hs} / {plain_conns}",
                None,
                "= 1 handshake",
                secure_hs == 1 and secure_conns == 1,
            )
        )
        report.check(secure_hs == 1, f"{count} requests to one service took {secure_hs} handshakes")

        # What a new service costs once: the first request of a fresh session, A/B.
        def first_request(make: Any) -> Any:
            def run() -> float:
                session = make()
                start = time.perf_counter()
                session.get(url)
                elapsed = (time.perf_counter() - start) * 1e6
                session.close()
                return elapsed

            return run

        def fresh_plain() -> Any:
            session = Session()
            session.cert = plain.cert
            session.verify = plain.verify
            session.auth = plain.auth
            return session

        samples = common.alternate(
            {
                "securesession": first_request(lambda: SecureSession(registry)),
                "plain": first_request(fresh_plain),
            },
            3 if quick else 15,
        )
        secure_first = common.median(samples["securesession"])
        plain_first = common.median(samples["plain"])
        report.add(
            common.Row(
                "4 handshakes",
                "first request of a fresh session (securesession: decrypt entry, load the "
                "certificate, build the context; both: handshake), median",
                common.fmt_us(secure_first),
                common.fmt_us(plain_first),
                plain_first / secure_first,
                "info: once per service",
            )
        )
        secure.close()
        plain.close()
        registry.close()


def ten_services(report: common.Report, quick: bool, pki: common.PKI, directory: Path) -> None:
    from requests import Session

    from securesession import Credential, MasterKey, SecureSession, ServiceEntry, open_registry
    from securesession.testing import GatewayServer

    rounds = 10 if quick else 100
    with GatewayServer(tls=True, ca=pki.ca, require_client_cert=True) as server:
        registry = open_registry(f"sqlite://{directory}/ten.db", MasterKey.generate())
        for index in range(SERVICES):
            registry.put(
                ServiceEntry(
                    url=f"{server.url}/svc{index}",
                    request=Credential(f"svc{index}-user", f"svc{index}-SECRET"),
                    tls=pki.profile(index),
                )
            )
        secure = SecureSession(registry)
        plain = Session()
        plain.verify = str(pki.ca_file)
        sides: dict[str, tuple[Any, Any]] = {
            "securesession": (secure, lambda index: {}),
            "plain": (
                plain,
                lambda index: {
                    "cert": tuple(str(p) for p in pki.client_files[index]),
                    "auth": (f"svc{index}-user", f"svc{index}-SECRET"),
                },
            ),
        }
        outcome: dict[str, tuple[int, int, int, bool]] = {}
        for name, (session, per_call) in sides.items():
            server.reset()
            for _ in range(rounds):
                for index in range(SERVICES):
                    response = session.get(f"{server.url}/svc{index}/items", **per_call(index))
                    report.check(response.status_code == 200, f"{name}: {response.status_code}")
            records = server.requests
            wrong = [
                r
                for r in records
                if r.client_cert_subject_cn != f"bench-client-{r.path.split('/')[1][3:]}"
            ]
            certs_per_connection: dict[int, set[str | None]] = {}
            for record in records:
                certs_per_connection.setdefault(record.connection_id, set()).add(
                    record.client_cert_subject_cn
                )
            shared = any(len(cns) > 1 for cns in certs_per_connection.values())
            outcome[name] = (
                server.handshakes,
                _pools_for(session, server.port),
                len(wrong),
                shared,
            )
        for name, (handshakes, pools, wrong_count, shared) in outcome.items():
            ok = handshakes == SERVICES and pools == SERVICES and wrong_count == 0 and not shared
            report.add(
                common.Row(
                    "4 handshakes",
                    f"{SERVICES} services x {rounds} requests, one host, own client certs: "
                    f"handshakes / pools / wrong cert / shared connection ({name})",
                    f"{handshakes} / {pools} / {wrong_count} / {'yes' if shared else 'no'}",
                    "",
                    None,
                    f"= {SERVICES} / {SERVICES} / 0 / no" if name == "securesession" else "",
                    ok if name == "securesession" else None,
                )
            )
            if name == "securesession":
                report.check(
                    ok,
                    f"10 services: {handshakes} handshakes, {pools} pools, "
                    f"{wrong_count} wrong certificates, shared={shared}",
                )
        secure.close()
        plain.close()
        registry.close()


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__, argv)
    common.clean_environment()
    report = common.Report("4. handshakes and pools with client certificates", args.quick)
    missing = common.tls_missing()
    if missing is not None:
        report.add(common.Row("4 handshakes", "all", "not run"))
        report.note(f"not measured: TLS profiles {missing}")
        return report.finish(args.json)
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        pki = common.make_pki(directory, clients=SERVICES)
        one_service(report, args.quick, pki, directory)
        ten_services(report, args.quick, pki, directory)
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
