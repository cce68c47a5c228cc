"""SQLite implementation of the `Store` contract: the embedded default.

WAL journal with ``synchronous=FULL``: a committed transaction is in the WAL
and fsynced before `append` returns, and readers never block the writer.
Writes go through one writer connection under a lock (and SQLite's own
lock across processes) and the head's compare-and-swap; reads borrow
connections from a small pool, so threads that come and go never leak them.
Every database failure surfaces as `StoreError`.

An *exclusive* store (``exclusive=True``: its caller guarantees no other
process or store object writes the file, as `lictor.datadir` does with its
lock) keeps recently read and written records in memory. That cache changes
only after a commit succeeded, and a read that raced a commit does not fill
it, so it always holds what the database holds. Every store remembers the
credentials it found: a stored credential never changes.

A batch's rows go in as a few multi-row ``INSERT`` statements, not one
statement per row: CPython releases the GIL around every SQLite step, and each
release lets any busy Python thread in the process (a server's request
handlers) hold the committer back for up to the GIL switch interval.

WAL checkpoints (copying the WAL into the database file) run in a thread the
store owns, off the commit path: `lictor.store.sqlite_wal`.
"""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from lictor.errors import ConflictError, SchemaError, StoreError, TreeError
from lictor.log.merkle import stored_hash_count
from lictor.store.base import Credential, Head, Record, RecordWrite, Replica, StoredEntry
from lictor.store.sqlite_index import (
    BEHIND_COMMITS,
    Indexer,
    Indexing,
    Tags,
    carries,
    index_changes,
)
from lictor.store.sqlite_wal import EVERY_SECOND, KEPT_WAL, WalCheckpointer, WalCheckpoints, connect

SCHEMA_VERSION = 6
_MAX_ROWS_PER_INSERT = 4096
_MAX_IDLE_READERS = 8
CACHED_RECORDS = 1 << 16


_SCHEMA_V1 = """
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

_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    doc BLOB NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS record_tags (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    tag TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key, tag)
);
CREATE INDEX IF NOT EXISTS record_tags_by_value ON record_tags (kind, tag, value, key);
"""

# v3: tags clustered on their primary key (no rowid table: one b-tree fewer per write).
_SCHEMA_V3 = """
CREATE TABLE record_tags_v3 (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    tag TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key, tag)
) WITHOUT ROWID;
INSERT INTO record_tags_v3 (kind, key, tag, value) SELECT kind, key, tag, value FROM record_tags;
DROP INDEX IF EXISTS record_tags_by_value;
DROP TABLE record_tags;
ALTER TABLE record_tags_v3 RENAME TO record_tags;
CREATE INDEX record_tags_by_value ON record_tags (kind, tag, value, key);
"""

# v4: one row per control-plane process (`put_replica`), for the health dashboard.
_SCHEMA_V4 = """
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    seen_at_ms INTEGER NOT NULL,
    stats BLOB NOT NULL
);
"""

# v5: a record's tags in its own row (read with it, no second lookup) and one index
# entry per tag (kind, tag, value, key): a tagged write costs one b-tree entry per
# tag instead of two.
_SCHEMA_V5 = """
ALTER TABLE records ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
CREATE TABLE record_index (
    kind TEXT NOT NULL,
    tag TEXT NOT NULL,
    value TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (kind, tag, value, key)
) WITHOUT ROWID;
INSERT INTO record_index (kind, tag, value, key) SELECT kind, tag, value, key FROM record_tags;
UPDATE records SET tags = (
    SELECT json_group_array(json_array(t.tag, t.value)) FROM (
        SELECT tag, value FROM record_tags
        WHERE record_tags.kind = records.kind AND record_tags.key = records.key ORDER BY tag
    ) t
) WHERE EXISTS (
    SELECT 1 FROM record_tags
    WHERE record_tags.kind = records.kind AND record_tags.key = records.key
);
DROP TABLE record_tags;
"""

# v6: the tag index is brought up to date behind the commits: a commit writes one
# pending row per record, the indexer thread moves them into ``record_index``
# (`lictor.store.sqlite_index`)
_SCHEMA_V6 = """
CREATE TABLE record_index_pending (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    indexed TEXT NOT NULL,
    tags TEXT NOT NULL,
    PRIMARY KEY (kind, key)
) WITHOUT ROWID;
"""

