"""PostgreSQL implementation of the `Store` contract: for several replicas.

psycopg 3 with its connection pool. Every `append` is one transaction that
locks the head row (``SELECT ... FOR UPDATE``), so appends from any number of
processes are serialized by the database and the head's compare-and-swap
decides which batch extends the tree; the others get `ConflictError` and are
replanned by their sequencer. ``synchronous_commit`` stays on: a committed
batch is durable when `append` returns. Record writes compare-and-swap their
version inside the same transaction; a unique violation (two writers
creating the same record, or the same checkpoint size) is a `ConflictError`.

Replicas take turns: `writing` opens a transaction on the process's writer
connection that takes the writers' advisory lock and reads the head, the
batch is planned meanwhile, and
`append` writes in that transaction and commits it (one lock, no separate
head read, no unlock). The turn is a lease on a live process: a holder that stops
(SIGSTOP, a VM stall, a long GC pause, a partition) loses it within
`TURN_STALL_S` and cannot commit when it wakes (`writing`; ADR 14).
Every append sends ``NOTIFY lictor_log`` in its transaction (so it is
delivered only if the batch committed); `watch` listens on a connection of
its own and calls back, reconnecting after a failure. `try_lead` holds a
session advisory lock on a connection of its own: the role passes to another
process as soon as the holder closes or dies (its connection drops).

The schema is versioned like SQLite's (`SCHEMA_VERSION`, migrations in
order, a newer schema refused with `SchemaError`); migrations take an
advisory lock so replicas starting together do not race.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool, PoolTimeout

from lictor.errors import ConflictError, SchemaError, StoreError, TreeError
from lictor.log.merkle import stored_hash_count
from lictor.store.base import Credential, Head, Record, RecordWrite, Replica, StoredEntry

SCHEMA_VERSION = 2
CHANNEL = "lictor_log"
# a record's tags, sorted, in the same statement (one snapshot, one round trip)
_TAGS = (
    "ARRAY(SELECT ARRAY[g.tag, g.value] FROM record_tags g"
    ' WHERE g.kind = r.kind AND g.key = r.key ORDER BY g.tag COLLATE "C")'
)
_MIGRATION_LOCK = 0x6C6963746F72  # "lictor"
_WRITER_LOCK = _MIGRATION_LOCK + 1
TURN_STALL_S = 1.0  # a turn whose session hears nothing from its process this long is lost
_PULSE_S = TURN_STALL_S / 4  # how often a live holder's session hears from it
# A writer connection notices a dead peer by itself too (a connection string's own win).
_KEEPALIVES = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 15_000,
}
# Ends the session holding the writers' lock if it has waited on its process for
# `TURN_STALL_S` (idle in its transaction, or between the statements of a pipeline,
# where no idle timeout runs); its transaction, locks and uncommitted rows go with it.
# Only sessions of this database role: the ones it may end and whose activity it sees.
_END_STALLED_HOLDER = (
    "SELECT a.pid, pg_terminate_backend(a.pid) FROM pg_locks l"
    " JOIN pg_stat_activity a ON a.pid = l.pid AND a.datid = l.database"
    " WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
    " AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1"
    " AND a.usename = current_user AND a.wait_event_type = 'Client'"
    " AND a.state_change < clock_timestamp() - make_interval(secs => %s)"
)
logger = logging.getLogger("lictor.store.postgres")
_CACHED_CREDENTIALS = 1 << 16

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL,
    root BYTEA NOT NULL,
    checkpoint BYTEA NOT NULL,
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (idx BIGINT PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS private_events (idx BIGINT PRIMARY KEY, data BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS hashes (idx BIGINT PRIMARY KEY, hash BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (size BIGINT PRIMARY KEY, note BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS credentials (
    secret_hash BYTEA PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    version BIGINT NOT NULL,
    doc BYTEA NOT NULL,
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

# v2: one row per control-plane process (`put_replica`), for the health dashboard.
_SCHEMA_V2 = """
CREATE TABLE IF NOT EXISTS replicas (
    id TEXT PRIMARY KEY,
    version TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    seen_at_ms BIGINT NOT NULL,
    stats BYTEA NOT NULL
);
"""

# Each entry upgrades the schema from the version before it.
_MIGRATIONS = (_SCHEMA_V1, _SCHEMA_V2)


@dataclass
class _Turn:
    """A writer's turn: its connection, in a transaction holding the writers' lock.

    Whoever uses ``conn`` (the committer to append or end the turn, the pulse)
    holds ``using``; once ``done``, only the committer touches it.
    """

    conn: psycopg.Connection[Any]
    head: Head | None
    done: bool = False
    using: threading.Lock = field(default_factory=threading.Lock)

    def pulse(self) -> None:
        """Run one statement in the turn's transaction so its session hears from this
        process; skipped while the committer uses the connection or once it appended.
        An error is left for `append` to find (the session is gone or the
        transaction failed: either way the turn is lost)."""
        if not self.using.acquire(blocking=False):
            return
        try:
            if not self.done:
                with contextlib.suppress(psycopg.Error):
                    self.conn.execute("SELECT 1")
        finally:
            self.using.release()


class PostgresStore:
    """A `Store` in one PostgreSQL database, shared by any number of processes."""

    shared = True
    turns_at_once = False  # a turn is the database's advisory lock: a round trip to try

    def __init__(self, conninfo: str, max_connections: int = 8) -> None:
        self._conninfo = conninfo
        self._leads: dict[str, psycopg.Connection[Any]] = {}
        self._writer: psycopg.Connection[Any] | None = None
        self._credentials: dict[bytes, Credential] = {}
        self._writer_lock = threading.Lock()
        self._turn = threading.local()  # the committer's `_Turn` while it holds one
        self._pulsing: _Turn | None = None  # the same turn, for the pulse thread
        self._waiting_since: float | None = None  # while the committer waits for a turn
        self._pulse: threading.Thread | None = None
        self._closing = threading.Event()
        self._lead_lock = threading.Lock()
        try:
            self._pool = ConnectionPool(
                conninfo,
                min_size=1,
                max_size=max_connections,
                open=True,
                timeout=30,
                kwargs={"autocommit": True},  # a read is one round trip; writes open a transaction
            )
            self._pool.wait(timeout=30)
        except (psycopg.Error, PoolTimeout) as e:
            raise StoreError(f"cannot connect to PostgreSQL: {e}") from e
        try:
            self._migrate()
        except BaseException:
            self._pool.close()
            raise

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection; database errors become `StoreError`."""
        with self._read() as conn, conn.transaction():
            yield conn

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection for reads (each statement its own snapshot)."""
        try:
            with self._pool.connection() as conn:
                yield conn
        except pg_errors.UniqueViolation as e:
            raise ConflictError(f"conflicts with stored data: {e.diag.message_primary}") from e
        except psycopg.Error as e:
            raise StoreError(f"database call failed: {e}") from e

    def _migrate(self) -> None:
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            current = _meta_version(conn)
            if current > SCHEMA_VERSION:
                raise SchemaError(
                    f"database schema version {current} is newer than the supported"
                    f" {SCHEMA_VERSION}; upgrade Lictor"
                )
            for script in _MIGRATIONS[current:]:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.execute(statement.encode())
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )

    def head(self) -> Head | None:
        turn: _Turn | None = getattr(self._turn, "held", None)
        if turn is not None and turn.head is not None:  # read under the writer's lock
            return turn.head
        with self._read() as conn:
            row = conn.execute(
                "SELECT size, root, checkpoint, version FROM head WHERE id = 1"
            ).fetchone()
        return None if row is None else Head(row[0], bytes(row[1]), bytes(row[2]), row[3])

    def append(
        self,
        expected_version: int,
        entries: Sequence[StoredEntry],
        hashes: Sequence[bytes],
        head: Head,
        writes: Sequence[RecordWrite] = (),
    ) -> Head:
        new = Head(head.size, head.root, head.checkpoint, expected_version + 1)
        first = new.size - len(entries)  # the compare-and-swap checks the old size is this
        start = stored_hash_count(max(first, 0))
        turn: _Turn | None = getattr(self._turn, "held", None)
        with self._in(turn) as conn:
            with conn.pipeline() as pipeline:  # statements go out at once; one sync at the end
                checks = [_move_head(conn, expected_version, new, first)]
                if first < 0 or start + len(hashes) != stored_hash_count(new.size):
                    pipeline.sync()
                    checks[0]()  # a moved head is a conflict first, as before any write
                    raise StoreError(f"{len(hashes)} hashes do not fit a batch of {len(entries)}")
                _insert(conn, "entries", [(first + i, e.data) for i, e in enumerate(entries)])
                private = [(first + i, e.private) for i, e in enumerate(entries) if e.private]
                _insert(conn, "private_events", private)
                _insert(conn, "hashes", [(start + i, h) for i, h in enumerate(hashes)])
                checks.append(_record_checkpoint(conn, new))
                checks.append(_write_records(conn, writes))
                conn.execute(f"NOTIFY {CHANNEL}")
            for check in checks:  # before the commit: a failed check rolls it all back
                check()
        if turn is not None:
            turn.head = new
        return new

    @contextmanager
    def _in(self, turn: _Turn | None) -> Iterator[psycopg.Connection[Any]]:
        """The transaction to append in: the writer's turn (committed here, which ends
        the turn and its lock), or a pooled connection's own."""
        if turn is None:
            with self._tx() as conn:
                yield conn
            return
        with turn.using:
            if turn.done:
                raise StoreError("one append per writer's turn")
            turn.done = True
            try:
                yield turn.conn
                turn.conn.commit()
            except pg_errors.UniqueViolation as e:
                raise ConflictError(f"conflicts with stored data: {e.diag.message_primary}") from e
            except psycopg.Error as e:
                lost = "the writer's turn was lost (its session ended)" if turn.conn.closed else ""
                raise StoreError(f"database call failed: {lost or e}") from e

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        found = self._by_index("hashes", "hash", indexes)
        return [found[i] for i in indexes]

    def read_entries(self, start: int, end: int) -> list[bytes]:
        if start < 0 or end < start:
            raise TreeError(f"invalid entry range [{start}, {end})")
        with self._read() as conn:
            rows = conn.execute(
                "SELECT data FROM entries WHERE idx >= %s AND idx < %s ORDER BY idx", (start, end)
            ).fetchall()
        if len(rows) != end - start:
            raise TreeError(f"entries [{start}, {end}) are not all stored")
        return [bytes(r[0]) for r in rows]

    def _by_index(self, table: str, column: str, indexes: Sequence[int]) -> dict[int, bytes]:
        wanted = sorted(set(indexes))
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT idx, {column} FROM {table} WHERE idx = ANY(%s)", (wanted,)
            ).fetchall()
        found = {int(r[0]): bytes(r[1]) for r in rows}
        if len(found) != len(wanted):
            missing = sorted(set(wanted) - found.keys())[:5]
            raise TreeError(f"{table} not stored at {missing}")
        return found

    def read_private(self, index: int) -> bytes | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT data FROM private_events WHERE idx = %s", (index,)
            ).fetchone()
        return None if row is None else bytes(row[0])

    def checkpoint_at(self, size: int) -> bytes | None:
        with self._read() as conn:
            row = conn.execute("SELECT note FROM checkpoints WHERE size = %s", (size,)).fetchone()
        return None if row is None else bytes(row[0])

    def get_record(self, kind: str, key: str) -> Record | None:
        sql = f"SELECT r.key, r.version, r.doc, {_TAGS} FROM records r"
        with self._read() as conn:
            row = conn.execute(sql + " WHERE r.kind = %s AND r.key = %s", (kind, key)).fetchone()
        return None if row is None else _record(kind, row)

    def find_records(
        self, kind: str, tags: dict[str, str], after: str = "", limit: int = 1000
    ) -> list[Record]:
        sql, args = _find_query(kind, tags, after, limit)
        with self._read() as conn:
            rows = conn.execute(sql, args).fetchall()
        return [_record(kind, r) for r in rows]

    def find_records_below(
        self, kind: str, tag: str, below: str, limit: int = 1000
    ) -> list[Record]:
        sql = (
            f"SELECT r.key, r.version, r.doc, {_TAGS} FROM record_tags t"
            " JOIN records r ON r.kind = t.kind AND r.key = t.key"
            ' WHERE t.kind = %s AND t.tag = %s AND t.value < %s COLLATE "C"'
            ' ORDER BY t.value COLLATE "C", t.key COLLATE "C" LIMIT %s'
        )
        with self._read() as conn:
            rows = conn.execute(sql, (kind, tag, below, limit)).fetchall()
        return [_record(kind, r) for r in rows]

    def count_records(self, kind: str, tags: dict[str, str]) -> int:
        sql, args = _find_query(kind, tags, "", None)
        with self._read() as conn:
            row = conn.execute(sql, args).fetchone()
        return int(row[0]) if row else 0

    def put_record(self, write: RecordWrite) -> Record:
        with self._tx() as conn:
            _write_records(conn, [write])()
        return write.record()

    def add_credential(self, credential: Credential) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO credentials (secret_hash, name, role) VALUES (%s, %s, %s)",
                (credential.secret_hash, credential.name, credential.role),
            )

    def find_credential(self, secret_hash: bytes) -> Credential | None:
        known = self._credentials.get(secret_hash)
        if known is not None:  # a stored credential never changes: safe on every replica
            return known
        with self._read() as conn:
            row = conn.execute(
                "SELECT name, role FROM credentials WHERE secret_hash = %s", (secret_hash,)
            ).fetchone()
        if row is None:
            return None
        found = Credential(row[0], row[1], secret_hash)
        if len(self._credentials) < _CACHED_CREDENTIALS:
            self._credentials[secret_hash] = found
        return found

    def put_replica(self, replica: Replica) -> None:
        with self._read() as conn:
            conn.execute(
                "INSERT INTO replicas (id, version, started_at_ms, seen_at_ms, stats)"
                " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
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

    def list_replicas(self, seen_since_ms: int) -> list[Replica]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT id, version, started_at_ms, seen_at_ms, stats FROM replicas"
                ' WHERE seen_at_ms >= %s ORDER BY id COLLATE "C"',
                (seen_since_ms,),
            ).fetchall()
        return [Replica(r[0], r[1], int(r[2]), int(r[3]), bytes(r[4])) for r in rows]

    def drop_replicas(self, seen_before_ms: int) -> int:
        with self._read() as conn:
            cursor = conn.execute("DELETE FROM replicas WHERE seen_at_ms < %s", (seen_before_ms,))
            return cursor.rowcount

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        stop = threading.Event()
        thread = threading.Thread(
            target=self._listen, args=(callback, stop), name="lictor-listen", daemon=True
        )
        thread.start()
        return stop.set

    def _listen(self, callback: Callable[[], None], stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    callback()  # whatever was committed while not listening
                    while not stop.is_set():
                        if any(True for _ in conn.notifies(timeout=0.5, stop_after=1)):
                            callback()
            except psycopg.Error:
                stop.wait(0.5)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The writer's turn: a transaction on this process's writer connection that
        holds the writers' advisory lock until it ends, so replicas take turns. In
        this thread, `head` answers the locked head and `append` writes in this
        transaction and commits it, which ends the turn; otherwise it rolls back.

        The turn is a lease on a live process. While the committer plans, the
        pulse runs a statement in the turn's transaction every `_PULSE_S`; a
        process that stops stops pulsing, and once its session has waited on it
        for `TURN_STALL_S`, PostgreSQL ends the session
        (``idle_in_transaction_session_timeout``) or a writer waiting for the turn
        does (`_end_stalled_holder`; no idle timeout runs between the statements
        of a pipeline). The transaction dies with the session, so a holder that
        wakes cannot commit: its `append` fails with `StoreError` and writes
        nothing, and its next turn reconnects. A holder that is slow but alive
        keeps its turn however long it plans.
        """
        with self._writer_lock:  # this process's committer, on its own connection
            writer = self._writer_connection()
            self._waiting_since = time.monotonic()
            try:
                with writer.pipeline():  # one round trip; the read runs once the lock is held
                    writer.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITER_LOCK,))
                    read = writer.execute(
                        "SELECT size, root, checkpoint, version FROM head WHERE id = 1"
                    )
                row = read.fetchone()
            except psycopg.Error as e:
                writer.close()
                raise StoreError(f"cannot take the writer's turn: {e}") from e
            finally:
                self._waiting_since = None
            head = None if row is None else Head(row[0], bytes(row[1]), bytes(row[2]), row[3])
            turn = _Turn(writer, head)
            self._turn.held = self._pulsing = turn
            try:
                yield
            finally:
                self._turn.held = self._pulsing = None
                with turn.using:
                    turn.done = True
                    with contextlib.suppress(psycopg.Error):
                        writer.rollback()  # a no-op after the append committed

    def _writer_connection(self) -> psycopg.Connection[Any]:
        """This process's writer connection, connected again if it was closed (its session
        ended with a lost turn, say); the first also starts the pulse."""
        if self._writer is None or self._writer.closed:
            try:
                self._writer = _connect_writer(self._conninfo)
            except psycopg.Error as e:
                raise StoreError(f"cannot connect to PostgreSQL: {e}") from e
        if self._pulse is None:
            self._pulse = threading.Thread(target=self._beat, name="lictor-turn", daemon=True)
            self._pulse.start()
        return self._writer

    def _beat(self) -> None:
        """Every `_PULSE_S` until the store closes: pulse the turn this process holds, or,
        once the committer has waited that long for one, end a stalled holder's session.
        Waiting stays in the lock's queue (first come, first served)."""
        while not self._closing.wait(_PULSE_S):
            turn, since = self._pulsing, self._waiting_since
            try:
                if turn is not None:
                    turn.pulse()
                elif since is not None and time.monotonic() - since >= _PULSE_S:
                    self._end_stalled_holder()
            except Exception:  # the next beat tries again
                logger.exception("the write turn's pulse failed")

    def _end_stalled_holder(self) -> None:
        """End the session of a writer stalled in its turn (`_END_STALLED_HOLDER`)."""
        key = (_WRITER_LOCK >> 32, _WRITER_LOCK & 0xFFFFFFFF, TURN_STALL_S)
        with self._read() as conn:
            ended = conn.execute(_END_STALLED_HOLDER, key).fetchall()
        for pid, _ in ended:
            logger.warning("ended the session of a writer stalled in its turn (backend %s)", pid)

    def try_lead(self, role: str) -> bool:
        with self._lead_lock:
            held = self._leads.get(role)
            if held is not None:
                try:
                    held.execute("SELECT 1")
                    return True
                except psycopg.Error:
                    held.close()
                    del self._leads[role]
            try:
                conn = psycopg.connect(self._conninfo, autocommit=True)
            except psycopg.Error:
                return False
            try:
                row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (role,)).fetchone()
            except psycopg.Error:
                conn.close()
                return False
            if row is None or not row[0]:
                conn.close()
                return False
            self._leads[role] = conn
            return True

    def turn_now(self) -> AbstractContextManager[bool]:
        return contextlib.nullcontext(False)

    def write_waits(self) -> bool:
        return self._writer_lock.locked()

    def close(self) -> None:
        with self._lead_lock:
            for conn in self._leads.values():
                conn.close()
            self._leads.clear()
        self._closing.set()
        with self._writer_lock:
            if self._writer is not None:
                self._writer.close()
        self._pool.close()


