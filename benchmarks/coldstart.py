"""Target 7: cold start, one call per process (the "scripts" persona).

    python -m benchmarks.coldstart [--quick] [--instructions]

A script that starts, makes one call and exits pays for its imports and its setup
on every call. Each side here is a fresh ``python`` process, timed whole (from
start to exit, as a shell would time it), against loopback
:class:`securesession.testing.GatewayServer` instances started once in this
process. The target case is one mutual-TLS call (TLS, client certificate required):

* ``plain``: ``requests.get(url, cert=(cert, key), verify=ca)``;
* ``securesession``: ``open_registry("sqlite://...", MasterKey.from_file(...))``
  and ``SecureSession(registry).get(url)``, the entry holding the client
  certificate (encrypted) and the CA.

For information, the same pair without TLS (HTTP Basic; the entry has no TLS
profile, so no certificate code is loaded) shows what the rest costs.

All sides alternate, after one untimed run of each that fills the bytecode cache,
and the table reports medians of the wall times (the verdict: ratio of the medians);
the children also report how long their imports took. Two more rows, for a shared
machine, where wall time follows the load: the median of the per-round ratios (the
two sides of a round ran seconds apart), and the children's CPU time (user + system,
from ``getrusage``), which the load moves much less. ``--quick`` runs a few rounds and
checks counts only (every call answered 200, with the right client certificate or
user); its timings are not judged. ``--instructions`` also runs each child once under
``valgrind --tool=callgrind`` and reports the instructions it executed: the work, which
the machine's load does not move at all (network waits are not counted).
"""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/coldstart.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import _common as common
from benchmarks.instructions import callgrind_instructions

#: The wall-time target: a one-call script at most this many times plain requests'.
TARGET = 1.25
CLIENT_CN = "coldstart-client"
USER = ("coldstart-user", "coldstart-SECRET")

# Each child prints one JSON line: its status and import time, and the modules it
# loaded. The import clock starts at the child's first line; the parent's wall time
# also counts the interpreter's own start.
_PLAIN = f"""\
import json, sys, time
start = time.perf_counter()
import requests
imported = time.perf_counter()
if len(sys.argv) > 2:
    response = requests.get(sys.argv[1], cert=(sys.argv[2], sys.argv[3]), verify=sys.argv[4])
else:
    response = requests.get(sys.argv[1], auth={USER!r})
print(json.dumps({{"status": response.status_code, "imports": imported - start,
                  "modules": sorted(sys.modules)}}))
"""
_SECURE = """\
import json, sys, time
start = time.perf_counter()
from securesession import MasterKey, SecureSession, open_registry
imported = time.perf_counter()
registry = open_registry("sqlite://" + sys.argv[2], MasterKey.from_file(sys.argv[3]))
with SecureSession(registry) as session:
    response = session.get(sys.argv[1])
print(json.dumps({"status": response.status_code, "imports": imported - start,
                  "modules": sorted(sys.modules)}))
"""


def child_environment(cache: Path) -> dict[str, str]:
    """This environment, with bytecode cached under *cache*: an installed package has
    its ``.pyc`` files, so no child compiles source (``PYTHONDONTWRITEBYTECODE`` would
    make every securesession import a compile); nothing is written into the tree."""
    environment = os.environ.copy()
    environment.pop("PYTHONDONTWRITEBYTECODE", None)
    environment["PYTHONPYCACHEPREFIX"] = str(cache)
    return environment


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(command: list[str], environment: dict[str, str]) -> tuple[float, dict[str, object]]:
    """Run one child; its whole wall time and what it printed, plus its CPU time
    (``"cpu"``: the children are run one at a time, so the growth of this process's
    children's usage is this child's)."""
    cpu = _children_cpu()
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=environment, check=False)
    elapsed = time.perf_counter() - start
    cpu = _children_cpu() - cpu
    if result.returncode != 0:
        raise RuntimeError(f"child failed ({result.returncode}): {result.stderr[-2000:]}")
    payload: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    payload["cpu"] = cpu
    return elapsed, payload


def _add_info_row(
    report: common.Report, case: str, what: str, secure: str, plain: str, ratio: float
) -> None:
    """One "info" row under *case*'s verdict row: securesession, plain, plain / secure."""
    report.add(common.Row("7 cold start", f"  {case}: {what}", secure, plain, ratio, "info"))


def _paired_ratio(secure: list[float], plain: list[float]) -> float:
    """The median over rounds of plain / securesession, each round's two runs paired."""
    return common.median([p / s for s, p in zip(secure, plain, strict=True)])


