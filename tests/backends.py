"""Registry locations for tests that run against every persistent backend.

``Backend`` is a fresh registry URL plus the raw access an operator has (to edit a
row by hand, or to check that nothing was overwritten).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

BASE = "https://gw.example.test:8443"


class Backend:
    """One empty registry location, and hand access to its tables."""

    def __init__(self, kind: str, url: str, raw: Any) -> None:
        self.kind = kind
        self.url = url
        self._raw = raw  # a sqlite3 path or a PostgreSQL admin URL

    def __repr__(self) -> str:
        return f"<Backend {self.kind}>"

    def sql(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        """Run *statement* as an operator would; ``?`` placeholders; tables by bare name."""
        if self.kind == "sqlite":
            connection = sqlite3.connect(self._raw, isolation_level=None)
            try:
                return connection.execute(statement, params).fetchall()
            finally:
                connection.close()
        import psycopg

        statement = statement.replace("?", "%s")
        with psycopg.connect(self._raw, autocommit=True) as admin:
            admin.execute("SET search_path TO securesession")
            # bytes: psycopg types a str query as a LiteralString; this one is built at run time.
            cursor = admin.execute(statement.encode(), params)
            return cursor.fetchall() if cursor.description else []

    def dump(self) -> list[tuple[Any, ...]]:
        """Every stored row, the schema version and the key id: to compare before/after."""
        rows = self.sql(
            "SELECT key, revision, CAST(settings AS TEXT), CAST(secrets AS TEXT) "
            "FROM entries ORDER BY key"
        )
        rows += self.sql("SELECT version FROM schema_version")
        if self.kind == "sqlite":
            rows += self.sql("SELECT name, value FROM meta ORDER BY name")
        else:
            rows += self.sql("SELECT revision, key_id FROM state")
        return rows

    def secrets_of(self, key: str) -> dict[str, str]:
        value = self.sql("SELECT CAST(secrets AS TEXT) FROM entries WHERE key = ?", key)[0][0]
        result: dict[str, str] = json.loads(value)
        return result

    def set_json(self, column: str, key: str, value: object) -> None:
        """Replace *column* (settings or secrets) of *key* by *value*, as JSON."""
        cast = "?" if self.kind == "sqlite" else "CAST(? AS jsonb)"
        statement = f"UPDATE entries SET {column} = {cast} WHERE key = ?"  # noqa: S608
        self.sql(statement, json.dumps(value), key)
