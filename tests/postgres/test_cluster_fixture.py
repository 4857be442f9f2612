"""The PostgreSQL tests skip without PostgreSQL only outside CI; under CI they fail."""

from __future__ import annotations

import pytest

from .. import pgcluster


def test_missing_binaries_skip_outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgcluster, "find_bindir", lambda: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL server binaries"):
        pgcluster.require_binaries()


def test_missing_binaries_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgcluster, "find_bindir", lambda: None)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        pgcluster.require_binaries()


def test_binaries_are_found_here_or_the_suite_says_why() -> None:
    found = pgcluster.find_bindir()
    if found is None:
        pytest.skip("no PostgreSQL here")
    assert (found / "initdb").is_file() and (found / "pg_ctl").is_file()
