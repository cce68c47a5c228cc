"""The asyncio half of governed blocks: ``async with client.execution(...)`` and its keeper.

`AsyncExecutionScope` keeps the rules of `lictor.sdk.scope` (read there) with
a `TaskKeeper`, the task twin of `lictor.sdk.keeper.ThreadKeeper`: it waits
with ``asyncio.sleep``, and stopping cancels a renewal in flight. They live
apart from their threaded twins so that `lictor run` does not load asyncio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import Token
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lictor.errors import LictorError
from lictor.sdk.enforce import ExecutionHandle, Jitter, Keeper, current
from lictor.sdk.keeper import as_failure
from lictor.sdk.scope import Spec, ended_meanwhile, log_index, outcome

if TYPE_CHECKING:
    from lictor.sdk.async_client import AsyncClient

AsyncRenew = Callable[[float], Awaitable[dict[str, Any]]]


class TaskKeeper:
    """Renews in an asyncio task until stopped or lost. The task is started when the
    first renewal is due: work that ends before then (a tool call, most governed blocks)
    costs a timer, not a task."""

    def __init__(self, keeper: Keeper, renew: AsyncRenew) -> None:
        self._keeper, self._renew = keeper, renew
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        delay = max(0.0, self._keeper.wake_at() - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._begin)

    def _begin(self) -> None:
        self._timer = None
        self._task = asyncio.create_task(
            self._run(), name=f"lictor-keeper-{self._keeper.handle.id}"
        )

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        keeper = self._keeper
        while keeper.handle.lost is None:
            await asyncio.sleep(max(0.0, keeper.wake_at() - time.monotonic()))
            sent = time.monotonic()
            if keeper.expired(sent):
                keeper.expire()
            elif sent >= keeper.due_at:
                await self._renew_once(sent)

    async def _renew_once(self, sent: float) -> None:
        try:
            self._keeper.renewed(await self._renew(self._keeper.deadline - sent), sent)
        except Exception as e:
            self._keeper.failed(as_failure(e), time.monotonic())


class AsyncExecutionScope:
    """An ``async with`` block governed by one execution; its keeper is a task."""

    def __init__(self, client: AsyncClient, spec: Spec) -> None:
        self._client, self._spec = client, spec
        self._cancelled = False

    async def __aenter__(self) -> ExecutionHandle:
        spec, sent = self._spec, time.monotonic()
        reply = await self._client.request(
            spec.principal, spec.action, spec.resource, spec.context, spec.parent(), spec.ttl
        )
        self.handle = handle = ExecutionHandle(reply)
        self._task = asyncio.current_task()
        handle.on_cancel(self._cancel_block)
        keeper = Keeper(handle, sent, Jitter(), spec.stop_ahead)
        self._keeper = TaskKeeper(keeper, self._renew)
        self._keeper.start()
        self._watcher = self._client.watch(handle, log_index(handle))
        self._watcher.start()
        self._token: Token[ExecutionHandle | None] = current.set(handle)
        return handle

    def _cancel_block(self) -> None:
        if self._task is not None and not self._task.done():
            self._cancelled = True
            self._task.cancel()

    async def _renew(self, timeout: float) -> dict[str, Any]:
        handle = self.handle
        return await self._client.renew(
            handle.id, self._spec.ttl, timeout=timeout, grant=handle.grant
        )

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        current.reset(self._token)
        await self._watcher.stop()
        lost = self.handle.lost
        if lost is not None:  # the keeper has ended: nothing to await
            self._uncancel()
            if exc is None or isinstance(exc, asyncio.CancelledError):
                raise lost from exc
            return
        await self._keeper.stop()
        try:
            await self._client.complete(
                self.handle.id, *outcome(self.handle, exc), grant=self.handle.grant
            )
        except LictorError as e:
            error = ended_meanwhile(self.handle, e)
            if exc is None:
                raise error from e
            exc.add_note(f"completing execution {self.handle.id} failed: {e.code}: {e}")

    def _uncancel(self) -> None:
        """Withdraw the cancellation this scope requested, as `asyncio.timeout` does."""
        if self._cancelled and self._task is not None:
            self._task.uncancel()