def _meta_version(conn: psycopg.Connection[Any]) -> int:
    exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return 0 if row is None else int(row[0])


def _connect_writer(conninfo: str) -> psycopg.Connection[Any]:
    """A writer connection: TCP keepalives (`_KEEPALIVES`), so a partition is noticed on
    this side too, and a session PostgreSQL ends once it sits idle in a transaction for
    `TURN_STALL_S`."""
    given = conninfo_to_dict(conninfo)
    unset = {key: value for key, value in _KEEPALIVES.items() if key not in given}
    conn = psycopg.connect(make_conninfo(conninfo, **unset), autocommit=True)
    try:
        conn.execute(
            "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
            (f"{round(TURN_STALL_S * 1000)}ms",),
        )
        conn.autocommit = False
    except psycopg.Error:
        conn.close()
        raise
    return conn


def _move_head(
    conn: psycopg.Connection[Any], expected_version: int, new: Head, first: int
) -> Callable[[], None]:
    """Compare-and-swap the head from (``expected_version``, size ``first``) to ``new``.

    The update locks the row, and a concurrent writer's update waits for it and
    then finds the version moved. Returns the check to run once the pipeline
    synced: `ConflictError` unless the head moved.
    """
    values = (new.size, new.root, new.checkpoint, new.version)
    if expected_version == 0:
        cur = conn.execute(
            "INSERT INTO head (id, size, root, checkpoint, version) VALUES (1, %s, %s, %s, %s)"
            " ON CONFLICT (id) DO NOTHING",
            values,
        )
    else:
        cur = conn.execute(
            "UPDATE head SET size = %s, root = %s, checkpoint = %s, version = %s"
            " WHERE id = 1 AND version = %s AND size = %s",
            (*values, expected_version, first),
        )

    def check() -> None:
        if cur.rowcount != 1 or (expected_version == 0 and first != 0):
            raise ConflictError(f"head moved past version {expected_version} and size {first}")

    return check


