"""The getting-started page and every how-to page run, as a reader would paste them.

A page's ``bash`` blocks and ``python`` blocks run in document order, as one shell
session (``set -euo pipefail``; a python block runs as ``python - <<EOF`` in it), in an
empty directory with a private ``HOME``. Blocks in any other language (``sh``,
``powershell``, ``text``) are shown to the reader and not run. A block whose first line
is ``# on NAME`` runs with the key and registry of environment NAME (its own
directory), as the promotion page's test and prod.

Each page has a scenario: what the reader is told they already have (a ``.pfx``, the
gateway's CA, secrets in environment variables), a loopback ``GatewayServer`` standing
in for ``gw.example.com:8443``, and commands that set the scene (a registry with
entries). Secrets are marked ``SECRET`` and no output may show one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ..secretscan import leaks
from securesession.testing import CertificateAuthority, GatewayServer

DOCS = Path(__file__).parents[2] / "docs"
_BLOCK = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)
_ON = re.compile(r"^# on (?P<env>[\w-]+)\n")
HOST = "gw.example.com:8443"

SECRETS = {
    "GW_PASSWORD": "gw-pw-SECRET",
    "REQ_PASSWORD": "req-pw-SECRET",
    "API_TOKEN": "api-token-SECRET",
    "API_KEY": "api-key-SECRET",
    "BRIDGE_KEY": "bridge-key-SECRET",
    "PFX_PASSWORD": "pfx-pw-SECRET",
    "TRANSFER_PASSPHRASE": "transfer-SECRET",
}


@dataclass
class Scenario:
    #: GatewayServer options, built per run (a fresh CA where the scenario needs one).
    gateway: Callable[[CertificateAuthority], GatewayServer] | None = None
    #: files the reader already has: name -> content, from the gateway and its CA.
    files: Callable[[GatewayServer | None, CertificateAuthority], dict[str, bytes]] = (
        lambda gateway, ca: {}
    )
    #: bash run before the page's blocks (not shown to the reader).
    setup: str = ""
    #: literal values in the page replaced by marked test secrets.
    replace: dict[str, str] = field(default_factory=dict)
    #: what the output must show.
    expect: tuple[str, ...] = ()


def _ca_pem(gateway: GatewayServer | None, ca: CertificateAuthority) -> dict[str, bytes]:
    assert gateway is not None and gateway.ca is not None
    return {"gateway-ca.pem": gateway.ca.cert_pem}


def _pfx_and_ca(gateway: GatewayServer | None, ca: CertificateAuthority) -> dict[str, bytes]:
    client = ca.issue_client("billing-service")
    return {
        "billing.pfx": client.pkcs12(SECRETS["PFX_PASSWORD"].encode()),
        "gateway-ca.pem": ca.cert_pem,
    }


_ADD_TWO = """
securesession init >/dev/null
securesession add https://gw.example.com:8443/payments --gateway-user gw-billing \
    --gateway-password-env GW_PASSWORD >/dev/null
securesession add https://gw.example.com:8443/payments/refunds --request-user alice \
    --request-password-env REQ_PASSWORD >/dev/null
"""

SCENARIOS: dict[str, Scenario] = {
    "getting-started.md": Scenario(
        replace={"gw-secret": "gw-SECRET", "alice-secret": "alice-SECRET"},
        expect=(
            "7. What a mistake looks like",  # the tour ran to its end
            "GET /payments/bills/42 -> 200",
            "GET /public            -> 401 (no entry: nothing injected)",
            "the gateway saw X-Gateway-User = gw-user",
            "https://gw.example.com:8443/payments           entry  <- match",
        ),
    ),
    "how-to/add-a-service.md": Scenario(
        gateway=lambda ca: GatewayServer(
            tls=True,
            ca=ca,
            expect_gateway=("gw-billing", SECRETS["GW_PASSWORD"]),
            expect_request=("CORP\\billing", SECRETS["REQ_PASSWORD"]),
        ),
        files=_ca_pem,
        replace={"new-gateway-password": "new-gw-pw-SECRET"},
        expect=("HTTP 200", "X-Gateway-Password: <redacted>", "\n200\n"),
    ),
    "how-to/mutual-tls-from-pfx.md": Scenario(
        gateway=lambda ca: GatewayServer(
            tls=True,
            ca=ca,
            require_client_cert=True,
            expect_gateway=("gw-billing", SECRETS["GW_PASSWORD"]),
        ),
        files=_pfx_and_ca,
        setup="securesession init >/dev/null",
        expect=("HTTP 200", "billing-service", "\n200\n"),
    ),
    "how-to/rotate-keys.md": Scenario(
        setup=_ADD_TWO,
        expect=("master.key.", ".bak", "https://gw.example.com:8443/payments/refunds"),
    ),
    "how-to/promote-entries.md": Scenario(
        setup="""
