"""SQLite implementation of the `Store` contract: the embedded default.

WAL journal with ``synchronous=FULL``: a committed transaction is in the WAL
and fsynced before `append` returns, and readers never block the writer.
Each thread gets its own connection; writes are serialized by SQLite's lock
and by the head's compare-and-swap.

A batch's rows go in as a few multi-row ``INSERT`` statements, not one
statement per row: CPython releases the GIL around every SQLite step, and each
release lets any busy Python thread in the process (a server's request
handlers) hold the committer back for up to the GIL switch interval.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

from lictor.errors import ConflictError, SchemaError, StoreError, TreeError
from lictor.store.base import Credential, Head, StoredEntry

SCHEMA_VERSION = 1
_MAX_ROWS_PER_INSERT = 4096

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size INTEGER NOT NULL,
    root BLOB NOT NULL,
    checkpoint BLOB NOT NULL,
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS private_events (idx INTEGER PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS hashes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, note BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (
    secret_hash BLOB PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL
);
"""


class SQLiteStore:
    """A `Store` in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._migrate()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._path, timeout=30, isolation_level=None, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @property
    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._connect()
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        with self._write() as conn:
            row = _meta_version(conn)
            if row is None:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif row != SCHEMA_VERSION:
                raise SchemaError(
                    f"database schema version {row} is not the supported {SCHEMA_VERSION}"
                )

    def head(self) -> Head | None:
        row = self._conn.execute(
            "SELECT size, root, checkpoint, version FROM head WHERE id = 1"
        ).fetchone()
        return None if row is None else Head(row[0], row[1], row[2], row[3])

    def append(
        self,
        expected_version: int,
        entries: Sequence[StoredEntry],
        hashes: Sequence[bytes],
        head: Head,
    ) -> Head:
        new = Head(head.size, head.root, head.checkpoint, expected_version + 1)
        try:
            with self._write() as conn:
                first = self._move_head(conn, expected_version, new, len(entries))
                _insert(
                    conn,
                    "entries (idx, data)",
                    [(first + i, e.data) for i, e in enumerate(entries)],
                )
                _insert(
                    conn,
                    "private_events (idx, data)",
                    [(first + i, e.private) for i, e in enumerate(entries) if e.private],
                )
                start = _next_hash_index(conn)
                _insert(conn, "hashes (idx, hash)", [(start + i, h) for i, h in enumerate(hashes)])
                conn.execute(
                    "INSERT INTO checkpoints (size, note) VALUES (?, ?)", (new.size, new.checkpoint)
                )
        except sqlite3.IntegrityError as e:
            raise ConflictError(f"append conflicts with stored data: {e}") from e
        except sqlite3.Error as e:
            raise StoreError(f"append failed: {e}") from e
        return new

    def _move_head(
        self, conn: sqlite3.Connection, expected_version: int, new: Head, count: int
    ) -> int:
        old = conn.execute("SELECT size, version FROM head WHERE id = 1").fetchone()
        old_size, old_version = (0, 0) if old is None else old
        if old_version != expected_version or new.size != old_size + count:
            raise ConflictError(f"head moved: version {old_version}, expected {expected_version}")
        conn.execute(
            "INSERT INTO head (id, size, root, checkpoint, version) VALUES (1, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET size = excluded.size, root = excluded.root,"
            " checkpoint = excluded.checkpoint, version = excluded.version"
            " WHERE head.version = ?",
            (new.size, new.root, new.checkpoint, new.version, expected_version),
        )
        return int(old_size)

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        found = self._read_by_index("hashes", "hash", indexes)
        return [found[i] for i in indexes]

    def read_entries(self, start: int, end: int) -> list[bytes]:
        if start < 0 or end < start:
            raise TreeError(f"invalid entry range [{start}, {end})")
        rows = self._conn.execute(
            "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
        ).fetchall()
        if len(rows) != end - start:
            raise TreeError(f"entries [{start}, {end}) are not all stored")
        return [r[0] for r in rows]

    def _read_by_index(self, table: str, column: str, indexes: Sequence[int]) -> dict[int, bytes]:
        wanted = sorted(set(indexes))
        found: dict[int, bytes] = {}
        for chunk in range(0, len(wanted), 500):
            part = wanted[chunk : chunk + 500]
            marks = ",".join("?" * len(part))
            sql = f"SELECT idx, {column} FROM {table} WHERE idx IN ({marks})"
            found.update(self._conn.execute(sql, part).fetchall())
        if len(found) != len(wanted):
            missing = sorted(set(wanted) - found.keys())[:5]
            raise TreeError(f"{table} not stored at {missing}")
        return found

    def read_private(self, index: int) -> bytes | None:
        row = self._conn.execute("SELECT data FROM private_events WHERE idx = ?", (index,))
        found = row.fetchone()
        return None if found is None else bytes(found[0])

    def checkpoint_at(self, size: int) -> bytes | None:
        row = self._conn.execute("SELECT note FROM checkpoints WHERE size = ?", (size,))
        found = row.fetchone()
        return None if found is None else bytes(found[0])

    def add_credential(self, credential: Credential) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO credentials (secret_hash, name, role) VALUES (?, ?, ?)",
                    (credential.secret_hash, credential.name, credential.role),
                )
        except sqlite3.IntegrityError as e:
            raise ConflictError("credential already exists") from e

    def find_credential(self, secret_hash: bytes) -> Credential | None:
        row = self._conn.execute(
            "SELECT name, role FROM credentials WHERE secret_hash = ?", (secret_hash,)
        ).fetchone()
        return None if row is None else Credential(row[0], row[1], secret_hash)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._connections:
                conn.close()
            self._connections.clear()


def _meta_version(conn: sqlite3.Connection) -> int | None:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if exists is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def _insert(conn: sqlite3.Connection, into: str, rows: Sequence[tuple[int, bytes]]) -> None:
    """Insert ``(idx, value)`` rows with as few statements as SQLite allows (see top)."""
    per_statement = min(
        conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // 2, _MAX_ROWS_PER_INSERT
    )
    for lo in range(0, len(rows), per_statement):
        part = rows[lo : lo + per_statement]
        values = ",".join(["(?, ?)"] * len(part))
        conn.execute(f"INSERT INTO {into} VALUES {values}", list(chain.from_iterable(part)))


def _next_hash_index(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(idx) + 1, 0) FROM hashes").fetchone()
    return int(row[0])