# Each entry upgrades the schema from the version before it.
_MIGRATIONS = (_SCHEMA_V1, _SCHEMA_V2, _SCHEMA_V3, _SCHEMA_V4, _SCHEMA_V5, _SCHEMA_V6)


class SQLiteStore:
    """A `Store` in one SQLite file."""

    shared = False
    turns_at_once = True

    def __init__(
        self,
        path: str | Path,
        exclusive: bool = False,
        wal: WalCheckpoints = EVERY_SECOND,
        indexing: Indexing = BEHIND_COMMITS,
    ) -> None:
        self._path = str(path)
        self._cache = RecordCache(CACHED_RECORDS if exclusive else 0)
        self._appended: Head | None = None  # the head this store's last append made
        self._credentials: dict[bytes, Credential] = {}  # never changed once stored
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._write_lock = threading.Lock()
        self._records_written = 0  # by the open write transaction, for the indexer
        self._closed = False
        self._writer = connect(self._path)
        self._checkpointer = WalCheckpointer(self._path, wal, self._write_lock)
        self._indexer: Indexer | None = None
        # a store dropped without `close` does not leave its thread behind
        weakref.finalize(self, self._checkpointer.stop).atexit = False
        try:
            self._writer.execute("PRAGMA wal_autocheckpoint=0")  # the thread's job (see top)
            self._writer.execute(f"PRAGMA journal_size_limit={KEPT_WAL * wal.restart_bytes}")
            self._migrate()
            index_pending = weakref.WeakMethod(self.index_pending)
            self._indexer = Indexer(lambda limit: _call(index_pending, limit), indexing)
            weakref.finalize(self, self._indexer.stop).atexit = False
        except BaseException as e:
            SQLiteStore.close(self)  # not a subclass's: its own state is not there yet
            if isinstance(e, sqlite3.Error):
                raise StoreError(f"cannot open {self._path}: {e}") from e
            raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A pooled read connection; at most `_MAX_IDLE_READERS` are kept open."""
        if self._closed:
            raise StoreError("store is closed")
        try:
            conn = self._idle.get_nowait()
        except queue.Empty:
            conn = connect(self._path)
        try:
            yield conn
        except sqlite3.Error as e:
            raise StoreError(f"database read failed: {e}") from e
        finally:
            if self._closed or self._idle.qsize() >= _MAX_IDLE_READERS:
                conn.close()
            else:
                self._idle.put(conn)

    def write_waits(self) -> bool:
        return self._write_lock.locked()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the single writer connection."""
        with self._write_lock:
            if self._closed:
                raise StoreError("store is closed")
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            self._records_written = 0
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # nothing open if COMMIT rolled back
                    conn.execute("ROLLBACK")
                raise
            self._checkpointer.committed()
            if self._indexer is not None:
                self._indexer.committed(self._records_written)

    def _migrate(self) -> None:
        """Bring the schema to `SCHEMA_VERSION`; refuse a newer one we do not know."""
        with self._write() as conn:
            current = _meta_version(conn) or 0
            if current > SCHEMA_VERSION:
                raise SchemaError(
                    f"database schema version {current} is newer than the supported"
                    f" {SCHEMA_VERSION}; upgrade Lictor"
                )
            for script in _MIGRATIONS[current:]:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def head(self) -> Head | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT size, root, checkpoint, version FROM head WHERE id = 1"
            ).fetchone()
        return None if row is None else Head(row[0], row[1], row[2], row[3])

    def append(
        self,
        expected_version: int,
        entries: Sequence[StoredEntry],
        hashes: Sequence[bytes],
        head: Head,
        writes: Sequence[RecordWrite] = (),
    ) -> Head:
        new = Head(head.size, head.root, head.checkpoint, expected_version + 1)
        self._appended = None  # until this append is known to have made the head
        try:
            with self._write() as conn:
                first = self._move_head(conn, expected_version, new, len(entries))
                _insert_rows(
                    conn,
                    "entries (idx, data)",
                    [(first + i, e.data) for i, e in enumerate(entries)],
                )
                _insert_rows(
                    conn,
                    "private_events (idx, data)",
                    [(first + i, e.private) for i, e in enumerate(entries) if e.private],
                )
                start = stored_hash_count(first)
                if start + len(hashes) != stored_hash_count(new.size):
                    raise StoreError(f"{len(hashes)} hashes do not fit a batch of {len(entries)}")
                _insert_rows(
                    conn, "hashes (idx, hash)", [(start + i, h) for i, h in enumerate(hashes)]
                )
                _record_checkpoint(conn, new, grew=bool(entries))
                self._records_written += _write_records(conn, writes)
                self._cache.forget(writes)
        except sqlite3.IntegrityError as e:
            raise ConflictError(f"append conflicts with stored data: {e}") from e
        except sqlite3.Error as e:
            raise StoreError(f"append failed: {e}") from e
        self._cache.committed(writes)
        self._appended = new
        return new

    def _move_head(
        self, conn: sqlite3.Connection, expected_version: int, new: Head, count: int
    ) -> int:
        """Compare-and-swap the head in one statement; returns the old size (the batch's
        first index). The head must still be at ``expected_version`` and the size the
        batch grows from: otherwise another writer moved it (`ConflictError`)."""
        old_size = new.size - count
        values = (new.size, new.root, new.checkpoint, new.version)
        if expected_version == 0:  # the first batch: no head yet (a second one fails)
            if old_size != 0:
                raise ConflictError(f"a first batch of {count} cannot make size {new.size}")
            conn.execute(
                "INSERT INTO head (id, size, root, checkpoint, version) VALUES (1, ?, ?, ?, ?)",
                values,
            )
            return 0
        changed = conn.execute(
            "UPDATE head SET size = ?, root = ?, checkpoint = ?, version = ?"
            " WHERE id = 1 AND version = ? AND size = ?",
            (*values, expected_version, old_size),
        ).rowcount
        if changed != 1:
            raise ConflictError(f"head moved past version {expected_version}")
        return old_size

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        found = self._read_by_index("hashes", "hash", indexes)
        return [found[i] for i in indexes]

    def read_entries(self, start: int, end: int) -> list[bytes]:
        if start < 0 or end < start:
            raise TreeError(f"invalid entry range [{start}, {end})")
        with self._read() as conn:
            rows = conn.execute(
                "SELECT data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (start, end)
            ).fetchall()
        if len(rows) != end - start:
            raise TreeError(f"entries [{start}, {end}) are not all stored")
        return [r[0] for r in rows]

    def _read_by_index(self, table: str, column: str, indexes: Sequence[int]) -> dict[int, bytes]:
        wanted = sorted(set(indexes))
        found: dict[int, bytes] = {}
        with self._read() as conn:
            for chunk in range(0, len(wanted), 500):
                part = wanted[chunk : chunk + 500]
                marks = ",".join("?" * len(part))
                sql = f"SELECT idx, {column} FROM {table} WHERE idx IN ({marks})"
                found.update(conn.execute(sql, part).fetchall())
        if len(found) != len(wanted):
            missing = sorted(set(wanted) - found.keys())[:5]
            raise TreeError(f"{table} not stored at {missing}")
        return found

    def read_private(self, index: int) -> bytes | None:
        with self._read() as conn:
            found = conn.execute(
                "SELECT data FROM private_events WHERE idx = ?", (index,)
            ).fetchone()
        return None if found is None else bytes(found[0])

    def checkpoint_at(self, size: int) -> bytes | None:
        with self._read() as conn:
            found = conn.execute("SELECT note FROM checkpoints WHERE size = ?", (size,)).fetchone()
        return None if found is None else bytes(found[0])

    def get_record(self, kind: str, key: str) -> Record | None:
        hit, cached = self._cache.get(kind, key)
        if hit:
            return cached
        generation = self._cache.generation
        found = self._stored_record(kind, key)
        self._cache.fill(kind, key, found, generation)
        return found

    def _stored_record(self, kind: str, key: str) -> Record | None:
        """The record as the database holds it now (no cache)."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT version, doc, tags FROM records WHERE kind = ? AND key = ?", (kind, key)
            ).fetchone()
        return None if row is None else Record(kind, key, row[0], bytes(row[1]), _tags(row[2]))

    def find_records(
        self, kind: str, tags: dict[str, str], after: str = "", limit: int = 1000
    ) -> list[Record]:
        if not tags:
            with self._read() as conn:
                rows = conn.execute(*_find_query(kind, tags, after, limit)).fetchall()
            return [_record(kind, r) for r in rows]
        with self._read() as conn, _snapshot(conn):  # the index and its pending rows
            pending = _pending(conn, kind, [_pair_text(pair) for pair in tags.items()])
            sql, args = _find_query(kind, tags, after, limit + len(pending))
            found = [_record(kind, r) for r in conn.execute(sql, args) if r[0] not in pending]
            keys = [k for k, (_, now) in pending.items() if k > after and carries(now, tags)]
            found += _records(conn, kind, keys)
        return sorted(found, key=lambda r: r.key)[:limit]

    def find_records_below(
        self, kind: str, tag: str, below: str, limit: int = 1000
    ) -> list[Record]:
        sql = (
            "SELECT r.key, r.version, r.doc, r.tags FROM record_index i"
            " CROSS JOIN records r ON r.kind = i.kind AND r.key = i.key"
            " WHERE i.kind = ? AND i.tag = ? AND i.value < ? ORDER BY i.value, i.key LIMIT ?"
        )
        with self._read() as conn, _snapshot(conn):
            pending = _pending(conn, kind, ["[" + orjson.dumps(tag).decode() + ","])
            args = (kind, tag, below, limit + len(pending))
            found = [_record(kind, r) for r in conn.execute(sql, args) if r[0] not in pending]
            keys = [k for k, (_, now) in pending.items() if dict(now).get(tag, below) < below]
            found += _records(conn, kind, keys)
        return sorted(found, key=lambda r: (r.tag(tag) or "", r.key))[:limit]

    def count_records(self, kind: str, tags: dict[str, str]) -> int:
        sql, args = _count_query(kind, tags)
        with self._read() as conn, _snapshot(conn):
            counted = int(conn.execute(sql, args).fetchone()[0])
            pending = _pending(conn, kind, [_pair_text(p) for p in tags.items()]) if tags else {}
        for indexed, now in pending.values():  # as the index holds them, and as they are
            counted += carries(now, tags) - carries(indexed, tags)
        return counted

    def index_pending(self, limit: int = 8192) -> int:
        """Move up to ``limit`` pending records into the tag index (the `Indexer`'s
        pass, `lictor.store.sqlite_index`); how many it moved."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT kind, key, indexed, tags FROM record_index_pending"
                " ORDER BY kind, key LIMIT ?",
                (limit,),
            ).fetchall()
            if not rows:
                return 0
            removed, added = index_changes(rows)
            if removed:
                conn.executemany(
                    "DELETE FROM record_index WHERE kind = ? AND tag = ? AND value = ? AND key = ?",
                    removed,
                )
            _insert_rows(conn, "record_index (kind, tag, value, key)", added)
            # the rows read, the first in key order: no one else writes in this transaction
            conn.execute(
                "DELETE FROM record_index_pending WHERE (kind, key) <= (?, ?)", rows[-1][:2]
            )
        return len(rows)

    def put_record(self, write: RecordWrite) -> Record:
        try:
            with self._write() as conn:
                self._records_written += _write_records(conn, [write])
                self._cache.forget([write])
        except sqlite3.IntegrityError as e:
            raise ConflictError(f"record {write.kind}/{write.key} already exists") from e
        except sqlite3.Error as e:
            raise StoreError(f"writing a record failed: {e}") from e
        self._cache.committed([write])
        return write.record()

    def add_credential(self, credential: Credential) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO credentials (secret_hash, name, role) VALUES (?, ?, ?)",
                    (credential.secret_hash, credential.name, credential.role),
                )
        except sqlite3.IntegrityError as e:
            raise ConflictError("credential already exists") from e
        except sqlite3.Error as e:
            raise StoreError(f"adding a credential failed: {e}") from e

    def find_credential(self, secret_hash: bytes) -> Credential | None:
        known = self._credentials.get(secret_hash)
        if known is not None:
            return known
        with self._read() as conn:
            row = conn.execute(
                "SELECT name, role FROM credentials WHERE secret_hash = ?", (secret_hash,)
            ).fetchone()
        if row is None:
            return None
        found = Credential(row[0], row[1], secret_hash)
        if len(self._credentials) < CACHED_RECORDS:  # a stored credential never changes
            self._credentials[secret_hash] = found
        return found

    def put_replica(self, replica: Replica) -> None:
        try:
            with self._write() as conn:
                conn.execute(
                    "INSERT INTO replicas (id, version, started_at_ms, seen_at_ms, stats)"
                    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
                    " version = excluded.version, started_at_ms = excluded.started_at_ms,"
                    " seen_at_ms = excluded.seen_at_ms, stats = excluded.stats",
                    (
                        replica.id,
                        replica.version,
                        replica.started_at_ms,
                        replica.seen_at_ms,
                        replica.stats,
                    ),
                )
        except sqlite3.Error as e:
            raise StoreError(f"writing replica {replica.id!r} failed: {e}") from e

    def list_replicas(self, seen_since_ms: int) -> list[Replica]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, version, started_at_ms, seen_at_ms, stats FROM replicas"
                " WHERE seen_at_ms >= ? ORDER BY id",
                (seen_since_ms,),
            ).fetchall()
        return [Replica(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

    def drop_replicas(self, seen_before_ms: int) -> int:
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "DELETE FROM replicas WHERE seen_at_ms < ?", (seen_before_ms,)
                )
                return int(cursor.rowcount)
        except sqlite3.Error as e:
            raise StoreError(f"dropping replicas failed: {e}") from e

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None  # one process writes an SQLite log (the data directory's lock)

    def writing(self) -> AbstractContextManager[None]:
        return contextlib.nullcontext()  # one process writes; `append` takes the write lock

    def turn_now(self) -> AbstractContextManager[bool]:
        return contextlib.nullcontext(True)  # no turns: `write_waits` tells of the lock

    def try_lead(self, role: str) -> bool:
        return True

    def close(self) -> None:
        """Index what is pending, stop writing, let the checkpointer run its last
        checkpoint, close everything."""
        if self._indexer is not None:
            self._indexer.close()
        with self._write_lock:
            self._closed = True  # no write runs from here on
        self._checkpointer.close()  # not under the lock: a RESTART takes it
        self._writer.close()
        while not self._idle.empty():
            self._idle.get_nowait().close()


class RecordCache:
    """Records by kind and key (None: known to be missing), at most ``limit`` of them.

    A write transaction calls `forget` before its ``COMMIT`` and `committed`
    after it; both move the generation, so a read that began before the
    commit finished (and may have seen the old record) never fills the cache.
    ``keep_written``: `committed` keeps what was written (else only forgets it,
    and the cache holds what was read).
    """

    def __init__(self, limit: int, keep_written: bool = True) -> None:
        self._limit = limit
        self._keep_written = keep_written
        self._lock = threading.Lock()
        # oldest first; an OrderedDict drops its oldest in constant time, where a dict
        # would scan past every slot its earlier drops left empty (ms at 65,536)
        self._records: OrderedDict[tuple[str, str], Record | None] = OrderedDict()
        self.generation = 0

    def clear(self) -> None:
        """Forget every record (the database may have changed them all)."""
        with self._lock:
            self.generation += 1
            self._records.clear()

    def get(self, kind: str, key: str) -> tuple[bool, Record | None]:
        with self._lock:
            if (kind, key) in self._records:
                return True, self._records[(kind, key)]
        return False, None

    def fill(self, kind: str, key: str, record: Record | None, generation: int) -> None:
        if not self._limit:
            return
        with self._lock:
            if generation != self.generation:
                return  # a commit may have changed it since the read began
            if len(self._records) >= self._limit:
                self._records.popitem(last=False)
            self._records[(kind, key)] = record

    def forget(self, writes: Sequence[RecordWrite]) -> None:
        if not self._limit or not writes:
            return
        with self._lock:
            self.generation += 1
            for write in writes:
                self._records.pop((write.kind, write.key), None)

    def committed(self, writes: Sequence[RecordWrite]) -> None:
        if not self._limit or not writes:
            return
        with self._lock:
            self.generation += 1
            for write in writes:
                if not self._keep_written:
                    self._records.pop((write.kind, write.key), None)
                    continue
                if len(self._records) >= self._limit:
                    self._records.popitem(last=False)
                version, tags = write.expected_version + 1, tuple(sorted(write.tags))
                # as `write.record()` would be, with its tags in the order a read gives them
                record = Record(write.kind, write.key, version, write.doc, tags)
                self._records[(write.kind, write.key)] = record


def _meta_version(conn: sqlite3.Connection) -> int | None:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if exists is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


def _record_checkpoint(conn: sqlite3.Connection, head: Head, grew: bool) -> None:
    """Keep the head's checkpoint; a batch without entries must keep the same one. A
    batch that ``grew`` the log signed a size no checkpoint has (else: a conflict)."""
    if grew:
        conn.execute(
            "INSERT INTO checkpoints (size, note) VALUES (?, ?)", (head.size, head.checkpoint)
        )
        return
    row = conn.execute("SELECT note FROM checkpoints WHERE size = ?", (head.size,)).fetchone()
    if row is None:
        conn.execute(
            "INSERT INTO checkpoints (size, note) VALUES (?, ?)", (head.size, head.checkpoint)
        )
    elif bytes(row[0]) != head.checkpoint:
        raise ConflictError(f"a different checkpoint is already signed for size {head.size}")


def _find_query(kind: str, tags: dict[str, str], after: str, limit: int) -> tuple[str, list[Any]]:
    """SQL for `find_records`, driven by the tag index when there is a tag.

    Starting from ``record_index`` (kind, tag, value, key) makes the cost follow
    the number of matches, not the number of records of the kind.
    """
    if not tags:
        sql = (
            "SELECT key, version, doc, tags FROM records WHERE kind = ? AND key > ?"
            " ORDER BY key LIMIT ?"
        )
        return sql, [kind, after, limit]
    joins, args = _matching(kind, tags)
    sql = (
        f"SELECT r.key, r.version, r.doc, r.tags FROM {joins}"
        " CROSS JOIN records r ON r.kind = i0.kind AND r.key = i0.key"
        " WHERE i0.kind = ? AND i0.tag = ? AND i0.value = ? AND i0.key > ?"
        " ORDER BY i0.key LIMIT ?"
    )
    return sql, [*args, after, limit]


def _count_query(kind: str, tags: dict[str, str]) -> tuple[str, list[Any]]:
    """SQL for `count_records`: the index alone answers it (no record is read)."""
    if not tags:
        return "SELECT COUNT(*) FROM records WHERE kind = ?", [kind]
    joins, args = _matching(kind, tags)
    return f"SELECT COUNT(*) FROM {joins} WHERE i0.kind = ? AND i0.tag = ? AND i0.value = ?", args


def _matching(kind: str, tags: dict[str, str]) -> tuple[str, list[Any]]:
    """The index entries ``i0`` of records carrying every tag (the first tag's, joined
    to the others'), and the arguments: the joins', then ``i0``'s kind, tag and value."""
    (first_tag, first_value), *rest = sorted(tags.items())
    sql = "record_index i0"
    args: list[Any] = []
    for n, (tag, value) in enumerate(rest, start=1):
        sql += (
            f" JOIN record_index i{n} ON i{n}.kind = i0.kind AND i{n}.tag = ?"
            f" AND i{n}.value = ? AND i{n}.key = i0.key"
        )
        args += [tag, value]
    return sql, [*args, kind, first_tag, first_value]


def _write_records(conn: sqlite3.Connection, writes: Sequence[RecordWrite]) -> int:
    """Compare-and-swap records (inside a transaction) and mark their tags pending for
    the index (`lictor.store.sqlite_index`); how many records it wrote.

    New records go in as one multi-row ``INSERT`` (an existing key makes it
    fail: a conflict); updated ones are compare-and-swapped one by one against
    the version and tags they hold. A record whose tags changed gets a pending
    row holding the tags its row had (what the index holds for it), unless it
    has one: then only the pending row's tags change.
    """
    if len({(w.kind, w.key) for w in writes}) != len(writes):  # one pending row each
        raise StoreError("a batch writes a record twice")
    new = [(w, _tags_text(w.tags)) for w in writes if w.expected_version == 0]
    _insert_rows(
        conn,
        "records (kind, key, version, doc, tags)",
        [(w.kind, w.key, 1, w.doc, text) for w, text in new],
    )
    pending = [(w.kind, w.key, "[]", text) for w, text in new if w.tags]
    for write in writes:
        if write.expected_version == 0:
            continue
        kind, key, text = write.kind, write.key, _tags_text(write.tags)
        row = conn.execute(
            "SELECT version, tags FROM records WHERE kind = ? AND key = ?", (kind, key)
        ).fetchone()
        if row is None or row[0] != write.expected_version:
            raise ConflictError(f"record {kind}/{key} moved past its version")
        conn.execute(
            "UPDATE records SET version = ?, doc = ?, tags = ? WHERE kind = ? AND key = ?",
            (write.expected_version + 1, write.doc, text, kind, key),
        )
        if text != row[1]:
            pending.append((kind, key, row[1], text))
    _insert_rows(
        conn,
        "record_index_pending (kind, key, indexed, tags)",
        pending,
        " ON CONFLICT (kind, key) DO UPDATE SET tags = excluded.tags",
    )
    return len(writes)


@contextmanager
def _snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read transaction: the statements inside see one state of the database."""
    conn.execute("BEGIN")
    try:
        yield
    finally:
        conn.execute("COMMIT")  # a read transaction: nothing to keep or undo


def _pending(
    conn: sqlite3.Connection, kind: str, needles: Sequence[str]
) -> dict[str, tuple[Tags, Tags]]:
    """The pending records of ``kind`` a query could see, with the tags the index holds
    for them and their own: those whose tags, as the index holds them or as they are,
    hold each of ``needles`` (the text of a tag and value, or of a tag's start).

    A query asks for records that carry every tag it names: a pending record that
    carries one of them neither as indexed nor as it is now is not in what the index
    found and does not match now, so it is left out here (SQLite's ``instr`` on the
    row's text, instead of reading every pending record of the kind into Python).
    """
    sql = "SELECT key, indexed, tags FROM record_index_pending WHERE kind = ?"
    sql += " AND (instr(indexed, ?) > 0 OR instr(tags, ?) > 0)" * len(needles)
    args = [kind, *(n for needle in needles for n in (needle, needle))]
    rows = conn.execute(sql, args)
    return {key: (_tags(indexed), _tags(now)) for key, indexed, now in rows}


def _pair_text(pair: tuple[str, str]) -> str:
    """A tag and its value as they appear in a row's tags (`_tags_text`)."""
    return orjson.dumps(pair).decode()


def _record(kind: str, row: Sequence[Any]) -> Record:
    """The `Record` of a row (key, version, doc, tags)."""
    return Record(kind, row[0], row[1], bytes(row[2]), _tags(row[3]))


def _records(conn: sqlite3.Connection, kind: str, keys: Sequence[str]) -> list[Record]:
    """The records of ``kind`` at ``keys`` (pending ones: a few)."""
    found: list[Record] = []
    for lo in range(0, len(keys), 500):
        part = keys[lo : lo + 500]
        marks = ", ".join("?" * len(part))
        sql = f"SELECT key, version, doc, tags FROM records WHERE kind = ? AND key IN ({marks})"
        found += [_record(kind, r) for r in conn.execute(sql, [kind, *part])]
    return found


def _call(method: Callable[[], Callable[[int], int] | None], limit: int) -> int:
    """``method(limit)`` while its store lives; 0 once it is gone."""
    bound = method()
    return 0 if bound is None else bound(limit)


def _tags_text(tags: Sequence[tuple[str, str]]) -> str:
    """A record's tags as its row keeps them: JSON pairs, by tag."""
    return orjson.dumps(sorted(tags)).decode()


def _tags(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((tag, value) for tag, value in orjson.loads(text))


def _insert_rows(
    conn: sqlite3.Connection, into: str, rows: Sequence[tuple[Any, ...]], then: str = ""
) -> None:
    """Insert rows of equal width with as few statements as SQLite allows (see top);
    ``then``: what follows the values (an upsert's ``ON CONFLICT`` clause)."""
    if not rows:
        return
    width = len(rows[0])
    if len(rows) == 1:  # a batch of one, the common case with one caller
        conn.execute(_insert_statement(into, width, 1, then), rows[0])
        return
    per_statement = min(
        conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width, _MAX_ROWS_PER_INSERT
    )
    for lo in range(0, len(rows), per_statement):
        part = rows[lo : lo + per_statement]
        sql = _insert_statement(into, width, len(part), then)
        conn.execute(sql, list(chain.from_iterable(part)))


@lru_cache(maxsize=64)  # a few tables, the batch sizes seen lately: at most about 1 MiB
def _insert_statement(into: str, width: int, count: int, then: str) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return f"INSERT INTO {into} VALUES {','.join([row] * count)}{then}"
