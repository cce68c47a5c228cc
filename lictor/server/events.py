"""Server-sent events: every log entry as it commits, resumable by log index.

``GET /v1/events`` streams ``id: <log index>`` / ``event: <kind>`` / ``data:
<public entry JSON>``. ``Last-Event-ID`` (or ``?after=``) resumes after an
index, so a subscriber that reconnects misses nothing: the database is the
source of truth; the in-process commit listener wakes streams up and hands
over what this process committed, a copy of what the database holds.
Filters: ``runtime`` and ``execution`` match the entry's public fields, and
``state`` (repeated: any of them) its ``state``, so a follower that cares only
about executions ending is not sent every other step. A runtime credential sees
only its own runtime's events.

Every stream reads through one `EntryTail`: the newest entries, decoded and
formatted once, shared by all streams. The committer hands this process's new
entries straight to the tail, so following the log costs no database read; a
thousand subscribers to one execution each cost a dictionary lookup per new
entry, not a read, a decode and an encode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from lictor.errors import InvalidRequestError
from lictor.log.entry import loads_exactly
from lictor.server.auth import GRANT_ROLE, GrantCaller, require_role
from lictor.service.log import AuditLog
from lictor.store.base import Credential, Head, StoredEntry

router = APIRouter(tags=["events"])
KEEPALIVE_SECONDS = 15.0
CHUNK = 256
TAIL_SIZE = 4096
_UINT = re.compile(r"0|[1-9][0-9]{0,18}")
_STATE = re.compile(r"[a-z_]{1,20}")
MAX_STATES = 8


class CommitSignal:
    """Wakes event streams when the log grows; told of commits from any thread.

    This process's committer hands over the entries it just wrote, which go
    into the tail on the event loop before any stream learns the new size, so
    a stream following the log reads nothing from the store. A commit heard of
    without its entries (another replica's, through `Store.watch`) only moves
    the size; streams then read those entries from the store.
    """

    def __init__(self, size: int, tail: EntryTail) -> None:
        self.size = size  # what streams may read up to
        self._tail = tail
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self._streams = 0  # streams open (event loop only)
        self._woken = size  # the size streams were last woken for (event loop only)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()

    @contextlib.contextmanager
    def following(self) -> Iterator[None]:
        """Around a stream's life (on the event loop): while none is open, a commit
        only moves the size, with no call into the loop (`committed`)."""
        self._streams += 1
        try:
            yield
        finally:
            self._streams -= 1

    def notify(self, head: Head) -> None:
        """A commit, ours or another replica's, whose entries this process lacks."""
        self.committed(head, ())

    def committed(self, head: Head, entries: Sequence[StoredEntry]) -> None:
        """A commit and the entries it wrote, which end at ``head.size`` (any thread).

        With no stream open, the size moves here and nothing else happens: a stream
        that opens later reads the size first (`following` counts it before), and
        what the tail lacks from the store. The count is read again after the size
        moved, so a stream that opened meanwhile is woken all the same."""
        loop = self._loop
        if loop is None or not self._streams:
            self.size = max(self.size, head.size)
            if loop is None or not self._streams:  # still none: no stream to wake
                return
        if not loop.is_closed():
            first, data = head.size - len(entries), [entry.data for entry in entries]
            loop.call_soon_threadsafe(self._grow, head.size, first, data)

    def _grow(self, size: int, first: int, data: list[bytes]) -> None:
        self._tail.offer(first, data)  # before any stream can ask for them
        self.size = max(self.size, size)  # it may be there already (`committed`)
        if self.size > self._woken and self._changed is not None:
            self._woken = self.size
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_beyond(self, size: int, timeout: float) -> bool:
        """Whether the log grew beyond ``size`` within ``timeout`` (at once if unattached)."""
        if self.size > size or self._changed is None:
            return self.size > size
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
        return self.size > size


class LogEvent:
    """One entry as streams use it: decoded (for filters), and as its event's bytes,
    formatted when a stream first sends it (most streams filter most entries out)."""

    __slots__ = ("_text", "entry", "index")

    def __init__(self, index: int, entry: dict[str, Any]) -> None:
        self.index, self.entry = index, entry
        self._text: bytes | None = None

    @property
    def text(self) -> bytes:
        if self._text is None:
            self._text = _format(self.index, self.entry).encode()
        return self._text


class EntryTail:
    """The newest log entries, shared by every stream (event loop only).

    An entry is kept as its stored bytes (handed over by the committer, or read
    from the store) until a stream first wants it; it is then decoded and
    formatted once, and every stream sends the same bytes.
    """

    def __init__(self, log: AuditLog, keep: int = TAIL_SIZE) -> None:
        self._log = log
        self._keep = keep
        self._entries: dict[int, LogEvent | bytes] = {}
        self._lock = asyncio.Lock()

    def offer(self, first: int, data: Sequence[bytes]) -> None:
        """Entries ``first`` on, as stored, just committed."""
        for offset, raw in enumerate(data):
            self._entries.setdefault(first + offset, raw)
        if data:
            self._evict(first)

    async def read(self, start: int, end: int) -> list[LogEvent]:
        """Entries ``start`` to ``end - 1`` (all in the log)."""
        found = {i: self._entries[i] for i in range(start, end) if i in self._entries}
        if len(found) < end - start:
            async with self._lock:  # one reader fetches; the others find it here
                found.update(await self._fetch(start, end))
        # from ``found``, not the tail: commits handed over while the store was read
        # may have evicted from the tail some of what this read wants
        return [self._event(i, found[i]) for i in range(start, end)]

    def _event(self, index: int, found: LogEvent | bytes) -> LogEvent:
        if isinstance(found, LogEvent):
            return found
        event = LogEvent(index, loads_exactly(found))
        if index in self._entries:
            self._entries[index] = event
        return event

    async def _fetch(self, start: int, end: int) -> dict[int, LogEvent | bytes]:
        """Entries ``start`` to ``end - 1``, those the tail lacks read from the store."""
        missing = [i for i in range(start, end) if i not in self._entries]
        fetched: dict[int, LogEvent | bytes] = {}
        if missing:
            lo, hi = missing[0], missing[-1] + 1
            data = await run_in_threadpool(self._log.store.read_entries, lo, hi)
            fetched = {lo + offset: raw for offset, raw in enumerate(data)}
            for index, raw in fetched.items():
                self._entries.setdefault(index, raw)
            self._evict(start)
        present = {i: self._entries[i] for i in range(start, end) if i in self._entries}
        return {**fetched, **present}

    def _evict(self, wanted: int) -> None:
        """Keep the newest ``keep`` entries, and those from ``wanted`` on."""
        if len(self._entries) > 2 * self._keep:
            oldest = min(wanted, max(self._entries) - self._keep)
            self._entries = {i: e for i, e in self._entries.items() if i >= oldest}


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


def _start_index(last_event_id: str | None, after: str | None) -> int:
    raw = last_event_id if last_event_id is not None else after
    if raw is None:
        return -1
    if not _UINT.fullmatch(raw.strip()):
        raise InvalidRequestError("Last-Event-ID must be a log index")
    return int(raw)


def _matches(entry: dict[str, Any], filters: dict[str, str], states: frozenset[str]) -> bool:
    if states and entry.get("state") not in states:
        return False
    return all(entry.get(field) == value for field, value in filters.items())


def _states(given: list[str] | None) -> frozenset[str]:
    if given and (len(given) > MAX_STATES or not all(_STATE.fullmatch(s) for s in given)):
        raise InvalidRequestError(f"state: at most {MAX_STATES} states, each a lowercase word")
    return frozenset(given or ())


def _format(index: int, entry: dict[str, Any]) -> str:
    data = json.dumps(entry, separators=(",", ":"), sort_keys=True)
    return f"id: {index}\nevent: {entry.get('kind', 'entry')}\ndata: {data}\n\n"


async def _stream(
    log: AuditLog,
    tail: EntryTail,
    signal: CommitSignal,
    last: int,
    filters: dict[str, str],
    states: frozenset[str],
) -> AsyncIterator[bytes]:
    with signal.following():
        yield b"retry: 1000\n\n"
        size = signal.size
        while True:
            while last + 1 < size:
                end = min(size, last + 1 + CHUNK)
                events = await tail.read(last + 1, end)
                chunk = b"".join(e.text for e in events if _matches(e.entry, filters, states))
                if chunk:
                    yield chunk
                last = end - 1
            if await signal.wait_beyond(last + 1, KEEPALIVE_SECONDS):
                size = signal.size
                continue
            yield b": keepalive\n\n"
            # a commit whose notice was lost (another replica's) is found here at the latest
            size = max(signal.size, (await run_in_threadpool(log.head)).size)


@router.get("/v1/events", operation_id="follow_events", response_class=EventStream)
async def events(
    request: Request,
    who: Annotated[Credential, Depends(require_role("admin", "auditor", "runtime", GRANT_ROLE))],
    runtime: Annotated[str | None, Query(max_length=63)] = None,
    execution: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=20)] = None,
    state: Annotated[list[str] | None, Query(max_length=20)] = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Every log entry from ``Last-Event-ID`` on, as server-sent events."""
    filters = {k: v for k, v in (("runtime", runtime), ("execution", execution)) if v}
    if who.role == "runtime":
        filters["runtime"] = who.name
    if isinstance(who, GrantCaller):  # a grant follows its own execution only
        filters["execution"] = who.execution_id
    start, states = _start_index(last_event_id, after), _states(state)
    app = request.app.state
    stream = _stream(app.log, app.tail, app.commits, start, filters, states)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
