"""PostgreSQL: a writer that stalls inside its turn loses it; a live one keeps it.

The stalled writer is a real process frozen with SIGSTOP inside `writing()`,
or a raw connection left in the middle of an append's pipeline (what the
database sees of a process frozen while it sends a batch). The other writer
must get the turn within the contract's bound, and the stalled one must not
commit when it wakes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest

from lictor.log.merkle import stored_hash_count
from lictor.store.base import Head, RecordWrite, StoredEntry
from lictor.store.postgres import _WRITER_LOCK, PostgresStore

from ..conftest import REPO
from ..postgres import PostgresServer

RESUME_WITHIN_S = 2.0  # the contract: others write again this soon after a holder stalls

# A writer process: takes the turn, says so, waits for a line on stdin (frozen there
# by the test), then appends on the head it read and tries one more turn.
_FROZEN_WRITER = """
import sys
from lictor.errors import StoreError
from lictor.store.base import Head, RecordWrite
from lictor.store.postgres import PostgresStore

store = PostgresStore(sys.argv[1])
with store.writing():
    head = store.head()
    print("turn", head.version, flush=True)
    sys.stdin.readline()
    stale = RecordWrite("note", "stale", b"planned on an old head", 0)
    try:
        store.append(head.version, [], [], head, [stale])
        print("appended", flush=True)
    except StoreError as e:
        print("failed", type(e).__name__, flush=True)
with store.writing():
    head = store.head()
    again = RecordWrite("note", "after", b"after waking", 0)
    print("recovered", store.append(head.version, [], [], head, [again]).version, flush=True)
store.close()
"""


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    """A fresh database holding a first head."""
    url = postgres.database()
    store = PostgresStore(url)
    try:
        store.append(0, [], [], Head(0, bytes(32), b"checkpoint 0\n", 0))
    finally:
        store.close()
    return url


@pytest.fixture
def store(url: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(url)
    yield opened
    opened.close()


def _write_one(store: PostgresStore, text: str) -> Head:
    """One turn that appends one entry on the current head."""
    with store.writing():
        head = store.head()
        assert head is not None
        size = head.size + 1
        hashes = [bytes(32)] * (stored_hash_count(size) - stored_hash_count(head.size))
        new = Head(size, bytes([size % 256]) * 32, f"checkpoint {size}\n".encode(), 0)
        return store.append(head.version, [StoredEntry(text.encode())], hashes, new)


def _in_thread(work: threading.Thread, started: float) -> float:
    """Start ``work`` and wait for it up to the bound (and a little more); its duration."""
    work.start()
    work.join(timeout=RESUME_WITHIN_S + 3)
    return time.monotonic() - started


def test_a_writer_frozen_in_its_turn_loses_it_and_cannot_commit_when_it_wakes(
    url: str, store: PostgresStore
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _FROZEN_WRITER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline().split()[0] == "turn"
        os.kill(child.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        written: list[Head] = []
        work = threading.Thread(target=lambda: written.append(_write_one(store, "other")))
        took = _in_thread(work, stopped)
        os.kill(child.pid, signal.SIGCONT)
        assert written, "the other writer never got the turn while the holder was frozen"
        assert took <= RESUME_WITHIN_S, f"the other writer waited {took:.2f} s"
        child.stdin.write("wake\n")
        child.stdin.flush()
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()  # a no-op once it exited; on a failure it frees the turn
        child.wait()
    lines = out.splitlines()
    assert lines[0] == "failed StoreError", out  # its in-flight batch failed
    assert store.get_record("note", "stale") is None  # and wrote nothing
    head = store.head()
    assert head is not None and lines[1] == f"recovered {head.version}", out
    assert head.version == written[0].version + 1 and head.size == 1
    assert store.read_entries(0, 1) == [b"other"]
    assert store.get_record("note", "after") is not None
    assert child.returncode == 0


def test_a_holder_stalled_in_the_middle_of_an_append_loses_the_turn(
    url: str, store: PostgresStore
) -> None:
    """Between the statements of a pipeline no idle timeout runs on the server: the
    next writer in line ends the stalled session."""
    stalled = psycopg.connect(url)
    try:
        with pytest.raises(psycopg.OperationalError), stalled.pipeline():
            stalled.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITER_LOCK,))
            stalled.execute("UPDATE head SET version = version + 1 WHERE id = 1")
            stalled.execute("INSERT INTO entries VALUES (0, 'half')")  # no sync: mid-append
            time.sleep(0.2)  # the statements ran; the holder now waits on its process
            stopped = time.monotonic()
            written: list[Head] = []
            work = threading.Thread(target=lambda: written.append(_write_one(store, "other")))
            took = _in_thread(work, stopped)
            assert written, "the other writer never got the turn"
            assert took <= RESUME_WITHIN_S, f"the other writer waited {took:.2f} s"
            stalled.execute("SELECT 1")  # the stalled session is gone
    finally:
        stalled.close()
    assert store.read_entries(0, 1) == [b"other"]


def test_a_live_writer_keeps_its_turn_however_long_it_plans(url: str) -> None:
    """Only a stalled process loses the turn: one that plans for several times the
    bound while another waits still commits, and the other then takes its turn."""
    slow, other = PostgresStore(url), PostgresStore(url)
    try:
        order: list[str] = []
        waiter = threading.Thread(target=lambda: order.append(f"b{_write_one(other, 'b').size}"))
        with slow.writing():
            waiter.start()
            time.sleep(2 * RESUME_WITHIN_S)  # planning, alive
            head = slow.head()
            assert head is not None
            slow.append(head.version, [], [], head, [RecordWrite("note", "slow", b"x", 0)])
            order.append("a")
        waiter.join(timeout=10)
        assert order == ["a", "b1"]
        assert slow.get_record("note", "slow") is not None
    finally:
        slow.close()
        other.close()
