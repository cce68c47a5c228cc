"""One events stream per gateway, telling in-flight requests and the session
that their execution ended.

The follower reads ``GET /v1/events`` with the runtime's credential (which
sees its own runtime's entries) from the session's decision on, and hands
each entry that shows an execution ended (revoked, expired, completed,
denied) to the handle tracked under that id, which loses it at once: the
request's upstream call is cancelled well before a renewal would notice.
One stream serves every call, however many are in flight. An id that ended
before it was tracked (a revocation racing the grant's reply) is remembered
for a while, and tracking it then loses it at once.

A cut stream is reopened with ``Last-Event-ID`` after a short pause, so no
entry is missed; while it is down, renewals still end lost executions, only
later. Push is an accelerator, never the only path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import OrderedDict
from typing import Any

import httpx

from lictor.errors import ExecutionRevokedError
from lictor.sdk.enforce import ExecutionHandle
from lictor.sdk.events import ENDED, READ_TIMEOUT_S, RETRY_S, EventReader

REMEMBERED = 1024


def ended_entry(data: str) -> tuple[str, str] | None:
    """``(execution id, state)`` if the entry ``data`` shows an execution ended."""
    try:
        entry: Any = json.loads(data)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("state") not in ENDED:
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
        while True:
            with contextlib.suppress(httpx.HTTPError):
                await self._follow()
            await asyncio.sleep(RETRY_S)

    async def _follow(self) -> None:
        headers = {"Last-Event-ID": str(self._last), "Accept": "text/event-stream"}
        timeout = httpx.Timeout(10.0, read=READ_TIMEOUT_S)
        async with self._http.stream("GET", "/v1/events", headers=headers, timeout=timeout) as r:
            if r.status_code != 200:
                return
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
