"""Group commit: contiguous indexes, one signed checkpoint per batch, no forks."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from lictor.errors import InvalidRequestError, SignatureError, StoreError
from lictor.log.checkpoint import open_checkpoint
from lictor.log.merkle import (
    leaf_hash,
    merkle_root,
    prove_consistency,
    tree_hash,
    verify_consistency,
)
from lictor.log.note import Ed25519Signer
from lictor.sequencer import INLINE_WAIT_S, Command, Plan, Sequencer, append_entry
from lictor.service.log import AuditLog
from lictor.store.base import Head, RecordWrite, StoredEntry
from lictor.store.sqlite import SQLiteStore
from lictor.store.view import StateView


@pytest.fixture
def signer() -> Ed25519Signer:
    return Ed25519Signer.generate("test.example/log")


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    return SQLiteStore(tmp_path / "log.db")


def _entry(n: int) -> StoredEntry:
    return StoredEntry(f'{{"n":{n}}}'.encode())


def _check_log(store: SQLiteStore, signer: Ed25519Signer) -> list[bytes]:
    head = store.head()
    assert head is not None
    entries = store.read_entries(0, head.size)
    assert merkle_root([leaf_hash(e) for e in entries]) == head.root
    assert tree_hash(head.size, store) == head.root
    checkpoint, _ = open_checkpoint(head.checkpoint, [signer.verifier], signer.name)
    assert (checkpoint.size, checkpoint.root) == (head.size, head.root)
    return entries


def test_concurrent_appenders_get_contiguous_indexes(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    sequencer = Sequencer(store, signer, max_batch=16)
    indexes: list[int] = []
    lock = threading.Lock()

    def appender(worker: int) -> None:
        for i in range(40):
            appended = sequencer.submit(_entry(worker * 1000 + i)).result(timeout=30)
            with lock:
                indexes.append(appended.index)

    threads = [threading.Thread(target=appender, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sequencer.close()
    assert sorted(indexes) == list(range(240))
    assert len(_check_log(store, signer)) == 240


def test_a_batch_shares_one_checkpoint(store: SQLiteStore, signer: Ed25519Signer) -> None:
    sequencer = Sequencer(store, signer, max_batch=1024)
    futures = sequencer.submit_many([_entry(i) for i in range(500)])
    heads = {f.result(timeout=30).head for f in futures}
    sequencer.close()
    assert len(heads) <= 2  # the first entry may commit alone, the rest together
    sizes = [size for size in range(501) if store.checkpoint_at(size) is not None]
    assert sizes[0] == 0 and sizes[-1] == 500 and len(sizes) <= 3


def test_commit_listeners_get_each_commits_entries_at_their_indexes(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    sequencer = Sequencer(store, signer, max_batch=16)
    seen: dict[int, bytes] = {}
    sizes: list[int] = []

    def listener(head: Head, entries: Sequence[StoredEntry]) -> None:
        for offset, entry in enumerate(entries):
            seen[head.size - len(entries) + offset] = entry.data

    sequencer.add_commit_listener(listener)
    sequencer.add_listener(lambda head: sizes.append(head.size))
    for future in sequencer.submit_many([_entry(i) for i in range(100)]):
        future.result(timeout=30)
    sequencer.close()
    assert seen == dict(enumerate(store.read_entries(0, 100)))
    assert sizes[-1] == 100


def test_every_signed_checkpoint_is_consistent_with_the_final_tree(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    sequencer = Sequencer(store, signer, max_batch=7)
    for start in range(0, 300, 50):
        for f in sequencer.submit_many([_entry(i) for i in range(start, start + 50)]):
            f.result(timeout=30)
    sequencer.close()
    final = store.head()
    assert final is not None
    for size in range(1, final.size + 1):
        note = store.checkpoint_at(size)
        if note is None:
            continue
        old, _ = open_checkpoint(note, [signer.verifier])
        proof = prove_consistency(size, final.size, store)
        verify_consistency(size, final.size, old.root, final.root, proof)


class FailingStore(SQLiteStore):
    """Fault injection: the next `append` calls fail."""

    failures = 0

    def append(
        self,
        expected_version: int,
        entries: Sequence[StoredEntry],
        hashes: Sequence[bytes],
        head: Head,
        writes: Sequence[RecordWrite] = (),
    ) -> Head:
        if self.failures:
            self.failures -= 1
            raise StoreError("disk on fire")
        return super().append(expected_version, entries, hashes, head, writes)


def test_a_failed_commit_fails_every_waiter_and_acknowledges_nothing(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    store = FailingStore(tmp_path / "log.db")
    sequencer = Sequencer(store, signer)
    sequencer.submit(_entry(0)).result(timeout=30)
    store.failures = 1
    failed = sequencer.submit_many([_entry(i) for i in range(1, 4)])
    for f in failed:
        with pytest.raises(StoreError, match="disk on fire"):
            f.result(timeout=30)
    assert sequencer.submit(_entry(9)).result(timeout=30).index == 1
    sequencer.close()
    assert _check_log(store, signer) == [b'{"n":0}', b'{"n":9}']


def test_two_sequencers_on_one_database_do_not_fork(tmp_path: Path, signer: Ed25519Signer) -> None:
    first = Sequencer(SQLiteStore(tmp_path / "log.db"), signer, max_batch=5)
    second = Sequencer(SQLiteStore(tmp_path / "log.db"), signer, max_batch=5)
    futures = []
    for i in range(60):
        futures.append((first if i % 2 else second).submit(_entry(i)))
    indexes = sorted(f.result(timeout=60).index for f in futures)
    first.close()
    second.close()
    assert indexes == list(range(60))
    store = SQLiteStore(tmp_path / "log.db")
    assert sorted(_check_log(store, signer)) == sorted(_entry(i).data for i in range(60))


def test_restart_checks_the_head_against_the_signing_key(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    sequencer = Sequencer(store, signer)
    sequencer.submit(_entry(1)).result(timeout=30)
    sequencer.close()
    Sequencer(store, signer).close()  # same key: fine
    with pytest.raises(SignatureError):
        Sequencer(store, Ed25519Signer.generate(signer.name))


def test_a_cancelled_waiter_drops_its_entry_and_the_log_keeps_going(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    class SlowStore(SQLiteStore):
        gate = threading.Event()

        def append(
            self,
            expected_version: int,
            entries: Sequence[StoredEntry],
            hashes: Sequence[bytes],
            head: Head,
            writes: Sequence[RecordWrite] = (),
        ) -> Head:
            self.gate.wait(timeout=30)
            return super().append(expected_version, entries, hashes, head, writes)

    slow = SlowStore(store._path)
    slow.gate.set()
    sequencer = Sequencer(slow, signer)
    slow.gate.clear()
    blocker = sequencer.submit(_entry(0))  # holds the committer inside append
    queued = sequencer.submit_many([_entry(1), _entry(2)])
    assert queued[0].cancel()
    slow.gate.set()
    assert blocker.result(timeout=30).index == 0
    assert queued[1].result(timeout=30).index == 1
    assert sequencer.submit(_entry(3)).result(timeout=30).index == 2
    sequencer.close()
    assert _check_log(store, signer) == [b'{"n":0}', b'{"n":2}', b'{"n":3}']


def test_a_dead_committer_fails_waiters_instead_of_hanging(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    sequencer = Sequencer(store, signer)

    def explode(batch: object) -> None:
        raise RuntimeError("bug in the committer")

    sequencer._commit_batch = explode  # type: ignore[method-assign,assignment]
    first = sequencer.submit(_entry(0))
    with pytest.raises(StoreError):
        first.result(timeout=30)
    with pytest.raises(StoreError, match="closed"):
        sequencer.submit(_entry(1))


def _increment(key: str) -> Command:
    """A command that logs one entry and adds one to a counter record."""

    def plan(view: StateView, first_index: int) -> Plan:
        current = view.get("counter", key)
        value = int(current.doc) if current else 0
        version = current.version if current else 0
        write = RecordWrite("counter", key, str(value + 1).encode(), version)
        entry = StoredEntry(f'{{"counter":"{key}","value":{value + 1}}}'.encode())
        return Plan([entry], [write], lambda head: (first_index, value + 1))

    return plan


def _refuse(view: StateView, first_index: int) -> Plan:
    raise InvalidRequestError("not today")


def test_commands_in_one_batch_see_each_other(store: SQLiteStore, signer: Ed25519Signer) -> None:
    sequencer = Sequencer(store, signer)
    commands = [_increment("a"), _refuse, _increment("a"), _increment("b"), _increment("a")]
    futures = sequencer.submit_commands(commands)
    results = []
    for f in futures:
        try:
            results.append(f.result(timeout=30))
        except InvalidRequestError:
            results.append("refused")
    sequencer.close()
    assert results[1] == "refused"
    values = [r[1] for r in results if r != "refused"]
    indexes = [r[0] for r in results if r != "refused"]
    assert values == [1, 2, 1, 3]
    assert indexes == sorted(indexes) and len(set(indexes)) == 4
    record = store.get_record("counter", "a")
    assert record is not None and record.doc == b"3"
    entries = _check_log(store, signer)
    assert entries[indexes[-1]] == b'{"counter":"a","value":3}'


def test_two_sequencers_replan_on_conflict_and_lose_no_update(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    first = Sequencer(SQLiteStore(tmp_path / "log.db"), signer, max_batch=3)
    second = Sequencer(SQLiteStore(tmp_path / "log.db"), signer, max_batch=3)
    futures = []
    for i in range(40):
        futures += (first if i % 2 else second).submit_commands([_increment("shared")])
    values = sorted(f.result(timeout=60)[1] for f in futures)
    first.close()
    second.close()
    assert values == list(range(1, 41))
    store = SQLiteStore(tmp_path / "log.db")
    record = store.get_record("counter", "shared")
    assert record is not None and record.doc == b"40"
    assert len(_check_log(store, signer)) == 40


def test_proofs_from_remembered_hashes_match_the_store(
    store: SQLiteStore, signer: Ed25519Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sequencer answers recent hashes from memory, older ones from the store."""
    import lictor.sequencer as sequencer_module
    from lictor.log.merkle import prove_inclusion

    monkeypatch.setattr(sequencer_module, "RECENT_HASHES", 8)  # forget early and often
    sequencer = Sequencer(store, signer, max_batch=7)
    sizes = []
    for batch in range(40):
        futures = sequencer.submit_many([_entry(batch * 10 + i) for i in range(batch % 5 + 1)])
        sizes.append(futures[-1].result().head.size)
    size = sizes[-1]
    remembered = sequencer._recent._hashes
    assert 0 < len(remembered) <= 2 * 8 + size.bit_length()  # bounded, right edge kept
    for tree_size in (sizes[0], sizes[len(sizes) // 2], size - 1, size):
        for index in range(tree_size):
            assert prove_inclusion(index, tree_size, sequencer) == prove_inclusion(
                index, tree_size, store
            )
        for first in range(1, tree_size):
            assert prove_consistency(first, tree_size, sequencer) == prove_consistency(
                first, tree_size, store
            )
    sequencer.close()


def test_a_failing_command_leaves_nothing_of_its_own_in_the_batch(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    """A command that applied writes to the view and then raised commits none of them;
    its batch neighbours, and a `chain` of commands, commit whole."""
    from lictor.sequencer import chain

    def write(key: str, fail: bool = False) -> Command:
        def plan(view: StateView, first_index: int) -> Plan:
            view.apply([RecordWrite("thing", key, b"{}", 0)])
            if fail:
                raise InvalidRequestError(f"{key} refused after writing")
            return Plan([_entry(first_index)], [RecordWrite("thing", key, b"{}", 0)], lambda h: key)

        return plan

    sequencer = Sequencer(store, signer)
    futures = sequencer.submit_commands(  # queued together: one batch
        [
            write("a"),
            write("b", fail=True),
            chain(write("c"), write("d")),
            chain(write("e"), write("f", fail=True)),
        ]
    )
    assert futures[0].result() == "a" and futures[2].result() == ("c", "d")
    for failed in (futures[1], futures[3]):
        with pytest.raises(InvalidRequestError):
            failed.result()
    sequencer.close()
    kept = {key for key in "abcdef" if store.get_record("thing", key) is not None}
    assert kept == {"a", "c", "d"}
    _check_log(store, signer)


def test_idle_until_a_command_is_queued_or_being_committed(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    sequencer = Sequencer(store, signer)
    assert sequencer.idle()
    inside, release = threading.Event(), threading.Event()

    def held(view: StateView, first_index: int) -> Plan:
        inside.set()
        release.wait(timeout=30)
        return Plan([_entry(0)], [], lambda head: first_index)

    committing = sequencer.submit_commands([held])[0]
    assert inside.wait(timeout=30)
    assert not sequencer.idle()  # planning a batch
    queued = sequencer.submit(_entry(1))
    release.set()
    assert committing.result(timeout=30) == 0 and queued.result(timeout=30).index == 1
    deadline = time.monotonic() + 30
    while not sequencer.idle() and time.monotonic() < deadline:
        time.sleep(0.001)  # the committer clears its flag just after settling the futures
    assert sequencer.idle()
    sequencer.close()


def test_listeners_after_results_hear_of_a_commit_once_its_callers_have_theirs(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    sequencer = Sequencer(store, signer)
    waiting: list[Future[Any]] = []
    seen: list[tuple[str, int, bool]] = []  # who, size, whether the caller had its result

    def listener(name: str) -> Callable[[Head, Sequence[StoredEntry]], None]:
        def heard(head: Head, entries: Sequence[StoredEntry]) -> None:
            seen.append((name, head.size, all(f.done() for f in waiting)))

        return heard

    sequencer.add_commit_listener(listener("after"), after_results=True)
    sequencer.add_commit_listener(listener("before"))
    gate = threading.Event()  # holds each commit until its future is in ``waiting``

    def command(n: int) -> Command:
        def plan(view: StateView, first_index: int) -> Plan:
            gate.wait(timeout=30)
            return Plan([_entry(n)], [], lambda head: first_index)

        return plan

    for n in range(3):
        gate.clear()
        waiting[:] = sequencer.submit_commands([command(n)])
        gate.set()
        waiting[0].result(timeout=30)
    sequencer.close()
    assert [s for s in seen if s[0] == "before"] == [("before", n, False) for n in (1, 2, 3)]
    assert [s for s in seen if s[0] == "after"] == [("after", n, True) for n in (1, 2, 3)]


class TurnTakingStore(SQLiteStore):
    """A store shared with other writers (as replicas' and workers' are), whose write
    turn another writer holds until ``released`` is set; ``waiting`` is set once this
    process waits for it."""

    shared = True

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.waiting = threading.Event()
        self.released = threading.Event()

    def writing(self) -> Any:
        self.waiting.set()
        self.released.wait(30)
        return super().writing()

    def turn_now(self) -> Any:
        return contextlib.nullcontext(self.released.is_set())


class ReplicaStore(TurnTakingStore):
    """A shared store whose turn cannot be tried without waiting (as PostgreSQL's)."""

    turns_at_once = False

    def turn_now(self) -> Any:
        return contextlib.nullcontext(False)


def test_what_queues_while_a_shared_store_turn_is_awaited_joins_the_batch(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    store = TurnTakingStore(tmp_path / "log.db")
    store.released.set()
    sequencer = Sequencer(store, signer)
    sequencer.submit(_entry(0)).result(timeout=30)  # the log begins
    store.released.clear()
    store.waiting.clear()
    first = sequencer.submit(_entry(1))
    assert store.waiting.wait(30)  # the committer took entry 1 and waits for its turn
    later = sequencer.submit_many([_entry(i) for i in range(2, 12)])
    store.released.set()
    heads = {f.result(timeout=30).head.size for f in [first, *later]}
    sequencer.close()
    assert heads == {12}, "one commit, one checkpoint for all that waited"
    assert [store.checkpoint_at(size) is not None for size in (1, 2, 12)] == [True, False, True]
    _check_log(store, signer)


def _threads_of_commits(sequencer: Sequencer) -> list[tuple[int, int]]:
    """(committing thread, entries) of each commit from now on."""
    seen: list[tuple[int, int]] = []
    sequencer.add_commit_listener(
        lambda head, entries: seen.append((threading.get_ident(), len(entries)))
    )
    return seen


@pytest.mark.parametrize("inline", [True, False])
def test_a_quiet_loop_commits_its_callers_commands_itself_in_one_batch(
    store: SQLiteStore, signer: Ed25519Signer, inline: bool
) -> None:
    sequencer = Sequencer(store, signer, inline=inline)
    seen = _threads_of_commits(sequencer)

    async def callers() -> tuple[int, list[int]]:
        first = await sequencer.run(append_entry(_entry(0)))
        together = [sequencer.submit_async([append_entry(_entry(n))])[0] for n in range(1, 6)]
        return first.index, [appended.head.size for appended in await asyncio.gather(*together)]

    loop_thread = threading.get_ident()
    first, sizes = asyncio.run(callers())
    sequencer.close()
    _check_log(store, signer)
    assert first == 0 and sizes[-1] == 6
    committers = {thread for thread, _ in seen}
    if inline:
        assert committers == {loop_thread}
        assert sizes == [6] * 5 and [n for _, n in seen] == [1, 5]  # one commit for five
    else:
        assert loop_thread not in committers


def test_a_loop_leaves_its_commands_to_a_committer_that_is_at_a_batch(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    sequencer = Sequencer(store, signer, inline=True)
    seen = _threads_of_commits(sequencer)
    inside, release = threading.Event(), threading.Event()

    def held(view: StateView, first_index: int) -> Plan:
        inside.set()
        release.wait(timeout=30)
        return Plan([_entry(1)], [], lambda head: first_index)

    async def callers() -> tuple[int, int]:
        quiet = sequencer.submit_async([append_entry(_entry(0))])[0]  # this loop would commit it
        busy = sequencer.submit_commands([held])[0]  # wakes the committer, which takes both
        assert inside.wait(timeout=30)
        await asyncio.sleep(0)  # the loop's turn comes: the committer holds the commit lock
        release.set()
        return (await quiet).index, busy.result(timeout=30)

    assert asyncio.run(callers()) == (0, 1)
    sequencer.close()
    assert len(seen) == 1 and seen[0][0] != threading.get_ident()  # the committer's batch
    assert seen[0][1] == 2
    _check_log(store, signer)


def test_a_busy_loop_commits_its_callers_batches_itself(
    store: SQLiteStore, signer: Ed25519Signer
) -> None:
    sequencer = Sequencer(store, signer, inline=True)
    seen = _threads_of_commits(sequencer)
    sequencer.submit_many([_entry(0), _entry(1)])[1].result(timeout=30)  # a batch of two

    async def callers() -> list[int]:
        first = await sequencer.run(append_entry(_entry(2)))  # after the committer's batch
        many = [sequencer.run(append_entry(_entry(n))) for n in range(3, 23)]
        return [first.index] + [appended.index for appended in await asyncio.gather(*many)]

    loop_thread = threading.get_ident()
    assert asyncio.run(callers()) == list(range(2, 23))
    sequencer.close()
    _check_log(store, signer)
    assert seen[0][1] == 2 and seen[0][0] != loop_thread  # the committer's batch
    on_loop = [n for thread, n in seen[1:] if thread == loop_thread]
    assert sum(on_loop) == 21 and len(on_loop) < 21  # every command, in shared batches


class SlowSyncStore(SQLiteStore):
    """A store whose commits wait ``delay`` seconds for the disk while ``slow`` is set."""

    def __init__(self, path: Path, delay: float) -> None:
        super().__init__(path)
        self.delay = delay
        self.slow = threading.Event()

    def append(self, *args: Any, **kwargs: Any) -> Head:
        if self.slow.is_set():
            time.sleep(self.delay)
        return super().append(*args, **kwargs)


def test_a_loop_whose_commits_wait_on_the_store_leaves_busy_batches_to_the_committer(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    store = SlowSyncStore(tmp_path / "log.db", delay=4 * INLINE_WAIT_S)
    sequencer = Sequencer(store, signer, inline=True)
    seen = _threads_of_commits(sequencer)
    loop_thread = threading.get_ident()
    index = iter(range(1000))

    async def one() -> None:
        await sequencer.run(append_entry(_entry(next(index))))

    def after_a_batch_of_two() -> int:
        """The thread that commits a loop caller's command after a batch of two."""
        sequencer.submit_many([_entry(next(index)), _entry(next(index))])[1].result(timeout=30)
        asyncio.run(one())
        return seen[-1][0]

    store.slow.set()
    for _ in range(4):  # quiet: committed on the loop, each waiting on the store
        asyncio.run(one())
        assert seen[-1][0] == loop_thread
    assert after_a_batch_of_two() != loop_thread  # busy and slow: the committer's
    store.slow.clear()
    moved_back = False
    for _ in range(20):  # quiet commits on the loop, quick again, bring it back
        asyncio.run(one())
        moved_back = after_a_batch_of_two() == loop_thread
        if moved_back:
            break
    assert moved_back
    sequencer.close()
    _check_log(store, signer)
    store.close()


def test_a_shared_stores_log_commits_on_a_loop_only_when_its_turn_is_free_at_once(
    tmp_path: Path,
) -> None:
    store = TurnTakingStore(tmp_path / "log.db")
    store.released.set()
    signer = Ed25519Signer.generate("test.example/log")
    log = AuditLog(store, signer)
    seen = _threads_of_commits(log.sequencer)
    loop_thread = threading.get_ident()

    async def free() -> int:
        return (await log.sequencer.run(append_entry(_entry(0)))).index

    async def held() -> int:
        store.released.clear()
        store.waiting.clear()
        queued = log.sequencer.submit_async([append_entry(_entry(1))])[0]
        assert await asyncio.to_thread(store.waiting.wait, 30)  # the committer waits for it
        store.released.set()
        return (await queued).index

    assert asyncio.run(free()) == 0
    assert seen[-1][0] == loop_thread
    assert asyncio.run(held()) == 1
    assert seen[-1][0] != loop_thread
    log.sequencer.close()
    _check_log(store, signer)


def test_a_replicas_log_never_commits_on_a_loop(tmp_path: Path) -> None:
    store = ReplicaStore(tmp_path / "log.db")
    store.released.set()
    log = AuditLog(store, Ed25519Signer.generate("test.example/log"))
    seen = _threads_of_commits(log.sequencer)

    async def caller() -> int:
        return (await log.sequencer.run(append_entry(_entry(0)))).index

    assert asyncio.run(caller()) == 0
    log.sequencer.close()
    assert seen and threading.get_ident() not in {thread for thread, _ in seen}


class BusyStore(SQLiteStore):
    """A store whose write path another thread of this process holds while ``busy``
    is set (as an index pass or a WAL restart holds SQLite's)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.busy = threading.Event()

    def write_waits(self) -> bool:
        return self.busy.is_set() or super().write_waits()


def test_a_loop_leaves_its_commands_to_the_committer_while_the_store_is_writing(
    tmp_path: Path, signer: Ed25519Signer
) -> None:
    store = BusyStore(tmp_path / "log.db")
    sequencer = Sequencer(store, signer, inline=True)
    seen = _threads_of_commits(sequencer)

    async def caller() -> int:
        store.busy.set()
        try:
            return (await sequencer.run(append_entry(_entry(0)))).index
        finally:
            store.busy.clear()

    assert asyncio.run(caller()) == 0
    sequencer.close()
    assert seen and threading.get_ident() not in {thread for thread, _ in seen}
    store.close()
