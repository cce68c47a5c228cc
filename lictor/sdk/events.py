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

import contextlib
import json
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping

from lictor.errors import ExecutionRevokedError
from lictor.sdk.connections import Connection, Connections
from lictor.sdk.enforce import ExecutionHandle
from lictor.sdk.urls import quote

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

ENDED = frozenset({"revoked", "expired", "completed", "denied"})
RETRY_S = 0.5
READ_TIMEOUT_S = 45.0  # the server sends a keepalive every 15 s
CONNECT_TIMEOUT_S = 10.0
STREAM_HEADERS = {"Accept": "text/event-stream"}


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


class NoWatcher:
    """What a client that follows no events watches with: nothing."""

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class EventWatcher:
    """Follows one execution's events in a daemon thread until stopped or lost.

    The stream has a connection of its own (`Connections.connect`); `stop`
    shuts its socket down, which ends a read blocked on it at once."""

    def __init__(
        self,
        connections: Connections,
        headers: Mapping[str, str],
        handle: ExecutionHandle,
        after: int,
    ) -> None:
        self._connections, self._headers = connections, dict(headers)
        self._handle, self._last = handle, after
        self._stop = threading.Event()
        self._lock = threading.Lock()  # orders `stop` and a new stream's socket
        self._socket: socket.socket | None = None
        name = f"lictor-events-{handle.id}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop following, and wait for the thread (a connect under way is left to it,
        after a second)."""
        self._stop.set()
        with self._lock:
            if self._socket is not None:
                _shut(self._socket)
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        while not self._stop.is_set() and self._handle.lost is None:
            try:
                if self._follow():
                    return
            except Exception:  # a cut stream, or one `stop` shut down
                pass
            self._stop.wait(RETRY_S)

    def _follow(self) -> bool:
        """Read one stream until it ends (False) or shows the end of the execution, or
        the watcher is stopped (True)."""
        connection = self._connections.connect(CONNECT_TIMEOUT_S)
        try:
            if not self._hold(connection.sock):
                return True
            for event_id, data in events(self._lines(connection)):
                if self._stop.is_set():
                    return True
                if event_id is not None and event_id.isdigit():
                    self._last = int(event_id)
                if ended(self._handle, data):
                    return True
        finally:
            self._hold(None)
            connection.close()
        return False

    def _hold(self, sock: socket.socket | None) -> bool:
        """Make ``sock`` the one `stop` shuts down; False if stopped already."""
        with self._lock:
            if sock is not None and self._stop.is_set():
                return False
            self._socket = sock
            return True

    def _lines(self, connection: Connection) -> Iterator[str]:
        """Ask for the stream after the last event seen; its lines, without line ends
        (none if the server refuses it)."""
        query = "execution=" + quote(self._handle.id, safe="")
        headers = {**self._headers, "Last-Event-ID": str(self._last), **STREAM_HEADERS}
        target = self._connections.target("/v1/events", query)
        connection.sock.settimeout(READ_TIMEOUT_S)
        connection.send("GET", target, None, headers)
        reply = connection.reply("GET")
        if reply.status != 200:
            return
        for line in reply.lines():
            yield line.decode("utf-8", "replace")


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed already
        sock.shutdown(socket.SHUT_RDWR)