def _insert(conn: psycopg.Connection[Any], into: str, rows: Sequence[tuple[int, bytes]]) -> None:
    """Insert ``(idx, bytes)`` rows in one statement (two arrays unnested by the server)."""
    if rows:
        conn.execute(
            f"INSERT INTO {into} SELECT * FROM unnest(%s::bigint[], %s::bytea[])",
            ([idx for idx, _ in rows], [data for _, data in rows]),
        )


def _record_checkpoint(conn: psycopg.Connection[Any], head: Head) -> Callable[[], None]:
    """Keep the head's checkpoint; the check: a different one for the same size conflicts."""
    conn.execute(
        "INSERT INTO checkpoints (size, note) VALUES (%s, %s) ON CONFLICT (size) DO NOTHING",
        (head.size, head.checkpoint),
    )
    cur = conn.execute("SELECT note FROM checkpoints WHERE size = %s", (head.size,))

    def check() -> None:
        row = cur.fetchone()
        if row is None or bytes(row[0]) != head.checkpoint:
            raise ConflictError(f"a different checkpoint is already signed for size {head.size}")

    return check


def _write_records(
    conn: psycopg.Connection[Any], writes: Sequence[RecordWrite]
) -> Callable[[], None]:
    """Compare-and-swap records and replace their tags (inside a transaction); the check
    to run once the statements' results are in (`ConflictError` if a record moved).

    New records in one insert of unnested arrays (an existing key is a unique
    violation, so a conflict), updates that must each change their record
    (`_update_records`), then the tags (`_write_tags`).
    """
    new = [w for w in writes if w.expected_version == 0]
    old = [w for w in writes if w.expected_version != 0]
    if new:
        conn.execute(
            "INSERT INTO records (kind, key, version, doc)"
            " SELECT k, y, 1, d FROM unnest(%s::text[], %s::text[], %s::bytea[]) AS v(k, y, d)",
            ([w.kind for w in new], [w.key for w in new], [w.doc for w in new]),
        )
    moved = _update_records(conn, old) if old else None
    _write_tags(conn, new, old)

    def check() -> None:
        found = moved() if moved is not None else set()
        if len(found) != len(old):
            stale = sorted({(w.kind, w.key) for w in old} - found)[:3]
            raise ConflictError(f"records {stale} moved past their versions")

    return check


