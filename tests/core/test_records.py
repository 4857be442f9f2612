"""The public records (entry, credential, TLS profile, client certificate) are built
without the dataclasses module, and still behave as the frozen dataclasses of 0.1."""

from __future__ import annotations

import dataclasses
import sys
import threading

import pytest

from securesession import ClientCertificate, Credential, Secret, ServiceEntry, TLSProfile
from securesession._record import Record
from securesession.testing import CertificateAuthority

PASSWORD = "records-SECRET"


@pytest.fixture(scope="module")
def certificate() -> ClientCertificate:
    client = CertificateAuthority("records CA").issue_client("records-client")
    return ClientCertificate.from_pem(
        client.chain_pem, client.encrypted_key_pem(PASSWORD.encode()), PASSWORD
    )


def _entry(certificate: ClientCertificate) -> ServiceEntry:
    return ServiceEntry(
        url="https://gw.example/pay",
        gateway=Credential("gw", "gw-SECRET"),
        secret_headers={"X-Api-Key": "key-SECRET"},
        tls=TLSProfile(client_cert=certificate, version="1.3"),
    )


def test_dataclasses_functions_see_the_fields_of_0_1(certificate: ClientCertificate) -> None:
    entry = _entry(certificate)
    for record in (entry, entry.gateway, entry.tls, certificate):
        assert dataclasses.is_dataclass(record)
    assert [field.name for field in dataclasses.fields(ServiceEntry)] == [
        "url", "gateway", "request", "gateway_auth", "request_auth", "gateway_headers",
        "request_headers", "secret_headers", "description", "tls", "revision", "updated_at",
    ]  # fmt: skip
    assert [field.name for field in dataclasses.fields(Credential)] == ["username", "password"]
    assert [field.name for field in dataclasses.fields(ClientCertificate)] == [
        "format", "data", "password",
    ]  # fmt: skip
    assert not dataclasses.is_dataclass(Record)


def test_dataclasses_replace_builds_a_checked_copy(certificate: ClientCertificate) -> None:
    entry = _entry(certificate)
    moved = dataclasses.replace(entry, url="https://GW.example/other/", description="moved")
    assert (moved.url, moved.description) == ("https://gw.example:443/other", "moved")
    assert (moved.gateway, moved.secret_headers, moved.tls) == (
        entry.gateway,
        entry.secret_headers,
        entry.tls,
    )
    assert entry.url == "https://gw.example:443/pay"  # the original is untouched
    assert entry.tls is not None
    assert dataclasses.replace(entry.tls, version="1.2").versions == ("1.2", "1.2")
    renamed = dataclasses.replace(Credential("u", "p-SECRET"), username="v")
    assert renamed == Credential("v", "p-SECRET")
    # The constructor runs: a replacement is checked as a new record is.
    with pytest.raises(ValueError, match="TLS profile needs an https:// URL"):
        dataclasses.replace(entry, url="http://gw.example/pay")
    # 0.1's ClientCertificate refused replace (its facts were constructor fields).
    same = dataclasses.replace(certificate, password=Secret(PASSWORD))
    assert same == certificate and same.subject == certificate.subject


def test_records_are_immutable(certificate: ClientCertificate) -> None:
    entry = _entry(certificate)
    for record, name in (
        (entry, "url"),
        (entry.gateway, "password"),
        (entry.tls, "version"),
        (certificate, "data"),
    ):
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"field '{name}'"):
            setattr(record, name, None)
        with pytest.raises(dataclasses.FrozenInstanceError, match=f"field '{name}'"):
            delattr(record, name)
    with pytest.raises(AttributeError):
        certificate.subject = "CN=someone else"


class _Point(Record, uncompared=frozenset({"label"})):
    """A record no test has made a dataclass yet (the public ones may already be)."""

    x: int
    y: int
    label: str

    def __init__(self, x: int, y: int, label: str = "") -> None:
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "label", label)

    def __hash__(self) -> int:
        return hash((self.x, self.y))


def test_a_record_compares_its_values_and_matches_by_position() -> None:
    assert "__dataclass_fields__" not in vars(_Point)  # not a dataclass yet
    with pytest.raises(AttributeError, match="cannot assign to field 'x'"):
        _Point(1, 2).x = 3  # type: ignore[misc]
    assert _Point(1, 2, "a") == _Point(1, 2, "b")  # label is not compared
    assert _Point(1, 2) != _Point(2, 1)
    assert _Point(1, 2).__eq__((1, 2)) is NotImplemented
    assert len({_Point(1, 2, "a"), _Point(1, 2, "b")}) == 1
    match _Point(1, 2, "here"):
        case _Point(x, y, label):
            assert (x, y, label) == (1, 2, "here")
        case _:
            pytest.fail("positional pattern did not match")


def test_entries_compare_their_settings_not_their_revision(
    certificate: ClientCertificate,
) -> None:
    entry = _entry(certificate)
    assert entry.with_metadata(revision=9) == entry
    assert dataclasses.replace(entry, description="other") != entry
    assert dataclasses.replace(entry, gateway=Credential("gw", "new-SECRET")) != entry


def test_threads_that_ask_at_once_make_the_class_a_dataclass_once() -> None:
    class Pair(Record):
        left: int
        right: int

        def __init__(self, left: int, right: int) -> None:
            object.__setattr__(self, "left", left)
            object.__setattr__(self, "right", right)

        def __hash__(self) -> int:
            return hash(self.left)

    start = threading.Barrier(8)
    names: list[list[str]] = []

    def ask() -> None:
        start.wait()
        names.append([field.name for field in dataclasses.fields(Pair)])

    threads = [threading.Thread(target=ask) for _ in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads interleave inside the conversion
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert names == [["left", "right"]] * 8
    assert dataclasses.replace(Pair(1, 2), right=3) == Pair(1, 3)


def test_a_subclass_compares_its_base_fields_and_becomes_a_dataclass_with_them() -> None:
    class Base(Record):
        x: int

        def __init__(self, x: int, label: str = "") -> None:
            object.__setattr__(self, "x", x)
            object.__setattr__(self, "label", label)

        def __hash__(self) -> int:
            return hash(self.x)

    class Labelled(Base, uncompared=frozenset({"label"})):
        label: str

    assert Labelled(1, "") != Labelled(2, "")  # x is compared, inherited from Base
    assert Labelled(1, "a") == Labelled(1, "b")
    assert Labelled.__match_args__ == ("x", "label")
    # Asked first, the subclass converts its base too (a plain lock would deadlock here).
    done = threading.Event()
    names: list[str] = []

    def ask() -> None:
        names.extend(field.name for field in dataclasses.fields(Labelled))
        done.set()

    threading.Thread(target=ask, daemon=True).start()
    assert done.wait(10), "dataclasses.fields on a subclass did not return"
    assert names == ["x", "label"]
    assert dataclasses.is_dataclass(Base)


def test_copy_replace_works_before_dataclasses_is_asked(certificate: ClientCertificate) -> None:
    # Python 3.13's copy.replace calls __replace__, which dataclasses adds only when a
    # class is converted: the records define it themselves.
    entry = _entry(certificate)
    assert entry.__replace__(description="moved").description == "moved"
    assert entry.gateway is not None
    assert entry.gateway.__replace__(username="other").username == "other"
    if sys.version_info >= (3, 13):
        import copy

        assert copy.replace(entry, description="moved").description == "moved"  # type: ignore[attr-defined]
