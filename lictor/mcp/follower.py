"""One events stream per gateway, telling in-flight requests and the session
that their execution ended.

The follower reads ``GET /v1/events`` with the runtime's credential (which
sees its own runtime's entries) from the session's decision on, asking only
for entries that show an execution lost (revoked, expired, denied: not every
call's start, and not its completion, which this gateway sent itself once it
had stopped tracking the call), and hands each to the handle tracked under
that id, which loses it at once: the
request's upstream call is cancelled well before a renewal would notice.
One stream serves every call, however many are in flight. An id that ended
before it was tracked (a revocation racing the grant's reply) is remembered
for a while, and tracking it then loses it at once.

A cut stream is reopened with ``Last-Event-ID`` after a short pause, so no
entry is missed; while it is down, renewals still end lost executions, only
later. Push is an accelerator, never the only path. Whatever stops the
stream (a refusal, a malformed entry, a bug) is logged and the stream is
reopened, after pauses growing up to `MAX_PAUSE_S` while it keeps failing:
the follower ends only when the gateway stops it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from typing import Any

import httpx

from lictor.errors import ExecutionRevokedError
from lictor.sdk.enforce import ExecutionHandle
from lictor.sdk.events import ENDED, READ_TIMEOUT_S, RETRY_S, EventReader

LOST = ENDED - {"completed"}
REMEMBERED = 1024
MAX_PAUSE_S = 30.0
log = logging.getLogger("lictor.mcp")


class StreamRefusedError(Exception):
    """The control plane answered the events stream with something other than 200."""


def ended_entry(data: str) -> tuple[str, str] | None:
    """``(execution id, state)`` if the entry ``data`` shows an execution lost."""
    try:
        entry: Any = json.loads(data)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("state") not in LOST:
        return None
    execution = entry.get("execution")
    return (execution, entry["state"]) if isinstance(execution, str) else None


class EventFollower:
    """Follows the runtime's events in a task and loses the handles whose execution ended."""

    def __init__(self, url: str, credential: str) -> None:
        headers = {"Authorization": f"Bearer {credential}"}
        self._http = httpx.AsyncClient(base_url=url, headers=headers)
        self._tracked: dict[str, ExecutionHandle] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._last = -1
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self, after: int) -> None:
        """Follow entries after log index ``after`` (once; later calls do nothing)."""
        if self._task is None:
            self._last = after
            self._task = asyncio.create_task(self._run(), name="lictor-mcp-events")
            self._task.add_done_callback(_ended)

    def track(self, handle: ExecutionHandle) -> None:
        """Lose ``handle`` when the log shows its execution ended."""
        state = self._ended.get(handle.id)
        if state is not None:
            _lose(handle, state, None)
            return
        self._tracked[handle.id] = handle

    def untrack(self, handle: ExecutionHandle) -> None:
        self._tracked.pop(handle.id, None)

    def tracked(self) -> list[ExecutionHandle]:
        return list(self._tracked.values())

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._http.aclose()

    def dispatch(self, index: int | None, data: str) -> None:
        """Take one entry: lose its execution's handle if it ended."""
        found = ended_entry(data)
        if found is None:
            return
        execution, state = found
        self._ended[execution] = state
        while len(self._ended) > REMEMBERED:
            self._ended.popitem(last=False)
        handle = self._tracked.pop(execution, None)
        if handle is not None:
            _lose(handle, state, index)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._follow()
                failures = 0
            except httpx.HTTPError:
                failures = 0  # a cut connection: reopen soon
            except StreamRefusedError as e:
                failures += 1
                log.warning("the events stream was refused (%s); trying again", e)
            except Exception:
                failures += 1
                log.exception("the events stream failed; reopening it")
            await asyncio.sleep(min(RETRY_S * 2**failures, MAX_PAUSE_S))

    async def _follow(self) -> None:
        headers = {"Last-Event-ID": str(self._last), "Accept": "text/event-stream"}
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_S)
        params = {"state": sorted(LOST)}  # an older server sends all: the rest are skipped
        stream = self._http.stream(
            "GET", "/v1/events", params=params, headers=headers, timeout=timeout
        )
        async with stream as r:
            if r.status_code != 200:
                raise StreamRefusedError(f"HTTP {r.status_code}")
            reader = EventReader()
            async for line in r.aiter_lines():
                event = reader.feed(line)
                if event is not None:
                    self._take(*event)

    def _take(self, event_id: str | None, data: str) -> None:
        index = int(event_id) if event_id is not None and event_id.isdigit() else None
        if index is not None:
            self._last = index
        self.dispatch(index, data)


def _lose(handle: ExecutionHandle, state: str, index: int | None) -> None:
    where = f" at log index {index}" if index is not None else ""
    handle.lose(ExecutionRevokedError(f"execution {handle.id} is {state}{where}"))


def _ended(task: asyncio.Task[None]) -> None:
    """`EventFollower._run` returns only when cancelled; say so if it ever does not."""
    if not task.cancelled():
        log.error("the events stream stopped: %r; revocations now arrive by renewal", task)
