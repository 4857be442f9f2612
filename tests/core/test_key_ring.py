"""KeyRing: tokens under several keys, the roles and their transitions, the text format
of key files and the environment variable, and the errors for bad ones (which never
carry key material)."""

from __future__ import annotations

import pickle
import stat
from pathlib import Path

import pytest

from securesession import DecryptionError, KeyRing, MasterKey, MasterKeyError
from securesession._crypto import token_key_id

CONTEXT = b"entry https://gw.example.test/ field gateway.password"


@pytest.fixture
def keys() -> tuple[MasterKey, MasterKey, MasterKey]:
    """Three keys: to be active, staged and previous."""
    return MasterKey.generate(), MasterKey.generate(), MasterKey.generate()


def ring_of(keys: tuple[MasterKey, MasterKey, MasterKey]) -> KeyRing:
    active, staged, previous = keys
    return KeyRing(active, staged=staged, previous=[previous])


# -- tokens ------------------------------------------------------------------------------


def test_encrypts_with_the_active_key_and_decrypts_with_the_key_a_token_names(
    keys: tuple[MasterKey, MasterKey, MasterKey],
) -> None:
    ring = ring_of(keys)
    active, staged, previous = keys
    token = ring.encrypt(b"secret", CONTEXT)
    assert token_key_id(token) == active.key_id == ring.key_id
    assert active.decrypt(token, CONTEXT) == b"secret"
    for key in keys:
        assert ring.decrypt(key.encrypt(b"from " + key.key_id.encode(), CONTEXT), CONTEXT) == (
            b"from " + key.key_id.encode()
        )
    assert ring.holds(staged.key_id) and ring.holds(previous.key_id)


def test_a_token_under_a_key_the_ring_lacks_names_that_key_id_only(
    keys: tuple[MasterKey, MasterKey, MasterKey],
) -> None:
    ring = ring_of(keys)
    stranger = MasterKey.generate()
    with pytest.raises(DecryptionError) as refused:
        ring.decrypt(stranger.encrypt(b"x", CONTEXT), CONTEXT)
    message = str(refused.value)
    assert stranger.key_id in message and "wrong master key" in message
    assert not ring.holds(stranger.key_id)
    for key in (*keys, stranger):
        assert key.to_base64() not in message


def test_a_tampered_token_under_a_held_key_is_one_opaque_error(
    keys: tuple[MasterKey, MasterKey, MasterKey],
) -> None:
    ring = ring_of(keys)
    token = keys[1].encrypt(b"secret", CONTEXT)
    with pytest.raises(DecryptionError, match="failed authentication"):
        ring.decrypt(token, CONTEXT + b"moved")
    with pytest.raises(DecryptionError, match="not a securesession token"):
        ring.decrypt("!!not a token!!", CONTEXT)


def test_repr_shows_key_ids_only_and_a_ring_cannot_be_pickled(
    keys: tuple[MasterKey, MasterKey, MasterKey],
) -> None:
    ring = ring_of(keys)
    active, staged, previous = keys
    assert repr(ring) == (
        f"KeyRing(active={active.key_id!r}, staged={staged.key_id!r}, "
        f"previous=({previous.key_id!r},))"
    )
    for key in keys:
        assert key.to_base64() not in repr(ring) and key.to_base64() not in ring.describe()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(ring)


def test_a_key_is_in_a_ring_once(keys: tuple[MasterKey, MasterKey, MasterKey]) -> None:
    active = keys[0]
    with pytest.raises(MasterKeyError, match=f"key id {active.key_id} is in the key ring twice"):
        KeyRing(active, previous=[MasterKey.from_base64(active.to_base64())])
    with pytest.raises(TypeError):
        KeyRing(active, previous=["not a key"])  # type: ignore[list-item]


# -- roles and transitions ------------------------------------------------------------------


