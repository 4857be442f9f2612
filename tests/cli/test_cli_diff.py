"""``securesession diff SRC DST``: two real SQLite registries under different keys,
every category of difference, ``--map`` both ways and what it refuses, the exit codes
(0 same, 1 differ, 2 error), the JSON schema, and no secret in any output."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from securesession import ClientCertificate, Credential, Secret, ServiceEntry, TLSProfile
from securesession.testing import CertificateAuthority

from .clihelp import CLI
from .synchelp import Env, key_args, securesession, sqlite_env

TEST = "https://gw.test.example"
PROD = "https://gw.prod.example"
PIN_A = "sha256/" + "A" * 43 + "="
PIN_B = "sha256/" + "B" * 43 + "="


def pay(base: str, *, password: str = "gwSECRET-pay", **changes: Any) -> ServiceEntry:
    fields: dict[str, Any] = {
        "gateway": Credential("gw-pay", password),
        "request": Credential("alice", "reqSECRET-pay"),
        "secret_headers": {"X-Api-Key": "keySECRET-pay"},
        "description": "payments",
    }
    fields.update(changes)
    return ServiceEntry(f"{base}/pay", **fields)


def hr(base: str) -> ServiceEntry:
    return ServiceEntry(f"{base}/hr", request=Credential("bob", "hrSECRET"), request_auth="bearer")


@pytest.fixture
def test_env(tmp_path: Path) -> Env:
    return sqlite_env(tmp_path, "test", [pay(TEST), hr(TEST)])


@pytest.fixture
def prod_env(tmp_path: Path) -> Env:
    return sqlite_env(tmp_path, "prod", [pay(PROD), hr(PROD)])


def diff_json(capsys: pytest.CaptureFixture[str], src: Env, dst: Env, *extra: str) -> Any:
    result = securesession(capsys, "diff", src.url, dst.url, *key_args(src, dst), "--json", *extra)
    assert result.code in (0, 1), result
    document = json.loads(result.stdout)
    assert result.code == (0 if document["same"] else 1)
    return document


def by_url(document: Any) -> dict[str, Any]:
    return {item["url"]: item for item in document["entries"]}


def test_registries_with_the_same_entries_under_different_keys_are_the_same(
    tmp_path: Path, test_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = sqlite_env(tmp_path, "copy", [pay(TEST), hr(TEST)])
    assert copy.key.key_id != test_env.key.key_id
    result = securesession(capsys, "diff", test_env.url, copy.url, *key_args(test_env, copy))
    assert result.code == 0, result
    assert "0 only in SRC, 0 only in DST, 0 changed, 2 the same" in result.stdout
    document = diff_json(capsys, test_env, copy)
    assert document["same"] is True
    assert document["summary"] == {"only_in_src": 0, "only_in_dst": 0, "changed": 0, "same": 2}
    assert [item["status"] for item in document["entries"]] == ["same", "same"]


def test_every_category_and_each_secret_field_as_same_or_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = sqlite_env(
        tmp_path,
        "src",
        [
            pay(TEST, password="gwSECRET-new", description="payments v2"),
            ServiceEntry(f"{TEST}/only-src", request=Credential("u", "srcSECRET")),
            ServiceEntry(
                f"{TEST}/headers",
                secret_headers={"X-A": Secret("aSECRET"), "X-B": Secret("bSECRET")},
            ),
        ],
    )
    dst = sqlite_env(
        tmp_path,
        "dst",
        [
            pay(TEST),
            ServiceEntry(f"{TEST}/only-dst", request=Credential("u", "dstSECRET")),
            ServiceEntry(
                f"{TEST}/headers",
                secret_headers={"X-A": Secret("aSECRET"), "X-C": Secret("cSECRET")},
            ),
        ],
    )
    document = diff_json(capsys, src, dst)
    assert document["same"] is False
    assert document["summary"] == {"only_in_src": 1, "only_in_dst": 1, "changed": 2, "same": 0}
    entries = by_url(document)
    assert entries["https://gw.test.example:443/only-src"]["status"] == "only_in_src"
    assert entries["https://gw.test.example:443/only-dst"]["status"] == "only_in_dst"
    changed = entries["https://gw.test.example:443/pay"]
    assert changed["status"] == "changed"
    assert changed["settings"] == [{"name": "description", "src": "payments v2", "dst": "payments"}]
    secrets = {item["name"]: item for item in changed["secrets"]}
    assert {name: item["status"] for name, item in secrets.items()} == {
        "gateway.password": "differs",
        "gateway.username": "same",
        "header.X-Api-Key": "same",
        "request.password": "same",
        "request.username": "same",
    }
    headers = {
        item["name"]: item for item in entries["https://gw.test.example:443/headers"]["secrets"]
    }
    assert headers["header.X-A"] == {
        "name": "header.X-A",
        "status": "same",
        "in_src": True,
        "in_dst": True,
    }
    assert headers["header.X-B"] == {
        "name": "header.X-B",
        "status": "differs",
        "in_src": True,
        "in_dst": False,
    }
    assert headers["header.X-C"]["in_src"] is False and headers["header.X-C"]["status"] == "differs"

    text = securesession(capsys, "diff", src.url, dst.url, *key_args(src, dst))
    assert text.code == 1
    lines = text.stdout.splitlines()
    assert "only in SRC  https://gw.test.example:443/only-src" in lines
    assert "only in DST  https://gw.test.example:443/only-dst" in lines
    assert "changed      https://gw.test.example:443/pay" in lines
    assert '    description: src "payments v2", dst "payments"' in lines
    assert "    secret gateway.password: differs" in lines
    assert "    secret header.X-Api-Key: same" in lines
    assert "    secret header.X-B: differs (only in SRC)" in lines
    assert lines[-1] == "1 only in SRC, 1 only in DST, 2 changed, 0 the same"


def test_a_secret_that_differs_only_in_value_is_a_change_but_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = sqlite_env(tmp_path, "src", [hr(TEST)])
    changed = ServiceEntry(
        f"{TEST}/hr", request=Credential("bob", "hrSECRET-rotated"), request_auth="bearer"
    )
    dst = sqlite_env(tmp_path, "dst", [changed])
    document = diff_json(capsys, src, dst)
    (item,) = document["entries"]
    assert item["status"] == "changed" and item["settings"] == []
    assert {s["name"]: s["status"] for s in item["secrets"]} == {
        "request.password": "differs",
        "request.username": "same",
    }
    assert "hrSECRET" not in json.dumps(document)  # also checked for every run by securesession()


def test_the_json_schema(test_env: Env, prod_env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    document = diff_json(capsys, test_env, prod_env, "--map", f"{TEST}={PROD}")
    assert set(document) == {"src", "dst", "map", "same", "summary", "entries"}
    for side, env in (("src", test_env), ("dst", prod_env)):
        assert document[side] == {"registry": env.url, "key_id": env.key.key_id}
    assert document["map"] == [
        {"src": "https://gw.test.example:443/", "dst": "https://gw.prod.example:443/"}
    ]
    for item in document["entries"]:
        assert set(item) == {"status", "url", "src_url", "settings", "secrets", "warnings"}
        assert item["status"] in ("only_in_src", "only_in_dst", "changed", "same")
        for secret in item["secrets"]:
            assert set(secret) == {"name", "status", "in_src", "in_dst"}
            assert secret["status"] in ("same", "differs")


def test_map_compares_across_host_names_both_ways(
    test_env: Env, prod_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    unmapped = diff_json(capsys, test_env, prod_env)
    assert unmapped["summary"] == {"only_in_src": 2, "only_in_dst": 2, "changed": 0, "same": 0}

    forward = diff_json(capsys, test_env, prod_env, "--map", f"{TEST}={PROD}")
    assert forward["same"] is True
    assert by_url(forward)["https://gw.prod.example:443/pay"]["src_url"] == (
        "https://gw.test.example:443/pay"
    )
    backward = diff_json(capsys, prod_env, test_env, "--map", f"{PROD}/={TEST}")
    assert backward["same"] is True
    assert sorted(by_url(backward)) == [
        "https://gw.test.example:443/hr",
        "https://gw.test.example:443/pay",
    ]


def test_map_by_path_prefix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = sqlite_env(tmp_path, "src", [pay(f"{TEST}/v1"), hr(f"{TEST}/v1")])
    dst = sqlite_env(tmp_path, "dst", [pay(f"{PROD}:8443/api"), hr(f"{PROD}:8443/api")])
    document = diff_json(capsys, src, dst, "--map", f"{TEST}/v1={PROD}:8443/api")
    assert document["same"] is True
    # /v1x is not below /v1: a map follows path-segment boundaries.
    src.put(hr(f"{TEST}/v1x"))
    document = diff_json(capsys, src, dst, "--map", f"{TEST}/v1={PROD}:8443/api")
    assert by_url(document)["https://gw.test.example:443/v1x/hr"]["status"] == "only_in_src"


def test_a_mapped_entry_warns_about_settings_tied_to_the_source_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = sqlite_env(
        tmp_path,
        "src",
        [pay(TEST, description="via gw.test.example", tls=TLSProfile(pins=[PIN_A]))],
    )
    dst = sqlite_env(tmp_path, "dst", [pay(PROD, tls=TLSProfile(pins=[PIN_B]))])
    document = diff_json(capsys, src, dst, "--map", f"{TEST}={PROD}")
    (item,) = document["entries"]
    assert {"name": "tls.pins", "src": [PIN_A], "dst": [PIN_B]} in item["settings"]
    warnings = " ".join(item["warnings"])
    assert "description names gw.test.example" in warnings
    assert "TLS pins come from SRC" in warnings


def test_a_tls_profile_on_one_side_only_is_one_change(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = sqlite_env(tmp_path, "src", [pay(TEST, tls=TLSProfile(pins=[PIN_A]))])
    dst = sqlite_env(tmp_path, "dst", [pay(TEST)])
    (item,) = diff_json(capsys, src, dst)["entries"]
    (change,) = item["settings"]
    assert change["name"] == "tls" and change["dst"] is None and change["src"]["pins"] == [PIN_A]


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (f"{TEST}=http://gw.prod.example", "changes the scheme (https -> http)"),
        ("http://gw.test.example=https://gw.prod.example", "changes the scheme (http -> https)"),
        (f"{TEST}={PROD}/?x=1", "query or fragment"),
        (f"{TEST}", "takes SRC_PREFIX=DST_PREFIX"),
        (f"{TEST}=ftp://gw.prod.example", "takes SRC_PREFIX=DST_PREFIX"),
        (f"{TEST}=https://user@gw.prod.example", "user information"),
    ],
)
def test_map_rules_that_are_refused(
    test_env: Env,
    prod_env: Env,
    capsys: pytest.CaptureFixture[str],
    rule: str,
    message: str,
) -> None:
    result = securesession(
        capsys, "diff", test_env.url, prod_env.url, *key_args(test_env, prod_env), "--map", rule
    )
    assert result.code == 2, result
    assert message in result.stderr and result.stdout == ""


def test_map_refuses_two_entries_onto_one(
    tmp_path: Path, prod_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    src = sqlite_env(tmp_path, "src", [hr(TEST), hr("https://gw.stage.example")])
    result = securesession(
        capsys,
        "diff",
        src.url,
        prod_env.url,
        *key_args(src, prod_env),
        "--map",
        f"{TEST}={PROD}",
        "--map",
        f"https://gw.stage.example={PROD}",
    )
    assert result.code == 2, result
    assert "would both become https://gw.prod.example:443/hr" in result.stderr


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        # /pay/admin's credentials would also serve the new /x (under /pay's image, /x).
        (
            [f"{TEST}/pay/admin={PROD}/x", f"{TEST}/pay={PROD}/x/y"],
            "is below no other entry in SRC, but as https://gw.prod.example:443/x/y it would "
            "be below https://gw.prod.example:443/x",
        ),
        # /pay/admin leaves /pay's subtree: nothing above it in DST.
        (
            [f"{TEST}/pay/admin={PROD}/admin"],
            "is below https://gw.test.example:443/pay in SRC, but as "
            "https://gw.prod.example:443/admin it would be below no other entry",
        ),
    ],
)
def test_map_refuses_to_change_which_entry_a_url_uses(
    tmp_path: Path,
    prod_env: Env,
    capsys: pytest.CaptureFixture[str],
    maps: list[str],
    message: str,
) -> None:
    admin = ServiceEntry(f"{TEST}/pay/admin", request=Credential("root", "rootSECRET"))
    src = sqlite_env(tmp_path, "src", [pay(TEST), admin])
    map_args = [arg for rule in maps for arg in ("--map", rule)]
    result = securesession(
        capsys, "diff", src.url, prod_env.url, *key_args(src, prod_env), *map_args
    )
    assert result.code == 2, result
    assert "--map changes which entry URLs use" in result.stderr
    assert message in result.stderr


def test_map_that_keeps_the_nesting_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = ServiceEntry(f"{TEST}/pay/admin", request=Credential("root", "rootSECRET"))
    src = sqlite_env(tmp_path, "src", [pay(TEST), admin])
    dst = sqlite_env(tmp_path, "dst")
    # Two rules, the inner one consistent with the outer: still nested the same way.
    maps = ["--map", f"{TEST}={PROD}", "--map", f"{TEST}/pay/admin={PROD}/pay/admin"]
    document = diff_json(capsys, src, dst, *maps)
    assert sorted(by_url(document)) == [
        "https://gw.prod.example:443/pay",
        "https://gw.prod.example:443/pay/admin",
    ]


def test_keys_from_environment_variables(
    test_env: Env,
    prod_env: Env,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_KEY", test_env.key_file.read_text().strip())
    monkeypatch.setenv("PROD_KEY", prod_env.key_file.read_text().strip())
    result = securesession(
        capsys,
        "diff",
        test_env.url,
        prod_env.url,
        "--src-key-env",
        "TEST_KEY",
        "--dst-key-env",
        "PROD_KEY",
        "--map",
        f"{TEST}={PROD}",
    )
    assert result.code == 0, result


def test_errors_exit_2(
    tmp_path: Path, test_env: Env, prod_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    swapped = ["--src-key-file", str(prod_env.key_file), "--dst-key-file", str(prod_env.key_file)]
    wrong_key = securesession(capsys, "diff", test_env.url, prod_env.url, *swapped)
    assert wrong_key.code == 2
    assert "SRC registry" in wrong_key.stderr and "--src-key-file" in wrong_key.stderr
    missing = securesession(
        capsys, "diff", test_env.url, f"sqlite://{tmp_path}/nope.db", *key_args(test_env, prod_env)
    )
    assert missing.code == 2 and "does not exist" in missing.stderr
    memory = securesession(capsys, "diff", test_env.url, "memory://", *key_args(test_env, prod_env))
    assert memory.code == 2 and "memory://" in memory.stderr
    no_key = securesession(capsys, "diff", test_env.url, prod_env.url, "--src-key-file", "x")
    assert no_key.code == 2 and "--dst-key-file" in no_key.stderr
    unset = securesession(
        capsys,
        "diff",
        test_env.url,
        prod_env.url,
        "--src-key-env",
        "UNSET_KEY_VAR",
        "--dst-key-file",
        str(prod_env.key_file),
    )
    assert unset.code == 2 and "UNSET_KEY_VAR" in unset.stderr


def test_the_console_script(tmp_path: Path, test_env: Env, prod_env: Env) -> None:
    """The real command in a subprocess: exit codes, and no secret in its output."""
    cli = CLI(tmp_path / "home")
    mapped = ["--map", f"{TEST}={PROD}"]
    same = cli.run("diff", test_env.url, prod_env.url, *key_args(test_env, prod_env), *mapped)
    assert same.code == 0, same
    differ = cli.run("diff", test_env.url, prod_env.url, *key_args(test_env, prod_env))
    assert differ.code == 1 and "2 only in SRC, 2 only in DST" in differ.stdout


def test_a_key_given_where_its_variable_name_belongs_is_not_repeated(
    test_env: Env, prod_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    key_text = test_env.key_file.read_text().strip()
    result = securesession(
        capsys,
        "diff",
        test_env.url,
        prod_env.url,
        "--src-key-env",
        key_text,
        "--dst-key-file",
        str(prod_env.key_file),
    )
    assert result.code == 2
    assert "--src-key-env takes the name of an environment variable" in result.stderr
    assert key_text not in result.output


def test_a_client_certificate_and_its_passphrase_are_secret_fields(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The certificate bundle holds the private key: reported as same/differs only."""
    ca = CertificateAuthority("diff test CA")
    bundles = [ca.issue_client(name).pkcs12(b"pfxSECRET-diff") for name in ("client-a", "client-b")]

    def with_cert(bundle: bytes) -> ServiceEntry:
        cert = ClientCertificate.from_pkcs12(bundle, "pfxSECRET-diff")
        return pay(TEST, tls=TLSProfile(client_cert=cert))

    src = sqlite_env(tmp_path, "src", [with_cert(bundles[0])])
    dst = sqlite_env(tmp_path, "dst", [with_cert(bundles[1])])
    result = securesession(capsys, "diff", src.url, dst.url, *key_args(src, dst), "--json")
    assert result.code == 1
    (item,) = json.loads(result.stdout)["entries"]
    secrets = {secret["name"]: secret["status"] for secret in item["secrets"]}
    assert secrets["tls.client_cert"] == "differs"
    assert secrets["tls.client_cert.password"] == "same"
    assert not any(change["name"] == "tls.client_cert" for change in item["settings"])
    for bundle in bundles:
        assert base64.b64encode(bundle).decode()[:40] not in result.output
    assert "PRIVATE KEY" not in result.output


