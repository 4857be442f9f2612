"""Describing entries (as text and as JSON) and the progress indicator."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO

from securesession import Credential, ServiceEntry

from ._common import format_time
from ._tlsopts import describe_tls, tls_text

__all__ = ["Progress", "describe_entry", "entry_lines", "table", "written_headers"]

_AUTHORIZATION: Final = "Authorization"


def written_headers(credential: Credential | None, mode: str, names: Sequence[str]) -> list[str]:
    """The request headers a credential writes (names only)."""
    if credential is None or mode in ("none", "wsse"):  # "wsse" goes into SOAP, not HTTP
        return []
    if mode == "headers":
        return ([names[0]] if credential.username else []) + [names[1]]
    return [_AUTHORIZATION]


def _credential(
    credential: Credential | None,
    mode: str,
    names: Sequence[str],
    *,
    detail: bool,
    reveal: bool,
) -> dict[str, Any] | None:
    if credential is None:
        return None
    described: dict[str, Any] = {
        "auth": mode,
        "headers": written_headers(credential, mode, names),
    }
    if detail:
        described["user"] = credential.username or None
    if reveal:
        described["password"] = credential.password.reveal()
    return described


def describe_entry(
    entry: ServiceEntry, *, detail: bool = False, reveal: bool = False
) -> dict[str, Any]:
    """A JSON-ready description of *entry*. Secrets appear only with *reveal*.

    *detail* adds user names, which identify accounts but are not secrets (the
    library shows them in ``repr`` too).
    """
    roles = (
        ("gateway", entry.gateway, entry.gateway_auth, entry.gateway_headers),
        ("request", entry.request, entry.request_auth, entry.request_headers),
    )
    described: dict[str, Any] = {
        "url": entry.url,
        "description": entry.description,
        **{
            role: _credential(credential, mode, names, detail=detail, reveal=reveal)
            for role, credential, mode, names in roles
        },
        "secret_headers": (
            {name: value.reveal() for name, value in entry.secret_headers.items()}
            if reveal
            else sorted(entry.secret_headers)
        ),
        "tls": describe_tls(entry.tls),
        "revision": entry.revision,
        "updated_at": format_time(entry.updated_at),
    }
    return described


def _credential_text(described: dict[str, Any] | None) -> str:
    if described is None:
        return "-"
    text = f"{described['auth']}"
    if described["headers"]:
        text += f" ({', '.join(described['headers'])})"
    if described.get("user"):
        text += f", user {described['user']}"
    if "password" in described:
        text += f", password {described['password']}"
    return text


def entry_lines(described: dict[str, Any]) -> list[str]:
    """The ``show`` text of a described entry."""
    headers = described["secret_headers"]
    if isinstance(headers, dict):
        header_text = ", ".join(f"{name}: {value}" for name, value in headers.items())
    else:
        header_text = ", ".join(headers)
    rows = [
        ("description", described["description"] or "-"),
        ("gateway", _credential_text(described["gateway"])),
        ("request", _credential_text(described["request"])),
        ("secret headers", header_text or "-"),
        ("tls", tls_text(described["tls"])),
        ("revision", str(described["revision"])),
        ("changed", described["updated_at"] or "-"),
    ]
    return [described["url"]] + [f"  {label + ':':<16}{value}" for label, value in rows]


def list_row(described: dict[str, Any]) -> list[str]:
    """One ``list`` table row: URL, injection modes, TLS, last change."""

    def modes(role: str) -> str:
        credential = described[role]
        return "-" if credential is None else str(credential["auth"])

    extra = described["secret_headers"]
    return [
        described["url"],
        modes("gateway"),
        modes("request"),
        ", ".join(extra) if extra else "-",
        tls_text(described["tls"], short=True),
        described["updated_at"] or "-",
    ]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns separated by two spaces."""
    widths = [len(cell) for cell in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (header, *rows):
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        lines.append("  ".join(cells).rstrip())
    return lines


class Progress:
    """A one-line progress bar on a terminal, shown only once work outlasts *delay*.

    Quick operations print nothing; on a non-terminal stream it stays silent too
    (the command prints its own summary), so logs get no carriage-return noise.
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        stream: TextIO | None = None,
        delay: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._clock = clock
        self._start = clock()
        self._delay = delay
        self._last_draw: float | None = None
        try:
            self._enabled = self._stream.isatty()
        except (AttributeError, ValueError):
            self._enabled = False

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = self._clock()
        if not self._enabled or now - self._start < self._delay:
            return
        if self._last_draw is not None and now - self._last_draw < 0.1:
            return
        self._last_draw = now
        self._draw()

    def _draw(self) -> None:
        if self.total:
            width = 30
            filled = min(width, width * self.done // self.total)
            bar = "#" * filled + "." * (width - filled)
            text = f"{self.label} [{bar}] {self.done}/{self.total}"
        else:
            text = f"{self.label} ... {self.done}"
        self._stream.write("\r" + text)
        self._stream.flush()

    def close(self) -> None:
        """Finish the line if anything was drawn."""
        if self._last_draw is not None:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
