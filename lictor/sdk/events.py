"""Revocations pushed by the control plane: the events stream of one execution.

A watcher follows ``GET /v1/events?execution=<id>`` from the log index of
the execution's own decision, on a connection of its own (so a cut stream
never holds up renewals). The first entry that shows the execution ended
(revoked, expired, completed, denied) loses the handle at once, which is what
makes a revocation take effect in well under a renewal interval. A broken
stream is reopened with ``Last-Event-ID`` after a short pause, so nothing is
missed; while it is down, renewals alone still enforce revocation, only
later (at the next renewal).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

from lictor.errors import ExecutionRevokedError
from lictor.sdk.enforce import ExecutionHandle

ENDED = frozenset({"revoked", "expired", "completed", "denied"})
RETRY_S = 0.5
READ_TIMEOUT_S = 45.0  # the server sends a keepalive every 15 s


class EventReader:
    """Splits a server-sent event stream into ``(id, data)`` events (no I/O)."""

    def __init__(self) -> None:
        self._id: str | None = None
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str | None, str] | None:
        """Take one line (without its newline); an event when ``line`` ends one."""
        if not line:
            event = (self._id, "\n".join(self._data)) if self._data else None
            self._id, self._data = None, []
            return event
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "id":
            self._id = value
        elif field == "data":
            self._data.append(value)
        return None


def events(lines: Iterable[str]) -> Iterator[tuple[str | None, str]]:
    reader = EventReader()
    for line in lines:
        event = reader.feed(line)
        if event is not None:
            yield event


def ended(handle: ExecutionHandle, data: str) -> bool:
    """Lose ``handle`` if the entry ``data`` shows its execution ended; True if it did."""
    try:
        entry: Any = json.loads(data)
    except ValueError:
        return False
    if not isinstance(entry, dict) or entry.get("execution") != handle.id:
        return False
    state = entry.get("state")
    if state not in ENDED:
        return False
    handle.lose(ExecutionRevokedError(f"execution {handle.id} is {state} (pushed by the log)"))
    return True


def _request(handle: ExecutionHandle, last: int) -> dict[str, Any]:
    return {
        "params": {"execution": handle.id},
        "headers": {"Last-Event-ID": str(last), "Accept": "text/event-stream"},
        "timeout": httpx.Timeout(10.0, read=READ_TIMEOUT_S),
    }


class NoWatcher:
    """What a client that follows no events watches with: nothing."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class NoAsyncWatcher:
    """`NoWatcher` for an `AsyncClient`."""

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class EventWatcher:
    """Follows one execution's events in a daemon thread until stopped or lost."""

    def __init__(self, url: str, headers: dict[str, str], handle: ExecutionHandle, after: int):
        self._http = httpx.Client(base_url=url, headers=headers)
        self._handle, self._last = handle, after
        self._stop = threading.Event()
        name = f"lictor-events-{handle.id}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop following (a stream blocked in a read is left to its daemon thread)."""
        self._stop.set()
        self._http.close()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.is_set() and self._handle.lost is None:
            try:
                if self._follow():
                    return
            except Exception:  # a cut stream, or the client closed under it by `stop`
                pass
            self._stop.wait(RETRY_S)

    def _follow(self) -> bool:
        with self._http.stream("GET", "/v1/events", **_request(self._handle, self._last)) as r:
            if r.status_code != 200:
                return False
            for event_id, data in events(r.iter_lines()):
                if self._stop.is_set():
                    return True
                if event_id is not None and event_id.isdigit():
                    self._last = int(event_id)
                if ended(self._handle, data):
                    return True
        return False


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