def test_stage_commit_retire(keys: tuple[MasterKey, MasterKey, MasterKey]) -> None:
    old, new, _ = keys
    ring = KeyRing(old)
    staged = ring.stage(new)
    assert (staged.key_id, staged.role(new.key_id)) == (old.key_id, "staged")
    with pytest.raises(MasterKeyError, match="staged already"):
        staged.stage(MasterKey.generate())
    committed = staged.commit()
    assert committed.active is new and committed.previous == (old,)
    assert committed.role(old.key_id) == "previous" and committed.staged is None
    with pytest.raises(MasterKeyError, match="no staged key"):
        committed.commit()
    with pytest.raises(MasterKeyError, match="is the active key"):
        committed.retire(new.key_id)
    with pytest.raises(MasterKeyError, match="has no key id"):
        committed.retire(MasterKey.generate().key_id)
    assert committed.retire(old.key_id).key_ids == (new.key_id,)
    assert staged.retire(new.key_id).key_ids == (old.key_id,)  # a staging withdrawn


def test_only_the_active_or_the_staged_key_may_write(
    keys: tuple[MasterKey, MasterKey, MasterKey],
) -> None:
    ring = ring_of(keys)
    active, staged, previous = keys
    assert ring.for_writing(active.key_id) is ring
    following = ring.for_writing(staged.key_id)
    assert following is not None and following.active is staged
    # Once it follows the staged key, the former active key is a previous one: it never
    # writes again, whatever a store says.
    assert following.for_writing(active.key_id) is None
    assert ring.for_writing(previous.key_id) is None
    assert ring.for_writing(MasterKey.generate().key_id) is None


def test_rotated_to_a_new_key_keeps_the_others_for_reading(
    keys: tuple[MasterKey, MasterKey, MasterKey],
) -> None:
    ring = ring_of(keys)
    active, staged, previous = keys
    fresh = MasterKey.generate()
    rotated = ring.rotated_to(fresh)
    assert rotated.active is fresh and rotated.staged is staged
    assert set(rotated.previous_ids) == {active.key_id, previous.key_id}
    assert ring.rotated_to(staged).active is staged
    assert ring.rotated_to(active) is ring


# -- the text format ------------------------------------------------------------------------


def test_text_round_trip_and_one_line_for_the_environment(
    keys: tuple[MasterKey, MasterKey, MasterKey],
) -> None:
    ring = ring_of(keys)
    text = ring.to_text()
    assert "version 1" in text.splitlines()
    for key in keys:
        assert f"  # key id {key.key_id}" in text  # the ids readable beside the keys
    again = KeyRing.from_text(text)
    assert [again.role(key.key_id) for key in keys] == ["active", "staged", "previous"]
    assert [again.get(key.key_id) for key in keys] == list(keys)
    active, staged, previous = keys
    one_line = (
        f"version 1; active {active.to_base64()}; staged {staged.to_base64()};"
        f" previous {previous.to_base64()}"
    )
    assert KeyRing.from_text(one_line).key_ids == ring.key_ids
    # Without the version line the format is the current one; a role line alone is a ring.
    assert KeyRing.from_text(f"active {active.to_base64()}").key_ids == (active.key_id,)


def test_a_file_with_one_bare_key_keeps_working(tmp_path: Path) -> None:
    key = MasterKey.generate()
    path = tmp_path / "master.key"
    key.save(path)
    ring = KeyRing.from_file(path)
    assert ring.active == key and ring.key_ids == (key.key_id,)
    assert MasterKey.from_file(path) == key


