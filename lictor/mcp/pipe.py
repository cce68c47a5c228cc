"""A wrapped stdio server's pipes, held by the gateway: the SDK's client session
over them, and tool calls sent beside it as plain JSON-RPC lines.

`open_pipe` starts the server the way the ``mcp`` SDK's ``stdio_client`` does (in
a session of its own, stderr shared with the gateway, the environment given) and
yields a `Pipe`. Its ``read`` and ``write`` streams carry the SDK's messages, so a
``ClientSession`` runs over it as over ``stdio_client``: the handshake, lists,
reads and prompts, notifications from the server. `Pipe.request` sends one request
beside the session, under an id of its own (``lictor-<n>``, a string, where the
SDK numbers its requests) and answers with the result as the server wrote it,
parsed but not validated, or raises ``MCPError`` with the server's error. A line
from the server answering such an id goes to its caller and never reaches the
session; every other line goes to the session as ``stdio_client`` would hand it.

Why: a governed tool call crossed the SDK's client on its way out and in (a
model built, dumped, a line parsed into a model, memory streams and tasks between
them), which cost the gateway about as much CPU as the decision it waits for.

Cancelling a caller of `Pipe.request` sends MCP's ``notifications/cancelled``
for its id. When the server's output ends, every request waiting is answered
with ``CONNECTION_CLOSED`` and the session's stream ends. On exit the server's
stdin is closed; a server still running `STOP_S` later is sent SIGTERM, as is
its process group, and SIGKILL after `STOP_S` more.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import signal
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
import mcp_types as types
import orjson
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage

from lictor.log.entry import loads_exactly
from lictor.mcp.stdio import MAX_LINE, read_line

PREFIX = "lictor-"
STOP_S = 2.0
POLL_S = 0.02
GONE = (anyio.ClosedResourceError, anyio.BrokenResourceError)
log = logging.getLogger("lictor.mcp")


def dumps(value: Any) -> bytes:
    """``value`` as one line of JSON."""
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def mcp_error(error: Any) -> MCPError:
    """The ``MCPError`` for a JSON-RPC error object as a server wrote it."""
    try:
        data = types.ErrorData.model_validate(error)
    except ValueError:
        message = f"the server answered with a malformed error: {error!r}"[:500]
        return MCPError(types.INTERNAL_ERROR, message)
    return MCPError.from_error_data(data)


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
    except ValueError as e:
        log.warning("the upstream wrote a line that is not a JSON-RPC message: %s", e)
        return e


class Pipe:
    """The server's stdin and stdout: the SDK's streams, and `request` beside them."""

    def __init__(self, process: asyncio.subprocess.Process, stdin: asyncio.StreamWriter) -> None:
        self.process, self._stdin = process, stdin
        self._to_session, self.read = anyio.create_memory_object_stream[SessionMessage | Exception](
            0
        )
        self.write, self._from_session = anyio.create_memory_object_stream[SessionMessage](0)
        self._ids = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._closed = False

    async def request(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Send ``method`` with ``params``; the server's result, or its error raised."""
        if self._closed:
            raise MCPError(types.CONNECTION_CLOSED, "the upstream's output has ended")
        rid = f"{PREFIX}{next(self._ids)}"
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = answer
        try:
            request = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
            await self._send(dumps(request))
            return await answer
        except asyncio.CancelledError:
            if not answer.done():
                cancelled = {"requestId": rid, "reason": "cancelled by the gateway"}
                with contextlib.suppress(ConnectionError, RuntimeError):
                    self._stdin.write(dumps(_notification("notifications/cancelled", cancelled)))
            raise
        finally:
            self._waiting.pop(rid, None)

    async def _send(self, line: bytes) -> None:
        try:
            self._stdin.write(line)
            await self._stdin.drain()
        except (ConnectionError, RuntimeError) as e:
            raise MCPError(types.CONNECTION_CLOSED, f"the upstream's input is closed: {e}") from e

    def _answered(self, line: bytes) -> bool:
        """Whether ``line`` answers a `request`: if so, its caller has it."""
        try:
            message = loads_exactly(line)
        except ValueError:
            return False
        rid = message.get("id") if isinstance(message, dict) else None
        answer = self._waiting.get(rid) if isinstance(rid, str) else None
        if answer is None or answer.done():
            return False
        if "error" in message:
            answer.set_exception(mcp_error(message["error"]))
        elif isinstance(message.get("result"), dict):
            answer.set_result(message["result"])
        else:
            answer.set_exception(mcp_error({"code": types.INTERNAL_ERROR, "message": "no result"}))
        return True

    async def reading(self, stdout: asyncio.StreamReader) -> None:
        """Hand each line of the server's output to its reader, until it ends."""
        marker = PREFIX.encode()
        try:
            async with self._to_session:
                while (line := await read_line(stdout)) is not None:
                    if self._waiting and marker in line and self._answered(line):
                        continue
                    if line.strip():
                        with contextlib.suppress(*GONE):
                            await self._to_session.send(_parse(line))
        finally:
            self._closed = True
            for answer in self._waiting.values():
                if not answer.done():
                    answer.set_exception(
                        MCPError(types.CONNECTION_CLOSED, "the upstream's output has ended")
                    )

    async def writing(self) -> None:
        """Write the session's messages to the server, until the session ends."""
        async with self._from_session:
            async for sent in self._from_session:
                message = sent.message.model_dump_json(by_alias=True, exclude_unset=True)
                try:
                    await self._send(message.encode() + b"\n")
                except MCPError:
                    await self._to_session.aclose()  # the session sees the end, not a hang
                    return


def _notification(method: str, params: Mapping[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


async def _exited(process: asyncio.subprocess.Process, timeout: float) -> bool:
    """Whether ``process`` has exited within ``timeout`` (its return code polled: waiting
    would also wait for its pipes, which a child it left behind may hold)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while process.returncode is None:
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(POLL_S)
    return True


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _stop(process: asyncio.subprocess.Process, stdin: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, RuntimeError):
        stdin.close()
    if await _exited(process, STOP_S):
        return
    _signal_group(process.pid, signal.SIGTERM)
    if not await _exited(process, STOP_S):
        _signal_group(process.pid, signal.SIGKILL)
        if not await _exited(process, STOP_S):
            log.warning("the upstream (pid %d) outlived SIGKILL; leaving it", process.pid)


@contextlib.asynccontextmanager
async def open_pipe(command: Sequence[str], env: Mapping[str, str]) -> AsyncIterator[Pipe]:
    """Start ``command`` with ``env``; its `Pipe` while inside; the server stopped on exit.

    Raises ``OSError`` when it cannot be started."""
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=dict(env),
        start_new_session=True,
        limit=MAX_LINE,
    )
    assert process.stdin is not None and process.stdout is not None
    pipe = Pipe(process, process.stdin)
    tasks = [
        asyncio.create_task(pipe.reading(process.stdout)),
        asyncio.create_task(pipe.writing()),
    ]
    try:
        yield pipe
    finally:
        pipe.write.close()
        stopping = asyncio.ensure_future(_stop(process, process.stdin))
        try:
            await asyncio.shield(stopping)
        except asyncio.CancelledError:
            await stopping  # the server is stopped whatever cancels its caller
            raise
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        pipe.read.close()
