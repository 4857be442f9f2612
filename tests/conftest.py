"""Suite-wide guard: every test runs with DEBUG logging of securesession and urllib3,
and fails if any log line carries a test secret.

Test secrets contain the marker ``SECRET``; Basic credentials are base64, so encoded
chunks are decoded and searched too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from .secretscan import leaks


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += " " + repr(record.exc_info[1]) + " " + str(record.exc_info[1])
        self.lines.append(text)


@pytest.fixture(autouse=True)
def _no_secret_in_logs() -> Iterator[None]:
    collector = _Collector()
    loggers = [logging.getLogger(name) for name in ("securesession", "urllib3")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(collector)
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(collector)
            logger.setLevel(level)
    leaked = [line for line in collector.lines if leaks(line)]
    assert not leaked, f"{len(leaked)} log line(s) carried a test secret"
