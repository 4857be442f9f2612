"""Values equal by value hash alike (Python's rule), so sets and dict keys work."""

from __future__ import annotations

from securesession import Credential, Secret, ServiceEntry


def test_equal_secrets_hash_alike_and_work_in_sets() -> None:
    assert Secret("x-SECRET") in {Secret("x-SECRET")}
    assert hash(Secret("x-SECRET")) == hash(Secret(Secret("x-SECRET")))
    assert len({Secret("a"), Secret("a"), Secret("b")}) == 2
    # The hash is keyed per process: it is not the hash of the clear value.
    assert hash(Secret("x-SECRET")) != hash("x-SECRET")


def test_equal_credentials_and_entries_hash_alike() -> None:
    assert Credential("u", "p-SECRET") in {Credential("u", "p-SECRET")}
    first = ServiceEntry(url="https://gw.example/a", gateway=Credential("g", "g-SECRET"))
    again = ServiceEntry(url="https://GW.example/a/", gateway=Credential("g", "g-SECRET"))
    changed = ServiceEntry(url="https://gw.example/a", gateway=Credential("g", "other-SECRET"))
    assert first == again and hash(first) == hash(again)
    assert first.with_metadata(revision=7) in {again}
    assert changed != first
    assert len({first, again, changed}) == 2
