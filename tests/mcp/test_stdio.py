"""The gateway wrapping a stdio MCP server: mcp-server-time, from PyPI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp_types as types
import rfc8785
from mcp.shared.exceptions import MCPError

from lictor.mcp.lifecycle import server_name
from lictor.sdk import verify_receipt

from ..conftest import Server
from ..sdk.conftest import Plane
from .conftest import STRANGER, govern, stdio_session, time_gateway

UTC = {"timezone": "UTC"}


def text(result: types.CallToolResult) -> str:
    return " ".join(c.text for c in result.content if isinstance(c, types.TextContent))


def lictor_meta(result: types.Result) -> tuple[str, dict[str, Any]]:
    """The execution id and receipt the gateway put in a result's ``_meta``."""
    meta = result.meta or {}
    return str(meta["lictor/execution"]), meta["lictor/receipt"]


def upstream_hash(result: types.Result) -> str:
    """The hash of the result as the upstream sent it (without the gateway's ``_meta``)."""
    meta = {k: v for k, v in (result.meta or {}).items() if not k.startswith("lictor/")}
    original = result.model_copy(update={"meta": meta or None})
    data = rfc8785.dumps(original.model_dump(by_alias=True, exclude_none=True, mode="json"))
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_calls_are_decided_on_their_arguments_and_their_receipts_verify(plane: Plane) -> None:
    async def run() -> list[types.CallToolResult]:
        async with stdio_session(time_gateway(plane)) as s:
            return [
                await s.call_tool("get_current_time", {"timezone": zone})
                for zone in ("UTC", "Europe/Paris", "America/New_York")
            ]

    utc, paris, new_york = asyncio.run(run())
    assert not utc.is_error and '"timezone": "UTC"' in text(utc), utc
    assert not paris.is_error and "Europe/Paris" in text(paris), paris
    assert new_york.is_error, new_york
    assert "Lictor denied tool mcp-time/get_current_time: not_permitted" in text(new_york)
    vkey = plane.vkey()
    for result, state in ((utc, "active"), (paris, "active"), (new_york, "denied")):
        execution, receipt = lictor_meta(result)
        proved = verify_receipt(receipt, vkey)
        assert (proved.entry["execution"], proved.entry["state"]) == (execution, state)
        assert proved.event is not None
        assert proved.event["resource"] == {"type": "Tool", "id": "mcp-time/get_current_time"}
    index = verify_receipt(lictor_meta(new_york)[1], vkey).index
    assert f"log index {index}" in text(new_york)


def test_a_session_is_the_parent_of_its_calls_and_each_call_is_completed(plane: Plane) -> None:
    async def run() -> list[types.CallToolResult]:
        async with stdio_session(time_gateway(plane)) as s:
            ok = await s.call_tool("get_current_time", UTC)
            bad = await s.call_tool("get_current_time", {"timezone": "Europe/Atlantis"})
            return [ok, bad]

    ok, bad = asyncio.run(run())  # the gateway exits with its client: completions drained
    assert bad.is_error and "Lictor" not in text(bad)  # the upstream's own error
    calls = [lictor_meta(r)[0] for r in (ok, bad)]
    lineage = plane.admin("GET", f"/v1/executions/{calls[0]}/lineage")
    (session,) = [a["execution"] for a in lineage["ancestors"]]
    assert session["action"] == {"type": "Action", "id": "mcp_session"}
    assert session["resource"] == {"type": "McpServer", "id": "mcp-time"}
    assert session["principal"] == {"type": "Agent", "id": "planner-7"}
    assert (session["state"], session["outcome"]) == ("completed", "succeeded")
    below = plane.admin("GET", f"/v1/executions/{session['id']}/lineage")["descendants"]
    assert set(calls) <= {d["execution"]["id"] for d in below}
    for call, result, outcome in zip(calls, (ok, bad), ("succeeded", "failed"), strict=True):
        view = plane.execution(call)
        assert view["execution"]["parent_id"] == session["id"]
        assert (view["execution"]["state"], view["execution"]["outcome"]) == ("completed", outcome)
        assert view["transitions"][-1]["result_hash"] == upstream_hash(result)


def test_tools_list_shows_only_tools_the_principal_could_call(plane: Plane) -> None:
    async def run() -> list[str]:
        async with stdio_session(time_gateway(plane)) as s:
            return [t.name for t in (await s.list_tools()).tools]

    assert asyncio.run(run()) == ["get_current_time"]  # no policy permits convert_time


def test_a_principal_without_a_session_is_told_why(plane: Plane) -> None:
    async def run() -> types.CallToolResult:
        async with stdio_session(time_gateway(plane, principal=STRANGER)) as s:
            return await s.call_tool("get_current_time", UTC)

    refused = asyncio.run(run())
    assert refused.is_error
    assert "no_session: the control plane denied the session: not_permitted" in text(refused)


def test_a_gateway_without_a_session_lists_nothing(plane: Plane) -> None:
    async def run() -> str:
        async with stdio_session(time_gateway(plane, principal=STRANGER)) as s:
            try:
                listed = await s.list_tools()
            except MCPError as e:
                return str(e)
            return f"listed {[t.name for t in listed.tools]}"

    refused = asyncio.run(run())
    assert "the list of tools of mcp-time" in refused, refused
    assert "no_session: the control plane denied the session: not_permitted" in refused


# Before it becomes mcp-server-time, the wrapped command writes its environment.
PEEK = (
    "import json, os, sys\n"
    "seen = {'env': dict(os.environ)}\n"
    "json.dump(seen, open(os.environ['OUT'], 'w'))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'mcp_server_time'])\n"
)


def test_the_wrapped_server_gets_no_credential(plane: Plane, tmp_path: Path) -> None:
    out = tmp_path / "peek.json"
    params = time_gateway(plane)
    params.args = [*params.args[: params.args.index("--") + 1], sys.executable, "-c", PEEK]
    params.env = {**(params.env or {}), "OUT": str(out), "LICTOR_EXTRA": "lictor-only"}

    async def run() -> list[str]:
        async with stdio_session(params) as s:
            return [t.name for t in (await s.list_tools()).tools]

    assert asyncio.run(run()) == ["get_current_time"]  # the wrapped server still serves
    seen = json.loads(out.read_text())
    assert not [k for k in seen["env"] if k.startswith("LICTOR_")], seen["env"].keys()
    assert plane.runtime_secret not in json.dumps(seen["env"])


def test_calls_fail_closed_when_the_control_plane_goes_away(
    serve: Callable[..., Server],
) -> None:
    plane = govern(serve())

    async def run() -> tuple[types.CallToolResult, types.CallToolResult]:
        async with stdio_session(time_gateway(plane)) as s:
            before = await s.call_tool("get_current_time", UTC)
            plane.server.kill()
            return before, await s.call_tool("get_current_time", UTC)

    before, after = asyncio.run(run())
    assert not before.is_error, before
    assert after.is_error, after
    assert "Lictor did not allow tool mcp-time/get_current_time: unreachable" in text(after)


def test_the_server_name_is_the_upstream_name_made_valid() -> None:
    assert server_name("mcp-time") == "mcp-time"
    assert server_name("Secure MCP Filesystem Server") == "Secure-MCP-Filesystem-Server"
    assert server_name("@scope/server: v2") == "scope-server-v2"
    assert server_name("  ") == "mcp"
