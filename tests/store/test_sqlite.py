"""SQLite specifics beyond the shared contract."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from lictor.errors import SchemaError, StoreError
from lictor.store.base import Head, RecordWrite, Replica
from lictor.store.sqlite import (
    _SCHEMA_V1,
    _SCHEMA_V2,
    _SCHEMA_V3,
    _SCHEMA_V4,
    SCHEMA_VERSION,
    RecordCache,
    SQLiteStore,
)


def test_durability_settings(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    conn = store._writer
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    store.close()


def test_upgrades_a_version_1_database(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db")
    for statement in _SCHEMA_V1.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path / "s.db")
    assert store.get_record("execution", "x") is None  # the v2 tables exist
    version = store._writer.execute("SELECT value FROM meta").fetchone()[0]
    assert version == str(SCHEMA_VERSION) == "6"
    store.close()


def test_upgrades_a_version_2_database_keeping_its_tags(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db")
    for statement in (_SCHEMA_V1 + _SCHEMA_V2).split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '2')")
    conn.execute("INSERT INTO records VALUES ('execution', 'ex_1', 1, X'7B7D')")
    conn.execute("INSERT INTO record_tags VALUES ('execution', 'ex_1', 'state', 'active')")
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path / "s.db")
    assert [r.key for r in store.find_records("execution", {"state": "active"})] == ["ex_1"]
    table = store._writer.execute(
        "SELECT sql FROM sqlite_master WHERE name = 'record_index'"
    ).fetchone()[0]
    assert "WITHOUT ROWID" in table
    store.close()


def test_upgrades_a_version_4_database_moving_tags_into_their_rows(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db")
    for statement in (_SCHEMA_V1 + _SCHEMA_V2 + _SCHEMA_V3 + _SCHEMA_V4).split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '4')")
    conn.execute("INSERT INTO records VALUES ('execution', 'ex_1', 3, X'7B7D')")
    conn.execute("INSERT INTO records VALUES ('execution', 'ex_2', 1, X'7B7D')")
    conn.execute("INSERT INTO records VALUES ('policy', 'p', 1, X'7B7D')")
    for key, tag, value in [
        ("ex_1", "state", "active"),
        ("ex_1", "principal", 'Agent::"a"'),
        ("ex_1", "expires", "0000000000000009"),
        ("ex_2", "state", "completed"),
    ]:
        conn.execute("INSERT INTO record_tags VALUES ('execution', ?, ?, ?)", (key, tag, value))
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path / "s.db")
    one = store.get_record("execution", "ex_1")
    assert one is not None and one.version == 3
    assert one.tags == (
        ("expires", "0000000000000009"),
        ("principal", 'Agent::"a"'),
        ("state", "active"),
    )
    policy = store.get_record("policy", "p")
    assert policy is not None and policy.tags == ()
    assert [r.key for r in store.find_records("execution", {"state": "completed"})] == ["ex_2"]
    below = store.find_records_below("execution", "expires", "0000000000000010")
    assert [r.key for r in below] == ["ex_1"]
    # a write moves the index by the difference: the old state is found no more
    store.put_record(RecordWrite("execution", "ex_1", b"{}", 3, (("state", "completed"),)))
    found = store.find_records("execution", {"state": "completed"})
    assert [r.key for r in found] == ["ex_1", "ex_2"]
    assert store.find_records("execution", {"state": "active"}) == []
    assert store.find_records_below("execution", "expires", "0000000000000010") == []
    assert store.count_records("execution", {"principal": 'Agent::"a"'}) == 0
    store.close()


def test_upgrades_a_version_3_database_with_a_replicas_table(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "s.db")
    for statement in (_SCHEMA_V1 + _SCHEMA_V2 + _SCHEMA_V3).split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '3')")
    conn.commit()
    conn.close()
    store = SQLiteStore(tmp_path / "s.db")
    store.put_replica(Replica("host/1", "1.0", 1, 2))
    assert [r.id for r in store.list_replicas(0)] == ["host/1"]
    store.close()


def test_refuses_an_unknown_schema_version(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    conn = sqlite3.connect(tmp_path / "s.db")
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="99"):
        SQLiteStore(tmp_path / "s.db")


def _open_files(path: Path) -> int:
    fds = Path("/proc/self/fd")
    count = 0
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            if os.readlink(fd).startswith(str(path)):
                count += 1
    return count


def test_threads_that_come_and_go_do_not_leak_connections(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    baseline = _open_files(tmp_path)
    for _ in range(5):
        threads = [threading.Thread(target=store.head) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    # the writer, the WAL checkpointer and at most eight idle readers: three files
    # each (db, wal, shm)
    assert _open_files(tmp_path) <= max(baseline, 3 * 10)
    store.close()
    assert _open_files(tmp_path) == 0


def test_database_failures_are_store_errors(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.close()
    with pytest.raises(StoreError):
        store.head()
    with pytest.raises(StoreError):
        SQLiteStore(tmp_path / "missing-dir" / "s.db")


def test_the_record_cache_keeps_its_newest_and_drops_the_oldest_first() -> None:
    cache = RecordCache(3)
    cache.fill("execution", "a", None, cache.generation)
    cache.committed([RecordWrite("execution", key, b"{}", 0) for key in ("b", "c", "d")])
    assert [cache.get("execution", key)[0] for key in "abcd"] == [False, True, True, True]
    cache.committed([RecordWrite("execution", "b", b"[]", 1)])  # the oldest goes, b is newest
    found, record = cache.get("execution", "b")
    assert found and record is not None and (record.version, record.doc) == (2, b"[]")
    cache.fill("execution", "e", None, cache.generation)
    assert [cache.get("execution", key)[0] for key in "bcde"] == [True, False, True, True]


def test_write_waits_while_a_write_of_this_process_holds_the_write_path(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    store.append(0, [], [], Head(0, b"\0" * 32, b"checkpoint 0\n", 0))
    assert not store.write_waits()
    other = sqlite3.connect(tmp_path / "log.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another connection holds SQLite's write lock
    appending = threading.Thread(
        target=store.append, args=(1, [], [], Head(0, b"\0" * 32, b"checkpoint 0\n", 0))
    )
    appending.start()
    deadline = time.monotonic() + 30
    while not store.write_waits() and time.monotonic() < deadline:
        time.sleep(0.001)
    assert store.write_waits()  # the append holds the write path, waiting for SQLite's lock
    other.execute("COMMIT")
    appending.join(timeout=30)
    assert not store.write_waits()
    head = store.head()
    assert head is not None and head.version == 2
    other.close()
    store.close()
