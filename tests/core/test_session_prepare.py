"""``SecureSession.prepare_request`` leaves the caller's ``Request`` as it was.

The session swaps in its netrc stand-in on a shallow copy of the request (a fast
path for plain ``Request``, ``copy.copy`` for subclasses); these tests pin that the
caller's object is never changed and that both paths still inject.
"""

from __future__ import annotations

import requests

from securesession import Credential, Registry, SecureSession, ServiceEntry
from securesession.testing import GatewayServer


class _TaggedRequest(requests.Request):
    """A caller's Request subclass with an extra attribute, slots-free."""

    tag = "tagged"


def test_prepare_request_never_changes_the_callers_request(
    registry: Registry, server: GatewayServer
) -> None:
    registry.put(
        ServiceEntry(
            url=server.url + "/svc/",
            request=Credential("user", "pw-SECRET"),
            request_auth="basic",
        )
    )
    with SecureSession(registry) as session:
        for request in (
            requests.Request("GET", server.url + "/svc/a", headers={"X-Caller": "1"}),
            _TaggedRequest("GET", server.url + "/svc/b"),
        ):
            hooks, headers = request.hooks, request.headers
            prepared = session.prepare_request(request)
            assert request.auth is None  # the stand-in went on a copy
            assert request.hooks is hooks and request.headers is headers
            assert session.send(prepared).status_code == 200
    first, second = server.requests
    assert first.header("X-Caller") == "1"
    for record in (first, second):
        assert (record.header("Authorization") or "").startswith("Basic ")