export SECURESESSION_KEY_FILE=$PWD/test/master.key
export SECURESESSION_REGISTRY=sqlite:///$PWD/test/registry.db
"""
        + _ADD_TWO
        + """
export SECURESESSION_KEY_FILE=$PWD/prod/master.key
export SECURESESSION_REGISTRY=sqlite:///$PWD/prod/registry.db
securesession init >/dev/null
cp prod/master.key prod-master.key
""",
        expect=("added", "unchanged", "https://gw.example.com:8443/payments/refunds"),
    ),
}


def blocks(page: str) -> list[tuple[str, str]]:
    """The runnable (language, code) blocks of *page*, in order."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return [
        (m["lang"], m["body"]) for m in _BLOCK.finditer(text) if m["lang"] in ("bash", "python")
    ]


def script(page: str, scenario: Scenario, host: str | None) -> str:
    lines = ["set -euo pipefail", scenario.setup]
    for number, (lang, body) in enumerate(blocks(page), 1):
        for old, new in scenario.replace.items():
            body = body.replace(old, new)
        if host is not None:
            body = body.replace(HOST, host)
        on = _ON.match(body)
        lines.append(f"echo '--- block {number} ({lang})'")
        if on:
            env = on["env"]
            lines.append(
                f"export SECURESESSION_KEY_FILE=$PWD/{env}/master.key "
                f"SECURESESSION_REGISTRY=sqlite:///$PWD/{env}/registry.db"
            )
        if lang == "python":
            lines.append(f"python - <<'PYTHON_BLOCK'\n{body}PYTHON_BLOCK")
        else:
            lines.append(body)
    return "\n".join(lines) + "\n"


def _environment(home: Path) -> dict[str, str]:
    keep = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT", "COVERAGE_PROCESS_START")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("COV_CORE")}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    env.update(XDG_DATA_HOME=str(home / ".local" / "share"), PYTHONUNBUFFERED="1")
    env.update(SECRETS)
    # The default CLI configuration: the first block of most pages sets its own.
    env["SECURESESSION_KEY_FILE"] = str(home.parent / "work" / "master.key")
    env["SECURESESSION_REGISTRY"] = "sqlite:///" + str(home.parent / "work" / "registry.db")
    return env


@pytest.fixture
def sandbox(tmp_path: Path) -> tuple[Path, Path]:
    work, home = tmp_path / "work", tmp_path / "home"
    for directory in (work, home, work / "test", work / "prod"):
        directory.mkdir(mode=0o700)
    return work, home


def test_every_page_with_runnable_blocks_has_a_scenario() -> None:
    pages = {"getting-started.md"} | {f"how-to/{p.name}" for p in (DOCS / "how-to").glob("*.md")}
    assert pages == set(SCENARIOS)
    for page in pages:
        assert blocks(page), f"{page} has no bash or python block to run"


@pytest.mark.parametrize("page", sorted(SCENARIOS))
def test_page_runs(page: str, sandbox: tuple[Path, Path]) -> None:
    work, home = sandbox
    scenario = SCENARIOS[page]
    ca = CertificateAuthority("docs gateway CA")
    with ExitStack() as stack:
        gateway = None
        if scenario.gateway is not None:
            gateway = stack.enter_context(scenario.gateway(ca))
        for name, content in scenario.files(gateway, ca).items():
            (work / name).write_bytes(content)
        host = gateway.url.removeprefix("https://").removeprefix("http://") if gateway else None
        code = script(page, scenario, host)
        result = subprocess.run(
            ["bash", "-c", code],
            cwd=work,
            env=_environment(home),
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{page}: exit {result.returncode}\n{output[-4000:]}"
    for expected in scenario.expect:
        expected = expected.replace(HOST, host) if host else expected
        assert expected in output, f"{page}: {expected!r} not in the output\n{output[-4000:]}"
    assert not leaks(output), f"{page}: the output shows a secret\n{output[-4000:]}"
    if page == "how-to/mutual-tls-from-pfx.md":
        assert not (work / "billing.pfx").exists()
        assert gateway is not None
        assert {r.client_cert_subject_cn for r in gateway.requests} == {"billing-service"}
