"""An MCP server for the gateway's tests, built with the ``mcp`` SDK: over Streamable
HTTP, or over stdio.

    python peer.py --port PORT --root DIR
    python peer.py --stdio --root DIR

Tools: ``echo(text)`` (fast), ``write_file(path, text)`` (under DIR),
``slow(seconds)`` (appends ``started <id>`` to DIR/calls.log when it starts
and ``cancelled <id>`` when it is cancelled), ``lookup(q)``, whose
description is read from DIR/lookup.txt at every ``tools/list`` (so a test
can change its definition), ``reword(text)``, which makes ``text`` its own
description (DIR/reword.txt) and says so with
``notifications/tools/list_changed``, ``fail()``, which answers with a
JSON-RPC error, and ``bignum(n)``, whose schema holds an integer beyond
2^53 (not canonical JSON: Lictor cannot pin it). With a number N in
DIR/many.txt it also lists N tools ``many-<i>`` of about 1 KiB each.
Resources ``note://readme`` and ``note://secret``; prompt ``greet(who)``.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import mcp_types as types
import uvicorn
from mcp import MCPError
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

Context = ServerRequestContext[Any, Any]
ROOT = Path(".")


def _schema(**properties: str) -> dict[str, Any]:
    props = {name: {"type": kind} for name, kind in properties.items()}
    return {"type": "object", "properties": props, "required": list(properties)}


def _described(name: str, default: str) -> str:
    path = ROOT / f"{name}.txt"
    return (path.read_text() if path.exists() else "") or default


def _many() -> list[types.Tool]:
    path = ROOT / "many.txt"
    count = int(path.read_text()) if path.exists() else 0
    text = "A tool among many. " * 50
    return [
        types.Tool(name=f"many-{i}", description=f"{i}: {text}", input_schema=_schema())
        for i in range(count)
    ]


def tools() -> list[types.Tool]:
    bignum = {"type": "object", "properties": {"n": {"type": "integer", "maximum": 2**60}}}
    return [
        types.Tool(name="echo", description="Echo the text.", input_schema=_schema(text="string")),
        types.Tool(
            name="write_file",
            description="Write text to a file.",
            input_schema=_schema(path="string", text="string"),
        ),
        types.Tool(
            name="slow", description="Sleep a while.", input_schema=_schema(seconds="number")
        ),
        types.Tool(
            name="lookup",
            description=_described("lookup", "Look up."),
            input_schema=_schema(q="string"),
        ),
        types.Tool(
            name="reword",
            description=_described("reword", "Reword me."),
            input_schema=_schema(text="string"),
        ),
        types.Tool(name="fail", description="Fail.", input_schema=_schema()),
        types.Tool(name="bignum", description="Big numbers.", input_schema=bignum),
        *_many(),
    ]


def _text(text: str, error: bool = False) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=error)


def _record(line: str) -> None:
    with (ROOT / "calls.log").open("a") as f:
        f.write(line + "\n")


async def list_tools(ctx: Context, params: types.PaginatedRequestParams | None) -> Any:
    return types.ListToolsResult(tools=tools())


async def call_tool(ctx: Context, params: types.CallToolRequestParams) -> types.CallToolResult:
    args = params.arguments or {}
    if params.name == "echo":
        return _text(str(args.get("text")))
    if params.name == "write_file":
        target = (ROOT / str(args["path"])).resolve()
        if ROOT.resolve() not in target.parents:
            return _text("outside the root", error=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(str(args["text"]))
        return _text(f"wrote {target.name}")
    if params.name == "slow":
        return await _slow(str(ctx.request_id), float(args.get("seconds", 1)))
    if params.name == "lookup":
        return _text(f"found {args.get('q')}")
    if params.name == "reword":
        (ROOT / "reword.txt").write_text(str(args.get("text")))
        await ctx.session.send_notification(types.ToolListChangedNotification(), ctx.request_id)
        return _text("reworded")
    if params.name == "fail":
        raise MCPError(-32000, "the peer failed on purpose")
    return _text(f"no tool {params.name}", error=True)


async def _slow(request_id: str, seconds: float) -> types.CallToolResult:
    _record(f"started {request_id}")
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _record(f"cancelled {request_id}")
        raise
    _record(f"finished {request_id}")
    return _text(f"slept {seconds}")


async def list_resources(ctx: Context, params: types.PaginatedRequestParams | None) -> Any:
    return types.ListResourcesResult(
        resources=[
            types.Resource(uri="note://readme", name="readme", mime_type="text/plain"),
            types.Resource(uri="note://secret", name="secret", mime_type="text/plain"),
        ]
    )


async def read_resource(ctx: Context, params: types.ReadResourceRequestParams) -> Any:
    text = f"the note at {params.uri}"
    contents = [types.TextResourceContents(uri=params.uri, text=text, mime_type="text/plain")]
    return types.ReadResourceResult(contents=contents)


async def list_prompts(ctx: Context, params: types.PaginatedRequestParams | None) -> Any:
    argument = types.PromptArgument(name="who", required=True)
    return types.ListPromptsResult(prompts=[types.Prompt(name="greet", arguments=[argument])])


async def get_prompt(ctx: Context, params: types.GetPromptRequestParams) -> Any:
    who = (params.arguments or {}).get("who", "you")
    content = types.TextContent(type="text", text=f"Say hello to {who}.")
    return types.GetPromptResult(messages=[types.PromptMessage(role="user", content=content)])


def main() -> None:
    global ROOT
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--stdio", action="store_true")
    parser.add_argument("--root", required=True)
    args = parser.parse_args()
    ROOT = Path(args.root)
    server: Server[Any] = Server(
        "peer",
        version="1.0",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )
    if args.stdio:
        asyncio.run(_stdio(server))
        return
    app = server.streamable_http_app(streamable_http_path="/mcp", host="127.0.0.1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


async def _stdio(server: Server[Any]) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    main()
