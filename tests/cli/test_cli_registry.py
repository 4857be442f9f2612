"""The registry commands through the real console script: init, add, list, show,
remove, match, and every error path of the issue."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from securesession import Credential, MasterKey, Secret, ServiceEntry, open_registry

from .clihelp import CLI, one_error_line

GW = ("gw-user", "gwSECRET-1")
REQ = ("alice", "reqSECRET-2")
API_KEY = "keySECRET-3"


def _add_full(cli: CLI, url: str = "https://gw.example.com/pay/bills", *extra: str) -> None:
    cli.ok(
        "add",
        url,
        "--gateway-user",
        GW[0],
        "--gateway-password-stdin",
        "--request-user",
        REQ[0],
        "--request-password-stdin",
        "--secret-header-stdin",
        "X-Api-Key",
        "--description",
        "Bills API",
        *extra,
        input=f"{GW[1]}\n{REQ[1]}\n{API_KEY}\n",
    )


# -- entry points, help, usage -----------------------------------------------------------


def test_help_version_and_usage_errors(cli: CLI) -> None:
    help_run, version, bare, unknown, bad_option = cli.run_many(
        [
            (["--help"], {}),
            (["--version"], {}),
            ([], {}),
            (["frobnicate"], {}),
            (["list", "--frobnicate"], {}),
        ]
    )
    assert help_run.code == 0
    for command in ("init", "add", "list", "show", "remove", "match", "rotate-key"):
        assert command in help_run.stdout
    for command in ("export", "import", "request", "demo"):
        assert command in help_run.stdout
    assert version.code == 0 and version.stdout.startswith("securesession ")
    for result in (bare, unknown, bad_option):
        assert result.code == 2, result
        one_error_line(result)
    assert "--frobnicate" in bad_option.stderr


def test_console_script_is_the_same_command(cli: CLI) -> None:
    script = shutil.which("securesession", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the securesession console script is not installed next to python")
    completed = subprocess.run(
        [script, "--version"], capture_output=True, text=True, env=cli.env, check=False
    )
    assert completed.returncode == 0
    assert completed.stdout.startswith("securesession ")


# -- init ---------------------------------------------------------------------------------


def test_init_uses_platform_dirs_and_refuses_to_overwrite(cli: CLI) -> None:
    env = {"SECURESESSION_REGISTRY": None, "SECURESESSION_KEY_FILE": None}
    first = cli.run("init", env=env)
    assert first.code == 0, first
    key_file = cli.home / "xdg-config" / "securesession" / "master.key"
    registry = cli.home / "xdg-data" / "securesession" / "registry.db"
    assert key_file.is_file() and registry.is_file()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(registry.stat().st_mode) & 0o077 == 0
    key_before = key_file.read_bytes()

    second = cli.run("init", env=env)
    assert second.code == 1
    assert "already exists" in one_error_line(second)
    assert key_file.read_bytes() == key_before
    # The default locations work for every other command too.
    assert cli.run("list", "--json", env=env).stdout.strip() == "[]"


def test_init_refuses_a_new_key_for_an_existing_registry(ready: CLI) -> None:
    ready.key_file.rename(ready.key_file.with_name("elsewhere.key"))
    result = ready.run("init")
    assert result.code == 1
    assert "already exists under another master key" in one_error_line(result)
    assert not ready.key_file.exists()  # the useless new key was not left behind


def test_init_with_key_from_environment(cli: CLI) -> None:
    key = MasterKey.generate()
    env = {"SECURESESSION_KEY_FILE": None, "SECURESESSION_MASTER_KEY": key.to_base64()}
    result = cli.ok("init", env=env)
    assert key.key_id in result.stdout
    assert not cli.key_file.exists()
    open_registry(cli.registry_url, key).close()  # created under that key


# -- missing key, wrong key, bad files ----------------------------------------------------


def test_missing_wrong_and_unsafe_keys(ready: CLI, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    MasterKey.generate().save(other)
    loose = tmp_path / "loose.key"
    MasterKey.generate().save(loose)
    loose.chmod(0o644)
    missing, wrong, wrong_debug, too_open, bad_env, no_registry = ready.run_many(
        [
            (["list"], {"env": {"SECURESESSION_KEY_FILE": str(tmp_path / "nope.key")}}),
            (["list", "--key-file", str(other)], {}),
            (["--debug", "list", "--key-file", str(other)], {}),
            (["list", "--key-file", str(loose)], {}),
            (
                ["list"],
                {"env": {"SECURESESSION_KEY_FILE": None, "SECURESESSION_MASTER_KEY": "x"}},
            ),
            (["list", "--registry", f"sqlite://{tmp_path / 'typo.db'}"], {}),
        ]
    )
    assert missing.code == 1 and "securesession init" in one_error_line(missing)
    assert wrong.code == 1 and "wrong master key" in one_error_line(wrong)
    assert wrong_debug.code == 1 and "Traceback" in wrong_debug.stderr
    assert too_open.code == 1 and "chmod 600" in one_error_line(too_open)
    assert bad_env.code == 1 and "SECURESESSION_MASTER_KEY" in one_error_line(bad_env)
    assert no_registry.code == 1 and "does not exist" in one_error_line(no_registry)
    assert not (tmp_path / "typo.db").exists()


def test_corrupt_registry_file(ready: CLI) -> None:
    ready.registry_path.write_bytes(b"this is not a database" * 100)
    result = ready.run("list")
    assert result.code == 1
    assert "registry" in one_error_line(result)


# -- add / list / show / remove ----------------------------------------------------------------


def test_add_list_show_remove(ready: CLI) -> None:
    _add_full(ready)
    stored = ready.open().get("https://gw.example.com/pay/bills/42")
    assert stored is not None
    assert stored.gateway == Credential(*GW)
    assert stored.request == Credential(*REQ)
    assert stored.secret_headers["X-Api-Key"] == Secret(API_KEY)

    listing, listing_json, show, show_json, again = ready.run_many(
        [
            (["list"], {}),
            (["list", "--json"], {}),
            (["show", "https://GW.example.com:443/pay/bills/"], {}),
            (["show", "https://gw.example.com/pay/bills", "--json"], {}),
            (["add", "https://gw.example.com/pay/bills", "--description", "x"], {}),
        ]
    )
    assert "https://gw.example.com:443/pay/bills" in listing.stdout
    assert "headers" in listing.stdout and "basic" in listing.stdout
    [described] = json.loads(listing_json.stdout)
    assert described["url"] == "https://gw.example.com:443/pay/bills"
    assert described["gateway"]["auth"] == "headers"
    assert described["request"] == {"auth": "basic", "headers": ["Authorization"]}
    assert described["secret_headers"] == ["X-Api-Key"]
    assert described["updated_at"].endswith("Z")
    assert "user alice" in show.stdout and "Bills API" in show.stdout
    detail = json.loads(show_json.stdout)
    assert detail["request"]["user"] == "alice"
    assert "password" not in detail["request"]

    assert again.code == 1 and "--replace" in one_error_line(again)
    replaced = ready.ok(
        "add", "https://gw.example.com/pay/bills", "--replace", "--description", "no secrets"
    )
    assert replaced.stdout.startswith("replaced ")

    removed = ready.ok("remove", "https://gw.example.com/pay/bills")
    assert "removed https://gw.example.com:443/pay/bills" in removed.stdout
    gone, show_gone, empty = ready.run_many(
        [
            (["remove", "https://gw.example.com/pay/bills"], {}),
            (["show", "https://x.test/"], {}),
            (["list", "--json"], {}),
        ]
    )
    assert gone.code == 1 and "no entry" in one_error_line(gone)
    assert show_gone.code == 1
    assert json.loads(empty.stdout) == []


def test_add_reads_secrets_from_environment_variables(ready: CLI) -> None:
    ready.ok(
        "add",
        "https://api.example.com/v1",
        "--request-auth",
        "bearer",
        "--request-password-env",
        "TOKEN_VAR",
        "--secret-header-env",
        "X-Api-Key=API_KEY_VAR",
        env={"TOKEN_VAR": "tokSECRET-4", "API_KEY_VAR": API_KEY},
    )
    entry = ready.open().get("https://api.example.com/v1/x")
    assert entry is not None and entry.request == Credential.token("tokSECRET-4")
    assert entry.request_auth == "bearer"
    assert entry.secret_headers["X-Api-Key"] == Secret(API_KEY)


def test_add_usage_errors(ready: CLI) -> None:
    results = ready.run_many(
        [
            # conflicting injection: both credentials write Authorization
            (
                [
                    "add",
                    "https://a.example.com/",
                    "--gateway-auth",
                    "basic",
                    "--gateway-password-env",
                    "V",
                    "--request-password-env",
                    "V",
                ],
                {"env": {"V": "vSECRET"}},
            ),
            # a secret header that collides with the gateway password header
            (
                [
                    "add",
                    "https://a.example.com/",
                    "--gateway-password-env",
                    "V",
                    "--secret-header-env",
                    "X-Gateway-Password=V",
                ],
                {"env": {"V": "vSECRET"}},
            ),
            (["add", "ftp://a.example.com/"], {}),
            (["add", "https://user:pw@a.example.com/"], {}),
            (["add", "not a url"], {}),
            # no password source and no terminal to prompt on
            (["add", "https://a.example.com/", "--gateway-user", "bob"], {}),
            (["add", "https://a.example.com/", "--gateway-password-env", "UNSET_VAR_X"], {}),
            (["add", "https://a.example.com/", "--gateway-password-stdin"], {"input": ""}),
            (["add", "https://a.example.com/", "--gateway-auth", "kerberos"], {}),
        ]
    )
    for result in results:
        assert result.code == 2, result
        one_error_line(result)
    assert "Authorization" in results[0].stderr
    assert "X-Gateway-Password" in results[1].stderr
    assert "stdin" in results[5].stderr and "-env" in results[5].stderr
    assert "user:pw" not in results[3].stderr  # userinfo is never echoed
    assert json.loads(ready.ok("list", "--json").stdout) == []


SECRETS_ON_ARGV = [
    ["add", "https://a.example.com/", "--gateway-password=pwSECRET"],
    ["add", "https://a.example.com/", "--gateway-password", "pwSECRET"],
    ["add", "https://a.example.com/", "--password", "pwSECRET"],
    ["add", "https://a.example.com/", "--token=tokSECRET"],
    ["add", "https://a.example.com/", "--api-key", "keySECRET"],
    ["add", "https://a.example.com/", "--secret-header-value=keySECRET"],
    ["--registry", "sqlite:///x.db", "add", "https://a.example.com/", "--passwd", "pwSECRET"],
    ["export", "bundle.json", "--passphrase=ppSECRET"],
    ["import", "bundle.json", "--passphrase", "ppSECRET"],
]


def test_secret_on_argv_is_refused(ready: CLI) -> None:
    # a stray value (a secret typed in the wrong place) is never echoed back either
    stray = ["add", "https://a.example.com/", "--gateway-user", "bob", "pwSECRET"]
    results = ready.run_many([(argv, {}) for argv in [*SECRETS_ON_ARGV, stray]])
    for argv, result in zip([*SECRETS_ON_ARGV, stray], results, strict=True):
        # the runner has already failed the test if "SECRET" was printed
        assert result.code == 2, (argv, result)
        line = one_error_line(result)
        if argv is not stray:
            assert "command line" in line and ("-stdin" in line or "-env" in line), line
    assert "not shown" in results[-1].stderr
    assert ready.open().get("https://a.example.com/") is None


# -- prompts and --reveal on a terminal ---------------------------------------------------------


def _pty_run(cli: CLI, args: list[str], prompt: bytes, answer: bytes) -> tuple[int, str, str]:
    """Run with a pseudo-terminal as controlling terminal, stdin and stdout; type
    *answer* once *prompt* shows (getpass flushes input typed before its prompt)."""
    pty = pytest.importorskip("pty")
    import fcntl
    import select
    import termios

    controller, terminal = pty.openpty()

    def make_controlling_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(
        cli.command(args),
        stdin=terminal,
        stdout=terminal,
        stderr=subprocess.PIPE,
        env=cli.env,
        preexec_fn=make_controlling_terminal,  # setsid + TIOCSCTTY only
    )
    os.close(terminal)
    seen = b""
    answered = not prompt
    if answered:  # a plain readline keeps what was typed ahead
        os.write(controller, answer)
    try:
        while True:
            ready, _, _ = select.select([controller], [], [], 30)
            if not ready:
                process.kill()
                raise AssertionError(f"no output from the command; seen {seen!r}")
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
            if not answered and prompt in seen:
                os.write(controller, answer)
                answered = True
    finally:
        os.close(controller)
    assert process.stderr is not None
    stderr = process.stderr.read().decode()
    process.stderr.close()
    return process.wait(timeout=30), seen.decode(errors="replace"), stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_prompt_without_echo_and_reveal_on_a_terminal(ready: CLI) -> None:
    code, terminal, stderr = _pty_run(
        ready,
        ["add", "https://tty.example.com/", "--request-user", "carol"],
        b"request password: ",
        b"ttySECRET-5\n",
    )
    assert code == 0, terminal + stderr
    assert "ttySECRET" not in terminal  # getpass does not echo
    entry = ready.open().get("https://tty.example.com/")
    assert entry is not None and entry.request == Credential("carol", "ttySECRET-5")

    show = ["show", "https://tty.example.com/", "--reveal"]
    code, terminal, stderr = _pty_run(ready, show, b"", b"y\n")
    assert code == 0, stderr
    assert "[y/N]" in stderr
    assert "password ttySECRET-5" in terminal
    code, terminal, stderr = _pty_run(ready, show, b"", b"n\n")
    assert code == 1
    assert "ttySECRET" not in terminal.replace("n\r\n", "") + stderr


def test_reveal_refuses_a_pipe(ready: CLI) -> None:
    _add_full(ready)
    result = ready.run("show", "https://gw.example.com/pay/bills", "--reveal", "--yes")
    assert result.code == 1
    assert "terminal" in one_error_line(result)


# -- match --------------------------------------------------------------------------------------


def test_match_explains_the_winner(ready: CLI) -> None:
    registry = ready.open()
    for url in (
        "https://gw.example.com/pay",
        "https://gw.example.com/pay/bills",
        "https://gw.example.com/payments",
        "http://gw.example.com/pay",
    ):
        registry.put(ServiceEntry(url, request=Credential("u", "pSECRET")))
    registry.close()
    text, as_json, none = ready.run_many(
        [
            (["match", "https://GW.example.com/pay/bills/42?token=abc"], {}),
            (["match", "https://gw.example.com/pay/bills/42", "--json"], {}),
            (["match", "https://elsewhere.example.com/pay", "--json"], {}),
        ]
    )
    assert text.code == 0, text
    assert "canonical  https://gw.example.com:443/pay/bills/42" in text.stdout
    assert "token=abc" not in text.stdout
    assert "https://gw.example.com:443/pay/bills     entry  <- match" in text.stdout
    assert "longer prefix wins" in text.stdout  # /pay also matches but loses
    assert "whole path segments" in text.stdout  # /payments does not match /pay/...
    assert "never cross origins" in text.stdout  # the http:// entry

    result = json.loads(as_json.stdout)
    assert [p["prefix"] for p in result["probes"]] == [
        "https://gw.example.com:443/pay/bills/42",
        "https://gw.example.com:443/pay/bills",
    ]
    assert result["match"]["url"] == "https://gw.example.com:443/pay/bills"
    assert result["match"]["request"]["headers"] == ["Authorization"]
    assert {m["url"] for m in result["near_misses"]} == {
        "https://gw.example.com:443/pay",
        "https://gw.example.com:443/payments",
        "http://gw.example.com:80/pay",
    }
    assert none.code == 1
    assert json.loads(none.stdout)["match"] is None
    assert len(json.loads(none.stdout)["probes"]) == 2  # /pay and the root


# -- concurrency ---------------------------------------------------------------------------------


def test_concurrent_writers_lose_nothing(ready: CLI) -> None:
    count = 8
    calls: list[tuple[list[str], dict[str, object]]] = [
        (
            [
                "add",
                f"https://svc{i}.example.com/api",
                "--request-user",
                f"user{i}",
                "--request-password-env",
                "PW",
            ],
            {"env": {"PW": f"pwSECRET-{i}"}},
        )
        for i in range(count)
    ]
    results = ready.run_many(calls)
    assert all(result.code == 0 for result in results), results
    listed = json.loads(ready.ok("list", "--json").stdout)
    assert sorted(entry["url"] for entry in listed) == sorted(
        f"https://svc{i}.example.com:443/api" for i in range(count)
    )
    registry = ready.open()
    for i in range(count):
        entry = registry.get(f"https://svc{i}.example.com/api")
        assert entry is not None and entry.request == Credential(f"user{i}", f"pwSECRET-{i}")