def _update_records(
    conn: psycopg.Connection[Any], old: Sequence[RecordWrite]
) -> Callable[[], set[tuple[str, str]]]:
    """Compare-and-swap each record by its primary key; reads the ``(kind, key)`` that moved.

    One statement per record (pipelined): a join with unnested arrays could be
    planned as a scan of every record when the plan was cached on a small table.
    """
    cur = conn.cursor()
    cur.executemany(
        "UPDATE records SET version = %s, doc = %s"
        " WHERE kind = %s AND key = %s AND version = %s RETURNING kind, key",
        [(w.expected_version + 1, w.doc, w.kind, w.key, w.expected_version) for w in old],
        returning=True,
    )

    def moved() -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        with cur:
            while True:
                found.update((row[0], row[1]) for row in cur.fetchall())
                if not cur.nextset():
                    return found

    return moved


def _write_tags(
    conn: psycopg.Connection[Any], new: Sequence[RecordWrite], old: Sequence[RecordWrite]
) -> None:
    """Store the tags of new records and bring those of updated ones up to date.

    A new record has no tags yet (records are never deleted and its insert
    would have failed if it existed): a plain insert. An updated record loses
    the tags it no longer carries (one statement per record, so every plan is
    a primary-key lookup whatever the table's statistics were when a cached
    plan was made) and upserts the rest, touching only values that changed.
    """
    if new:
        conn.execute(
            "INSERT INTO record_tags (kind, key, tag, value)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])",
            _tag_columns(new),
        )
    if not old:
        return
    with conn.cursor() as cur:
        cur.executemany(
            "DELETE FROM record_tags WHERE kind = %s AND key = %s AND tag <> ALL(%s::text[])",
            [(w.kind, w.key, [tag for tag, _ in w.tags]) for w in old],
        )
    conn.execute(
        "INSERT INTO record_tags (kind, key, tag, value)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
        " ON CONFLICT (kind, key, tag) DO UPDATE SET value = excluded.value"
        " WHERE record_tags.value <> excluded.value",
        _tag_columns(old),
    )


