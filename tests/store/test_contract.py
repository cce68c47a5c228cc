"""The Store contract (lictor/store/base.py), checked on every engine."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from lictor.errors import ConflictError, StoreError, TreeError
from lictor.store.base import Credential, Head, RecordWrite, Replica, Store, StoredEntry


def _head(size: int) -> Head:
    return Head(size, bytes([size % 256]) * 32, f"checkpoint {size}\n".encode(), 0)


def _entries(start: int, count: int) -> list[StoredEntry]:
    return [StoredEntry(f"entry {start + i}".encode(), b"secret") for i in range(count)]


def _hashes(start: int, count: int) -> list[bytes]:
    return [bytes([(start + i) % 256]) * 32 for i in range(count)]


def test_empty_store_has_no_head(store: Store) -> None:
    assert store.head() is None


def test_a_write_waits_for_nothing_while_none_is_made(store: Store) -> None:
    assert not store.write_waits()
    store.append(0, [], [], _head(0))
    assert not store.write_waits()  # the write path is free once an append returned


def test_append_moves_head_and_stores_everything(store: Store) -> None:
    first = store.append(0, [], [], _head(0))
    assert first.version == 1 and first.size == 0
    second = store.append(1, _entries(0, 3), _hashes(0, 4), _head(3))
    assert store.head() == second
    assert second.version == 2
    assert store.read_entries(0, 3) == [b"entry 0", b"entry 1", b"entry 2"]
    assert store.read_hashes([3, 0, 2]) == [_hashes(3, 1)[0], _hashes(0, 1)[0], _hashes(2, 1)[0]]
    assert store.read_private(1) == b"secret"
    assert store.checkpoint_at(3) == b"checkpoint 3\n"
    assert store.checkpoint_at(0) == b"checkpoint 0\n"
    assert store.checkpoint_at(2) is None


def test_stale_version_is_a_conflict_and_writes_nothing(store: Store) -> None:
    store.append(0, [], [], _head(0))
    store.append(1, _entries(0, 2), _hashes(0, 3), _head(2))
    with pytest.raises(ConflictError):
        store.append(1, _entries(2, 1), _hashes(3, 1), _head(3))
    head = store.head()
    assert head is not None and head.size == 2 and head.version == 2
    with pytest.raises(TreeError):
        store.read_entries(2, 3)
    with pytest.raises(TreeError):
        store.read_hashes([3])
    assert store.checkpoint_at(3) is None


def test_head_size_must_match_the_batch(store: Store) -> None:
    store.append(0, [], [], _head(0))
    with pytest.raises(ConflictError):
        store.append(1, _entries(0, 2), _hashes(0, 3), _head(5))
    assert store.read_hashes([]) == []
    head = store.head()
    assert head is not None and head.size == 0


def test_one_checkpoint_per_size(store: Store) -> None:
    store.append(0, [], [], _head(0))
    other = Head(0, bytes(32), b"another checkpoint 0\n", 0)
    with pytest.raises(ConflictError):
        store.append(1, [], [], other)
    assert store.checkpoint_at(0) == b"checkpoint 0\n"
    # a batch of record writes only keeps the checkpoint and moves the version
    moved = store.append(1, [], [], _head(0), [_write("ex_9", 0)])
    assert moved.version == 2 and store.checkpoint_at(0) == b"checkpoint 0\n"


def test_failed_batch_is_rolled_back_whole(store: Store) -> None:
    store.append(0, [], [], _head(0))
    bad: list[bytes] = [*_hashes(0, 2), object()]  # type: ignore[list-item]
    with pytest.raises(StoreError):
        store.append(1, _entries(0, 2), bad, _head(2))
    head = store.head()
    assert head is not None and head.size == 0
    with pytest.raises(TreeError):
        store.read_entries(0, 1)
    assert store.read_private(0) is None
    store.append(1, _entries(0, 2), _hashes(0, 3), _head(2))
    assert store.read_entries(0, 2) == [b"entry 0", b"entry 1"]


def test_reads_reject_missing_ranges(store: Store) -> None:
    store.append(0, [], [], _head(0))
    store.append(1, _entries(0, 2), _hashes(0, 3), _head(2))
    with pytest.raises(TreeError):
        store.read_entries(1, 3)
    with pytest.raises(TreeError):
        store.read_entries(2, 1)
    with pytest.raises(TreeError):
        store.read_hashes([0, 7])


def test_committed_batches_survive_reopening(open_store: Callable[[], Store]) -> None:
    first = open_store()
    first.append(0, [], [], _head(0))
    first.append(1, _entries(0, 4), _hashes(0, 7), _head(4))
    first.close()
    again = open_store()
    head = again.head()
    assert head is not None and head.size == 4 and head.version == 2
    assert again.read_entries(0, 4)[3] == b"entry 3"
    assert again.read_hashes([6]) == _hashes(6, 1)


def test_concurrent_writers_never_both_extend_one_head(
    open_store: Callable[[], Store],
) -> None:
    open_store().append(0, [], [], _head(0))
    results: list[str] = []
    barrier = threading.Barrier(4)

    def writer(n: int) -> None:
        store = open_store()
        barrier.wait()
        try:
            store.append(1, [StoredEntry(f"writer {n}".encode())], _hashes(0, 1), _head(1))
            results.append("won")
        except ConflictError:
            results.append("lost")

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["lost", "lost", "lost", "won"]
    head = open_store().head()
    assert head is not None and head.size == 1 and head.version == 2


def test_credentials_are_found_by_hash_only(store: Store) -> None:
    credential = Credential("ops", "admin", b"\x01" * 32)
    store.add_credential(credential)
    assert store.find_credential(b"\x01" * 32) == credential
    assert store.find_credential(b"\x02" * 32) is None
    with pytest.raises(ConflictError):
        store.add_credential(Credential("other", "admin", b"\x01" * 32))


def test_hashes_must_fit_the_batch(store: Store) -> None:
    store.append(0, [], [], _head(0))
    with pytest.raises(StoreError):
        store.append(1, _entries(0, 2), _hashes(0, 2), _head(2))  # two entries need three
    head = store.head()
    assert head is not None and head.size == 0
    with pytest.raises(TreeError):
        store.read_entries(0, 1)


def _write(key: str, version: int, doc: bytes = b"{}", **tags: str) -> RecordWrite:
    return RecordWrite("execution", key, doc, version, tuple(sorted(tags.items())))


def test_records_are_versioned_and_found_by_tags(store: Store) -> None:
    first = store.put_record(_write("ex_1", 0, b'{"a":1}', state="active", principal="p"))
    assert first.version == 1
    store.put_record(_write("ex_2", 0, state="active", principal="q"))
    store.put_record(_write("ex_3", 0, state="revoked", principal="p"))
    got = store.get_record("execution", "ex_1")
    assert got is not None and got.doc == b'{"a":1}' and got.tag("state") == "active"
    assert store.get_record("execution", "nope") is None
    assert store.get_record("policy", "ex_1") is None
    active = store.find_records("execution", {"state": "active"})
    assert [r.key for r in active] == ["ex_1", "ex_2"]
    both = store.find_records("execution", {"state": "active", "principal": "p"})
    assert [r.key for r in both] == ["ex_1"]
    page = store.find_records("execution", {}, after="ex_1", limit=1)
    assert [r.key for r in page] == ["ex_2"]
    moved = store.put_record(_write("ex_1", 1, b'{"a":2}', state="revoked", principal="p"))
    assert moved.version == 2
    assert [r.key for r in store.find_records("execution", {"state": "active"})] == ["ex_2"]


def test_record_writes_are_compare_and_swap(store: Store) -> None:
    store.put_record(_write("ex_1", 0))
    with pytest.raises(ConflictError):
        store.put_record(_write("ex_1", 0))
    with pytest.raises(ConflictError):
        store.put_record(_write("ex_1", 5))
    record = store.get_record("execution", "ex_1")
    assert record is not None and record.version == 1


def test_a_conflicting_record_write_rolls_back_the_whole_batch(store: Store) -> None:
    store.append(0, [], [], _head(0))
    store.put_record(_write("ex_1", 0, state="active"))
    writes = [_write("ex_2", 0, state="active"), _write("ex_1", 7, state="revoked")]
    with pytest.raises(ConflictError):
        store.append(1, _entries(0, 1), _hashes(0, 1), _head(1), writes)
    head = store.head()
    assert head is not None and head.size == 0
    assert store.get_record("execution", "ex_2") is None
    record = store.get_record("execution", "ex_1")
    assert record is not None and record.tag("state") == "active"
    store.append(1, _entries(0, 1), _hashes(0, 1), _head(1), [_write("ex_1", 1, state="revoked")])
    record = store.get_record("execution", "ex_1")
    assert record is not None and record.version == 2 and record.tag("state") == "revoked"


def test_a_batch_updates_many_records_and_their_tags(store: Store) -> None:
    """Each record of a batch is compare-and-swapped alone (one key may exist in two
    kinds); an update drops the tags a record no longer carries and changes the rest."""
    store.append(0, [], [], _head(0))
    store.put_record(_write("ex_1", 0, state="active", principal="p", expires="0100"))
    store.put_record(_write("ex_2", 0, state="active", principal="q"))
    store.put_record(RecordWrite("runtime", "ex_1", b"{}", 0, (("state", "active"),)))
    writes = [
        _write("ex_1", 1, state="expired", principal="p"),
        _write("ex_2", 1, state="active", principal="r", expires="0200"),
        RecordWrite("runtime", "ex_1", b'{"r":2}', 1, ()),
        _write("ex_3", 0, state="active", principal="p"),
    ]
    store.append(1, _entries(0, 1), _hashes(0, 1), _head(1), writes)
    one, two = store.get_record("execution", "ex_1"), store.get_record("execution", "ex_2")
    assert one is not None and one.tags == (("principal", "p"), ("state", "expired"))
    assert two is not None and two.version == 2
    assert two.tags == (("expires", "0200"), ("principal", "r"), ("state", "active"))
    runtime = store.get_record("runtime", "ex_1")
    assert runtime is not None and runtime.version == 2 and runtime.tags == ()
    assert [r.key for r in store.find_records("execution", {"principal": "p"})] == ["ex_1", "ex_3"]
    assert store.find_records("runtime", {"state": "active"}) == []
    assert [r.key for r in store.find_records_below("execution", "expires", "9")] == ["ex_2"]
    stale = [_write("ex_2", 2, state="x"), RecordWrite("runtime", "ex_1", b"{}", 1, ())]
    with pytest.raises(ConflictError):
        store.append(2, _entries(1, 1), _hashes(1, 2), _head(2), stale)
    again = store.get_record("execution", "ex_2")
    assert again is not None and again.version == 2 and again.tag("state") == "active"


def test_records_below_a_tag_value_come_in_value_order(store: Store) -> None:
    for key, expires in (("ex_a", "0300"), ("ex_b", "0100"), ("ex_c", "0200"), ("ex_d", "0100")):
        store.put_record(_write(key, 0, state="active", expires=expires))
    store.put_record(_write("ex_e", 0, state="revoked"))
    due = store.find_records_below("execution", "expires", "0250")
    assert [r.key for r in due] == ["ex_b", "ex_d", "ex_c"]
    assert due[0].tag("expires") == "0100" and due[0].tag("state") == "active"
    assert [r.key for r in store.find_records_below("execution", "expires", "0250", limit=1)] == [
        "ex_b"
    ]
    assert store.find_records_below("execution", "expires", "0100") == []
    assert store.find_records_below("policy", "expires", "9999") == []
    store.put_record(_write("ex_b", 1, state="expired"))  # the tag goes with the write
    assert [r.key for r in store.find_records_below("execution", "expires", "0250")] == [
        "ex_d",
        "ex_c",
    ]


def test_records_are_counted_by_tags(store: Store) -> None:
    assert store.count_records("execution", {"state": "active"}) == 0
    store.put_record(_write("ex_1", 0, state="active", principal="p"))
    store.put_record(_write("ex_2", 0, state="active", principal="q"))
    store.put_record(_write("ex_3", 0, state="revoked", principal="p"))
    assert store.count_records("execution", {"state": "active"}) == 2
    assert store.count_records("execution", {"state": "active", "principal": "p"}) == 1
    assert store.count_records("execution", {}) == 3
    assert store.count_records("policy", {}) == 0
    store.put_record(_write("ex_1", 1, state="revoked", principal="p"))
    assert store.count_records("execution", {"state": "active"}) == 1


def test_a_read_after_a_write_sees_the_write(store: Store) -> None:
    """Whatever a store keeps in memory, reads follow every committed write."""
    assert store.get_record("execution", "ex_1") is None  # a miss, remembered or not
    store.put_record(_write("ex_1", 0, b'{"v":1}', state="active"))
    store.append(0, [], [], _head(0))
    for version in range(1, 4):
        record = store.get_record("execution", "ex_1")
        assert record is not None and record.version == version
        write = _write("ex_1", version, b'{"v":%d}' % (version + 1), state=f"s{version}")
        store.append(version, [], [], _head(0), [write])
    record = store.get_record("execution", "ex_1")
    assert record is not None and record.doc == b'{"v":4}' and record.tags == (("state", "s3"),)
    with pytest.raises(ConflictError):  # a failed batch leaves what a read sees unchanged
        store.append(4, [], [], _head(0), [_write("ex_1", 1, state="x")])
    again = store.get_record("execution", "ex_1")
    assert again == record


def test_one_writer_at_a_time_leads_and_leadership_passes_on_close(
    open_store: Callable[[], Store],
) -> None:
    first = open_store()
    assert first.try_lead("reaper") and first.try_lead("reaper")  # held, asked again
    if not first.shared:
        return  # one process writes it: it always leads
    second = open_store()
    assert not second.try_lead("reaper")
    assert second.try_lead("publisher")  # roles are independent
    first.close()
    deadline = time.monotonic() + 5
    while not second.try_lead("reaper"):
        assert time.monotonic() < deadline, "leadership did not pass on"
        time.sleep(0.05)


def test_a_watcher_hears_of_other_writers_commits(open_store: Callable[[], Store]) -> None:
    writer, reader = open_store(), open_store()
    heard = threading.Event()
    stop = reader.watch(heard.set)
    try:
        time.sleep(0.3)
        heard.clear()
        writer.append(0, _entries(0, 1), _hashes(0, 1), _head(1))
        # a store no one else writes never calls
        assert heard.wait(5 if reader.shared else 0.3) == reader.shared
    finally:
        stop()


def test_writers_of_a_shared_store_take_turns(open_store: Callable[[], Store]) -> None:
    first, second = open_store(), open_store()
    if not first.shared:
        with first.writing(), first.writing():  # one process: nothing to wait for
            return
    order: list[str] = []

    def wait_turn() -> None:
        with second.writing():
            order.append("b")

    with first.writing():
        waiter = threading.Thread(target=wait_turn)
        waiter.start()
        time.sleep(0.3)
        order.append("a")
    waiter.join(timeout=5)
    assert order == ["a", "b"], "the second writer did not wait its turn"


def test_a_turn_is_taken_at_once_only_where_the_store_says_it_can_be(
    open_store: Callable[[], Store],
) -> None:
    first, second = open_store(), open_store()
    with first.turn_now() as held:
        assert held is first.turns_at_once
        if held:  # a batch planned and appended in it, as an event loop's commit
            with first.writing():
                head = first.append(0, _entries(0, 1), _hashes(0, 1), _head(1))
            if first.shared:
                with second.turn_now() as other:
                    assert other is False  # another writer's turn is never waited for
    if held:
        assert first.head() == head
    with second.turn_now() as held:  # free again
        assert held is second.turns_at_once


def test_replica_rows_are_upserted_listed_and_dropped(open_store: Callable[[], Store]) -> None:
    first, second = open_store(), open_store()
    first.put_replica(Replica("host-b/2", "1.0", 1_000, 5_000, b'{"decisions":1}'))
    second.put_replica(Replica("host-a/1", "1.0", 2_000, 9_000))
    assert [r.id for r in first.list_replicas(0)] == ["host-a/1", "host-b/2"]
    assert second.list_replicas(0)[1] == Replica(
        "host-b/2", "1.0", 1_000, 5_000, b'{"decisions":1}'
    )
    first.put_replica(Replica("host-b/2", "1.1", 1_000, 12_000, b'{"decisions":7}'))
    seen = second.list_replicas(9_000)
    assert seen == [
        Replica("host-a/1", "1.0", 2_000, 9_000, b"{}"),
        Replica("host-b/2", "1.1", 1_000, 12_000, b'{"decisions":7}'),
    ]
    assert second.list_replicas(12_001) == []
    assert first.drop_replicas(10_000) == 1
    assert [r.id for r in second.list_replicas(0)] == ["host-b/2"]
    assert first.drop_replicas(10_000) == 0
    assert first.head() is None  # replica rows are not the log
