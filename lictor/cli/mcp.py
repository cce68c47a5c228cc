"""`lictor mcp`: govern an MCP server's tools, resources and prompts.

    lictor mcp [--principal P] [--name SERVER] -- CMD ARGS...
    lictor mcp [--principal P] [--name SERVER] --upstream URL --listen HOST:PORT
    lictor mcp tools [--json]
    lictor mcp approve SERVER/TOOL [--hash sha256:...]

The first form wraps a stdio MCP server: an MCP client launches `lictor mcp`
in its place and speaks to it over stdio. The second fronts a Streamable
HTTP MCP server and serves Streamable HTTP at ``http://HOST:PORT/mcp``.
Either way every ``tools/call``, ``resources/read`` and ``prompts/get`` is a
governed execution, a child of the gateway's session execution
(`lictor.mcp`). The runtime's credential and the control plane are found as
`lictor run` finds them (``--credential-file`` or ``LICTOR_CREDENTIAL``,
``--url`` or ``LICTOR_URL``); the principal defaults to the enclosing
execution's (``LICTOR_GRANT``), and the server's name to the upstream's own
name, reduced to letters, digits and ``._-``.

``tools`` lists the pinned tool definitions, ``approve`` approves a tool's
pending definition (by default the one pending now): both take an admin
credential.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from lictor.cli.client import DEFAULT_URL, add_client_options, call, credential
from lictor.cli.run import parent_principal
from lictor.core.tools import check_hash
from lictor.errors import InvalidRequestError

if TYPE_CHECKING:
    from lictor.mcp.lifecycle import Config
    from lictor.mcp.upstream import Target

ADMIN = ("tools", "approve")
SHORT_HASH = len("sha256:") + 12


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mcp",
        help="govern an MCP server (gateway), list and approve its tools",
        description=__doc__.split("\n\n")[2] if __doc__ else None,
        usage=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", help=f"control plane URL (env LICTOR_URL, default {DEFAULT_URL})")
    p.add_argument("--credential-file", help="file holding the runtime's credential")
    p.add_argument("--principal", help='who acts, e.g. Agent::"planner-7" (default: the parent\'s)')
    p.add_argument("--name", help="the server's name in Lictor (default: the upstream's name)")
    p.add_argument("--upstream", metavar="URL", help="a Streamable HTTP MCP server to front")
    p.add_argument("--listen", metavar="HOST:PORT", help="where to serve Streamable HTTP")
    p.add_argument("--ttl", type=int, help="the session's lease in seconds (default: the server's)")
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="-- CMD ARGS | tools | approve")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rest: list[str] = args.rest
    if rest[:1] == ["--"]:
        return _wrap(args, rest[1:])
    if rest[:1] == ["tools"]:
        return _tools(_admin_args("tools", args, rest[1:]))
    if rest[:1] == ["approve"]:
        return _approve(_admin_args("approve", args, rest[1:]))
    return _wrap(args, rest)


def _wrap(args: argparse.Namespace, command: list[str]) -> int:
    if command and args.upstream:
        raise InvalidRequestError("give either a command (after --) or --upstream, not both")
    if not command and not args.upstream:
        raise InvalidRequestError("say which MCP server to govern: -- CMD ARGS, or --upstream URL")
    if args.upstream and not args.listen:
        raise InvalidRequestError("--upstream needs --listen HOST:PORT")
    if args.listen and not args.upstream:
        raise InvalidRequestError("--listen serves a --upstream; a wrapped command speaks stdio")
    from lictor.mcp.front import serve_http, serve_stdio  # the MCP SDK: only when serving
    from lictor.mcp.upstream import Target

    target = Target(tuple(command), args.upstream)
    config = _config(args, target)
    _log_to_stderr()
    if args.upstream:
        host, port = _address(args.listen)
        asyncio.run(serve_http(config, host, port, lambda: _announce(host, port, target)))
    else:
        asyncio.run(serve_stdio(config))
    return 0


def _config(args: argparse.Namespace, target: Target) -> Config:
    from lictor.mcp.lifecycle import Config

    secret = credential(args)
    if not secret:
        raise InvalidRequestError("a runtime credential is needed (LICTOR_CREDENTIAL)")
    url = args.url or os.environ.get("LICTOR_URL") or DEFAULT_URL
    principal = args.principal or parent_principal()
    return Config(url, secret, principal, target, args.name, args.ttl)


def _address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequestError("--listen is HOST:PORT, e.g. 127.0.0.1:7400")
    return host.strip("[]"), int(port)


def _announce(host: str, port: int, target: Target) -> None:
    shown = f"[{host}]" if ":" in host else host
    print(f"lictor mcp: serving http://{shown}:{port}/mcp for {target.describe()}", flush=True)


def _log_to_stderr() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("lictor mcp: %(message)s"))
    logger = logging.getLogger("lictor.mcp")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def _admin_args(command: str, outer: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=f"lictor mcp {command}")
    add_client_options(p)
    if command == "approve":
        p.add_argument("tool", metavar="SERVER/TOOL", help="the tool, e.g. time/get_current_time")
        p.add_argument("--hash", help="the definition to approve (default: the pending one)")
    args = p.parse_args(argv)
    args.url = args.url or outer.url
    args.credential_file = args.credential_file or outer.credential_file
    return args


def _tools(args: argparse.Namespace) -> int:
    reply = call(args, "GET", "/v1/tools")
    if args.json:
        print(json.dumps(reply, indent=2))
        return 0
    print(f"{'TOOL':40} {'STATUS':9} {'APPROVED':20} PENDING")
    for pin in reply.get("tools") or ():
        approved, pending = _short(pin.get("approved")), _short(pin.get("pending"))
        print(f"{pin['tool']:40} {pin.get('status', ''):9} {approved:20} {pending}")
    return 0


def _short(digest: Any) -> str:
    return f"{digest[:SHORT_HASH]}…" if isinstance(digest, str) else "-"


def _approve(args: argparse.Namespace) -> int:
    digest = check_hash(args.hash) if args.hash else _pending(args, args.tool)
    reply = call(args, "POST", "/v1/tools/approve", {"tool": args.tool, "hash": digest})
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        print(f"approved {args.tool} {digest}")
    return 0


def _pending(args: argparse.Namespace, tool: str) -> str:
    for pin in call(args, "GET", "/v1/tools").get("tools") or ():
        if pin.get("tool") == tool:
            if not pin.get("pending"):
                raise InvalidRequestError(f"{tool} has no pending definition to approve")
            return str(pin["pending"])
    raise InvalidRequestError(f"no tool {tool} has been seen")
