"""What every benchmark shares: arguments, A/B alternation, medians, the result table,
the lean server process, and fast registry filling.

Only the standard library is imported at module level, so a child process that must
stay "plain" (the memory baseline) can use these helpers without importing
securesession or requests.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from securesession import MasterKey, Registry, ServiceEntry

#: The first line of every result table; tests/test_benchmarks_quick.py looks for it.
TABLE_HEADER = "| target | measurement | securesession | baseline | ratio | goal | verdict |"
#: The architecture issue's target for SQLite over mutual TLS against a hand-configured
#: Session, at 1 thread (overhead.py) and at 16 (concurrency.py).
TLS_TARGET_RATIO = 0.97

T = TypeVar("T")

_SERVER_SCRIPT = Path(__file__).with_name("_server.py")

# Environment variables that make requests ignore Session.verify (it merges them over
# the session's own setting) or proxy loopback traffic: neither side may see them.
_ENVIRONMENT_NOISE = (
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def clean_environment() -> None:
    """Drop the variables that would let the environment override a session's settings."""
    for name in _ENVIRONMENT_NOISE:
        os.environ.pop(name, None)


# -- arguments and the machine ---------------------------------------------------------


def parse_args(
    description: str | None, argv: Sequence[str] | None = None, **extra: str
) -> argparse.Namespace:
    """``--quick`` (CI-sized), ``--json PATH`` (rows for run_all); *extra* adds flags
    (``name="help"``) that default to false."""
    parser = argparse.ArgumentParser(
        description=(description or "").strip().splitlines()[0] if description else None
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for CI")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    for name, text in extra.items():
        parser.add_argument(f"--{name.replace('_', '-')}", action="store_true", help=text)
    return parser.parse_args(argv)


def machine() -> str:
    """One line naming what the numbers were measured on."""
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{os.cpu_count()} cores, Python {platform.python_version()} "
        f"({platform.python_implementation()}), {ssl.OPENSSL_VERSION}, "
        f"load average {load}"
    )


# -- measuring -------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def alternate(variants: Mapping[str, Callable[[], T]], rounds: int) -> dict[str, list[T]]:
    """Call every variant once per round and collect what each returns.

    The order rotates each round (A B C, B C A, C A B, ...), so no side always runs
    first, right after a garbage collection, or in the same phase of whatever else
    the machine is doing; medians over the rounds then compare like with like. A
    collection runs before every call, so one side's garbage is not collected on
    another side's clock.
    """
    names = list(variants)
    samples: dict[str, list[T]] = {name: [] for name in names}
    for round_ in range(rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            gc.collect()
            samples[name].append(variants[name]())
    return samples


@dataclass(frozen=True)
class Block:
    """One timed block of requests: wall-clock throughput, and the client process's
    CPU time per request (steadier than wall time when other processes compete)."""

    rate: float
    cpu_us: float


def timed_block(run: Callable[[], int]) -> Block:
    """Time *run*, which does some requests and returns how many."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Block(count / wall, cpu / count * 1e6)


def per_call_us(function: Callable[[], object], calls: int) -> float:
    """Microseconds per call of *function*, timed over *calls* calls."""
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls * 1e6


# -- the table -------------------------------------------------------------------------


@dataclass
class Row:
    """One line of a result table. Values are preformatted text; *ratio* is
    securesession / baseline in the row's own sense (see *goal*)."""

    target: str
    measurement: str
    value: str
    baseline: str = ""
    ratio: float | None = None
    goal: str = ""
    met: bool | None = None

    @property
    def verdict(self) -> str:
        return {True: "met", False: "MISSED", None: "info"}[self.met]

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.3f}"
        return [
            self.target,
            self.measurement,
            self.value,
            self.baseline,
            ratio,
            self.goal,
            self.verdict,
        ]


