"""The SQLite tag index kept behind the commits: every query exact at every moment."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lictor.store import sqlite as sqlite_store
from lictor.store.base import RecordWrite
from lictor.store.sqlite import SQLiteStore
from lictor.store.sqlite_index import Indexer, Indexing

KIND = "execution"
NEVER = Indexing(interval_s=3600, every_records=1 << 30)  # passes only when a test asks

tag_sets = st.fixed_dictionaries(
    {},
    optional={
        "state": st.sampled_from(["active", "completed"]),
        # values that hold each other, JSON's quotes and brackets: the pending rows a
        # query reads are picked by the text of its tags (`sqlite._pending`)
        "principal": st.sampled_from(['Agent::"a"', 'Agent::"b"', 'Agent::"a"x', '"],["state']),
        "expires": st.sampled_from(["0000000000000001", "0000000000000002", "0000000000000003"]),
    },
)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 7), tag_sets),
        st.tuples(st.just("index"), st.integers(1, 4)),
        st.tuples(st.just("find"), tag_sets, st.integers(0, 8), st.integers(1, 5)),
        st.tuples(st.just("below"), st.sampled_from(["0000000000000002", "0000000000000004"])),
    ),
    max_size=40,
)


def _pending(store: SQLiteStore) -> int:
    return int(store._writer.execute("SELECT COUNT(*) FROM record_index_pending").fetchone()[0])


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(steps=steps)
def test_queries_answer_what_is_written_however_far_the_index_lags(
    tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[Any, ...]]
) -> None:
    path = tmp_path_factory.mktemp("index") / "s.db"
    store = SQLiteStore(path, exclusive=True, indexing=NEVER)
    model: dict[str, tuple[int, dict[str, str]]] = {}  # key: (version, tags)
    try:
        for step in steps:
            if step[0] == "write":
                key, tags = f"ex_{step[1]}", step[2]
                version = model.get(key, (0, {}))[0]
                store.put_record(RecordWrite(KIND, key, b"{}", version, tuple(tags.items())))
                model[key] = (version + 1, tags)
            elif step[0] == "index":
                store.index_pending(step[1])
            elif step[0] == "find":
                wanted, after, limit = step[1], f"ex_{step[2]}", step[3]
                expected = sorted(
                    k
                    for k, (_, tags) in model.items()
                    if k > after and all(tags.get(t) == v for t, v in wanted.items())
                )
                if wanted:
                    found = store.find_records(KIND, wanted, after, limit)
                    assert [r.key for r in found] == expected[:limit]
                    assert all(dict(r.tags) == model[r.key][1] for r in found)
                    assert store.count_records(KIND, wanted) == len(
                        [k for k, (_, t) in model.items() if wanted.items() <= t.items()]
                    )
            else:
                below = step[1]
                expected_below = sorted(
                    (tags["expires"], k)
                    for k, (_, tags) in model.items()
                    if tags.get("expires", below) < below
                )
                found = store.find_records_below(KIND, "expires", below)
                assert [(r.tag("expires"), r.key) for r in found] == expected_below
        store.index_pending(1 << 20)
        assert _pending(store) == 0
        rows = store._writer.execute("SELECT tag, value, key FROM record_index").fetchall()
        assert sorted(rows) == sorted(
            (t, v, k) for k, (_, tags) in model.items() for t, v in tags.items()
        )
    finally:
        store.close()


def test_the_indexer_moves_pending_records_behind_the_commits(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", indexing=Indexing(interval_s=0.05))
    try:
        for n in range(50):
            store.put_record(RecordWrite(KIND, f"ex_{n:02d}", b"{}", 0, (("state", "active"),)))
        assert store.count_records(KIND, {"state": "active"}) == 50  # exact at once
        deadline = time.monotonic() + 10
        while _pending(store) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _pending(store) == 0
        indexed = store._writer.execute("SELECT COUNT(*) FROM record_index").fetchone()[0]
        assert indexed == 50
    finally:
        store.close()


def test_a_query_reads_only_the_pending_records_its_tags_could_match(tmp_path: Path) -> None:
    """A query reads the pending records whose tags, indexed or current, hold its own:
    one re-tagged since it was indexed drops out of its old tags' answers, one other
    records of the kind keep pending do not weigh on them."""
    store = SQLiteStore(tmp_path / "s.db", indexing=NEVER)
    try:
        active = (("parent", "ex_p"), ("state", "active"))
        store.put_record(RecordWrite(KIND, "ex_1", b"{}", 0, active))
        store.index_pending(10)
        store.put_record(RecordWrite(KIND, "ex_1", b"{}", 1, (("parent", "ex_p"),)))
        for n in range(20):  # others, pending: none holds the tags asked for below
            store.put_record(RecordWrite(KIND, f"ex_o{n}", b"{}", 0, (("state", "ended"),)))
        with store._read() as conn:
            needles = [sqlite_store._pair_text(("state", "active"))]
            assert list(sqlite_store._pending(conn, KIND, needles)) == ["ex_1"]
        assert store.find_records(KIND, {"state": "active"}) == []
        assert store.count_records(KIND, {"state": "active"}) == 0
        assert [r.key for r in store.find_records(KIND, {"parent": "ex_p"})] == ["ex_1"]
        assert store.count_records(KIND, {"state": "ended"}) == 20
    finally:
        store.close()


def test_close_indexes_what_is_pending(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", indexing=NEVER)
    store.put_record(RecordWrite(KIND, "ex_1", b"{}", 0, (("state", "active"),)))
    assert _pending(store) == 1
    store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("SELECT COUNT(*) FROM record_index_pending").fetchone()[0] == 0
    assert conn.execute("SELECT tag, value, key FROM record_index").fetchall() == [
        ("state", "active", "ex_1")
    ]
    conn.close()


def test_pending_records_left_by_a_crash_are_found_and_then_indexed(tmp_path: Path) -> None:
    SQLiteStore(tmp_path / "s.db").close()
    conn = sqlite3.connect(tmp_path / "s.db")  # as a process killed before its pass
    with conn:
        conn.execute(
            "INSERT INTO records (kind, key, version, doc, tags) VALUES (?, ?, 1, X'7B7D', ?)",
            (KIND, "ex_1", '[["state","active"]]'),
        )
        conn.execute(
            "INSERT INTO record_index_pending VALUES (?, ?, '[]', ?)",
            (KIND, "ex_1", '[["state","active"]]'),
        )
    conn.close()
    store = SQLiteStore(tmp_path / "s.db", indexing=NEVER)
    try:
        assert [r.key for r in store.find_records(KIND, {"state": "active"})] == ["ex_1"]
        assert store.index_pending() == 1 and _pending(store) == 0
        assert [r.key for r in store.find_records(KIND, {"state": "active"})] == ["ex_1"]
    finally:
        store.close()


def test_a_failed_pass_is_logged_and_tried_again(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    def index_pending(limit: int) -> int:
        calls.append(limit)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        return 0

    indexer = Indexer(index_pending, Indexing(interval_s=0.01, batch=5))
    indexer.committed(1)
    deadline = time.monotonic() + 10
    while len(calls) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    indexer.close()  # and a last pass
    assert len(calls) >= 3 and calls[0] == 5
    assert "indexing pending records failed" in caplog.text
