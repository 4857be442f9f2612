"""The wire audit: generated redirect chains, re-sends and copies across loopback
origins, and one invariant checked on every request the servers recorded.

* no value injected for an entry E reaches a request whose URL does not match E;
* a request whose URL matches an entry with a TLS profile went over that profile
  (its client certificate), and one that matches none presented no certificate;
* nothing is injected after an https -> http hop, for the rest of the chain.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from securesession import Credential, MasterKey, SecureSession, ServiceEntry, open_registry
from securesession.testing import GatewayServer, RecordedRequest

from .wire_helpers import (
    DIGEST_PASSWORD,
    DIGEST_USER,
    NTLM_PASSWORD,
    NTLM_USER,
    Origins,
    ntlm_user_seen,
    profile,
    tags_seen,
)

ORIGINS = ("tls_a", "tls_b", "digest", "plain_c", "plain_d", "ntlm")
# Per origin, the path prefixes a hop may land under: inside an entry, or outside all.
PREFIXES = {
    "tls_a": ("/e", "/o"),
    "tls_b": ("/e", "/e/deep", "/o"),
    "digest": ("/d", "/o"),
    "ntlm": ("/n", "/o"),
    "plain_c": ("/e", "/o"),
    "plain_d": ("/o",),
}
MODES = ("basic", "bearer", "headers", "none")
_examples = itertools.count()


@dataclass(frozen=True)
class Hop:
    origin: str
    prefix: str
    status: int  # how this hop redirects to the next one (unused on the last hop)
    relative: bool


@dataclass(frozen=True)
class Entry:
    origin: str
    prefix: str
    tag: str
    client_cn: str | None


@dataclass(frozen=True)
class Action:
    """A re-send after the chain: of which request, to which hop's URL, and how."""

    source: int
    target: int
    how: str  # "session" (session.send of a copy), "adapter" (adapter.send), "headers"


hops = st.sampled_from(ORIGINS).flatmap(
    lambda origin: st.builds(
        Hop,
        st.just(origin),
        st.sampled_from(PREFIXES[origin]),
        st.sampled_from((301, 302, 303, 307, 308)),
        st.booleans(),
    )
)
actions = st.builds(
    Action,
    st.integers(0, 10),
    st.integers(0, 10),
    st.sampled_from(("session", "adapter", "headers")),
)
ENTRIES = (
    Entry("tls_a", "/e", "ea", "a-client"),
    Entry("tls_b", "/e", "eb", None),  # requests' default TLS, with the caller's verify=
    Entry("tls_b", "/e/deep", "ed", "deep-client"),
    Entry("digest", "/d", "dg", "digest-client"),
    Entry("plain_c", "/e", "ec", None),
    Entry("ntlm", "/n", "nt", "ntlm-client"),
)
TAGS = [entry.tag for entry in ENTRIES]
_HTTPS = frozenset({"tls_a", "tls_b", "digest", "ntlm"})
# Headers a re-send with another method or body must not inherit.
_BODY_HEADERS = frozenset({"content-length", "content-type", "transfer-encoding"})


def _service_entry(origins: Origins, entry: Entry, mode: str) -> ServiceEntry:
    server: GatewayServer = getattr(origins, entry.origin)
    tls = None if entry.client_cn is None else profile(origins.ca, entry.client_cn)
    if entry.origin == "digest":
        request, request_auth = Credential(DIGEST_USER, DIGEST_PASSWORD), "digest"
    elif entry.origin == "ntlm":
        request, request_auth = Credential(NTLM_USER, NTLM_PASSWORD), "ntlm"
    elif mode == "none":
        request, request_auth = None, "basic"
    else:
        request = Credential(f"{entry.tag}-rq-user", f"{entry.tag}-rq-SECRET")
        request_auth = mode
    return ServiceEntry(
        url=server.url + entry.prefix,
        gateway=Credential(f"{entry.tag}-gw-user", f"{entry.tag}-gw-SECRET"),
        request=request,
        request_auth=request_auth,  # type: ignore[arg-type]
        request_headers=("X-Request-User", "X-Request-Token"),
        tls=tls,
    )


