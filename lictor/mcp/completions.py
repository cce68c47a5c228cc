"""Completing executions off the request's path, together, without losing any on shutdown.

A governed request is answered as soon as the upstream answers; its
completion (outcome and result hash) waits in a queue. One sender task
takes what has queued within `WINDOW_S` of the first (at most `MAX_BATCH`)
and sends it as one call (``POST /v1/executions/completions``), which the
control plane commits in one transaction: a busy gateway costs the control
plane one call and one commit per batch, not per tool call, and keeps the
control plane free for the requests that wait on it. A control plane
without that call (older than the gateway) is sent each completion alone.

`Completions.drain` waits for everything queued or still running, and the
gateway drains before it exits, so a completion is lost only if the control
plane cannot be reached for the whole of a few retries (the execution then
expires, which the log shows as well). A completion the control plane
refuses because the execution already ended (revoked, expired) is dropped:
there is nothing left to complete.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from lictor.errors import InvalidTransitionError, LictorError, NotFoundError, UnavailableError
from lictor.sdk import AsyncClient

RETRIES_S = (0.2, 1.0, 3.0)
WINDOW_S = 0.05
MAX_BATCH = 256
log = logging.getLogger("lictor.mcp")


class Completions:
    """Pending completions: queued, then sent in batches by one task."""

    def __init__(self, client: AsyncClient, window: float = WINDOW_S) -> None:
        self._client = client
        self._window = window
        self._pending: set[asyncio.Task[None]] = set()
        self._queue: list[dict[str, Any]] = []
        self._sender: asyncio.Task[None] | None = None
        self._batches = True

    def submit(
        self,
        execution_id: str,
        outcome: str,
        result_hash: str | None,
        before: Awaitable[None] | None = None,
    ) -> None:
        """Complete ``execution_id`` with ``outcome`` soon, in the background, once
        ``before`` (stopping its lease keeper) is done."""
        item = {"execution": execution_id, "outcome": outcome, "result_hash": result_hash}
        if before is None:
            self._enqueue(item)
        else:
            self.later(self._after(before, item))

    def later(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background; `drain` waits for it too."""
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._queue)

    async def drain(self) -> None:
        """Wait until every submitted completion has been sent (or given up on)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _after(self, before: Awaitable[None], item: dict[str, Any]) -> None:
        await before
        self._enqueue(item)

    def _enqueue(self, item: dict[str, Any]) -> None:
        self._queue.append(item)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.ensure_future(self._send_all())
            self._pending.add(self._sender)
            self._sender.add_done_callback(self._pending.discard)

    async def _send_all(self) -> None:
        await asyncio.sleep(self._window)  # let a busy gateway's completions gather
        while self._queue:
            batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            await self._send(batch)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        for pause in (*RETRIES_S, None):
            try:
                await self._complete(batch)
                return
            except UnavailableError as e:
                if pause is None:
                    _lost(batch, e)
                    return
                await asyncio.sleep(pause)
            except LictorError as e:
                _lost(batch, e)
                return

    async def _complete(self, batch: list[dict[str, Any]]) -> None:
        if self._batches:
            try:
                answers = await self._client.complete_many(batch, brief=True)
            except LictorError as e:
                # no such call (404, or 405 for a path it takes for an execution's):
                # a control plane older than this gateway
                if not isinstance(e, NotFoundError) and type(e) is not LictorError:
                    raise
                self._batches = False
                log.info("the control plane completes one execution per call: %s", e.message)
            else:
                for item, answer in zip(batch, answers, strict=True):
                    if isinstance(answer, LictorError):
                        _refused(item, answer)
                return
        for n, item in enumerate(batch):
            try:
                await self._client.complete(
                    item["execution"], item["outcome"], result_hash=item["result_hash"]
                )
            except UnavailableError:
                del batch[:n]  # what is left is sent again
                raise
            except LictorError as e:
                _refused(item, e)


def _refused(item: dict[str, Any], error: LictorError) -> None:
    if not isinstance(error, InvalidTransitionError):  # ended meanwhile: nothing to complete
        log.warning("could not complete execution %s: %s", item["execution"], error.message)


def _lost(batch: list[dict[str, Any]], error: LictorError) -> None:
    for item in batch:
        log.warning("could not complete execution %s: %s", item["execution"], error.message)
