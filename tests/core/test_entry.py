"""ServiceEntry validation and the redaction of secrets in reprs."""

from __future__ import annotations

import pickle

import pytest

from securesession import Credential, InvalidEntryError, Secret, ServiceEntry


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
    assert len({Secret("a"), Secret("a")}) == 2  # hashed by identity, never by value
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
