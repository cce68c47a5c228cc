"""Server-sent events against a real server: ordered, live, resumable, filtered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from ..sdk.conftest import DEPLOY, PLANNER, STAGING, govern


def _read_events(
    url: str, headers: dict[str, str], count: int, params: dict[str, Any] | None = None
) -> list[tuple[int, str, dict[str, Any]]]:
    events: list[tuple[int, str, dict[str, Any]]] = []
    current: dict[str, str] = {}
    with httpx.stream(
        "GET", url + "/v1/events", headers=headers, params=params, timeout=10
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line == "" and "id" in current:
                events.append((int(current["id"]), current["event"], json.loads(current["data"])))
                current = {}
                if len(events) == count:
                    break
            elif ":" in line and not line.startswith(":"):
                field, _, value = line.partition(": ")
                current[field] = value
    return events


def _note(url: str, admin: dict[str, str], text: str) -> int:
    r = httpx.post(url + "/v1/log/entries", json={"kind": "note", "text": text}, headers=admin)
    assert r.status_code == 201
    index: int = r.json()["index"]
    return index


def test_events_replay_then_follow_live_and_resume(serve: Callable[..., Any]) -> None:
    server = serve()
    admin = {"Authorization": f"Bearer {server.token}"}
    for i in range(3):
        _note(server.url, admin, f"n{i}")
    replayed = _read_events(server.url, admin, 3)
    assert [(i, kind) for i, kind, _ in replayed] == [(0, "note"), (1, "note"), (2, "note")]
    assert "text" not in replayed[0][2]  # events carry the public entry only

    timer = threading.Timer(0.5, _note, (server.url, admin, "live"))
    timer.start()
    started = time.monotonic()
    resumed = _read_events(server.url, {**admin, "Last-Event-ID": "1"}, 2)
    assert [i for i, _, _ in resumed] == [2, 3]
    assert time.monotonic() - started < 5  # the live event arrived promptly, not by polling
    timer.join()
    after = _read_events(server.url, admin, 1, params={"after": "2"})
    assert after[0][0] == 3


def test_event_access_and_filters(serve: Callable[..., Any]) -> None:
    server = serve()
    admin = {"Authorization": f"Bearer {server.token}"}
    secrets = {}
    for name in ("edge-1", "edge-2"):
        body = {"name": name, "region": "eu", "cluster": "c"}
        secrets[name] = httpx.post(server.url + "/v1/runtimes", json=body, headers=admin).json()[
            "credential"
        ]
    _note(server.url, admin, "unrelated")
    one = {"Authorization": f"Bearer {secrets['edge-1']}"}
    seen = _read_events(server.url, one, 1)
    assert seen[0][2]["runtime"] == "edge-1"
    forced = _read_events(server.url, one, 1, params={"runtime": "edge-2"})
    assert forced[0][2]["runtime"] == "edge-1"  # a runtime cannot widen its own filter
    filtered = _read_events(server.url, admin, 1, params={"runtime": "edge-2"})
    assert filtered[0][0] == 1
    assert httpx.get(server.url + "/v1/events", timeout=5).status_code == 401
    bad = httpx.get(server.url + "/v1/events", headers={**admin, "Last-Event-ID": "x"}, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_request"


def test_a_state_filter_sends_only_those_steps(serve: Callable[..., Any]) -> None:
    plane = govern(serve())
    with plane.client() as client:
        first = client.request(PLANNER, DEPLOY, STAGING)["execution"]["id"]
        second = client.request(PLANNER, DEPLOY, STAGING)["execution"]["id"]
        client.complete(first, "succeeded")
    runtime = {"Authorization": f"Bearer {plane.runtime_secret}"}
    ended = _read_events(plane.url, runtime, 1, params={"state": ["completed", "revoked"]})
    assert [(e["execution"], e["state"]) for _, _, e in ended] == [(first, "completed")]
    both = _read_events(plane.url, runtime, 2, params={"state": "active"})
    assert [(e["execution"], e["state"]) for _, _, e in both] == [
        (first, "active"),
        (second, "active"),
    ]
    admin = {"Authorization": f"Bearer {plane.server.token}"}
    for bad in (["Active"], ["x"] * 9, ["completed!"]):
        r = httpx.get(plane.url + "/v1/events", params={"state": bad}, headers=admin, timeout=5)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def _wire(index: int, data: bytes) -> bytes:
    """An entry's event as the stream has always written it."""
    entry = json.loads(data)
    text = json.dumps(entry, separators=(",", ":"), sort_keys=True)
    return f"id: {index}\nevent: {entry['kind']}\ndata: {text}\n\n".encode()


def _count_reads(log: Any, monkeypatch: Any) -> list[tuple[int, int]]:
    reads: list[tuple[int, int]] = []
    original = log.store.read_entries

    def counted(start: int, end: int) -> list[bytes]:
        reads.append((start, end))
        return original(start, end)

    monkeypatch.setattr(log.store, "read_entries", counted)
    return reads


def test_streams_share_one_decoded_tail(log: Any, monkeypatch: Any) -> None:
    """Many streams wanting the same new entries cost one store read, not one each."""
    import asyncio

    from lictor.server.events import EntryTail

    for n in range(10):
        log.append_event("note", {"n": n})
    stored = log.store.read_entries(0, 10)
    reads = _count_reads(log, monkeypatch)
    tail = EntryTail(log, keep=4)

    async def subscribers() -> list[list[Any]]:
        return await asyncio.gather(*(tail.read(0, 10) for _ in range(50)))

    results = asyncio.run(subscribers())
    assert reads == [(0, 10)]
    assert all(r == results[0] for r in results)
    assert all(a is b for r in results for a, b in zip(r, results[0], strict=True))
    assert [e.entry for e in results[0]] == [json.loads(d) for d in stored]
    assert [e.text for e in results[0]] == [_wire(i, d) for i, d in enumerate(stored)]
    for n in range(10, 20):
        log.append_event("note", {"n": n})
    newest = asyncio.run(asyncio.wait_for(tail.read(10, 20), 5))
    assert [e.entry["kind"] for e in newest] == ["note"] * 10
    reread = asyncio.run(asyncio.wait_for(tail.read(0, 10), 5))  # evicted: read again
    assert [e.text for e in reread] == [e.text for e in results[0]]


