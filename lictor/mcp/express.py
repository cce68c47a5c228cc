"""Tool calls over stdio served beside the ``mcp`` SDK's server, as plain JSON-RPC.

Most of what a governed ``tools/call`` cost the gateway was the SDK on both
sides of it (the line parsed into models and validated, dispatched through
memory streams, tasks and middleware, the answer validated and dumped, and the
same again towards the upstream): more CPU than the decision it waits for. The
`Express` lane reads each line from the client before the SDK does and serves
the ``tools/call`` requests it can serve exactly as the SDK path would
(`Gateway.relay_tool`: the same catalog, decision, lease, completion and
receipt); every other line (the handshake, lists, reads, prompts, pings,
anything malformed) goes to the SDK's server as before.

A request is the lane's only when the SDK path would answer it the same way:

- the handshake is done: the client's first request was ``initialize`` and
  the SDK answered it, in the protocol version the upstream speaks to the
  gateway (so the upstream's result is already in the client's version: until
  then, and for good when they differ, the SDK serves every call);
- it is a JSON-RPC 2.0 request object with a string or integer id not already
  in flight, method ``tools/call``, and params with a string ``name``, an
  object (or no) ``arguments`` and at most a ``_meta`` object without the
  2026 envelope: nothing the SDK would refuse, nothing more it would act on.

The answer is the upstream's result as it wrote it, with the execution's id
and receipt in its ``_meta``; a refusal is the same ``isError`` result the SDK
path gives; the upstream's JSON-RPC error is passed on as it was. A
``notifications/cancelled`` for a request in the lane cancels it (it is not
answered, as MCP asks); when the client's input ends, the requests still in
the lane are cancelled and answered with ``CONNECTION_CLOSED``, as the SDK's
server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp.shared.dispatcher import coerce_request_id
from mcp.shared.exceptions import MCPError

from lictor.log.entry import loads_exactly
from lictor.mcp.answers import wire
from lictor.mcp.pipe import dumps

TOOLS_CALL = b'"tools/call"'
CANCELLED = b'"notifications/cancelled"'
INITIALIZE = b'"initialize"'
PARAMS = frozenset({"name", "arguments", "_meta"})
log = logging.getLogger("lictor.mcp")
RequestId = str | int
Relay = Callable[[str, dict[str, Any] | None], Awaitable[dict[str, Any]]]


def _request_id(value: Any) -> RequestId | None:
    """``value`` as a JSON-RPC request id (a string or an integer, not a boolean)."""
    return value if isinstance(value, str | int) and not isinstance(value, bool) else None


def _tool_call(params: Any) -> tuple[str, dict[str, Any] | None] | None:
    """The name and arguments of a ``tools/call`` the lane may serve; None otherwise."""
    if not isinstance(params, dict) or not PARAMS.issuperset(params):
        return None
    name, arguments, meta = params.get("name"), params.get("arguments"), params.get("_meta")
    if not isinstance(name, str) or not (arguments is None or isinstance(arguments, dict)):
        return None
    if meta is not None and (not isinstance(meta, dict) or types.PROTOCOL_VERSION_META_KEY in meta):
        return None
    return name, arguments


class Express:
    """The lane: `take` a line or leave it to the SDK; answers written beside it."""

    def __init__(self, relay: Relay, version: str) -> None:
        """Serve calls with ``relay`` (`Gateway.relay_tool`) for clients that speak the
        upstream's protocol ``version``."""
        self._relay, self._version = relay, version
        self._writer: asyncio.StreamWriter | None = None
        self._opening: RequestId | None = None  # the id of the client's initialize
        self._seen_request = False
        self.open = False
        self.served = False  # whether a call was ever taken: the client is then told of
        # changes to the tool list here, as the SDK tells the clients it served
        self._calls: dict[RequestId, tuple[RequestId, asyncio.Task[None]]] = {}

    def attach(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    def take(self, line: bytes) -> bool:
        if not self.open:
            self._watch(line)
            return False
        if TOOLS_CALL not in line and CANCELLED not in line:
            return False
        try:
            message = loads_exactly(line)
        except ValueError:
            return False
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
            return False
        method = message.get("method")
        if method == "tools/call":
            return self._call(message)
        if method == "notifications/cancelled":
            return self._cancel(message.get("params"))
        return False

    def _watch(self, line: bytes) -> None:
        """Note the id of the client's first request if it is ``initialize``."""
        if self._seen_request or b'"method"' not in line:
            return
        with contextlib.suppress(ValueError):
            message = loads_exactly(line)
            if isinstance(message, dict) and "id" in message and "method" in message:
                self._seen_request = True
                if message["method"] == "initialize":
                    self._opening = _request_id(message["id"])

    def sent(self, text: str) -> None:
        """Open the lane once the SDK's server has accepted the client's initialize, in
        the upstream's protocol version."""
        if self.open or self._opening is None or '"protocolVersion"' not in text:
            return
        with contextlib.suppress(ValueError):
            message = loads_exactly(text.encode())
            if not isinstance(message, dict) or message.get("id") != self._opening:
                return
            result = message.get("result")
            version = result.get("protocolVersion") if isinstance(result, dict) else None
            self.open = version == self._version
            self._opening = None
            if not self.open:
                log.info(
                    "the client speaks MCP %s, the upstream %s: tool calls go through the SDK",
                    version,
                    self._version,
                )

    def _call(self, message: dict[str, Any]) -> bool:
        rid = _request_id(message.get("id"))
        call = _tool_call(message.get("params"))
        if rid is None or call is None or coerce_request_id(rid) in self._calls:
            return False
        key = coerce_request_id(rid)
        self.served = True
        task = asyncio.create_task(self._serve(rid, *call))
        self._calls[key] = (rid, task)
        task.add_done_callback(lambda _: self._calls.pop(key, None))
        return True

    def _cancel(self, params: Any) -> bool:
        rid = _request_id(params.get("requestId")) if isinstance(params, dict) else None
        call = self._calls.get(coerce_request_id(rid)) if rid is not None else None
        if call is None:
            return False
        call[1].cancel()
        return True

    async def _serve(self, rid: RequestId, name: str, arguments: dict[str, Any] | None) -> None:
        answer: dict[str, Any] = {"jsonrpc": "2.0", "id": rid}
        try:
            answer["result"] = await self._relay(name, arguments)
        except MCPError as e:
            answer["error"] = wire(e.error)
        except Exception as e:
            log.exception("tools/call %s failed in the gateway", name)
            answer["error"] = {"code": types.INTERNAL_ERROR, "message": str(e)}
        await self._write(dumps(answer))

    async def tools_changed(self) -> None:
        """Tell the client the tool list changed."""
        notification = {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}
        await self._write(dumps(notification))

    async def _write(self, line: bytes) -> None:
        if self._writer is None:
            raise RuntimeError("the lane has nowhere to write")
        self._writer.write(line)
        await self._writer.drain()

    async def close(self) -> None:
        """Cancel what is in flight and tell the client the connection closed."""
        calls = list(self._calls.values())
        for _, task in calls:
            task.cancel()
        await asyncio.gather(*(task for _, task in calls), return_exceptions=True)
        closed = {"code": types.CONNECTION_CLOSED, "message": "Connection closed"}
        for rid, _ in calls:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._write(dumps({"jsonrpc": "2.0", "id": rid, "error": closed}))
