"""PostgreSQL specifics beyond the shared contract."""

from __future__ import annotations

import psycopg

from lictor.store.base import Replica
from lictor.store.postgres import _SCHEMA_V1, SCHEMA_VERSION, PostgresStore

from ..postgres import PostgresServer


def test_upgrades_a_version_1_database_with_a_replicas_table(postgres: PostgresServer) -> None:
    url = postgres.database()
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in _SCHEMA_V1.split(";"):
            if statement.strip():
                conn.execute(statement.encode())
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
    store = PostgresStore(url)
    try:
        store.put_replica(Replica("host/1", "1.0", 1, 2))
        assert [r.id for r in store.list_replicas(0)] == ["host/1"]
    finally:
        store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert row is not None and row[0] == str(SCHEMA_VERSION) == "2"
