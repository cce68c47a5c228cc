"""Governed blocks: ``with client.execution(...)`` and ``async with`` its async twin.

Entering requests the execution and raises `DeniedError` unless it is granted
(deny, or no control plane: fail closed). Inside, a keeper renews the lease
(`lictor.sdk.enforce` says when, and what each answer means) and a watcher
follows the execution's events (`lictor.sdk.events`), so a revocation is
seen as soon as it is logged; the block reads
`ExecutionHandle.check` or registers ``on_cancel`` callbacks to stop when the
execution is lost. In ``async with``, the task running the block is also
cancelled, and the cancellation leaves the block as the lost error (as
`asyncio.timeout` turns its cancellation into `TimeoutError`).

Leaving completes the execution with what the block reported
(`ExecutionHandle.report`), else ``succeeded``, ``failed`` if the block
raised an exception, ``cancelled`` if it was interrupted. A lost execution is
not completed; if the block ended without an error, the lost error is raised
so the caller learns its work ran past its authorization.

Lineage: the parent grant is the one given, else the grant of the execution
whose block encloses this one (a `ContextVar`, so it follows tasks), else the
environment's ``LICTOR_GRANT`` (set by a launching Lictor process); ``root=True``
starts a new lineage whatever encloses the block. A client made without a
credential acts through these grants: the parent's authenticates the request
for a child, and the child's own its renewals, completion and events.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from contextvars import Token
from types import TracebackType

from lictor.errors import (
    ExecutionRevokedError,
    InvalidTransitionError,
    LeaseExpiredError,
    LeaseLostError,
    LictorError,
)
from lictor.sdk.enforce import ExecutionHandle, Jitter, Keeper, current, outcome_for
from lictor.sdk.keeper import ThreadKeeper

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

    from lictor.sdk.client import Client, Ref

GRANT_ENV = "LICTOR_GRANT"
GRANT_MARGIN_MS = 2_000  # a parent grant closer than this to its end is renewed first


class Spec:
    """What a governed block asks for (a plain class: see `lictor.sdk.enforce.Lease`)."""

    __slots__ = (
        "action",
        "context",
        "parent_grant",
        "principal",
        "resource",
        "root",
        "stop_ahead",
        "ttl",
    )

    def __init__(  # what a block asks for, as `Client.execution` takes it
        self,
        principal: Ref,
        action: Ref,
        resource: Ref,
        context: Mapping[str, Any] | None = None,
        ttl: int | None = None,
        parent_grant: str | None = None,
        root: bool = False,
        stop_ahead: float = 0.0,
    ) -> None:
        self.principal, self.action, self.resource = principal, action, resource
        self.context, self.ttl, self.parent_grant = context, ttl, parent_grant
        self.root, self.stop_ahead = root, stop_ahead

    def parent(self) -> str | None:
        """The given parent grant, else the enclosing execution's, else ``LICTOR_GRANT``
        (none at all for a ``root`` execution)."""
        if self.root:
            return None
        if self.parent_grant is not None:
            return self.parent_grant
        enclosing = current.get()
        if enclosing is not None:
            return enclosing.grant
        return os.environ.get(GRANT_ENV) or None


class ExecutionScope:
    """A ``with`` block governed by one execution; its keeper is a thread."""

    def __init__(self, client: Client, spec: Spec) -> None:
        self._client, self._spec = client, spec

    def __enter__(self) -> ExecutionHandle:
        spec, sent = self._spec, time.monotonic()
        reply = self._client.request(
            spec.principal, spec.action, spec.resource, spec.context, self._parent(), spec.ttl
        )
        self.handle = handle = ExecutionHandle(reply)
        keeper = Keeper(handle, sent, Jitter(), spec.stop_ahead)
        self._keeper = ThreadKeeper(keeper, self._renew)
        self._keeper.start()
        self._watcher = self._client.watch(handle, log_index(handle))
        self._watcher.start()
        self._token: Token[ExecutionHandle | None] = current.set(handle)
        return handle

    def _parent(self) -> str | None:
        """`Spec.parent`; when that is the enclosing execution's grant and it is about
        to run out (renewals in heartbeats bring none), the enclosing execution is
        renewed alone first, for a fresh one."""
        grant, enclosing = self._spec.parent(), current.get()
        if enclosing is None or grant != enclosing.grant:
            return grant
        if enclosing.grant_until_ms - GRANT_MARGIN_MS <= time.time() * 1000:
            ttl = round(enclosing.lease.ttl)
            try:  # else the request goes with the grant held, and is decided on it
                reply = self._client.renew(enclosing.id, ttl, grant=enclosing.grant)
            except LictorError:
                return grant
            if reply["execution"]["state"] == "active":
                enclosing.renewed(reply)
        return enclosing.grant

    def _renew(self, timeout: float) -> dict[str, Any]:
        """One renewal: in the client's heartbeat with the others that fall due at about
        the same time (a runtime's client), else alone (a grant renews its own)."""
        handle, heartbeat = self.handle, self._client.heartbeat
        if heartbeat is not None:
            return heartbeat.renew(handle.id, self._spec.ttl, timeout)
        return self._client.renew(handle.id, self._spec.ttl, timeout=timeout, grant=handle.grant)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        current.reset(self._token)
        self._watcher.stop()  # first: this block's own completion is no loss
        self._keeper.stop()
        lost = self.handle.lost
        if lost is not None:
            if exc is None:
                raise lost
            return
        try:
            self._client.complete(
                self.handle.id, *outcome(self.handle, exc), grant=self.handle.grant
            )
        except LictorError as e:
            error = ended_meanwhile(self.handle, e)
            if exc is None:
                raise error from e
            exc.add_note(f"completing execution {self.handle.id} failed: {e.code}: {e}")


def ended_meanwhile(handle: ExecutionHandle, error: LictorError) -> LictorError:
    """A completion refused because the execution already ended (revoked, or its lease
    ran out, before the keeper or the events saw it) is a loss like any other."""
    if isinstance(error, LeaseExpiredError):
        lost: LictorError = LeaseLostError(error.message)
    elif isinstance(error, InvalidTransitionError):
        lost = ExecutionRevokedError(error.message)
    else:
        return error
    handle.lose(lost)
    return handle.lost or lost


def outcome(
    handle: ExecutionHandle, error: BaseException | None
) -> tuple[str, int | None, str | None]:
    """What to complete with: what the work reported, else what the block raised."""
    return handle.reported or (outcome_for(error), None, None)


def log_index(handle: ExecutionHandle) -> int:
    """The log index of the execution's decision: its events come after it."""
    receipt = handle.receipt or {}
    index = receipt.get("index")
    return index if isinstance(index, int) else -1