def _tag_columns(writes: Sequence[RecordWrite]) -> tuple[list[str], ...]:
    """The writes' tags as four columns: kinds, keys, tag names, values."""
    rows = [(w.kind, w.key, tag, value) for w in writes for tag, value in w.tags]
    return tuple([row[n] for row in rows] for n in range(4))


def _find_query(
    kind: str, tags: dict[str, str], after: str, limit: int | None
) -> tuple[str, list[Any]]:
    """SQL for `find_records`: keys in byte order (``COLLATE "C"``), as SQLite sorts them;
    without a limit, the query counts them instead (no documents, no tags, no order)."""
    columns = f"r.key, r.version, r.doc, {_TAGS}" if limit is not None else "COUNT(*)"
    tail = ' ORDER BY {key} COLLATE "C" LIMIT %s' if limit is not None else ""
    if not tags:
        sql = f"SELECT {columns} FROM records r"
        sql += ' WHERE r.kind = %s AND r.key > %s COLLATE "C"'
        args: list[Any] = [kind, after]
        sql += tail.format(key="r.key")
    else:
        (first_tag, first_value), *rest = sorted(tags.items())
        sql = f"SELECT {columns} FROM record_tags t0"
        args = []
        for n, (tag, value) in enumerate(rest, start=1):
            sql += (
                f" JOIN record_tags t{n} ON t{n}.kind = t0.kind AND t{n}.key = t0.key"
                f" AND t{n}.tag = %s AND t{n}.value = %s"
            )
            args += [tag, value]
        sql += (
            " JOIN records r ON r.kind = t0.kind AND r.key = t0.key"
            ' WHERE t0.kind = %s AND t0.tag = %s AND t0.value = %s AND t0.key > %s COLLATE "C"'
        )
        args += [kind, first_tag, first_value, after]
        sql += tail.format(key="t0.key")
    if limit is not None:
        args.append(limit)
    return sql, args


def _record(kind: str, row: Sequence[Any]) -> Record:
    """A record from ``(key, version, doc, tags)``, tags as ``[[tag, value], ...]``."""
    tags = tuple((str(tag), str(value)) for tag, value in row[3])
    return Record(kind, row[0], int(row[1]), bytes(row[2]), tags)
