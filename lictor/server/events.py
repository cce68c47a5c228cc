"""Server-sent events: every log entry as it commits, resumable by log index.

``GET /v1/events`` streams ``id: <log index>`` / ``event: <kind>`` / ``data:
<public entry JSON>``. ``Last-Event-ID`` (or ``?after=``) resumes after an
index, so a subscriber that reconnects misses nothing: the database is the
source of truth and the in-process commit listener only wakes streams up.
Filters: ``runtime`` and ``execution`` match the entry's public fields. A
runtime credential sees only its own runtime's events.

Every stream reads through one `EntryTail`: the newest entries, decoded
once, shared by all streams. A thousand subscribers to one execution each
cost a dictionary lookup per new entry, not a database read and a decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from lictor.errors import InvalidRequestError
from lictor.server.auth import require_role
from lictor.service.log import AuditLog
from lictor.store.base import Credential, Head

router = APIRouter(tags=["events"])
KEEPALIVE_SECONDS = 15.0
CHUNK = 256
TAIL_SIZE = 4096
_UINT = re.compile(r"0|[1-9][0-9]{0,18}")


class CommitSignal:
    """Wakes event streams when the log grows; set from the committer thread."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._changed = asyncio.Event()

    def notify(self, head: Head) -> None:
        """Called after each commit, ours or another replica's (any thread)."""
        self.size = max(self.size, head.size)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_beyond(self, size: int, timeout: float) -> None:
        """Return once the log is larger than ``size``, or after ``timeout``."""
        if self.size > size or self._changed is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


class EntryTail:
    """The newest log entries, decoded, shared by every stream (event loop only)."""

    def __init__(self, log: AuditLog, keep: int = TAIL_SIZE) -> None:
        self._log = log
        self._keep = keep
        self._entries: dict[int, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    async def read(self, start: int, end: int) -> list[dict[str, Any]]:
        """Entries ``start`` to ``end - 1`` (all in the log), decoded."""
        if not all(i in self._entries for i in (start, end - 1)):
            async with self._lock:  # one reader fetches; the others find it here
                await self._fetch(start, end)
        found = [self._entries.get(i) for i in range(start, end)]
        if any(entry is None for entry in found):  # evicted meanwhile: read it directly
            data = await run_in_threadpool(self._log.store.read_entries, start, end)
            return [json.loads(d) for d in data]
        return [entry for entry in found if entry is not None]

    async def _fetch(self, start: int, end: int) -> None:
        missing = [i for i in range(start, end) if i not in self._entries]
        if not missing:
            return
        lo, hi = missing[0], missing[-1] + 1
        data = await run_in_threadpool(self._log.store.read_entries, lo, hi)
        for offset, raw in enumerate(data):
            self._entries[lo + offset] = json.loads(raw)
        if len(self._entries) > 2 * self._keep:  # keep the newest, and what was just read
            oldest = min(lo, max(self._entries) - self._keep)
            self._entries = {i: e for i, e in self._entries.items() if i >= oldest}


def _start_index(last_event_id: str | None, after: str | None) -> int:
    raw = last_event_id if last_event_id is not None else after
    if raw is None:
        return -1
    if not _UINT.fullmatch(raw.strip()):
        raise InvalidRequestError("Last-Event-ID must be a log index")
    return int(raw)


def _matches(entry: dict[str, Any], filters: dict[str, str]) -> bool:
    return all(entry.get(field) == value for field, value in filters.items())


def _format(index: int, entry: dict[str, Any]) -> str:
    data = json.dumps(entry, separators=(",", ":"), sort_keys=True)
    return f"id: {index}\nevent: {entry.get('kind', 'entry')}\ndata: {data}\n\n"


async def _stream(
    log: AuditLog, tail: EntryTail, signal: CommitSignal, last: int, filters: dict[str, str]
) -> AsyncIterator[str]:
    yield "retry: 1000\n\n"
    while True:
        size = log.head().size
        while last + 1 < size:
            end = min(size, last + 1 + CHUNK)
            for offset, entry in enumerate(await tail.read(last + 1, end)):
                if _matches(entry, filters):
                    yield _format(last + 1 + offset, entry)
            last = end - 1
        await signal.wait_beyond(last + 1, KEEPALIVE_SECONDS)
        if log.head().size <= last + 1:
            yield ": keepalive\n\n"


@router.get("/v1/events")
async def events(
    request: Request,
    who: Annotated[Credential, Depends(require_role("admin", "auditor", "runtime"))],
    runtime: Annotated[str | None, Query(max_length=63)] = None,
    execution: Annotated[str | None, Query(max_length=64)] = None,
    after: Annotated[str | None, Query(max_length=20)] = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    """Every log entry from ``Last-Event-ID`` on, as server-sent events."""
    filters = {k: v for k, v in (("runtime", runtime), ("execution", execution)) if v}
    if who.role == "runtime":
        filters["runtime"] = who.name
    start = _start_index(last_event_id, after)
    state = request.app.state
    stream = _stream(state.log, state.tail, state.commits, start, filters)
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream, media_type="text/event-stream", headers=headers)