@dataclass
class Report:
    """Rows, sanity failures (counts that must hold exactly), and the printing of both."""

    title: str
    quick: bool
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def check(self, condition: bool, what: str) -> bool:
        """A sanity count (not a timing): a failure makes the script exit non-zero."""
        if not condition:
            self.failures.append(what)
        return condition

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finish(self, json_path: str | None, stream: IO[str] | None = None) -> int:
        """Print the table (and notes, failures); write JSON; return the exit status."""
        out = stream or sys.stdout
        mode = "quick (CI sizes: numbers are indicative only)" if self.quick else "full"
        print(f"\n## {self.title} [{mode}]", file=out)
        print(f"machine: {machine()}", file=out)
        print_table(self.rows, out)
        for text in self.notes:
            print(f"note: {text}", file=out)
        for text in self.failures:
            print(f"SANITY FAILURE: {text}", file=out)
        if json_path:
            payload = {
                "title": self.title,
                "quick": self.quick,
                "rows": [asdict(row) for row in self.rows],
                "notes": self.notes,
                "failures": self.failures,
            }
            Path(json_path).write_text(json.dumps(payload, indent=1))
        out.flush()
        return 1 if self.failures else 0


def print_table(rows: Sequence[Row], out: IO[str] | None = None) -> None:
    """A Markdown table, so it pastes into docs/performance.md unchanged."""
    out = out or sys.stdout
    print(TABLE_HEADER, file=out)
    print("|---|---|---:|---:|---:|---|---|", file=out)
    for row in rows:
        # A "|" inside a cell would split it: escape it the Markdown way.
        print("| " + " | ".join(c.replace("|", "\\|") for c in row.cells()) + " |", file=out)


def rows_from_json(path: str | os.PathLike[str]) -> tuple[list[Row], dict[str, Any]]:
    payload = json.loads(Path(path).read_text())
    return [Row(**row) for row in payload["rows"]], payload


def fmt_us(value: float) -> str:
    return f"{value:,.1f} µs" if value < 10_000 else f"{value / 1000:,.1f} ms"


def fmt_rate(value: float) -> str:
    return f"{value:,.0f} req/s"


def fmt_mib(value: float) -> str:
    return f"{value / 2**20:,.1f} MiB"


# -- the lean server -------------------------------------------------------------------


@dataclass
class ServerProcess:
    """The lean server of ``_server.py`` in a child process (see its docstring)."""

    port: int
    process: subprocess.Popen[str]

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.port}"


@contextmanager
def lean_server(
    *, require_headers: Sequence[str] = (), tls: tuple[Path, Path, Path] | None = None
) -> Iterator[ServerProcess]:
    """Start ``_server.py``; stop it on exit (closing its stdin ends it)."""
    command = [sys.executable, str(_SERVER_SCRIPT)]
    for name in require_headers:
        command += ["--require-header", name]
    if tls is not None:
        command += ["--tls", *(str(path) for path in tls)]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line.startswith("PORT "):
            raise RuntimeError(f"benchmark server did not start: {line!r}")
        yield ServerProcess(int(line.split()[1]), process)
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# -- registries ------------------------------------------------------------------------


def filler_key(index: int) -> str:
    """Canonical key of the *index*-th filler entry: one host per entry, a 2-segment
    prefix, so lookups of URLs below it probe several candidate keys."""
    return f"https://svc{index:06d}.bench.example:443/api/v1"


