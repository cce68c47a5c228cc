"""The gateway's session: one execution that every request it governs descends from.

When the gateway starts it asks for ``Action::"mcp_session"`` on
``McpServer::"<server>"`` for its principal (a child of ``LICTOR_GRANT``
when the gateway itself runs under Lictor), and keeps that lease renewed
for as long as it serves. Each governed request is a child of the session,
so revoking the session revokes every call in flight (the control plane
cascades it; the gateway also ends its in-flight calls at once when it
sees the session lost), and the lineage shows the session and its calls.

The gateway serves MCP whether or not it has a session, but without one
every governed request is refused with why (`refusal`): denied, the control
plane unreachable, or the session revoked. A session that could not be
opened, or whose lease was lost, is asked for again with backoff. One that
was revoked is not: a revocation is an operator's or a policy's decision,
and the gateway keeps refusing until it is restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from lictor.errors import DeniedError, ExecutionRevokedError, LictorError
from lictor.mcp.answers import execution_id, log_index
from lictor.mcp.follower import EventFollower
from lictor.sdk import AsyncClient, ExecutionHandle

ACTION = 'Action::"mcp_session"'
FIRST_WAIT_S = 10.0
BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
NO_SESSION = "no_session"
REVOKED = "session_revoked"


def session_resource(server: str) -> dict[str, str]:
    return {"type": "McpServer", "id": server}


class Session:
    """The session execution, opened and reopened in a task of its own."""

    def __init__(
        self,
        client: AsyncClient,
        principal: str,
        server: str,
        follower: EventFollower,
        ttl: int | None = None,
    ) -> None:
        self._client, self._principal, self._server = client, principal, server
        self._follower, self._ttl = follower, ttl
        self.handle: ExecutionHandle | None = None
        self._problem: DeniedError = DeniedError("the session is being opened", NO_SESSION)
        self._tried = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.on_lost: list[Callable[[], object]] = []

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="lictor-mcp-session")

    async def stop(self) -> None:
        """Complete the session (succeeded) if it is open; stop asking for one."""
        self._stop.set()
        self._problem = DeniedError("the gateway is shutting down", NO_SESSION)
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def grant(self) -> str:
        """The session's current grant, to request children with; else raise
        `DeniedError` saying why there is none (waits for the first attempt)."""
        if not self._tried.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tried.wait(), FIRST_WAIT_S)
        handle = self.handle
        if handle is not None and handle.lost is None and handle.grant:
            return handle.grant
        raise self._problem

    async def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            if await self._open():
                attempt = 0
            if self._stop.is_set() or self._problem.reason_code == REVOKED:
                return
            await self._pause(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1

    async def _open(self) -> bool:
        """Hold the session until stopped or lost; True if it was granted."""
        granted = False
        resource = session_resource(self._server)
        scope = self._client.execution(self._principal, ACTION, resource, ttl=self._ttl)
        try:
            async with scope as handle:
                granted = True
                self._opened(handle)
                await self._stop.wait()
        except DeniedError as e:
            self._problem = self._denied(e)
        except ExecutionRevokedError as e:
            self._problem = DeniedError(f"the session was revoked: {e.message}", REVOKED)
        except LictorError as e:  # lease lost, or a completion the plane refused
            self._problem = DeniedError(f"the session was lost: {e.message}", e.code)
        finally:
            self.handle = None
            self._tried.set()
        return granted

    def _opened(self, handle: ExecutionHandle) -> None:
        self.handle = handle
        index = (handle.receipt or {}).get("index")
        self._follower.start(index if isinstance(index, int) else -1)
        self._follower.track(handle)
        for callback in self.on_lost:
            handle.on_cancel(callback)
        self._tried.set()

    def _denied(self, error: DeniedError) -> DeniedError:
        """Why there is no session, as every refused request will say it."""
        if error.receipt is None:
            message = f"the control plane could not be reached: {error.message}"
            return DeniedError(message, error.reason_code)
        why = "".join(f"; {reason}" for reason in error.reasons)
        where = f"log index {log_index(error)}, execution {execution_id(error)}"
        message = f"the control plane denied the session: {error.reason_code}{why} ({where})"
        return DeniedError(message, NO_SESSION)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
