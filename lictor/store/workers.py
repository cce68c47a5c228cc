"""The SQLite store as the worker processes of one server share it (``lictor serve --workers``).

Each worker is a whole control plane over the same SQLite file, as replicas are
over one PostgreSQL database (docs/adr/0008): one log, one signing key, one
lineage, one set of records. What the `Store` contract asks of a shared store,
`WorkerStore` does with the file system, since every worker runs on one machine:

- **Turns** (`writing`): an exclusive ``flock`` on ``<db>-turn.lock`` while a
  batch is planned and appended, so workers take turns instead of colliding
  on the head's compare-and-swap. A worker that dies loses its turn with its
  descriptors; the server's supervisor replaces it.
- **Leading** (`try_lead`): a non-blocking ``flock`` on ``<db>-lead-<role>.lock``,
  kept while this process lives.
- **Watching** (`watch`): a thread reads ``PRAGMA data_version`` every
  `WATCH_S` seconds on a connection of its own; SQLite changes it whenever
  another connection committed, so listeners hear of other workers' commits
  within that bound.
- No record cache: another worker may change any record at any time.
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
from lictor.store.sqlite import SQLiteStore
from lictor.store.sqlite_wal import connect

WATCH_S = 0.05
logger = logging.getLogger("lictor.store.workers")


class WorkerStore(SQLiteStore):
    """An `SQLiteStore` shared by the worker processes of one server; see the module."""

    shared = True

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, exclusive=False)
        self._turn_lock = threading.Lock()
        self._turn = _open_lock(self._path + "-turn.lock")
        self._leads: dict[str, int] = {}
        self._watchers: list[Callable[[], None]] = []

    def writing(self) -> AbstractContextManager[None]:
        return self._taking_turn()

    @contextmanager
    def _taking_turn(self) -> Iterator[None]:
        with self._turn_lock:  # one thread of this process at a time, then one process
            fcntl.flock(self._turn, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._turn, fcntl.LOCK_UN)

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
