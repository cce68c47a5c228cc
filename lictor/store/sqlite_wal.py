"""SQLite's WAL checkpoints, run off the commit path by a thread of the store.

WAL checkpoints (copying the WAL into the database file; not the log's
signed checkpoints) run off the commit path. Left to SQLite, every ~1000
pages one ``COMMIT`` would copy the WAL and fsync the database file before
returning. The writer has ``wal_autocheckpoint=0`` instead, and a thread the
store owns, on a connection of its own, runs ``wal_checkpoint(PASSIVE)``
every `WalCheckpoints.every_commits` commits and ``interval_s`` after any
commit; a commit's whole share is to count itself and, at the threshold, set
an event. PASSIVE waits for no one: it copies what no reader still needs.

The WAL starts over (its next frame written at the top of the file) only
when a write begins with every frame copied, and under steady writes that
never happens by itself: each checkpoint ends behind the commits made while
it ran. So once a checkpoint finds the WAL at ``restart_bytes``, the thread
runs a second PASSIVE (copying what came in during the first) and then
``wal_checkpoint(RESTART)`` holding the store's write lock: writes wait
while it copies that small rest, fsyncs, and waits for readers to leave the
WAL (``restart_wait_s`` at most), and the next write starts the WAL over.
(Another process writing the file waits on SQLite's write lock, which the
RESTART holds.)
That short wait, once per ``restart_bytes`` written, is all that is left of
checkpoints on the commit path, and it bounds the WAL. A RESTART that a
reader still defeats is tried again `RESTART_BACKOFF_S` later (a reader
that never ends holds the WAL however it is checkpointed). The WAL
file is reused as it is, so commits overwrite it rather than grow it, unless
it grew past `KEPT_WAL` times ``restart_bytes``: then it is cut back to
that (``journal_size_limit``) when it starts over. A failed checkpoint is
logged and retried, backing off (`lictor.store.passes`); `close` stops the
thread after a last checkpoint. None of this changes durability: a commit
is durable once it is in the WAL, and recovery replays whatever no
checkpoint had copied yet.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass

from lictor.errors import StoreError
from lictor.store.passes import Passes

RESTART_BACKOFF_S = 10.0  # after readers defeated a RESTART, the next try waits this long
KEPT_WAL = 4  # a WAL file that grew past this many times `restart_bytes` is cut back

logger = logging.getLogger("lictor.store.sqlite")


def connect(path: str) -> sqlite3.Connection:
    """A connection to ``path`` as every Lictor connection is opened: WAL, ``synchronous=FULL``,
    waiting up to 30 s for a lock."""
    try:
        conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {path}: {e}") from e
    return conn


@dataclass(frozen=True)
class WalCheckpoints:
    """When a store's thread copies the WAL into the database file (see top)."""

    every_commits: int = 256  # wake the thread after this many commits
    interval_s: float = 1.0  # and this long after any commit
    restart_bytes: int = 16 << 20  # a WAL this long is made to start over
    restart_wait_s: float = 0.5  # how long a RESTART waits for readers, holding writes back

    def __post_init__(self) -> None:
        if self.every_commits < 1 or self.interval_s <= 0:
            raise ValueError("every_commits must be at least 1 and interval_s positive")


class WalCheckpointer(Passes):
    """The thread that runs a store's WAL checkpoints, on a connection of its own.

    `committed` is all the commit path pays: a count, and every
    ``every_commits`` commits an event. Only the writer moves the count (under
    the store's write lock); the thread only reads it. Nothing the thread does
    raises: a failure is logged, the connection dropped, and the checkpoint
    tried again later. The thread holds no reference to the store.
    """

    def __init__(self, path: str, policy: WalCheckpoints, write_lock: threading.Lock) -> None:
        super().__init__("lictor-wal-checkpoint", policy.interval_s)
        self._path = path
        self._policy = policy
        self._write_lock = write_lock
        self._commits = 0
        self._done = 0  # commits the last checkpoint covered
        self._restart_after = 0.0  # time.monotonic() before which no RESTART is tried
        self._conn: sqlite3.Connection | None = None
        self._page_size = 4096
        self._start()

    def committed(self) -> None:
        self._commits += 1
        if self._commits % self._policy.every_commits == 0:
            self._wake.set()

    def _due(self) -> bool:
        return self._commits != self._done

    def _pass(self) -> bool:
        commits = self._commits
        if not self._checkpoint():
            return False
        self._done = commits
        return True

    def _last(self) -> None:
        self._checkpoint()
        self._disconnect()

    def _checkpoint(self) -> bool:
        """A PASSIVE checkpoint, and a RESTART if the WAL is long enough; False if it failed."""
        try:
            conn = self._conn = self._conn or self._open()
            _, frames, _ = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames * self._page_size >= self._policy.restart_bytes:
                self._restart(conn, frames)
        except Exception:  # a thread of its own: nothing above it would catch this
            logger.warning("WAL checkpoint of %s failed; will retry", self._path, exc_info=True)
            self._disconnect()
            return False
        return True

    def _restart(self, conn: sqlite3.Connection, frames: int) -> None:
        """Make the WAL start over: copy the rest with the store's writes held back.

        A second PASSIVE first copies what was committed during the first, so
        what is left for the RESTART (and the writes' wait) is small. Under the
        write lock no commit comes between the RESTART and the next write.
        """
        now = time.monotonic()
        if now < self._restart_after:
            return
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        with self._write_lock:
            busy = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()[0]
        if busy:
            self._restart_after = now + RESTART_BACKOFF_S
            logger.warning(
                "the WAL of %s holds %d pages and cannot start over: a reader"
                " (or another process's writer) keeps it",
                self._path,
                frames,
            )

    def _open(self) -> sqlite3.Connection:
        conn = connect(self._path)
        try:
            # the longest a RESTART waits for readers, and so holds writers back
            conn.execute(f"PRAGMA busy_timeout={int(self._policy.restart_wait_s * 1000)}")
            self._page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
        except BaseException:
            conn.close()
            raise
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None


EVERY_SECOND = WalCheckpoints()  # the default: every 256 commits, or a second after any