def test_committed_entries_reach_streams_without_a_store_read(log: Any, monkeypatch: Any) -> None:
    """The committer hands its entries over; only entries committed elsewhere are read."""
    import asyncio

    from lictor.server.events import CommitSignal, EntryTail, _stream

    log.append_event("note", {"n": "before"})
    tail = EntryTail(log)
    signal = CommitSignal(log.head().size, tail)
    reads = _count_reads(log, monkeypatch)

    async def follow() -> list[bytes]:
        signal.attach(asyncio.get_running_loop())
        stream = _stream(log, tail, signal, log.head().size - 1, {}, frozenset())
        assert await anext(stream) == b"retry: 1000\n\n"
        chunks = []
        for n in range(3):
            await asyncio.to_thread(log.append_event, "note", {"n": n})
            chunks.append(await asyncio.wait_for(anext(stream), 5))
        assert reads == []
        handing.clear()  # as if another replica committed: only the size is heard of
        await asyncio.to_thread(log.append_event, "note", {"n": "elsewhere"})
        chunks.append(await asyncio.wait_for(anext(stream), 5))
        await stream.aclose()
        return chunks

    handing = [True]
    log.sequencer.add_commit_listener(lambda head, e: signal.committed(head, e if handing else ()))
    chunks = asyncio.run(follow())
    size = log.head().size
    assert reads == [(size - 1, size)]
    stored = log.store.read_entries(1, size)
    assert chunks == [_wire(1 + i, d) for i, d in enumerate(stored)]


def test_with_no_stream_open_a_commit_only_moves_the_size(log: Any, monkeypatch: Any) -> None:
    """No call into the event loop per commit while nothing follows the log; a stream
    opened afterwards still starts from the new size and reads what it lacks."""
    import asyncio

    from lictor.server.events import CommitSignal, EntryTail, _stream

    tail = EntryTail(log)
    signal = CommitSignal(log.head().size, tail)
    log.sequencer.add_commit_listener(signal.committed)
    reads = _count_reads(log, monkeypatch)

    async def run() -> bytes:
        signal.attach(asyncio.get_running_loop())
        before = signal.size
        log.append_event("note", {"n": "unfollowed"})  # blocks the loop: nothing runs on it
        assert signal.size == before + 1  # moved by the committer itself
        stream = _stream(log, tail, signal, before - 1, {}, frozenset())
        assert await anext(stream) == b"retry: 1000\n\n"
        chunk = await asyncio.wait_for(anext(stream), 5)
        await stream.aclose()
        return chunk

    chunk = asyncio.run(run())
    size = log.head().size
    assert reads == [(size - 1, size)]  # not handed to the tail: read from the store
    assert chunk == _wire(size - 1, log.store.read_entries(size - 1, size)[0])


def test_a_commit_heard_of_twice_wakes_streams_once(log: Any) -> None:
    """A commit of this process is also heard of through the store (replicas): the
    second notice of a size already known wakes no stream (no needless keepalive)."""
    import asyncio

    from lictor.server.events import CommitSignal, EntryTail, _stream

    tail = EntryTail(log)
    signal = CommitSignal(log.head().size, tail)
    log.sequencer.add_commit_listener(signal.committed)

    async def run() -> tuple[bytes, bytes]:
        signal.attach(asyncio.get_running_loop())
        stream = _stream(log, tail, signal, log.head().size - 1, {}, frozenset())
        assert await anext(stream) == b"retry: 1000\n\n"
        waiting = asyncio.ensure_future(anext(stream))
        await asyncio.to_thread(log.append_event, "note", {"n": 1})
        first = await asyncio.wait_for(waiting, 5)
        waiting = asyncio.ensure_future(anext(stream))
        signal.notify(log.head())  # the same commit again, as another replica's notice
        await asyncio.sleep(0.3)
        assert not waiting.done()  # no keepalive: nothing new to say
        await asyncio.to_thread(log.append_event, "note", {"n": 2})
        second = await asyncio.wait_for(waiting, 5)
        await stream.aclose()
        return first, second

    first, second = asyncio.run(run())
    assert first.startswith(b"id: ") and second.startswith(b"id: ") and first != second


def test_commits_evicting_the_tail_during_a_read_do_not_lose_it(log: Any, monkeypatch: Any) -> None:
    """A slow reader of old entries gets all of them, even when commits handed over
    while it reads the store push them out of the tail."""
    import asyncio

    from lictor.server.events import EntryTail

    for n in range(12):
        log.append_event("note", {"n": n})
    stored = log.store.read_entries(0, 12)
    tail = EntryTail(log, keep=2)
    tail.offer(0, stored[:3])  # 0-2 in the tail, 3-11 to be read from the store
    read = log.store.read_entries

    def slow_read(lo: int, hi: int) -> list[bytes]:
        tail.offer(100, [b'{"kind":"note"}'] * 10)  # a burst committed meanwhile
        return read(lo, hi)

    monkeypatch.setattr(log.store, "read_entries", slow_read)
    got = asyncio.run(asyncio.wait_for(tail.read(0, 12), 5))
    assert [e.text for e in got] == [_wire(i, d) for i, d in enumerate(stored)]