@pytest.mark.parametrize("option", ["--registry", "--key-file"])
def test_the_one_registry_options_are_refused_not_ignored(
    test_env: Env, prod_env: Env, capsys: pytest.CaptureFixture[str], option: str
) -> None:
    for command in ("diff", "sync"):
        result = securesession(
            capsys,
            option,
            prod_env.url if option == "--registry" else str(prod_env.key_file),
            command,
            test_env.url,
            prod_env.url,
            *key_args(test_env, prod_env),
        )
        assert result.code == 2, result
        assert f"{option} does not apply here" in result.stderr


def _files(env: Env) -> tuple[bytes, bytes]:
    """The registry's database file and its -wal (empty if absent: a WAL reader may
    leave an empty one, and a -shm, beside the file, which are no change to it)."""
    db = Path(env.url.removeprefix("sqlite://"))
    wal = db.with_name(db.name + "-wal")
    return db.read_bytes(), wal.read_bytes() if wal.exists() else b""


def _sql(env: Env, statement: str) -> None:
    with contextlib.closing(sqlite3.connect(env.url.removeprefix("sqlite://"))) as db, db:
        db.execute(statement)


@pytest.mark.parametrize("command", [["diff"], ["sync"]], ids=["diff", "sync-plan"])
def test_a_diff_or_a_sync_plan_writes_to_neither_registry(
    test_env: Env, prod_env: Env, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """Neither registry records a key id (a writer's open would, where none is recorded)
    nor anything else: both files stay byte for byte as they were."""
    for env in (test_env, prod_env):
        _sql(env, "DELETE FROM meta WHERE name = 'key_id'")
    before = (_files(test_env), _files(prod_env))
    result = securesession(
        capsys, *command, test_env.url, prod_env.url, *key_args(test_env, prod_env)
    )
    assert result.code in (0, 1), result
    assert "secret gateway.password: differs" not in result.stdout  # the same passwords
    assert (_files(test_env), _files(prod_env)) == before


def test_a_registry_that_needs_a_schema_upgrade_is_not_upgraded_by_a_diff(
    test_env: Env, prod_env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    _sql(test_env, "UPDATE schema_version SET version = 2")  # as an older securesession left it
    before = _files(test_env)
    result = securesession(
        capsys, "diff", test_env.url, prod_env.url, *key_args(test_env, prod_env)
    )
    assert result.code == 2, result
    assert "needs a schema upgrade (it has version 2" in result.stderr
    assert "open it once with write access" in result.stderr
    assert _files(test_env) == before
