"""The tools the gateway shows its clients, and what the control plane says of them.

For every tool in an upstream ``tools/list`` the catalog keeps the tool as
listed and the hash of its definition (`lictor.core.tools.definition_hash`
of the tool as MCP writes it: core picks the members it covers), and reports
it to the control plane (``observe_tools``), which pins a tool the first time
it sees it, logs a changed definition, and answers with each tool's status
and its *approved* definition. Reports go in batches of at most
`OBSERVE_BYTES` (and `OBSERVE_TOOLS` tools); a batch that fails is logged,
the others are still sent, and its tools are reported again on the next
list or call that names them.

What a client is shown of a tool is what an admin approved, never more:

- a tool whose current definition the control plane judged ``approved`` is
  shown as the upstream lists it;
- any other (``changed``, or not judged: its report failed) is shown with
  the approved definition from the latest answer (its `DEFINED` members
  replaced), or left out if there is none, so a changed description never
  reaches the model before an admin approves it.

A call is requested with the hash of the upstream's *current* definition,
so calls to a changed tool are denied (``definition_changed``) until the
new one is approved, whatever the client was shown.

A tool whose definition cannot be hashed (not canonical JSON, e.g. an
integer beyond 2^53 in its schema) or whose name Lictor cannot govern is
left out of the list, logged, and calls to it are refused.

Which tools are listed is also a *hint*: ``preview`` says whether the
principal could be allowed to call each one under some context, and those
that could not are left out. It is never a permission (every call is
decided on its own); when the control plane cannot answer it, the list is
refused with why (`visible` raises) rather than shown unfiltered.

A call naming a tool the catalog has not seen, or made after the upstream
said its tools changed, reads the whole list first; concurrent reads are
one read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from pydantic import ValidationError

from lictor.core.tools import definition_hash, tool_id
from lictor.errors import InvalidRequestError, LictorError, NotFoundError
from lictor.mcp.answers import wire
from lictor.mcp.upstream import Upstream
from lictor.sdk import AsyncClient

CALL_TOOL = 'Action::"call_tool"'
OBSERVE_BYTES = 256 * 1024
OBSERVE_TOOLS = 500
PREVIEW_BATCH = 1000
DEFINED = ("name", "title", "description", "inputSchema", "outputSchema", "annotations")
log = logging.getLogger("lictor.mcp")


def tool_ref(server: str, name: str) -> dict[str, str]:
    return {"type": "Tool", "id": tool_id(server, name)}


@dataclass(frozen=True)
class Listed:
    """One tool as the upstream last listed it, and the hash of its definition."""

    tool: types.Tool
    definition: dict[str, Any]
    hash: str


def batches(
    definitions: Sequence[dict[str, Any]],
    max_bytes: int = OBSERVE_BYTES,
    max_tools: int = OBSERVE_TOOLS,
) -> Iterator[list[dict[str, Any]]]:
    """``definitions`` in order, cut into batches of at most ``max_bytes`` of JSON
    (ASCII-escaped: an upper bound of what is sent) and ``max_tools`` tools; a
    definition larger than ``max_bytes`` goes alone."""
    batch: list[dict[str, Any]] = []
    size = 0
    for definition in definitions:
        length = len(json.dumps(definition)) + 2
        if batch and (size + length > max_bytes or len(batch) >= max_tools):
            yield batch
            batch, size = [], 0
        batch.append(definition)
        size += length
    if batch:
        yield batch


def approved_tool(tool: types.Tool, definition: Any) -> types.Tool | None:
    """``tool`` with its `DEFINED` members replaced by the approved ``definition``;
    None if there is no usable one."""
    if not isinstance(definition, dict) or definition.get("name") != tool.name:
        return None
    rest = {k: v for k, v in wire(tool).items() if k not in DEFINED}
    try:
        return types.Tool.model_validate({**rest, **definition})
    except ValidationError:
        return None


class Catalog:
    """Tools by name, as last listed by the upstream and judged by the control plane."""

    def __init__(self, server: str, principal: str, client: AsyncClient, upstream: Upstream):
        self.server, self._principal = server, principal
        self._client, self._upstream = client, upstream
        self._listed: dict[str, Listed] = {}
        self._unusable: dict[str, str] = {}
        self._judged: dict[str, dict[str, Any]] = {}
        self._schemas: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self._changes, self._fresh = 0, 0
        self._reading: asyncio.Future[None] | None = None
        self._reading_at = 0
        self._background: set[asyncio.Future[None]] = set()

    def schema(self, name: str) -> Mapping[str, Any] | None:
        """The input schema of tool ``name`` as last shown, if any."""
        return self._schemas.get(name)

    def reported(self, name: str) -> bool:
        """Whether the control plane has judged tool ``name``'s current definition."""
        listed = self._listed.get(name)
        return listed is not None and self._judged.get(name, {}).get("hash") == listed.hash

    async def definition(self, name: str) -> str:
        """The hash of tool ``name``'s current definition, to request a call with: the
        whole list is read first if the tool is unknown or the list changed, and the
        tool reported again if its report failed. Raises `NotFoundError` for a tool the
        upstream does not list, `InvalidRequestError` for one Lictor cannot pin."""
        if self.stale or (name not in self._listed and name not in self._unusable):
            await self.refresh()
        elif name in self._listed and not self.reported(name):
            await self._report([self._listed[name]])
        if name in self._unusable:
            raise InvalidRequestError(self._unusable[name])
        listed = self._listed.get(name)
        if listed is None:
            raise NotFoundError(f"{self.server} lists no tool named {name!r}")
        return listed.hash

    @property
    def stale(self) -> bool:
        """Whether the upstream said its tools changed since the last complete read."""
        return self._fresh < self._changes

    async def refresh(self) -> None:
        """Read every page of the upstream's tools and report them. Concurrent callers
        share one read, unless it began before the upstream's latest change."""
        task = self._reading
        if task is None or task.done() or self._reading_at < self._changes:
            self._reading_at = self._changes
            task = self._reading = asyncio.ensure_future(self._read(self._changes))
            task.add_done_callback(_retrieved)
        await asyncio.shield(task)

    async def _read(self, changes: int) -> None:
        async with self._lock:  # one read at a time: a later one's result is applied last
            tools = await self._upstream.all_tools()
            listed = self._take(tools)
            self._listed = {item.tool.name: item for item in listed}
            self._unusable = {k: v for k, v in self._unusable.items() if k in _names(tools)}
            await self._report(listed)
            self._fresh = max(self._fresh, changes)

    async def shown(self, tools: list[types.Tool]) -> list[types.Tool]:
        """What a client is shown of ``tools`` (one listed page): each reported, as an
        admin approved it, and only if the principal could be allowed to call it.
        Raises `LictorError` if the control plane cannot say which could be."""
        listed = self._take(tools)
        for item in listed:
            self._listed[item.tool.name] = item
        await self._report(listed)
        candidates = [(item, self._approved(item)) for item in listed]
        kept = [(item, tool) for item, tool in candidates if tool is not None]
        possible = await self._preview([item for item, _ in kept])
        shown = [tool for (_, tool), ok in zip(kept, possible, strict=True) if ok]
        for tool in shown:
            self._schemas[tool.name] = tool.input_schema
        return shown

    def tools_changed(self) -> None:
        """The upstream said its tools changed: read and report them again now (in the
        background), and before the next call in any case."""
        self._changes += 1
        task = asyncio.ensure_future(self.refresh())
        self._background.add(task)
        task.add_done_callback(self._refreshed)

    def _refreshed(self, task: asyncio.Future[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not read the tools of %s again: %s", self.server, task.exception())

    def _take(self, tools: Sequence[types.Tool]) -> list[Listed]:
        """``tools`` with their definitions hashed; those Lictor cannot govern or pin are
        left out, remembered as unusable, and logged."""
        listed: list[Listed] = []
        for tool in tools:
            try:
                tool_id(self.server, tool.name)
                definition = wire(tool)
                listed.append(Listed(tool, definition, definition_hash(definition)))
            except InvalidRequestError as e:
                self._unusable_tool(tool.name, e.message)
            else:
                self._unusable.pop(tool.name, None)
        return listed

    def _unusable_tool(self, name: str, why: str) -> None:
        message = f"{self.server} lists it, but Lictor cannot govern it: {why}"
        if self._unusable.get(name) != message:
            log.warning("tool %s/%s is left out and its calls refused: %s", self.server, name, why)
        self._unusable[name] = message
        self._listed.pop(name, None)

    def _approved(self, item: Listed) -> types.Tool | None:
        """``item`` as a client may see it (see the module docstring), or None."""
        judged = self._judged.get(item.tool.name)
        if judged is None:
            return None
        if judged.get("hash") == item.hash and judged.get("status") == "approved":
            return item.tool
        return approved_tool(item.tool, judged.get("definition"))

    async def _report(self, listed: Sequence[Listed]) -> None:
        """Report ``listed`` batch by batch; a failed batch is logged, the rest still go."""
        for batch in batches([item.definition for item in listed]):
            try:
                reply = await self._client.observe_tools(self.server, batch)
            except LictorError as e:
                log.warning("could not report %d tools of %s: %s", len(batch), self.server, e)
                continue
            for judged in reply.get("tools") or ():
                self._judge(judged)

    def _judge(self, judged: Any) -> None:
        if not isinstance(judged, dict) or not isinstance(judged.get("name"), str):
            return
        previous = self._judged.get(judged["name"], {})
        self._judged[judged["name"]] = judged
        if judged.get("status") == "changed" and previous.get("hash") != judged.get("hash"):
            log.warning(
                "tool %s changed since it was approved: clients are shown the approved "
                "definition and its calls are denied until an admin runs "
                "`lictor mcp approve %s --hash %s`",
                judged.get("tool"),
                judged.get("tool"),
                judged.get("hash"),
            )

    async def _preview(self, listed: Sequence[Listed]) -> list[bool]:
        refs = [tool_ref(self.server, item.tool.name) for item in listed]
        return await visible(self._client, self._principal, CALL_TOOL, refs)


def _retrieved(task: asyncio.Future[None]) -> None:
    """Take a shared read's outcome, so one that no caller waited for is not reported
    as never retrieved (callers that waited have it raised to them)."""
    if not task.cancelled():
        task.exception()


def _names(tools: Sequence[types.Tool]) -> set[str]:
    return {tool.name for tool in tools}


async def visible(
    client: AsyncClient, principal: str, action: str, refs: Sequence[dict[str, str]]
) -> list[bool]:
    """Which of ``refs`` ``principal`` could be allowed ``action`` on; raises `LictorError`
    if the control plane cannot say (a list is then refused, never shown unfiltered)."""
    possible: list[bool] = []
    for start in range(0, len(refs), PREVIEW_BATCH):
        possible += await client.preview(principal, action, refs[start : start + PREVIEW_BATCH])
    return possible
