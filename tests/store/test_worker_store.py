"""`WorkerStore`: its turns, what a worker remembers inside them, and when it forgets it.

Two stores on one file stand for two workers of one server (each its own
connections, as each worker process has its own)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lictor.store.base import Head, Record, RecordWrite
from lictor.store.workers import TURN_CACHED_RECORDS, WorkerStore


def _head(size: int) -> Head:
    return Head(size, bytes([size % 256]) * 32, f"checkpoint {size}\n".encode(), 0)


def _put(key: str, doc: bytes, version: int) -> RecordWrite:
    return RecordWrite("execution", key, doc, version, (("state", "active"),))


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[WorkerStore, WorkerStore]]:
    first, second = WorkerStore(tmp_path / "lictor.db"), WorkerStore(tmp_path / "lictor.db")
    with first.writing():
        first.append(0, [], [], _head(0))
    second.put_record(_put("ex_1", b'{"n":1}', 0))  # not one the first worker wrote
    yield first, second
    first.close()
    second.close()


class Reads:
    """Counts the reads a store sends to the file."""

    def __init__(self, store: WorkerStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        stored = store._stored_record

        def counted(kind: str, key: str) -> Record | None:
            self.count += 1
            return stored(kind, key)

        monkeypatch.setattr(store, "_stored_record", counted)


def _doc(store: WorkerStore, key: str = "ex_1") -> bytes:
    record = store.get_record("execution", key)
    assert record is not None
    return record.doc


def _turn_reading(store: WorkerStore) -> Head:
    """The head, read in a turn of ``store`` that also reads ex_1 as first written."""
    with store.writing():
        assert _doc(store) == b'{"n":1}'
        head = store.head()
    assert head is not None
    return head


def test_inside_its_turns_a_worker_reads_a_record_once_while_no_one_else_commits(
    workers: tuple[WorkerStore, WorkerStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = workers
    reads = Reads(first, monkeypatch)
    with first.writing():
        assert _doc(first) == b'{"n":1}'
        assert _doc(first) == b'{"n":1}'
    with first.writing():
        assert _doc(first) == b'{"n":1}'
    assert reads.count == 1
    assert _doc(first) == b'{"n":1}' and reads.count == 2  # outside a turn: the file


@pytest.mark.parametrize("through", ["the log", "a record put directly"])
def test_what_another_worker_writes_is_read_at_the_next_turn(
    workers: tuple[WorkerStore, WorkerStore], through: str
) -> None:
    first, second = workers
    head = _turn_reading(first)
    if through == "the log":  # in its own turn
        with second.writing():
            head = second.append(head.version, [], [], _head(0), [_put("ex_1", b'{"n":2}', 1)])
    else:  # outside the turns
        second.put_record(_put("ex_1", b'{"n":2}', 1))
    assert _doc(first) == b'{"n":2}'  # outside a turn: at once
    with first.writing():
        assert _doc(first) == b'{"n":2}'
        assert first.head() == head


def test_a_workers_own_commits_keep_what_it_remembers_exact(
    workers: tuple[WorkerStore, WorkerStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = workers
    head = _turn_reading(first)
    with first.writing():
        own = first.append(head.version, [], [], _head(0), [_put("ex_1", b'{"n":4}', 1)])
    reads = Reads(first, monkeypatch)
    with first.writing():
        assert first.head() == own == second.head()  # its own head, not read again
        assert _doc(first) == b'{"n":4}' == _doc(second)  # what it wrote: read once
        assert _doc(first) == b'{"n":4}'
    assert reads.count == 1
    first.put_record(_put("ex_1", b'{"n":5}', 2))  # outside a turn, by this worker
    with first.writing():
        assert _doc(first) == b'{"n":5}'
    assert reads.count == 2


def test_what_a_worker_remembers_is_small_so_forgetting_it_is_quick(
    workers: tuple[WorkerStore, WorkerStore],
) -> None:
    first, second = workers
    with first.writing():
        head = first.head()
        assert head is not None
        writes = [_put(f"ex_{n}", b"{}", 0) for n in range(2, 3000)]
        first.append(head.version, [], [], _head(0), writes)  # its own: not kept
        for n in range(2, 3000):
            assert _doc(first, f"ex_{n}") == b"{}"  # read: kept, up to the limit
    assert len(first._cache._records) == TURN_CACHED_RECORDS
    second.put_record(_put("ex_1", b'{"n":6}', 1))
    with first.writing():
        assert len(first._cache._records) == 0
        assert _doc(first) == b'{"n":6}'


def test_a_turn_taken_at_once_is_refused_while_another_holds_it(
    workers: tuple[WorkerStore, WorkerStore],
) -> None:
    first, second = workers
    with first.writing():  # another worker's turn, then this process's own thread's
        with second.turn_now() as held:
            assert held is False
        with first.turn_now() as held:
            assert held is False  # not re-entered from a second `turn_now`
    with second.turn_now() as held:
        assert held is True
        with first.turn_now() as other:
            assert other is False
        with second.writing():  # entered again within it, as the committer's plan does
            appended = second.append(1, [], [], _head(0))
        with first.turn_now() as other:
            assert other is False  # still held: the turn ends with `turn_now`'s block
    assert appended.version == 2
    with first.turn_now() as held:
        assert held is True
    assert _turn_reading(first) == appended  # read in a turn of its own after the other's


def test_a_turn_taken_at_once_forgets_what_another_worker_committed(
    workers: tuple[WorkerStore, WorkerStore],
) -> None:
    first, second = workers
    assert _turn_reading(first).size == 0
    second.put_record(_put("ex_1", b'{"n":2}', 1))
    with first.turn_now() as held:
        assert held is True
        assert _doc(first) == b'{"n":2}'
