"""ServiceEntry validation and the redaction of secrets in reprs."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import pytest

from securesession import (
    Credential,
    InvalidEntryError,
    MasterKey,
    Secret,
    SecureSession,
    ServiceEntry,
    open_registry,
)
from securesession.testing import GatewayServer

from ..secretscan import leaks


def test_url_is_canonicalised() -> None:
    entry = ServiceEntry(url="HTTPS://GW.example.com:8443/payments/")
    assert entry.url == "https://gw.example.com:8443/payments"


def test_repr_and_str_never_show_secrets() -> None:
    entry = ServiceEntry(
        url="https://gw.example.com/p/",
        gateway=Credential("gw", "gw-SECRET"),
        request=Credential("CORP\\alice", Secret("alice-SECRET")),
        secret_headers={"X-Api-Key": "api-SECRET"},
    )
    for text in (
        repr(entry),
        str(entry),
        repr(entry.gateway),
        f"{entry.request}",
        repr(entry.secret_headers),
    ):
        assert "SECRET" not in text
    assert f"{entry.gateway.password}" == "**********"  # type: ignore[union-attr]
    assert entry.gateway is not None and entry.gateway.password.reveal() == "gw-SECRET"


def test_secret_semantics() -> None:
    assert Secret("a") == Secret(Secret("a")) and Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert not Secret("") and Secret("x")
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        pickle.dumps(Secret("x-SECRET"))
    with pytest.raises(TypeError):
        Credential(1, "x")  # type: ignore[arg-type]
    assert Credential.token("t-SECRET").username == ""


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"gateway_auth": "basic", "request_auth": "bearer"},
            "would both write the 'Authorization' header",
        ),
        (
            {"gateway_auth": "digest", "request_auth": "basic"},
            "would both write the 'Authorization' header",
        ),
        ({"gateway_auth": "magic"}, "gateway_auth 'magic' is not one of"),
        ({"gateway_auth": "none"}, "gateway credential is given but gateway_auth is 'none'"),
        ({"gateway_headers": ("X-A", "X-A")}, "both write the 'X-A' header"),
        ({"gateway_headers": ("Bad Header", "X-B")}, "header name 'Bad Header' is not valid"),
        ({"gateway_headers": ("X-Only",)}, "needs two header names"),
        ({"request_headers": ("X-Gateway-User", "X-P"), "request_auth": "headers"}, "both write"),
        ({"secret_headers": {"Authorization": "k-SECRET"}}, "both write the 'Authorization'"),
        ({"url": "ftp://gw.example.com/"}, "invalid entry URL"),
        ({"url": "https://u:p-SECRET@gw.example.com/"}, "user information"),
        ({"url": "https://gw.example.com/" + "a/" * 70}, "deeper than 64"),
    ],
)
def test_inconsistent_entries_are_refused_when_built(
    options: dict[str, object], message: str
) -> None:
    arguments: dict[str, object] = {
        "url": "https://gw.example.com/p/",
        "gateway": Credential("gw", "gw-SECRET"),
        "request": Credential("alice", "alice-SECRET"),
    }
    arguments.update(options)
    with pytest.raises(InvalidEntryError, match=message) as caught:
        ServiceEntry(**arguments)  # type: ignore[arg-type]
    assert "SECRET" not in str(caught.value)


@pytest.mark.parametrize(
    ("field", "credential"),
    [
        ("gateway", Credential("gw", "line\r\nX-Evil: SECRET")),
        ("request", Credential("a\nb", "SECRET")),
    ],
)
def test_header_splitting_values_are_refused(field: str, credential: Credential) -> None:
    with pytest.raises(InvalidEntryError, match="line break") as caught:
        ServiceEntry(url="https://h/", **{field: credential})  # type: ignore[arg-type]
    assert "SECRET" not in str(caught.value)


def test_basic_user_name_cannot_contain_a_colon() -> None:
    with pytest.raises(InvalidEntryError, match="contains ':'"):
        ServiceEntry(url="https://h/", request=Credential("a:b", "x-SECRET"))


def test_wrong_credential_type() -> None:
    with pytest.raises(InvalidEntryError, match="must be a Credential"):
        ServiceEntry(url="https://h/", gateway=("u", "p"))  # type: ignore[arg-type]


def test_absent_credentials_are_fine_and_equal_entries_compare_equal() -> None:
    first = ServiceEntry(url="https://h/x/", request=Credential("u", "p-SECRET"))
    second = ServiceEntry(url="https://h/x", request=Credential("u", "p-SECRET"))
    assert first == second
    assert first != ServiceEntry(url="https://h/x", request=Credential("u", "other-SECRET"))
    assert first.with_metadata(revision=7).revision == 7 and first.revision == 0


# -- values that cannot go on the wire -------------------------------------------------

NOT_LATIN1 = "pa\u20acss-SECRET-\u00e4\u4e2d"  # the euro sign and CJK are above U+00FF


def _fragments(value: str) -> set[str]:
    """Every piece of *value* a message could give away: its odd characters and windows."""
    return {ch for ch in value if not ch.isascii()} | {
        value[i : i + 4] for i in range(len(value) - 3)
    }


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is known for known in seen):
            continue
        seen.append(current)
        pending += [current.__context__, current.__cause__]
    return seen


C0, DEL, C1 = "a\x01b-SECRET", "a\x7fb-SECRET", "a\x85-SECRET"  # Latin-1, not printable


@pytest.mark.parametrize(
    ("value", "build", "field"),
    [
        pytest.param(
            NOT_LATIN1,
            lambda v: {"gateway": Credential(v, "p")},
            "gateway user name in mode 'headers'",
            id="headers-user",
        ),
        pytest.param(
            NOT_LATIN1,
            lambda v: {"gateway": Credential("gw", v)},
            "gateway password in mode 'headers'",
            id="headers-password",
        ),
        pytest.param(
            NOT_LATIN1,
            lambda v: {"request": Credential("alice", v), "request_auth": "headers"},
            "request password in mode 'headers'",
            id="request-headers-password",
        ),
        pytest.param(
            NOT_LATIN1,
            lambda v: {"request": Credential.token(v), "request_auth": "bearer"},
            "request password in mode 'bearer'",
            id="bearer-token",
        ),
        pytest.param(
            NOT_LATIN1,
            lambda v: {"request": Credential(v, "p"), "request_auth": "digest"},
            "request user name in mode 'digest'",
            id="digest-user",
        ),
        pytest.param(
            NOT_LATIN1,
            lambda v: {"secret_headers": {"X-Api-Key": v}},
            "secret header 'X-Api-Key'",
            id="secret-header",
        ),
        pytest.param(
            C0,
            lambda v: {"gateway": Credential("gw", v)},
            "gateway password in mode 'headers'",
            id="c0-control",
        ),
        pytest.param(
            DEL,
            lambda v: {"gateway": Credential(v, "p")},
            "gateway user name in mode 'headers'",
            id="del",
        ),
        pytest.param(
            C1,
            lambda v: {"secret_headers": {"X-Api-Key": v}},
            "secret header 'X-Api-Key'",
            id="c1-control",
        ),
    ],
)
def test_non_wire_safe_values_are_refused_when_built(
    value: str, build: Callable[[str], dict[str, object]], field: str
) -> None:
    with pytest.raises(InvalidEntryError) as caught:
        ServiceEntry(url="https://gw.example.com/p/", **build(value))  # type: ignore[arg-type]
    message = str(caught.value)
    assert message.startswith("entry https://gw.example.com:443/p: ")
    assert field in message and "cannot be sent in an HTTP header" in message
    # Neither the message nor anything reachable from the exception holds the value.
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    for exc in _chain(caught.value):
        texts = [str(exc), repr(exc), *map(str, exc.args), str(getattr(exc, "object", ""))]
        for text in texts:
            assert "SECRET" not in text
            assert not any(fragment in text for fragment in _fragments(value)), text


@pytest.mark.parametrize(
    "options",
    [
        {"request": Credential(NOT_LATIN1, NOT_LATIN1)},  # basic: base64 of UTF-8
        {"gateway_auth": "basic", "gateway": Credential(NOT_LATIN1, NOT_LATIN1)},
        {"request_auth": "ntlm", "request": Credential(NOT_LATIN1, NOT_LATIN1)},  # UTF-16
        {"request_auth": "digest", "request": Credential("alice", NOT_LATIN1)},  # hashed
        {"gateway": Credential("gr\u00fc\u00df", "caf\u00e9 \u00ff\tSECRET")},  # Latin-1
    ],
)
def test_encoded_values_may_hold_any_character_and_literal_ones_latin1(
    options: dict[str, object],
) -> None:
    ServiceEntry(url="https://gw.example.com/p/", **options)  # type: ignore[arg-type]


def test_basic_credentials_with_non_ascii_characters_reach_the_server() -> None:
    user, password = "j\u00fcrgen-\u4e2d", "p\u00e4ss-\u20ac-SECRET"
    registry = open_registry("memory://", MasterKey.generate())
    with GatewayServer(expect_request=(user, password)) as server:
        registry.put(ServiceEntry(url=f"{server.url}/api/", request=Credential(user, password)))
        with SecureSession(registry) as session:
            response = session.get(f"{server.url}/api/x", timeout=10)
    registry.close()
    assert response.status_code == 200, response.text
    authorization = server.requests[-1].header("Authorization")
    assert authorization is not None and authorization.startswith("Basic ")


# -- mode "wsse": a credential kept for the SOAP envelope, never sent as HTTP ------------

WSSE_USER, WSSE_PASSWORD = "soap-alice", "wsse-SECRET-pw"


def test_none_with_a_credential_is_refused_and_points_to_wsse() -> None:
    with pytest.raises(InvalidEntryError, match="use request_auth='wsse'") as caught:
        ServiceEntry(url="https://h/", request=Credential("u", "p-SECRET"), request_auth="none")
    assert "request credential is given but request_auth is 'none'" in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"request": Credential.token("t-SECRET"), "request_auth": "wsse"},
            "request_auth 'wsse' needs a user name",
        ),
        (
            {
                "gateway": Credential("g", "g-SECRET"),
                "gateway_auth": "wsse",
                "request": Credential("r", "r-SECRET"),
                "request_auth": "wsse",
            },
            "gateway and request credentials are both 'wsse'",
        ),
        (
            {"request": Credential("u", "a\x01-SECRET"), "request_auth": "wsse"},
            "request password in mode 'wsse' holds a character that XML cannot carry",
        ),
        (
            {"gateway": Credential("u\ufffe", "g-SECRET"), "gateway_auth": "wsse"},
            "gateway user name in mode 'wsse' holds a character that XML cannot carry",
        ),
        (
            {"request": Credential("u", "line\r\n-SECRET"), "request_auth": "wsse"},
            "request password contains a line break",
        ),
    ],
)
def test_inconsistent_wsse_credentials_are_refused(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidEntryError, match=message) as caught:
        ServiceEntry(url="https://soap.example/svc", **options)  # type: ignore[arg-type]
    assert "SECRET" not in str(caught.value)


def test_wsse_values_are_xml_text_not_header_values() -> None:
    # Not written into a header: any character XML carries is fine, Latin-1 or not.
    entry = ServiceEntry(
        url="https://soap.example/svc",
        gateway=Credential("bridge", "gw-SECRET"),  # headers, as usual
        request=Credential("j\u00fcrgen-\u4e2d:x", f"{NOT_LATIN1}\t:x"),  # ':' is fine too
        request_auth="wsse",
    )
    assert "SECRET" not in repr(entry)
    # Either role may hold it, beside an HTTP credential of the other.
    ServiceEntry(
        url="https://soap.example/svc",
        gateway=Credential(WSSE_USER, WSSE_PASSWORD),
        gateway_auth="wsse",
        request=Credential("alice", "alice-SECRET"),
        request_auth="basic",
    )


def test_a_wsse_credential_is_sealed_and_never_sent_as_http(tmp_path: Path) -> None:
    from securesession.cli._output import describe_entry

    directory = tmp_path / "registry"
    directory.mkdir()
    key = MasterKey.generate()
    registry = open_registry(f"sqlite:///{directory / 'registry.db'}", key)
    with GatewayServer(expect_gateway=("bridge", "gw-SECRET")) as server:
        registry.put(
            ServiceEntry(
                url=f"{server.url}/soap",
                gateway=Credential("bridge", "gw-SECRET"),
                request=Credential(WSSE_USER, WSSE_PASSWORD),
                request_auth="wsse",
            )
        )
        registry.close()
        stored = b"".join(path.read_bytes() for path in directory.iterdir())
        assert WSSE_PASSWORD.encode() not in stored and WSSE_USER.encode() not in stored

        registry = open_registry(f"sqlite:///{directory / 'registry.db'}", key)
        entry = registry.get(f"{server.url}/soap")
        assert entry is not None and entry.request_auth == "wsse"
        assert entry.request == Credential(WSSE_USER, WSSE_PASSWORD)
        with SecureSession(registry) as session:
            plan = session._guard.plan_for(f"{server.url}/soap/x")
            assert plan is not None
            assert [name for name, _ in plan.headers] == ["X-Gateway-User", "X-Gateway-Password"]
            assert plan.auth is None
            response = session.post(f"{server.url}/soap/x", data=b"<x/>", timeout=10)
        registry.close()
    assert response.status_code == 200, response.text
    (seen,) = server.requests
    assert seen.header("Authorization") is None
    text = " ".join(f"{name}: {value}" for name, value in seen.headers.items())
    assert WSSE_PASSWORD not in text and WSSE_USER not in text
    assert not leaks(text.replace("gw-SECRET", ""))  # nor base64 of it
    assert describe_entry(entry)["request"] == {"auth": "wsse", "headers": []}
