"""`AsyncEventWatcher`: `lictor.sdk.events`'s watcher for an `AsyncClient`, as an asyncio task.

It follows the stream through httpx, as `AsyncClient` does, and reads it with
the same `EventReader` and `ended`; it lives apart so that `lictor.sdk.events`
needs neither httpx nor asyncio.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from lictor.sdk.enforce import ExecutionHandle
from lictor.sdk.events import READ_TIMEOUT_S, RETRY_S, EventReader, ended


def _request(handle: ExecutionHandle, last: int) -> dict[str, Any]:
    return {
        "params": {"execution": handle.id},
        "headers": {"Last-Event-ID": str(last), "Accept": "text/event-stream"},
        "timeout": httpx.Timeout(10.0, read=READ_TIMEOUT_S),
    }


class NoAsyncWatcher:
    """`NoWatcher` for an `AsyncClient`."""

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class AsyncEventWatcher:
    """`EventWatcher` as an asyncio task."""

    def __init__(self, url: str, headers: dict[str, str], handle: ExecutionHandle, after: int):
        self._http = httpx.AsyncClient(base_url=url, headers=headers)
        self._handle, self._last = handle, after
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lictor-events-{self._handle.id}")

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._http.aclose()

    async def _run(self) -> None:
        while self._handle.lost is None:
            try:
                if await self._follow():
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(RETRY_S)

    async def _follow(self) -> bool:
        request = _request(self._handle, self._last)
        async with self._http.stream("GET", "/v1/events", **request) as r:
            if r.status_code != 200:
                return False
            reader = EventReader()
            async for line in r.aiter_lines():
                event = reader.feed(line)
                if event is None:
                    continue
                event_id, data = event
                if event_id is not None and event_id.isdigit():
                    self._last = int(event_id)
                if ended(self._handle, data):
                    return True
        return False
