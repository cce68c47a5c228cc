"""The tools the gateway has shown its clients, and what the control plane says of them.

For every tool in an upstream ``tools/list`` page the catalog keeps its
latest definition hash (`lictor.core.tools.definition_hash`: name,
description and input schema as MCP spells them) and input schema, and
reports the page to the control plane (``observe_tools``), which pins a
tool the first time it sees it and logs a changed definition. A call is
requested with the hash of the definition the client was last shown, so a
tool whose definition changed since an admin approved it is denied
(``definition_changed``) until the new one is approved. A changed tool is
still listed: the client learns of it, its calls are what is refused.

Which tools are listed is a *hint*: ``preview`` says whether the principal
could be allowed to call each one under some context, and those that could
not are left out. It is never a permission (every call is decided on its
own), so when the control plane cannot answer the preview, the page is
listed whole rather than hiding why calls fail.

A call naming a tool the catalog has not seen reads the whole list first;
a tool the upstream does not list at all is refused without asking the
control plane, since it has no definition to pin.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import mcp_types as types

from lictor.core.tools import definition_hash, tool_id
from lictor.errors import InvalidRequestError, LictorError
from lictor.mcp.answers import wire
from lictor.mcp.upstream import Upstream
from lictor.sdk import AsyncClient

CALL_TOOL = 'Action::"call_tool"'
OBSERVE_BATCH = 500
log = logging.getLogger("lictor.mcp")


def tool_ref(server: str, name: str) -> dict[str, str]:
    return {"type": "Tool", "id": tool_id(server, name)}


class Catalog:
    """Tool definitions by name, as last listed by the upstream."""

    def __init__(self, server: str, principal: str, client: AsyncClient, upstream: Upstream):
        self.server, self._principal = server, principal
        self._client, self._upstream = client, upstream
        self._hashes: dict[str, str] = {}
        self._schemas: dict[str, dict[str, Any]] = {}
        self.stale = False

    def schema(self, name: str) -> Mapping[str, Any] | None:
        """The input schema of tool ``name`` as last listed, if any."""
        return self._schemas.get(name)

    async def definition(self, name: str) -> str | None:
        """The hash of tool ``name``'s definition as the client was shown it; the
        upstream's whole list is read first if the tool is unknown or the list changed."""
        if self.stale or name not in self._hashes:
            await self.refresh()
        return self._hashes.get(name)

    async def refresh(self) -> None:
        """Read every page of the upstream's tools and report them."""
        self.stale = False
        await self.seen(await self._upstream.all_tools())

    async def shown(self, tools: list[types.Tool]) -> list[types.Tool]:
        """``tools`` (one listed page) reported to the control plane, without those the
        principal could not be allowed to call."""
        valid = await self.seen(tools)
        possible = await self._preview(valid)
        return [tool for tool, ok in zip(valid, possible, strict=True) if ok]

    async def seen(self, tools: list[types.Tool]) -> list[types.Tool]:
        """Record and report ``tools``; those whose names Lictor cannot govern are dropped."""
        valid = [tool for tool in tools if _governable(self.server, tool.name)]
        definitions = [wire(tool) for tool in valid]
        for tool, definition in zip(valid, definitions, strict=True):
            self._hashes[tool.name] = definition_hash(definition)
            self._schemas[tool.name] = tool.input_schema
        if definitions:
            await self._observe(definitions)
        return valid

    async def tools_changed(self) -> None:
        """The upstream said its tools changed: read them again before the next call."""
        self.stale = True

    async def _observe(self, definitions: list[dict[str, Any]]) -> None:
        for start in range(0, len(definitions), OBSERVE_BATCH):
            batch = definitions[start : start + OBSERVE_BATCH]
            try:
                reply = await self._client.observe_tools(self.server, batch)
            except LictorError as e:
                log.warning("could not report the tools of %s: %s", self.server, e.message)
                return
            for pin in reply.get("tools") or ():
                if pin.get("status") == "changed":
                    log.warning(
                        "tool %s changed since it was approved: its calls are denied until "
                        "an admin runs `lictor mcp approve %s`",
                        pin.get("tool"),
                        pin.get("tool"),
                    )

    async def _preview(self, tools: list[types.Tool]) -> list[bool]:
        refs = [tool_ref(self.server, tool.name) for tool in tools]
        return await visible(self._client, self._principal, CALL_TOOL, refs)


async def visible(
    client: AsyncClient, principal: str, action: str, refs: Sequence[dict[str, str]]
) -> list[bool]:
    """Which of ``refs`` ``principal`` could be allowed ``action`` on; all of them if the
    control plane cannot say (a list is a hint: every request is decided on its own)."""
    if not refs:
        return []
    try:
        return await client.preview(principal, action, refs)
    except LictorError as e:
        log.warning("listing unfiltered: no preview from the control plane: %s", e.message)
        return [True] * len(refs)


def _governable(server: str, name: str) -> bool:
    try:
        tool_id(server, name)
    except InvalidRequestError:
        return False
    return True
