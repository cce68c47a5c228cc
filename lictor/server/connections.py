"""Slow and idle clients: how long a request may take to arrive, how many connections are held.

uvicorn reads a request's head and body for as long as the client takes and keeps
every connection it accepts, so a thousand idle sockets, or one request announcing a
huge body and sending a few bytes, hold the process's open files for ever and new
callers are refused. `guarded_protocol` is uvicorn's httptools protocol with bounds
(ADR 17):

- a request's head (request line and headers) must be complete within
  ``header_timeout`` seconds of the connection starting to wait for it: its opening,
  or the end of the previous response on a kept-alive connection; and at most
  `MAX_HEAD_BYTES` may arrive before it is complete (checked per read, so one read
  more at worst);
- its body must be complete within ``body_timeout`` seconds of the end of its head;
- at most ``max_connections`` connections are open: a new one over the cap closes the
  one that has waited longest for a request head, and is itself refused only when
  every open connection has a request in progress.

A connection over a bound is aborted without a response (its client is not sending a
request, so it is not reading an answer); an application reading the body sees a
disconnect. Once a request has been read the application's time is its own: handlers,
responses and event streams are not bounded here. `raise_open_file_limit` lifts the
soft open-file limit to the hard one at start, and `connection_cap` keeps the cap
below it, so sockets cannot use up the descriptors the database and logs need.
"""

from __future__ import annotations

import asyncio
import enum
import resource
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_MAX_CONNECTIONS = 4096
MAX_HEAD_BYTES = 64 * 1024
RESERVED_FILES = 64  # descriptors kept for the database, keys, logs and the listening socket
UNLIMITED_FILES_TARGET = 65536  # the soft limit sought when the hard one is unlimited


class Phase(enum.Enum):
    """Where a connection is in its current request."""

    HEAD = "head"  # waiting for a request's head (none of it yet, or part of it)
    BODY = "body"  # head read, body still arriving
    BUSY = "busy"  # request read: the application has it


@dataclass(frozen=True)
class ConnectionLimits:
    """The bounds one server enforces on its connections (seconds, and a count)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    max_connections: int = DEFAULT_MAX_CONNECTIONS


@dataclass
class Registry:
    """One server's open connections, and those waiting for a head, longest waiting first.

    Invariant: ``waiting`` is a subset of ``open``; a connection leaves both when it is
    evicted or lost, and is in ``waiting`` exactly while its phase is `Phase.HEAD`.
    """

    open: set[GuardedProtocol] = field(default_factory=set)
    waiting: dict[GuardedProtocol, None] = field(default_factory=dict)

    def forget(self, connection: GuardedProtocol) -> None:
        self.open.discard(connection)
        self.waiting.pop(connection, None)

    def evict_longest_waiting(self) -> bool:
        """Abort the connection that has waited longest for a head; False if none waits."""
        if not self.waiting:
            return False
        victim = next(iter(self.waiting))
        self.forget(victim)
        victim.drop()
        return True


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with `ConnectionLimits`; use `guarded_protocol`."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    registry: ClassVar[Registry] = Registry()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.phase = Phase.HEAD
        self.head_bytes = 0
        self.deadline: float | None = None  # when the current bound runs out (loop time)
        self.timer: asyncio.TimerHandle | None = None  # fires at or before ``deadline``

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        super().connection_made(transport)
        full = len(self.registry.open) >= self.limits.max_connections
        if full and not self.registry.evict_longest_waiting():
            transport.abort()  # every open connection has a request in progress
            return
        self.registry.open.add(self)
        self._wait_for_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.registry.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.HEAD:
            if self.head_bytes > MAX_HEAD_BYTES:
                self.drop()
                return
            self.head_bytes += len(data)
        super().data_received(data)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self.registry.waiting.pop(self, None)
        self.phase = Phase.BODY
        self._arm(self.limits.body_timeout)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self.cycle.response_complete:  # answered before its body was read (a 413)
            self._wait_for_head()
        else:
            self.phase = Phase.BUSY
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        latest_done = self.cycle is None or self.cycle.response_complete
        if self.phase is Phase.BUSY and latest_done and not self.transport.is_closing():
            self._wait_for_head()  # a pipelined request would have made `cycle` newer

    def drop(self) -> None:
        """Close the connection now, unsent bytes and all (it is over a bound)."""
        self._disarm()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _wait_for_head(self) -> None:
        self.phase = Phase.HEAD
        self.head_bytes = 0
        self.registry.waiting.pop(self, None)
        self.registry.waiting[self] = None  # now the most recent to start waiting
        self._arm(self.limits.header_timeout)

    def _arm(self, seconds: float) -> None:
        # One timer per connection, moved only when a bound ends sooner than it fires:
        # a kept-alive connection's requests set a deadline each, not a timer each.
        self.deadline = deadline = self.loop.time() + seconds
        if self.timer is None or deadline < self.timer.when():
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(deadline, self._expire)

    def _disarm(self) -> None:
        self.deadline = None

    def _expire(self) -> None:
        self.timer = None
        if self.deadline is None:
            return
        if self.loop.time() >= self.deadline:
            self.drop()
        else:  # the bound moved on since this timer was set
            self.timer = self.loop.call_at(self.deadline, self._expire)


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """A protocol class for one uvicorn server: these limits, and a registry of its own."""

    class LictorHttpProtocol(GuardedProtocol):
        pass

    LictorHttpProtocol.limits = limits
    LictorHttpProtocol.registry = Registry()
    return LictorHttpProtocol


def raise_open_file_limit() -> int:
    """Lift the soft open-file limit toward the hard one; the soft limit in force after.

    Where the hard limit is unlimited, or the platform refuses the hard value (macOS caps
    it below), the soft limit goes to `UNLIMITED_FILES_TARGET` if allowed, else stays.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED_FILES_TARGET
    wanted = [hard] if hard != resource.RLIM_INFINITY else []
    for target in [*wanted, UNLIMITED_FILES_TARGET]:
        if target <= soft:
            continue
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue
        return target
    return soft


def connection_cap(requested: int, open_files: int) -> int:
    """At most ``requested`` connections, leaving `RESERVED_FILES` descriptors free (at least 1)."""
    return max(1, min(requested, open_files - RESERVED_FILES))
