"""The gateway's MCP server: the upstream's capabilities, each request governed.

`Gateway.server` builds an MCP server that offers exactly what the upstream
offers (tools, resources, prompts: a capability the upstream lacks is not
served), under the upstream's name, version and instructions, so a client
connects to the gateway as it would to the server. Per request:

- ``tools/call``: `Action::"call_tool"` on ``Tool::"<server>/<name>"``,
  context ``{"arguments": {...}}``, with the hash of the tool's definition
  (`lictor.mcp.catalog`). Refused: a `CallToolResult` with ``isError``.
- ``resources/read``: ``Action::"read_resource"`` on
  ``McpResource::"<server>/<uri>"``, context ``{}``; ``prompts/get``:
  ``Action::"get_prompt"`` on ``Prompt::"<server>/<name>"``, context
  ``{"arguments": {...}}``. Refused: a JSON-RPC error (`lictor.mcp.answers`).
- ``tools/list``, ``resources/list``, ``prompts/list``: forwarded page by
  page and filtered by ``preview`` (a hint, never a permission), tools as
  an admin approved them (`lictor.mcp.catalog`); when the control plane
  cannot filter them they are refused (`UNAVAILABLE`), never shown whole.
  ``resources/templates/list`` is forwarded as is.
- Every request needs a live session, lists too: a gateway whose session
  was denied, revoked or cannot be had refuses them with why (a JSON-RPC
  error, as for a read), so it shows nothing on a principal's behalf that
  the control plane did not let it serve.

A tool the upstream does not list, or whose definition Lictor cannot pin,
is refused without asking the control plane. An upstream
``notifications/tools/list_changed`` makes the gateway read and report the
tool list again, and is passed on to the clients connected in the
handshake era.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import mcp_types as types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.session import ServerSession

from lictor.errors import DeniedError, LictorError
from lictor.mcp.answers import (
    DEFINITION_CHANGED,
    Relayed,
    error_result,
    refusal_error,
    refusal_text,
    unavailable_error,
    wire,
)
from lictor.mcp.calls import Ask, Governor
from lictor.mcp.catalog import CALL_TOOL, Catalog, tool_ref, visible
from lictor.mcp.express import Express
from lictor.mcp.upstream import Upstream
from lictor.sdk import AsyncClient

READ_RESOURCE = 'Action::"read_resource"'
GET_PROMPT = 'Action::"get_prompt"'
Context = ServerRequestContext[Any, Any]
ReplyT = TypeVar("ReplyT", types.CallToolResult, Relayed)
log = logging.getLogger("lictor.mcp")


def resource_ref(server: str, uri: str) -> dict[str, str]:
    return {"type": "McpResource", "id": f"{server}/{uri}"}


def prompt_ref(server: str, name: str) -> dict[str, str]:
    return {"type": "Prompt", "id": f"{server}/{name}"}


def _cursor(params: types.PaginatedRequestParams | None) -> str | None:
    return params.cursor if params is not None else None


class GatewayServer(Server[Any]):
    """An MCP server that says, when a client initializes, whether its tool list
    can change (as the upstream said), on every transport."""

    tools_changed = False

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        options = notification_options or NotificationOptions(tools_changed=self.tools_changed)
        return super().create_initialization_options(options, experimental_capabilities, extensions)


class Gateway:
    """The handlers of the gateway's MCP server."""

    def __init__(
        self,
        server: str,
        principal: str,
        client: AsyncClient,
        upstream: Upstream,
        catalog: Catalog,
        governor: Governor,
    ) -> None:
        self.name, self._principal, self._client = server, principal, client
        self._upstream, self.catalog, self._governor = upstream, catalog, governor
        self._sessions: weakref.WeakSet[ServerSession] = weakref.WeakSet()
        self._lane: Express | None = None
        upstream.on_tools_changed(self._tools_changed)

    def express(self) -> Express | None:
        """The lane for tool calls beside the SDK's server (`lictor.mcp.express`), when
        the upstream is a wrapped stdio server."""
        if self._upstream.piped and self._lane is None:
            self._lane = Express(self.relay_tool, self._upstream.version)
        return self._lane

    def server(self) -> GatewayServer:
        """An MCP server with a handler for each capability the upstream has."""
        info, caps = self._upstream.info, self._upstream.capabilities
        handlers: dict[str, Any] = {}
        if caps.tools is not None:
            handlers.update(on_list_tools=self.list_tools, on_call_tool=self.call_tool)
        if caps.resources is not None:
            handlers.update(
                on_list_resources=self.list_resources,
                on_list_resource_templates=self.list_resource_templates,
                on_read_resource=self.read_resource,
            )
        if caps.prompts is not None:
            handlers.update(on_list_prompts=self.list_prompts, on_get_prompt=self.get_prompt)
        server = GatewayServer(
            info.name,
            version=info.version,
            instructions=self._upstream.instructions,
            get_tool_input_schema=self.catalog.schema,
            **handlers,
        )
        server.tools_changed = bool(caps.tools and caps.tools.list_changed)
        server.middleware = []  # no OpenTelemetry span per message: Lictor's log is the record
        return server

    async def list_tools(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        self._sessions.add(ctx.session)
        await self._in_session("tools")
        listed = await self._upstream.list_tools(_cursor(params))
        try:
            tools = await self.catalog.shown(listed.tools)
        except LictorError as e:
            raise unavailable_error("tools", e) from None
        return listed.model_copy(update={"tools": tools})

    async def call_tool(
        self, ctx: Context, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        self._sessions.add(ctx.session)
        return await self._call_tool(params.name, params.arguments, self._upstream.call_tool)

    async def relay_tool(self, name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        """``tools/call`` for the express lane (`lictor.mcp.express`): governed as
        `call_tool` governs it, answered with the upstream's result as it wrote it."""
        result = await self._call_tool(name, arguments, self._upstream.relay_tool)
        return result.wire if isinstance(result, Relayed) else wire(result)

    async def _call_tool(
        self,
        name: str,
        arguments: dict[str, Any] | None,
        call: Callable[[str, dict[str, Any] | None], Awaitable[ReplyT]],
    ) -> ReplyT | types.CallToolResult:
        subject = f"tool {self.name}/{name}"
        try:
            definition = await self.catalog.definition(name)
        except LictorError as e:
            return error_result(f"Lictor refused {subject}: {e.message}")
        context = {"arguments": arguments or {}}
        ask = Ask(subject, CALL_TOOL, tool_ref(self.name, name), context, definition)
        try:
            return await self._governor.govern(ask, lambda: call(name, arguments))
        except LictorError as e:
            return error_result(self._tool_refusal(name, subject, e), e)

    async def _in_session(self, what: str) -> None:
        try:
            await self._governor.in_session()
        except LictorError as e:
            raise refusal_error(f"the list of {what} of {self.name}", e) from None

    def _tool_refusal(self, name: str, subject: str, error: LictorError) -> str:
        text = refusal_text(subject, error)
        changed = isinstance(error, DeniedError) and error.reason_code == DEFINITION_CHANGED
        if changed and not self.catalog.reported(name):
            text += (
                ". The gateway could not yet report this tool's definition to the control "
                "plane; it tries again on the next list or call"
            )
        return text

    async def list_resources(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        await self._in_session("resources")
        listed = await self._upstream.list_resources(_cursor(params))
        refs = [resource_ref(self.name, str(r.uri)) for r in listed.resources]
        shown = await self._visible("resources", READ_RESOURCE, refs)
        kept = [r for r, ok in zip(listed.resources, shown, strict=True) if ok]
        return listed.model_copy(update={"resources": kept})

    async def list_resource_templates(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        await self._in_session("resource templates")
        return await self._upstream.list_resource_templates(_cursor(params))

    async def read_resource(
        self, ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        subject = f"resource {self.name}/{uri}"
        ask = Ask(subject, READ_RESOURCE, resource_ref(self.name, uri))
        try:
            return await self._governor.govern(ask, lambda: self._upstream.read_resource(uri))
        except LictorError as e:
            raise refusal_error(subject, e) from None

    async def list_prompts(
        self, ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        await self._in_session("prompts")
        listed = await self._upstream.list_prompts(_cursor(params))
        refs = [prompt_ref(self.name, p.name) for p in listed.prompts]
        shown = await self._visible("prompts", GET_PROMPT, refs)
        kept = [p for p, ok in zip(listed.prompts, shown, strict=True) if ok]
        return listed.model_copy(update={"prompts": kept})

    async def get_prompt(
        self, ctx: Context, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        name, arguments = params.name, params.arguments
        subject = f"prompt {self.name}/{name}"
        context = {"arguments": arguments or {}}
        ask = Ask(subject, GET_PROMPT, prompt_ref(self.name, name), context)
        try:
            return await self._governor.govern(
                ask, lambda: self._upstream.get_prompt(name, arguments)
            )
        except LictorError as e:
            raise refusal_error(subject, e) from None

    async def _visible(self, what: str, action: str, refs: Sequence[dict[str, str]]) -> list[bool]:
        try:
            return await visible(self._client, self._principal, action, refs)
        except LictorError as e:
            raise unavailable_error(what, e) from None

    async def _tools_changed(self) -> None:
        self.catalog.tools_changed()
        sessions = list(self._sessions)
        if not sessions and self._lane is not None and self._lane.served:
            # over stdio there is one client: one the SDK never served a list or a call
            # is told by the lane that served its calls
            try:
                await self._lane.tools_changed()
            except (ConnectionError, RuntimeError) as e:
                log.debug("could not pass on tools/list_changed: %s", e)
        for session in sessions:
            try:
                await session.send_tool_list_changed()
            except Exception as e:  # a client gone, or one in the 2026 era
                log.debug("could not pass on tools/list_changed: %s", e)
