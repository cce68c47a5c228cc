"""SQLite specifics beyond the shared contract."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from lictor.errors import SchemaError
from lictor.store.sqlite import SQLiteStore


def test_durability_settings(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    conn = store._conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_refuses_an_unknown_schema_version(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="99"):
        SQLiteStore(tmp_path / "s.db")
