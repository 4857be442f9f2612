"""docs/security.md names every field an entry is stored with, each on the right side:
the settings in clear, the secret fields encrypted. A field the codec gains and the page
does not name, or one the page puts on the wrong side, fails here."""

from __future__ import annotations

import re
from pathlib import Path

from securesession import ClientCertificate, Credential, ServiceEntry, TLSProfile
from securesession._registry._codec import entry_fields
from securesession.testing import CertificateAuthority

PAGE = Path(__file__).parents[2] / "docs" / "security.md"
PASSWORD = "security-page-SECRET"


def _bullet(title: str) -> str:
    """The text of the page's first bullet that opens with **title**."""
    text = PAGE.read_text(encoding="utf-8")
    match = re.search(rf"^\* \*\*{title}\*\*(.*?)(?=^\S|^\* )", text, re.MULTILINE | re.DOTALL)
    assert match is not None, f"docs/security.md has no '* **{title}**' bullet"
    return match.group(1)


def _every_field() -> tuple[dict[str, object], dict[str, str]]:
    """The settings and secret fields of an entry that sets everything that is stored."""
    client = CertificateAuthority("security page CA").issue_client("security-page-client")
    certificate = ClientCertificate.from_pem(
        client.chain_pem, client.encrypted_key_pem(PASSWORD.encode()), PASSWORD
    )
    entry = ServiceEntry(
        url="https://gw.example/pay",
        gateway=Credential("gw", "gw-SECRET"),
        request=Credential("user", "req-SECRET"),
        secret_headers={"X-Api-Key": "key-SECRET"},
        tls=TLSProfile(client_cert=certificate, version="1.3"),
        description="every stored field",
    )
    return entry_fields(entry)


def _named(text: str) -> set[str]:
    return set(re.findall(r"`([^`]+)`", text))


def test_every_setting_is_named_in_clear_and_every_secret_field_encrypted() -> None:
    settings, secrets = _every_field()
    in_clear, encrypted = _named(_bullet("settings")), _named(_bullet("secrets"))
    tls = settings["tls"]
    assert isinstance(tls, dict)
    stored_settings = set(settings) | set(tls)
    assert stored_settings - in_clear == set(), "settings the page does not list in clear"
    # A secret header is stored as header.<name>, which the page spells so.
    stored_secrets = {re.sub(r"^header\..*", "header.<name>", name) for name in secrets}
    assert stored_secrets - encrypted == set(), "secret fields the page does not list"
    assert stored_secrets & in_clear == set(), "secret fields the page calls clear"
    assert stored_settings & encrypted == set(), "settings the page calls encrypted"