def fill_registry(registry: Registry, key: MasterKey, count: int, template: ServiceEntry) -> None:
    """Add *count* filler entries shaped like *template* (credentials and modes), fast.

    Each entry is sealed for its own key, exactly as :meth:`Registry.put` would (the
    AAD binds every token to its entry), but validation of the identical template
    is not repeated 100,000 times, and a SQLite store is filled in one transaction
    instead of one per entry. A sample entry is read back and decrypted, so a
    change to the stored format breaks this loudly rather than silently.
    """
    from securesession._registry._base import dumps
    from securesession._registry._codec import seal
    from securesession._registry.sqlite import SQLiteStore

    store = registry.store  # type: ignore[attr-defined]
    rows = []
    for index in range(count):
        entry = _with_url(template, filler_key(index))
        settings, secrets = seal(entry, key)
        rows.append((entry.url, settings, secrets))
    if isinstance(store, SQLiteStore):
        _bulk_insert(store.path, rows, dumps)
    else:
        for url, settings, secrets in rows:
            store.write(url, settings, secrets, key_id=key.key_id)
    if count:
        sample = registry.get(filler_key(count // 2) + "/x")
        if sample is None or sample.url != filler_key(count // 2):
            raise RuntimeError("filled registry does not read back: stored format changed?")


def _with_url(template: ServiceEntry, url: str) -> ServiceEntry:
    # The same shortcut ServiceEntry.with_metadata takes: a validated entry with one
    # field changed; *url* is already canonical.
    from securesession import ServiceEntry

    copy = object.__new__(ServiceEntry)
    copy.__dict__.update(template.__dict__)
    object.__setattr__(copy, "url", url)
    return copy


def _bulk_insert(
    path: Path, rows: list[tuple[str, dict[str, Any], dict[str, str]]], dumps: Callable[..., str]
) -> None:
    import sqlite3

    now = time.time()
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        (start,) = connection.execute(
            "SELECT CAST(value AS INTEGER) FROM meta WHERE name = 'revision'"
        ).fetchone()
        connection.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?)",
            (
                (url, start + offset + 1, now, dumps(settings), dumps(secrets))
                for offset, (url, settings, secrets) in enumerate(rows)
            ),
        )
        connection.execute(
            "UPDATE meta SET value = ? WHERE name = 'revision'", (str(start + len(rows)),)
        )
        connection.execute("COMMIT")
    finally:
        connection.close()


# -- mutual TLS ------------------------------------------------------------------------


def tls_missing() -> str | None:
    """``None`` when mutual TLS is available, else exactly what is missing."""
    import dataclasses
    import importlib

    try:
        tls = importlib.import_module("securesession._tls")
    except ImportError as exc:
        return f"securesession._tls cannot be imported ({exc})"
    missing = [name for name in ("TLSProfile", "ClientCertificate") if not hasattr(tls, name)]
    from securesession import ServiceEntry

    if "tls" not in {f.name for f in dataclasses.fields(ServiceEntry)}:
        missing.append("ServiceEntry(tls=...)")
    from securesession import SecureAdapter

    if not hasattr(SecureAdapter, "_context_for"):
        missing.append("SecureAdapter._context_for (one SSLContext per profile)")
    return f"missing: {', '.join(missing)}" if missing else None


#: Password of the benchmark's client-certificate keys (the marker keeps it findable).
CERT_PASSWORD = "bench-SECRET-pfx"


@dataclass
class PKI:
    """A throw-away CA, a server certificate for 127.0.0.1 and client certificates,
    written to a temporary directory for the processes that need files."""

    directory: Path
    ca: Any  # CertificateAuthority
    server_files: tuple[Path, Path, Path]  # cert, key, CA: what _server.py --tls takes
    ca_file: Path
    ca_pem: bytes
    clients: list[Any]  # IssuedCert
    client_files: list[tuple[Path, Path]]  # (cert, clear key) for requests' cert=

    def profile(self, index: int = 0) -> Any:
        """The TLSProfile presenting client certificate *index* and trusting the CA."""
        from securesession._tls import ClientCertificate, TLSProfile

        issued = self.clients[index]
        client = ClientCertificate.from_pem(
            issued.chain_pem, issued.encrypted_key_pem(CERT_PASSWORD.encode()), CERT_PASSWORD
        )
        return TLSProfile(client_cert=client, ca_bundle=self.ca_pem)


def make_pki(directory: Path, clients: int = 1) -> PKI:
    from securesession.testing import CertificateAuthority

    ca = CertificateAuthority("securesession benchmark CA")
    server = ca.issue_server()
    server_cert, server_key = server.write_pem(directory)
    ca_file = ca.write_cert_pem(directory)
    # A year of validity: the default month would make every context build log an
    # "expires soon" warning into the benchmark's output.
    until = datetime.now(timezone.utc) + timedelta(days=365)
    issued = [ca.issue_client(f"bench-client-{index}", not_after=until) for index in range(clients)]
    return PKI(
        directory=directory,
        ca=ca,
        server_files=(server_cert, server_key, ca_file),
        ca_file=ca_file,
        ca_pem=ca.cert_pem,
        clients=issued,
        client_files=[cert.write_pem(directory) for cert in issued],
    )


@dataclass
class MutualTLSPair:
    """An SQLite registry's entry for a lean server that demands a client certificate
    (gateway headers, Basic and a TLS profile with the certificate) and a plain Session
    given the same headers, ``auth=``, ``cert=`` and ``verify=`` by hand."""

    base_url: str
    registry: Any
    plain: Any


#: The credentials of the benchmarks' entries (user, password).
BENCH_USER = ("bench-user", "bench-SECRET-password")
BENCH_GATEWAY = ("bench-gw", "bench-gw-SECRET")


@contextmanager
def mutual_tls_pair(fillers: int = 0) -> Iterator[MutualTLSPair]:
    """A :class:`MutualTLSPair` over loopback, its registry holding *fillers* filler
    entries too; the server, registry and Session are closed on exit."""
    import tempfile

    from requests import Session

    from securesession import Credential, MasterKey, ServiceEntry, open_registry

    key = MasterKey.generate()
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        pki = make_pki(directory, clients=1)
        with lean_server(
            require_headers=["Authorization", "X-Gateway-Password"], tls=pki.server_files
        ) as server:
            template = ServiceEntry(
                url=server.https + "/api",
                gateway=Credential(*BENCH_GATEWAY),
                request=Credential(*BENCH_USER),
                tls=pki.profile(0),
            )
            registry = open_registry(f"sqlite://{directory}/registry.db", key)
            fill_registry(registry, key, fillers, template)
            registry.put(template)
            plain = Session()
            plain.cert = tuple(str(path) for path in pki.client_files[0])  # type: ignore[assignment]
            plain.verify = str(pki.ca_file)
            plain.auth = BENCH_USER
            plain.headers.update(
                {"X-Gateway-User": BENCH_GATEWAY[0], "X-Gateway-Password": BENCH_GATEWAY[1]}
            )
            try:
                yield MutualTLSPair(server.https, registry, plain)
            finally:
                plain.close()
                registry.close()


def server_stats(session: Any, base_url: str, **kwargs: Any) -> dict[str, Any]:
    """The lean server's counters, fetched over *session* (a pooled connection)."""
    response = session.get(base_url + "/__stats", **kwargs)
    response.raise_for_status()
    stats: dict[str, Any] = response.json()
    return stats


# -- profiling -------------------------------------------------------------------------

#: The steps :func:`breakdown` times: (module or class path, attribute, label); the
#: indentation of a label shows nesting (a step includes the steps below it).
_STEPS: tuple[tuple[str, str, str], ...] = (
    ("requests:Session", "request", "Session.request: the whole call"),
    ("securesession:SecureSession", "prepare_request", "  SecureSession.prepare_request"),
    ("requests:Session", "prepare_request", "    requests' prepare_request"),
    ("securesession._session:", "get_netrc_auth", "      netrc lookup (~/.netrc)"),
    ("requests:Session", "merge_environment_settings", "  environment: proxies, CA bundle"),
    ("securesession:SecureSession", "send", "  SecureSession.send"),
    ("securesession:SecureSession", "plan_for", "    plan_for: registry lookup + cache"),
    ("securesession._session:", "inject", "    inject: write the headers"),
    ("securesession:SecureSession", "_route_tls", "    route to the entry's TLS profile"),
    ("requests:Session", "send", "    requests' Session.send"),
    ("securesession:SecureAdapter", "send", "      SecureAdapter.send"),
    ("requests.adapters:HTTPAdapter", "send", "        HTTPAdapter.send: urllib3, the wire"),
)


def breakdown(
    sides: Mapping[str, Any],
    url: str,
    drive: Callable[[Any, str, int], object],
    blocks: int = 20,
    per_block: int = 200,
) -> str:
    """Where the time of one request goes, side by side, measured in place.

    Each step of :data:`_STEPS` is wrapped in a timer at class level while the
    sides take turns (``drive(session, url, count)`` sends *count* requests, from
    one thread or many), so every step runs with the CPU caches as cold as a real
    request leaves them; a microbenchmark of a step alone flatters it. Wall time
    includes waiting (for the socket, for the GIL); CPU is the thread's own time.
    Timers add well under a microsecond per step, on every side alike. Returns a
    Markdown table in µs per request.
    """
    import importlib
    import threading

    local = threading.local()
    buckets: list[tuple[str, dict[str, list[int]]]] = []
    current = [""]
    restore: list[tuple[Any, str, Any]] = []

    def bucket() -> dict[str, list[int]]:
        mine: dict[str, list[int]] | None = getattr(local, current[0], None)
        if mine is None:  # one dict per thread and side: no lost updates, no lock
            mine = {}
            setattr(local, current[0], mine)
            buckets.append((current[0], mine))
        return mine

    for path, attribute, label in _STEPS:
        module_name, _, class_name = path.partition(":")
        owner = importlib.import_module(module_name)
        if class_name:
            owner = getattr(owner, class_name)
        original = owner.__dict__.get(attribute) if class_name else getattr(owner, attribute, None)
        if original is None:
            continue  # a step this version does not have

        def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
            try:
                return _original(*args, **kwargs)
            finally:
                cell = bucket().setdefault(_label, [0, 0])
                cell[0] += time.perf_counter_ns() - wall
                cell[1] += time.thread_time_ns() - cpu

        restore.append((owner, attribute, original))
        setattr(owner, attribute, timed)
    try:
        for round_ in range(blocks):
            order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
            for name in order:
                current[0] = name
                drive(sides[name], url, per_block)
    finally:
        for owner, attribute, original in reversed(restore):
            setattr(owner, attribute, original)
    names = list(sides)
    totals: dict[str, dict[str, list[int]]] = {name: {} for name in names}
    for name, cells in buckets:
        for label, (wall, cpu) in cells.items():
            total = totals[name].setdefault(label, [0, 0])
            total[0] += wall
            total[1] += cpu
    count = blocks * per_block
    header = " | ".join(f"{name} wall" for name in names)
    header += " | " + " | ".join(f"{name} CPU" for name in names)
    lines = [
        f"| step (µs per request) | {header} |",
        "|---|" + "---:|" * (2 * len(names)),
    ]
    for _path, _attribute, label in _STEPS:
        walls = [totals[name].get(label, [0, 0])[0] / count / 1000 for name in names]
        cpus = [totals[name].get(label, [0, 0])[1] / count / 1000 for name in names]
        if not any(walls):
            continue
        depth = (len(label) - len(label.lstrip())) // 2
        shown = [f"{value:,.1f}" if value else "" for value in walls + cpus]
        lines.append(f"| {'· ' * depth}{label.strip()} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def profile(function: Callable[[], object], calls: int, pattern: str, limit: int = 25) -> str:
    """cProfile *calls* calls of *function*; the *limit* hottest functions (cumulative)
    whose file or name matches *pattern*, as text."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        function()
    profiler.disable()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text)
    stats.sort_stats("cumulative").print_stats(pattern, limit)
    return text.getvalue()
