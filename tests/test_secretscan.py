"""The scanner behind the suite-wide log guard finds secrets in every form we send."""

from __future__ import annotations

import base64

from .secretscan import leaks


def test_clear_and_encoded_secrets_are_found() -> None:
    assert leaks("password=pw-SECRET-1")
    basic = base64.b64encode(b"CORP\\alice:alice-SECRET").decode()
    assert leaks(f"Authorization: Basic {basic}")
    assert leaks(base64.urlsafe_b64encode(b"~~token-SECRET~~").decode())


def test_innocent_text_passes() -> None:
    assert not leaks("entry https://gw.example.com:443/payments matched; injected Authorization")
    assert not leaks("Basic " + base64.b64encode(b"user:password").decode())