def _modules(payload: dict[str, object]) -> set[str]:
    names = payload["modules"]
    assert isinstance(names, list)
    return {str(name) for name in names}


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(
        __doc__, argv, instructions="also count each child's instructions (needs valgrind)"
    )
    common.clean_environment()
    report = common.Report("7. cold start: one call per process", args.quick)
    rounds = 3 if args.quick else 21
    from securesession import (
        ClientCertificate,
        Credential,
        MasterKey,
        ServiceEntry,
        TLSProfile,
        open_registry,
    )
    from securesession.testing import CertificateAuthority, GatewayServer

    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        ca = CertificateAuthority("securesession cold-start CA")
        until = datetime.now(timezone.utc) + timedelta(days=365)
        client = ca.issue_client(CLIENT_CN, not_after=until)
        cert_file, key_file = client.write_pem(directory)
        ca_file = ca.write_cert_pem(directory)
        key_path, db_path = directory / "master.key", directory / "registry.db"
        key = MasterKey.generate()
        key.save(key_path)
        with (
            GatewayServer(tls=True, ca=ca, require_client_cert=True) as mtls,
            GatewayServer(expect_request=USER) as http,
        ):
            password = common.CERT_PASSWORD
            certificate = ClientCertificate.from_pem(
                client.chain_pem, client.encrypted_key_pem(password.encode()), password
            )
            registry = open_registry(f"sqlite://{db_path}", key)
            registry.put(
                ServiceEntry(
                    url=mtls.url + "/api",
                    tls=TLSProfile(client_cert=certificate, ca_bundle=ca.cert_pem),
                )
            )
            registry.put(ServiceEntry(url=http.url + "/api", request=Credential(*USER)))
            registry.close()
            mtls_url, http_url = mtls.url + "/api/v1/orders/42", http.url + "/api/v1/orders/42"
            python = [sys.executable, "-c"]
            registry_args = [str(db_path), str(key_path)]
            commands = {
                "securesession": [*python, _SECURE, mtls_url, *registry_args],
                "plain": [*python, _PLAIN, mtls_url, str(cert_file), str(key_file), str(ca_file)],
                "securesession, no TLS": [*python, _SECURE, http_url, *registry_args],
                "plain, no TLS": [*python, _PLAIN, http_url],
            }
            environment = child_environment(directory / "pycache")
            for command in commands.values():  # untimed: fills the bytecode cache
                _run(command, environment)
            # Before the reset: the servers' counts below are the timed runs' only.
            counted = (
                {
                    side: callgrind_instructions(command, environment)
                    for side, command in commands.items()
                }
                if args.instructions
                else {}
            )
            mtls.reset()
            http.reset()
            samples = common.alternate(
                {
                    side: functools.partial(_run, command, environment)
                    for side, command in commands.items()
                },
                rounds,
            )
            served = {
                "mutual TLS": (mtls.requests, "client certificate", CLIENT_CN),
                "HTTP Basic": (http.requests, "user", USER[0]),
            }
            handshakes = mtls.handshakes

    calls = 2 * rounds
    statuses = [int(str(payload["status"])) for runs in samples.values() for _, payload in runs]
    report.check(statuses == [200] * len(statuses), f"statuses {sorted(set(statuses))}")
    for case, (records, what, expected) in served.items():
        seen = [
            r.client_cert_subject_cn if what != "user" else r.authenticated_user for r in records
        ]
        good = sum(
            r.status == 200 and name == expected for r, name in zip(records, seen, strict=True)
        )
        report.add(
            common.Row(
                "7 cold start",
                f"{case}: {calls} processes, one call each: 200s with the right {what}",
                str(good),
                "",
                None,
                f"= {calls}",
                good == calls,
            )
        )
        report.check(good == calls, f"{case}: {good} of {calls} calls answered with the {what}")
    report.check(handshakes == calls, f"mutual TLS: {handshakes} handshakes for {calls} calls")

    wall = {side: common.median([elapsed for elapsed, _ in runs]) for side, runs in samples.items()}
    imports_of = {
        side: [float(str(payload["imports"])) for _, payload in runs]
        for side, runs in samples.items()
    }
    cases: list[tuple[str, str, float | None]] = [
        ("mutual TLS", "", TARGET),
        ("HTTP Basic, no TLS profile", ", no TLS", None),
    ]
    cpu = {
        side: [float(str(payload["cpu"])) for _, payload in runs] for side, runs in samples.items()
    }
    for case, suffix, goal in cases:
        secure, plain = wall["securesession" + suffix], wall["plain" + suffix]
        ratio = plain / secure
        report.add(
            common.Row(
                "7 cold start",
                f"{case}: one call per process, whole-process wall time, median of {rounds}",
                common.fmt_us(secure * 1e6),
                common.fmt_us(plain * 1e6),
                ratio,
                f"≥ {1 / goal:.2f} (≤ {goal} x plain)" if goal else "info",
                None if args.quick or goal is None else ratio >= 1 / goal,
            )
        )

        info = functools.partial(_add_info_row, report, case)
        info(
            f"median of the {rounds} per-round wall-time ratios",
            "",
            "",
            _paired_ratio(
                [elapsed for elapsed, _ in samples["securesession" + suffix]],
                [elapsed for elapsed, _ in samples["plain" + suffix]],
            ),
        )
        if counted:
            secure_count, plain_count = counted["securesession" + suffix], counted["plain" + suffix]
            info(
                "instructions executed by the process (callgrind, one run)",
                f"{secure_count / 1e6:,.0f} M",
                f"{plain_count / 1e6:,.0f} M",
                plain_count / secure_count,
            )
        for what, seconds in (
            ("CPU time of the process (user + system), median", cpu),
            ("of which imports (securesession's names / requests), median", imports_of),
        ):
            secure_s = common.median(seconds["securesession" + suffix])
            plain_s = common.median(seconds["plain" + suffix])
            info(
                what,
                common.fmt_us(secure_s * 1e6),
                common.fmt_us(plain_s * 1e6),
                plain_s / secure_s,
            )
        extra = _modules(samples["securesession" + suffix][0][1]) - _modules(
            samples["plain" + suffix][0][1]
        )
        x509 = "cryptography.x509" in extra
        report.note(
            f"{case}: the securesession child loaded {len(extra)} modules more than the "
            f"plain one{', cryptography.x509 among them' if x509 else ', no certificate code'}"
        )
    return report.finish(args.json)


if __name__ == "__main__":
    sys.exit(main())
