"""The SQLite store as the worker processes of one server share it (``lictor serve --workers``).

Each worker is a whole control plane over the same SQLite file, as replicas are
over one PostgreSQL database (docs/adr/0008): one log, one signing key, one
lineage, one set of records. What the `Store` contract asks of a shared store,
`WorkerStore` does with the file system, since every worker runs on one machine:

- **Turns** (`writing`): an exclusive ``flock`` on ``<db>-turn.lock`` while a
  batch is planned and appended, so workers take turns instead of colliding
  on the head's compare-and-swap. A worker that dies loses its turn with its
  descriptors; the server's supervisor replaces it. `turn_now` takes a turn
  only if no one holds it (``LOCK_NB``), so that a worker's event loop can
  commit its callers' batches itself without ever waiting for another's.
- **Leading** (`try_lead`): a non-blocking ``flock`` on ``<db>-lead-<role>.lock``,
  kept while this process lives.
- **Watching** (`watch`): a thread reads ``PRAGMA data_version`` every
  `WATCH_S` seconds on a connection of its own; SQLite changes it whenever
  another connection committed, so listeners hear of other workers' commits
  within that bound.
- **Remembering within a turn.** Another worker may change any record at any
  time, so reads outside this process's turn go to the file. Inside a turn,
  the records the committer reads (the runtime, the active policy,
  revocations a plan checks; up to `TURN_CACHED_RECORDS`, not the records it
  writes, which it forgets) and the head its last commit made are remembered
  for as long as no other connection has committed: each turn starts by
  asking SQLite (``PRAGMA data_version`` on the writer's connection, which
  this process's own commits leave alone) and forgets everything when
  another did. Forgetting a thousand records takes well under a millisecond
  (65,536, as many as an exclusive store keeps, about 27 ms: a stall at every
  turn after another worker's commit). A worker serving alone reads a record
  its plans check once, not at every turn; workers committing in alternation
  forget at almost every turn. What another worker writes outside the turns
  (a record put directly, not through the log) while this one holds its turn
  is seen at the next turn, as if this turn had read it as the turn began.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from lictor.errors import StoreError
from lictor.store.base import Head, Record
from lictor.store.sqlite import RecordCache, SQLiteStore
from lictor.store.sqlite_wal import connect

WATCH_S = 0.05
TURN_CACHED_RECORDS = 1024  # what a turn's plans check: runtimes, policies, revocations...
logger = logging.getLogger("lictor.store.workers")


class WorkerStore(SQLiteStore):
    """An `SQLiteStore` shared by the worker processes of one server; see the module."""

    shared = True
    turns_at_once = True

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, exclusive=False)
        # read only inside this process's turns; small, and without the records this
        # process writes, so that forgetting it all when another commits is quick
        self._cache = RecordCache(TURN_CACHED_RECORDS, keep_written=False)
        self._turn_lock = threading.Lock()
        self._turn = _open_lock(self._path + "-turn.lock")
        self._turn_thread: int | None = None  # the thread holding this process's turn
        self._data_version: int | None = None  # as the last turn found it
        self._leads: dict[str, int] = {}
        self._watchers: list[Callable[[], None]] = []

    def writing(self) -> AbstractContextManager[None]:
        return self._taking_turn()

    @contextmanager
    def _taking_turn(self) -> Iterator[None]:
        if self._in_turn():  # taken already (`turn_now`): held until that block ends
            yield
            return
        with self._turn_lock:  # one thread of this process at a time, then one process
            fcntl.flock(self._turn, fcntl.LOCK_EX)
            with self._holding_turn():
                yield

    @contextmanager
    def turn_now(self) -> Iterator[bool]:
        if not self._turn_lock.acquire(blocking=False):
            yield False
            return
        try:
            try:
                fcntl.flock(self._turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # another worker's turn
                yield False
                return
            with self._holding_turn():
                yield True
        finally:
            self._turn_lock.release()

    @contextmanager
    def _holding_turn(self) -> Iterator[None]:
        """The turn just taken (this process's lock, then the file's), until the end."""
        try:
            self._forget_if_others_committed()
            self._turn_thread = threading.get_ident()
            yield
        finally:
            self._turn_thread = None
            fcntl.flock(self._turn, fcntl.LOCK_UN)

    def _forget_if_others_committed(self) -> None:
        """Forget what this process remembers if any other connection committed since
        the last turn began (see the module)."""
        with self._write_lock:
            if self._closed:
                raise StoreError("store is closed")
            try:
                version = self._writer.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error as e:
                raise StoreError(f"database read failed: {e}") from e
        if version != self._data_version:
            self._data_version = version
            self._cache.clear()
            self._appended = None

    def _in_turn(self) -> bool:
        return self._turn_thread == threading.get_ident()

    def get_record(self, kind: str, key: str) -> Record | None:
        if self._in_turn():
            return super().get_record(kind, key)
        return self._stored_record(kind, key)

    def head(self) -> Head | None:
        own = self._appended  # what this process's last commit made the head
        if own is not None and self._in_turn():
            return own
        return super().head()

    def try_lead(self, role: str) -> bool:
        if role in self._leads:
            return True
        fd = _open_lock(f"{self._path}-lead-{role}.lock")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._leads[role] = fd
        return True

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        stop = threading.Event()
        thread = threading.Thread(
            target=_watch, args=(self._path, callback, stop), name="lictor-watch", daemon=True
        )
        thread.start()

        def stopped() -> None:
            stop.set()
            thread.join()

        self._watchers.append(stopped)
        return stopped

    def close(self) -> None:
        for stop in self._watchers:
            stop()
        self._watchers.clear()
        super().close()
        for fd in [self._turn, *self._leads.values()]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._leads.clear()


def _open_lock(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise StoreError(f"cannot open {path}: {e}") from e


def _watch(path: str, callback: Callable[[], None], stop: threading.Event) -> None:
    """Call ``callback`` whenever another connection committed to ``path``."""
    conn = connect(path)
    try:
        seen = conn.execute("PRAGMA data_version").fetchone()[0]
        while not stop.wait(WATCH_S):
            try:
                version = conn.execute("PRAGMA data_version").fetchone()[0]
            except sqlite3.Error:
                logger.exception("watching %s failed", path)
                continue
            if version != seen:
                seen = version
                try:
                    callback()
                except Exception:  # a listener must not stop the watch
                    logger.exception("a commit listener failed")
    finally:
        conn.close()