def test_master_key_from_a_ring_file_or_variable_is_its_active_key(
    tmp_path: Path, keys: tuple[MasterKey, MasterKey, MasterKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    ring = ring_of(keys)
    path = tmp_path / "ring.key"
    ring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert MasterKey.from_file(path) == keys[0]
    assert KeyRing.from_file(path).key_ids == ring.key_ids
    monkeypatch.setenv("RING", ring.to_text())
    assert MasterKey.from_env("RING") == keys[0]
    assert KeyRing.from_env("RING").key_ids == ring.key_ids


def test_save_refuses_to_overwrite_unless_asked(
    tmp_path: Path, keys: tuple[MasterKey, MasterKey, MasterKey]
) -> None:
    path = tmp_path / "ring.key"
    KeyRing(keys[0]).save(path)
    with pytest.raises(MasterKeyError, match="already exists"):
        ring_of(keys).save(path)
    assert KeyRing.from_file(path).key_ids == (keys[0].key_id,)
    ring_of(keys).save(path, overwrite=True)
    assert KeyRing.from_file(path).key_ids == ring_of(keys).key_ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ring.key"]  # no temporary left


def _bad_texts(a: MasterKey, b: MasterKey) -> list[tuple[str, str]]:
    ka, kb = a.to_base64(), b.to_base64()
    return [
        ("", "holds no key"),
        ("# only a comment\n\n", "holds no key"),
        (f"active {ka}\nactive {kb}", "has 2 active keys"),
        (f"staged {ka}", "has 0 active keys"),
        (f"active {ka}\nstaged {kb}\nstaged {MasterKey.generate().to_base64()}", "2 staged keys"),
        (f"active {ka}\nprevious {ka}", "line 2: the same key as line 1"),
        (f"active {ka}\nretired {kb}", "line 2: unknown role"),
        (f"{ka} active\n{kb} staged", "line 1: unknown role"),  # words swapped: never echoed
        (f"active {ka} {kb}", "line 1: expected '<role> <key>'"),
        (f"version 2\nactive {ka}", "format 2; this securesession reads format 1"),
        (f"version one\nactive {ka}", "line 1: expected 'version 1'"),
        (f"active {ka[:-3]}", "line 1: master key decodes to"),
        (f"active {ka}; previous {kb[:10]}!!", "line 1, part 2: master key is not valid"),
        (ka[:-5], "master key decodes to"),
        # The "# key id" comment is what operators read and retire by: it must be true.
        (f"active {ka}  # key id {b.key_id}", f"line 1: its comment names key id {b.key_id}"),
        (f"{ka}  # key id {b.key_id}", f"but the key's id is {a.key_id}"),
    ]


def test_bad_texts_are_clear_errors_without_key_material(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = MasterKey.generate(), MasterKey.generate()
    for number, (text, expected) in enumerate(_bad_texts(a, b)):
        path = tmp_path / f"bad{number}.key"
        path.write_text(text)
        path.chmod(0o600)
        monkeypatch.setenv("BAD_RING", text or " ")
        for source, where in (
            (path, f"key file '{path}'"),
            (None, "environment variable BAD_RING"),
        ):
            with pytest.raises(MasterKeyError) as refused:
                KeyRing.from_file(source) if source is not None else KeyRing.from_env("BAD_RING")
            message = str(refused.value)
            assert where in message, message
            if text.strip():
                assert expected in message, (text.replace(a.to_base64(), "A"), message)
            for secret in (a.to_base64(), b.to_base64(), a.to_base64()[:12], b.to_base64()[:10]):
                assert secret not in message
            assert refused.value.__cause__ is None  # no chained error to carry the text


def test_a_ring_file_is_checked_like_a_key_file(
    tmp_path: Path, keys: tuple[MasterKey, MasterKey, MasterKey]
) -> None:
    path = tmp_path / "ring.key"
    ring_of(keys).save(path)
    path.chmod(0o640)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        KeyRing.from_file(path)
    with pytest.raises(MasterKeyError, match="chmod 600"):
        MasterKey.from_file(path)
    huge = tmp_path / "huge.key"
    huge.write_text("# padding\n" * 7000 + ring_of(keys).to_text())
    huge.chmod(0o600)
    with pytest.raises(MasterKeyError, match="not a key file"):
        KeyRing.from_file(huge)
    with pytest.raises(MasterKeyError, match="does not exist"):
        KeyRing.from_file(tmp_path / "missing.key")
    with pytest.raises(MasterKeyError, match="is not set"):
        KeyRing.from_env("SECURESESSION_TEST_NO_SUCH_VARIABLE")
