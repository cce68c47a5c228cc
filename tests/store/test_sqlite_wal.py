"""SQLite: WAL checkpoints run in the store's own thread, never inside a commit.

What a test observes is the files: only a checkpoint writes pages into the
database file (in WAL mode a commit writes the WAL alone), and the WAL's
frame count is read from the wal-index (``-shm``) without touching the
database. No test calls a checkpoint itself; waits are generous bounds on
the store's thread, never timings.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lictor.store.base import RecordWrite
from lictor.store.sqlite import SQLiteStore
from lictor.store.sqlite_wal import WalCheckpointer, WalCheckpoints

from ..conftest import REPO

NEVER = WalCheckpoints(every_commits=10**9, interval_s=3600)  # only `close` checkpoints
PAGE = 4096
WITHIN_S = 30.0


def _fill(store: SQLiteStore, count: int, start: int = 0) -> None:
    """``count`` commits of one record each, a few WAL pages apiece."""
    for i in range(start, start + count):
        store.put_record(RecordWrite("note", f"n{i:06d}", bytes(3 * PAGE), 0))


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _wal_frames(db: Path) -> int:
    """The WAL's frame count (``mxFrame``), read from the wal-index header."""
    header = Path(f"{db}-shm").read_bytes()[:48]
    return int.from_bytes(header[16:20], sys.byteorder)


def _eventually(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + WITHIN_S
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_commit_does_not_checkpoint(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db, wal=NEVER)
    assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    untouched = _size(db)
    _fill(store, 400)  # past SQLite's own 1000-page autocheckpoint
    assert _wal_frames(db) > 1000
    assert _size(db) == untouched  # no page reached the database file
    store.close()


def test_close_checkpoints_and_leaves_a_database_that_reopens(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db, wal=NEVER)
    _fill(store, 300)
    untouched = _size(db)
    # Another connection stays open, so closing the store's own is not the last
    # close (where SQLite would checkpoint by itself): only `close`'s checkpoint copies.
    other = sqlite3.connect(db)
    other.execute("SELECT count(*) FROM meta").fetchall()
    store.close()
    assert _size(db) > untouched + 300 * 3 * PAGE
    other.close()
    again = SQLiteStore(db)
    assert again.count_records("note", {}) == 300
    assert again._writer.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again.close()


def test_the_wal_is_checkpointed_after_enough_commits(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db, wal=WalCheckpoints(every_commits=8, interval_s=3600))
    untouched = _size(db)
    _fill(store, 100)
    assert _eventually(lambda: _size(db) > untouched + 90 * 3 * PAGE)
    store.close()


def test_a_quiet_store_is_checkpointed_on_the_timer(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db, wal=WalCheckpoints(every_commits=10**9, interval_s=0.05))
    untouched = _size(db)
    _fill(store, 3)
    assert _eventually(lambda: _size(db) > untouched + 3 * 3 * PAGE)
    store.close()


def test_a_wal_held_by_a_reader_starts_over_once_it_leaves_and_is_cut_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "s.db"
    wal = WalCheckpoints(
        every_commits=4, interval_s=3600, restart_bytes=16 * PAGE, restart_wait_s=0.05
    )
    store = SQLiteStore(db, wal=wal)
    kept = 4 * wal.restart_bytes
    assert store._writer.execute("PRAGMA journal_size_limit").fetchone()[0] == kept
    reader = sqlite3.connect(db, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM records").fetchall()  # holds its snapshot
    _fill(store, 300)
    assert _wal_frames(db) > 1000
    assert _eventually(lambda: any("cannot start over" in r.getMessage() for r in caplog.records))
    reader.execute("COMMIT")
    written = [300]

    def started_over() -> bool:
        _fill(store, 1, written[0])
        written[0] += 1
        return _wal_frames(db) < 100

    assert _eventually(started_over)
    assert _size(Path(f"{db}-wal")) <= kept + 100 * (PAGE + 24)
    assert store.count_records("note", {}) == written[0]
    reader.close()
    store.close()


def test_under_steady_writes_the_wal_still_starts_over(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    store = SQLiteStore(db, wal=WalCheckpoints(every_commits=16, restart_bytes=256 * PAGE))
    stop = threading.Event()

    def write() -> None:  # no pause between commits: a PASSIVE alone never catches up
        n = 0
        while not stop.is_set():
            _fill(store, 1, n)
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    highest = [0]

    def started_over() -> bool:
        frames = _wal_frames(db)
        highest[0] = max(highest[0], frames)
        return highest[0] >= 256 and frames < 128

    try:
        assert _eventually(started_over)
    finally:
        stop.set()
        writer.join()
    store.close()


def test_a_failing_checkpoint_is_logged_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    opened = WalCheckpointer._open
    broken: list[sqlite3.Connection] = []

    def open_broken_twice(self: WalCheckpointer) -> sqlite3.Connection:
        conn = opened(self)
        if len(broken) < 2:
            conn.close()  # so the checkpoint statement itself fails
            broken.append(conn)
        return conn

    monkeypatch.setattr(WalCheckpointer, "_open", open_broken_twice)
    db = tmp_path / "s.db"
    store = SQLiteStore(db, wal=WalCheckpoints(every_commits=1, interval_s=0.01))
    untouched = _size(db)
    _fill(store, 20)
    assert _eventually(lambda: _size(db) > untouched + 20 * 3 * PAGE)
    assert len(broken) == 2
    failures = [r for r in caplog.records if "WAL checkpoint" in r.getMessage()]
    assert len(failures) == 2 and all(r.levelno == logging.WARNING for r in failures)
    assert store._checkpointer._thread.is_alive()
    _fill(store, 5, 20)
    store.close()
    assert not store._checkpointer._thread.is_alive()


def test_close_does_not_raise_when_the_database_is_gone(tmp_path: Path) -> None:
    where = tmp_path / "gone"
    where.mkdir()
    store = SQLiteStore(where / "s.db", wal=NEVER)
    _fill(store, 10)
    shutil.rmtree(where)
    store.close()
    assert not store._checkpointer._thread.is_alive()


# Appends until killed, printing each key once its commit returned.
_APPENDER = """
import sys
from lictor.store.base import RecordWrite
from lictor.store.sqlite import SQLiteStore
from lictor.store.sqlite_wal import WalCheckpoints

store = SQLiteStore(sys.argv[1], wal=WalCheckpoints(every_commits=10**9, interval_s=3600))
n = 0
while True:
    store.put_record(RecordWrite("note", f"k{n}", bytes(5000), 0))
    print(f"k{n}", flush=True)
    n += 1
"""


def test_a_commit_survives_kill_9_with_no_checkpoint_run(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _APPENDER, str(db)], stdout=subprocess.PIPE, cwd=REPO, text=True
    )
    assert child.stdout is not None
    acked = [child.stdout.readline().strip() for _ in range(500)]
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert _size(db) < 500 * 5000  # the acknowledged writes were in the WAL alone
    store = SQLiteStore(db)
    assert all(store.get_record("note", key) is not None for key in acked)
    store.close()