def _matching(origin: str, path: str) -> Entry | None:
    best = None
    for entry in ENTRIES:
        inside = path == entry.prefix or path.startswith(entry.prefix + "/")
        if (
            entry.origin == origin
            and inside
            and (best is None or len(entry.prefix) > len(best.prefix))
        ):
            best = entry
    return best


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    chain=st.lists(hops, min_size=1, max_size=5),
    modes=st.lists(st.sampled_from(MODES), min_size=len(ENTRIES), max_size=len(ENTRIES)),
    post=st.booleans(),
    resends=st.lists(actions, max_size=2),
)
def test_no_request_carries_another_entrys_values_or_skips_its_tls(
    origins_once: Origins, chain: list[Hop], modes: list[str], post: bool, resends: list[Action]
) -> None:
    origins = origins_once
    origins.reset()
    n = next(_examples)
    registry = open_registry("memory://", MasterKey.generate())
    for entry, mode in zip(ENTRIES, modes, strict=True):
        registry.put(_service_entry(origins, entry, mode))

    def server(name: str) -> GatewayServer:
        return getattr(origins, name)  # type: ignore[no-any-return]

    paths = [f"{hop.prefix}/x{n}h{index}" for index, hop in enumerate(chain)]
    urls = [server(hop.origin).url + path for hop, path in zip(chain, paths, strict=True)]
    for index, hop in enumerate(chain[:-1]):
        following = chain[index + 1]
        relative = hop.relative and following.origin == hop.origin
        location = paths[index + 1] if relative else urls[index + 1]
        server(hop.origin).redirect(paths[index], location, status=hop.status)

    # Which hop of the chain is past an https -> http hop.
    downgraded = [False]
    for previous, hop in itertools.pairwise(chain):
        to_plain = previous.origin in _HTTPS and hop.origin not in _HTTPS
        downgraded.append(downgraded[-1] or to_plain)
    expected_downgrade: dict[tuple[str, str], bool] = {
        (hop.origin, path): flag for hop, path, flag in zip(chain, paths, downgraded, strict=True)
    }

    with SecureSession(registry) as session:
        method = "POST" if post else "GET"
        response = session.request(
            method, urls[0], data=b"body" if post else None, verify=origins.ca_file
        )
        sent: list[requests.PreparedRequest] = [r.request for r in [*response.history, response]]
        for action in resends:
            source = sent[action.source % len(sent)]
            target_index = action.target % len(chain)
            target = chain[target_index]
            # The re-send lands on a path of its own, which no route redirects.
            path = f"{target.prefix}/x{n}r{len(expected_downgrade)}"
            url = server(target.origin).url + path
            if action.how == "headers":
                headers = {
                    name: value
                    for name, value in source.headers.items()
                    if name.lower() not in _BODY_HEADERS
                }
                session.get(url, headers=headers, verify=origins.ca_file)
                flag = False
            elif action.how == "session":
                copy = source.copy()
                copy.url = url
                session.send(copy, verify=origins.ca_file)
                flag = False  # sent anew by the caller: a chain of its own
            else:
                copy = source.copy()
                copy.url = url
                session.adapter.send(copy, verify=origins.ca_file)
                flag = bool(getattr(source, "securesession_downgraded", False))
            expected_downgrade[(target.origin, path)] = flag
    registry.close()

    checked = 0
    for name in ORIGINS:
        for record in server(name).requests:
            _check(name, record, expected_downgrade)
            checked += 1
    assert checked >= 1


def _check(
    origin: str,
    record: RecordedRequest,
    expected_downgrade: dict[tuple[str, str], bool],
) -> None:
    entry = _matching(origin, record.path)
    downgraded = expected_downgrade[(origin, record.path)]
    where = f"{origin}{record.path} (entry {entry and entry.tag}, downgraded {downgraded})"
    allowed = set() if entry is None or downgraded else {entry.tag}
    assert tags_seen(record, TAGS) == allowed, where
    digest_user_seen = DIGEST_USER in (record.header("Authorization") or "")
    assert digest_user_seen <= (allowed == {"dg"}), where
    assert ntlm_user_seen(record) <= (allowed == {"nt"}), where
    if origin in _HTTPS:
        expected_cn = None if entry is None else entry.client_cn
        assert record.client_cert_subject_cn == expected_cn, where
