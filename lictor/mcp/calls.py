"""Governing one MCP request: ask, hold the lease, forward, complete.

Every governed request (``tools/call``, ``resources/read``, ``prompts/get``)
is a child execution of the gateway's session:

1. No session grant, or a deny, or no decision (control plane unreachable):
   `DeniedError` is raised and the upstream never sees the request.
2. Granted: the lease is renewed while the request runs (`TaskKeeper`), and
   the gateway's event follower tracks the execution. The request is
   forwarded in a task of its own.
3. The execution lost while the request runs (revoked, directly or through
   the session; lease not renewable): the forwarding task is cancelled,
   which sends the upstream MCP's ``notifications/cancelled``, and the
   loss is raised (`ExecutionRevokedError`, `LeaseLostError`) naming the
   revocation's reason when the control plane can say it. A lost execution
   is not completed: it has already ended. That holds too when the
   upstream's answer arrives just as the execution is lost: the client is
   told of the loss, never handed the answer.
4. Otherwise the execution is completed with ``succeeded``, ``failed`` (a
   tool result with ``isError``, a JSON-RPC error from the upstream, a
   broken upstream) or ``cancelled`` (the client cancelled, even while the
   request was still being decided: a grant that arrives for a request no
   one waits for is completed at once), and the hash of what the upstream
   answered. The completion is sent after the answer,
   off its path (`Completions`), with the lease kept until it goes. The
   answer is the upstream's with the execution's id and receipt added to its
   ``_meta`` (``lictor/execution``, ``lictor/receipt``), so the client can
   prove the decision to anyone holding the log's key; the result hash
   covers the upstream's answer as it was, without them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import mcp_types as types
from mcp.shared.exceptions import MCPError

from lictor.errors import ExecutionRevokedError, LictorError
from lictor.mcp.answers import EXECUTION_KEY, RECEIPT_KEY, Relayed, error_hash, result_hash
from lictor.mcp.completions import Completions
from lictor.mcp.follower import EventFollower
from lictor.mcp.session import Session
from lictor.sdk import AsyncClient, ExecutionHandle
from lictor.sdk.async_scope import TaskKeeper
from lictor.sdk.enforce import Jitter, Keeper

ResultT = TypeVar("ResultT", bound=types.Result | Relayed)
REASON_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Ask:
    """One request to govern; ``subject`` names it in messages (``tool time/now``)."""

    subject: str
    action: str
    resource: dict[str, str]
    context: dict[str, Any] = field(default_factory=dict)
    definition: str | None = None


def _model(result: types.Result | Relayed) -> types.Result:
    """What the SDK reads ``result`` as (what its outcome and hash are of)."""
    return result.model if isinstance(result, Relayed) else result


def outcome_of(result: types.Result | Relayed) -> str:
    model = _model(result)
    failed = isinstance(model, types.CallToolResult) and model.is_error
    return "failed" if failed else "succeeded"


def with_receipt(result: ResultT, execution: str, receipt: dict[str, Any] | None) -> ResultT:
    """``result`` with the execution's id and receipt added to its ``_meta`` (to what
    the client is sent, for a relayed result)."""
    lictor = {EXECUTION_KEY: execution, RECEIPT_KEY: receipt}
    if isinstance(result, Relayed):
        given = result.wire.get("_meta")
        meta = {**(given if isinstance(given, dict) else {}), **lictor}
        return cast(ResultT, Relayed({**result.wire, "_meta": meta}, result.model))
    return result.model_copy(update={"meta": {**(result.meta or {}), **lictor}})


async def _settled(task: asyncio.Future[Any], then: Awaitable[None]) -> None:
    """Wait until ``task`` has ended (whatever its end), then for ``then``."""
    await asyncio.wait({task})
    await then


def _cancelling() -> bool:
    """Whether the current task is being cancelled (by its caller, not by us)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class Governor:
    """Runs requests as child executions of the session."""

    def __init__(
        self,
        client: AsyncClient,
        principal: str,
        session: Session,
        follower: EventFollower,
        completions: Completions,
        ttl: int | None = None,
    ) -> None:
        self._client, self._principal = client, principal
        self._session, self._follower, self._completions = session, follower, completions
        self._ttl = ttl

    async def in_session(self) -> None:
        """Return if the session is live; else raise `DeniedError` saying why."""
        await self._session.grant()

    async def govern(self, ask: Ask, forward: Callable[[], Awaitable[ResultT]]) -> ResultT:
        """``forward()``'s result if the request is granted and not lost while it runs;
        see the module docstring for what is raised otherwise."""
        grant = await self._session.grant()
        sent = time.monotonic()
        handle = ExecutionHandle(await self._decided(ask, grant))
        keeper = TaskKeeper(Keeper(handle, sent, Jitter()), self._renewer(handle))
        keeper.start()
        self._follower.track(handle)
        try:
            return await self._forward(handle, keeper, forward)
        finally:
            self._follower.untrack(handle)

    async def _decided(self, ask: Ask, grant: str) -> dict[str, Any]:
        """The control plane's reply to ``ask``. If the caller is cancelled meanwhile, the
        request still runs to its answer, and a grant is completed as ``cancelled``."""
        request = asyncio.ensure_future(
            self._client.request(
                self._principal,
                ask.action,
                ask.resource,
                ask.context,
                grant,
                self._ttl,
                definition=ask.definition,
            )
        )
        try:
            return await asyncio.shield(request)
        except asyncio.CancelledError:
            self._completions.later(self._abandoned(request))
            raise

    async def _abandoned(self, request: Awaitable[dict[str, Any]]) -> None:
        try:
            reply = await request
        except LictorError:
            return  # denied, or never decided: nothing to complete
        self._completions.submit(ExecutionHandle(reply).id, "cancelled", None)

    def lose_all(self, error: LictorError) -> None:
        """End every request in flight (the session is gone: no child outlives it)."""
        for handle in self._follower.tracked():
            handle.lose(error)

    async def _forward(
        self, handle: ExecutionHandle, keeper: TaskKeeper, forward: Callable[[], Awaitable[ResultT]]
    ) -> ResultT:
        task = asyncio.ensure_future(forward())
        handle.on_cancel(task.cancel)
        try:  # shielded: a cancelled caller's task group would cancel the request's task
            # again and again, and the notifications/cancelled it writes as it ends would
            # never reach the upstream; it is cancelled once, below
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            if handle.lost is not None and not _cancelling():
                self._completions.later(keeper.stop())
                raise await self._explain(handle) from None
            task.cancel()  # the caller was cancelled: so is the upstream's request
            self._completions.submit(handle.id, "cancelled", None, _settled(task, keeper.stop()))
            raise
        except MCPError as e:
            self._finish(handle, keeper, "failed", error_hash(e))
            raise
        except Exception:
            self._finish(handle, keeper, "failed", None)
            raise
        if handle.lost is not None:  # lost as the answer came back: it must not be used
            self._completions.later(keeper.stop())
            raise await self._explain(handle)
        self._finish(handle, keeper, outcome_of(result), result_hash(_model(result)))
        return with_receipt(result, handle.id, handle.receipt)

    def _finish(
        self, handle: ExecutionHandle, keeper: TaskKeeper, outcome: str, digest: str | None
    ) -> None:
        self._completions.submit(handle.id, outcome, digest, before=keeper.stop())

    def _renewer(self, handle: ExecutionHandle) -> Callable[[float], Awaitable[dict[str, Any]]]:
        async def renew(timeout: float) -> dict[str, Any]:
            return await self._client.renew(handle.id, timeout=timeout)

        return renew

    async def _explain(self, handle: ExecutionHandle) -> LictorError:
        """The loss, with the reason the control plane recorded when it can say."""
        lost = handle.lost or ExecutionRevokedError(f"execution {handle.id} ended")
        try:
            view = await asyncio.wait_for(self._client.get(handle.id), REASON_TIMEOUT_S)
        except (LictorError, TimeoutError):
            return lost
        execution, steps = view.get("execution") or {}, view.get("transitions") or []
        reason = execution.get("reason") or execution.get("state")
        index = steps[-1].get("log_index") if steps else None
        where = f" (log index {index})" if isinstance(index, int) else ""
        message = f"execution {handle.id} was {execution.get('state')}: {reason}{where}"
        return type(lost)(message)
