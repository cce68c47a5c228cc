"""The MCP server the gateway fronts: one client session to it, shared by every
client of the gateway.

The gateway speaks to its upstream in the handshake era (``initialize``,
protocol 2025-11-25 or older), whatever era its own clients speak, and
forwards only what a request means (a tool's name and arguments, a cursor, a
URI, a prompt's name and arguments): never a client's ``_meta``, which in the
2026 era carries envelope keys a handshake-era session rejects, and which is
not the client's to pass through a policy enforcement point. Requests are
sent with ``send_request`` (no hidden ``tools/list``). A wrapped stdio server
runs on the gateway's own pipe (`lictor.mcp.pipe`), where `Upstream.relay_tool`
sends a ``tools/call`` beside the session and hands back the result as the
server wrote it, for the express lane (`lictor.mcp.express`).

Cancelling the task awaiting a request sends MCP's
``notifications/cancelled`` for it upstream; that is how a revocation stops a
call in flight.

A wrapped stdio server gets the gateway's environment without Lictor's own
credentials (``LICTOR_CREDENTIAL``, ``LICTOR_GRANT``, ``LICTOR_EXECUTION_ID``):
the server is what the gateway governs, not a party to it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import mcp_types as types
from mcp import ClientSession
from mcp.client.session import IncomingMessage
from mcp.client.streamable_http import streamable_http_client
from pydantic import BaseModel

from lictor.mcp.answers import Relayed
from lictor.mcp.pipe import Pipe, open_pipe

WITHHELD = "LICTOR_"
MAX_PAGES = 100
MAX_TOOLS = 10_000
log = logging.getLogger("lictor.mcp")
ResultT = TypeVar("ResultT", bound=BaseModel)
Listener = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Target:
    """Where the upstream is: a command to run (stdio) or a Streamable HTTP URL."""

    command: tuple[str, ...] = ()
    url: str | None = None

    def describe(self) -> str:
        return self.url or " ".join(self.command)


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a wrapped stdio server: the gateway's, less every ``LICTOR_*``
    variable (the credential, the session's grant): the server acts only through the
    gateway."""
    return {k: v for k, v in environ.items() if not k.startswith(WITHHELD)}


def page(cursor: str | None) -> types.PaginatedRequestParams | None:
    return types.PaginatedRequestParams(cursor=cursor) if cursor else None


class Upstream:
    """An initialized client session to the upstream, and what it said about itself."""

    def __init__(self, pipe: Pipe | None = None) -> None:
        self._pipe = pipe
        self._session: ClientSession | None = None
        self.init: types.InitializeResult | None = None
        self._tools_changed: list[Listener] = []

    @property
    def session(self) -> ClientSession:
        if self._session is None:
            raise RuntimeError("the upstream is not connected")
        return self._session

    @property
    def version(self) -> str:
        """The protocol version the upstream and the gateway speak."""
        return str(self._initialized().protocol_version)

    @property
    def info(self) -> types.Implementation:
        return self._initialized().server_info

    @property
    def capabilities(self) -> types.ServerCapabilities:
        return self._initialized().capabilities

    @property
    def instructions(self) -> str | None:
        return self._initialized().instructions

    def _initialized(self) -> types.InitializeResult:
        if self.init is None:
            raise RuntimeError("the upstream is not initialized")
        return self.init

    def attach(self, session: ClientSession, init: types.InitializeResult) -> None:
        """Use ``session``, initialized with ``init``, for every request."""
        self._session, self.init = session, init

    def on_tools_changed(self, listener: Listener) -> None:
        """Call ``listener`` when the upstream says its tool list changed."""
        self._tools_changed.append(listener)

    async def notified(self, message: IncomingMessage) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            for listener in self._tools_changed:
                await listener()

    async def send(self, request: Any, result: type[ResultT]) -> ResultT:
        reply: ResultT = await self.session.send_request(request, result)
        return reply

    async def list_tools(self, cursor: str | None) -> types.ListToolsResult:
        request = types.ListToolsRequest(params=page(cursor))
        return await self.send(request, types.ListToolsResult)

    async def all_tools(self) -> list[types.Tool]:
        """Every tool, following the cursor to the last page; at most `MAX_PAGES` pages
        and `MAX_TOOLS` tools, and no cursor twice (a server looping is cut short)."""
        tools: list[types.Tool] = []
        cursor: str | None = None
        cursors: set[str] = set()
        for _ in range(MAX_PAGES):
            listed = await self.list_tools(cursor)
            tools += listed.tools
            cursor = listed.next_cursor
            if not cursor or len(tools) >= MAX_TOOLS or cursor in cursors:
                break
            cursors.add(cursor)
        if cursor:
            log.warning("the upstream's tool list goes on: stopped after %d tools", len(tools))
        return tools[:MAX_TOOLS]

    async def call_tool(self, name: str, arguments: dict[str, Any] | None) -> types.CallToolResult:
        params = types.CallToolRequestParams(name=name, arguments=arguments)
        return await self.send(types.CallToolRequest(params=params), types.CallToolResult)

    @property
    def piped(self) -> bool:
        """Whether the upstream is a wrapped stdio server on the gateway's own pipe."""
        return self._pipe is not None

    async def relay_tool(self, name: str, arguments: dict[str, Any] | None) -> Relayed:
        """``tools/call`` sent on the pipe beside the SDK's session: the result as the
        upstream wrote it. Raises ``ValueError`` for a result that is not a tool's."""
        if self._pipe is None:
            raise RuntimeError("only a wrapped stdio server's calls are relayed")
        params = {"name": name} if arguments is None else {"name": name, "arguments": arguments}
        sent = await self._pipe.request("tools/call", params)
        return Relayed(sent, types.CallToolResult.model_validate(sent, by_name=False))

    async def list_resources(self, cursor: str | None) -> types.ListResourcesResult:
        request = types.ListResourcesRequest(params=page(cursor))
        return await self.send(request, types.ListResourcesResult)

    async def list_resource_templates(
        self, cursor: str | None
    ) -> types.ListResourceTemplatesResult:
        request = types.ListResourceTemplatesRequest(params=page(cursor))
        return await self.send(request, types.ListResourceTemplatesResult)

    async def read_resource(self, uri: str) -> types.ReadResourceResult:
        params = types.ReadResourceRequestParams(uri=uri)
        return await self.send(types.ReadResourceRequest(params=params), types.ReadResourceResult)

    async def list_prompts(self, cursor: str | None) -> types.ListPromptsResult:
        request = types.ListPromptsRequest(params=page(cursor))
        return await self.send(request, types.ListPromptsResult)

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None
    ) -> types.GetPromptResult:
        params = types.GetPromptRequestParams(name=name, arguments=arguments)
        return await self.send(types.GetPromptRequest(params=params), types.GetPromptResult)


@asynccontextmanager
async def _transport(target: Target) -> AsyncIterator[tuple[Any, Any, Pipe | None]]:
    """The session's streams to ``target``, and the pipe a wrapped stdio server is on."""
    if target.url is not None:
        async with streamable_http_client(target.url) as (read, write):
            yield read, write, None
        return
    async with open_pipe(target.command, child_environment(os.environ)) as pipe:
        yield pipe.read, pipe.write, pipe


@asynccontextmanager
async def connect(target: Target) -> AsyncIterator[Upstream]:
    """Start or reach the upstream, initialize a session with it; close it on exit.

    Enter and exit in the same task: the transports hold task groups."""
    async with _transport(target) as (read, write, pipe):
        upstream = Upstream(pipe)
        async with ClientSession(read, write, message_handler=upstream.notified) as session:
            upstream.attach(session, await session.initialize())
            yield upstream
