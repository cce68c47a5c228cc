"""Completing executions off the request's path, without losing any on shutdown.

A governed request is answered as soon as the upstream answers; its
completion (outcome and result hash) is sent to the control plane in a task
of its own. `Completions.drain` waits for every one still pending, and the
gateway drains before it exits, so a completion is lost only if the control
plane cannot be reached for the whole of a few retries (the execution then
expires, which the log shows as well).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from lictor.errors import InvalidTransitionError, LictorError, UnavailableError
from lictor.sdk import AsyncClient

RETRIES_S = (0.2, 1.0, 3.0)
log = logging.getLogger("lictor.mcp")


class Completions:
    """Pending completions, each in its own task."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client
        self._pending: set[asyncio.Task[None]] = set()

    def submit(
        self,
        execution_id: str,
        outcome: str,
        result_hash: str | None,
        before: Awaitable[None] | None = None,
    ) -> None:
        """Complete ``execution_id`` with ``outcome`` soon, in the background, once
        ``before`` (stopping its lease keeper) is done."""
        self.later(self._complete(execution_id, outcome, result_hash, before))

    def later(self, work: Awaitable[None]) -> None:
        """Run ``work`` in the background; `drain` waits for it too."""
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def drain(self) -> None:
        """Wait until every submitted completion has been sent (or given up on)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _complete(
        self,
        execution_id: str,
        outcome: str,
        result_hash: str | None,
        before: Awaitable[None] | None,
    ) -> None:
        if before is not None:
            await before
        for pause in (*RETRIES_S, None):
            try:
                await self._client.complete(execution_id, outcome, result_hash=result_hash)
                return
            except InvalidTransitionError:
                return  # it ended meanwhile (revoked, expired): nothing to complete
            except UnavailableError as e:
                if pause is None:
                    log.warning("could not complete execution %s: %s", execution_id, e.message)
                    return
                await asyncio.sleep(pause)
            except LictorError as e:
                log.warning("could not complete execution %s: %s", execution_id, e.message)
                return
