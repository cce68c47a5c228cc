"""`lictor mcp`: govern an MCP server's tools, resources and prompts.

    lictor mcp [--principal P] [--name SERVER] -- CMD ARGS...
    lictor mcp [--principal P] [--name SERVER] --upstream URL --listen HOST:PORT [--allow-remote]
    lictor mcp tools [--json]
    lictor mcp approve SERVER/TOOL [--hash sha256:...]

The first form wraps a stdio MCP server: an MCP client launches `lictor mcp`
in its place and speaks to it over stdio. The second fronts a Streamable
HTTP MCP server and serves Streamable HTTP at ``http://HOST:PORT/mcp``,
on a loopback address only unless ``--allow-remote`` says otherwise (that
front has no authentication: whoever reaches it acts as the principal).
Either way every ``tools/call``, ``resources/read`` and ``prompts/get`` is a
governed execution, a child of the gateway's session execution
(`lictor.mcp`). The runtime's credential and the control plane are found as
`lictor run` finds them (``--credential-file`` or ``LICTOR_CREDENTIAL``,
``--url`` or ``LICTOR_URL``); the principal defaults to the enclosing
execution's (``LICTOR_GRANT``), and the server's name to the upstream's own
name, reduced to letters, digits and ``._-``.

``tools`` lists the pinned tool definitions (``--json``: with full hashes
and definitions). ``approve`` approves a tool's pending definition named by
its full hash; without ``--hash`` it approves nothing, shows the pending
definition, what changed and its hash, and exits 1. Both take an admin
credential.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import logging
import os
import sys
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from lictor.cli.client import DEFAULT_URL, add_client_options, call, credential
from lictor.cli.run import parent_principal
from lictor.core.tools import check_hash
from lictor.errors import InvalidRequestError
from lictor.supervise import not_dumpable

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
    p.add_argument(
        "--allow-remote",
        action="store_true",
        help="serve on a non-loopback address (no authentication: anyone reaching it acts "
        "as the principal)",
    )
    p.add_argument(
        "--ttl",
        type=int,
        help="the leases of the session and of each call, in seconds (default: the server's)",
    )
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

    if args.allow_remote and not args.listen:
        raise InvalidRequestError("--allow-remote is about --listen, which is not given")
    address = _address(args.listen, args.allow_remote) if args.listen else None
    target = Target(tuple(command), args.upstream)
    config = _config(args, target)
    not_dumpable()  # the wrapped server runs as this user: keep it out of the credential
    _log_to_stderr()
    if address is not None:
        host, port = address
        _run(serve_http(config, host, port, lambda: _announce(host, port, target)))
    else:
        _run(serve_stdio(config))
    return 0


def _run(main: Coroutine[Any, Any, None]) -> None:
    """Run the gateway on uvloop where it is installed (as ``lictor serve`` does): a
    relay whose every call is reads and writes on pipes and sockets spends a good part
    of its time in the event loop."""
    try:
        import uvloop
    except ImportError:  # not on this platform (see pyproject.toml): asyncio's own loop
        asyncio.run(_told_asyncio(main))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_told_asyncio(main))


async def _told_asyncio(main: Coroutine[Any, Any, None]) -> None:
    """``main``, with anyio (under the MCP SDK) told once which event loop this is, in
    the context every task inherits (sniffio's context variable). Not told, it asks on
    every stream operation, and on Python 3.11 each asking costs a system call
    (`asyncio.get_running_loop` calls ``getpid``): some sixty per tool call."""
    try:
        import sniffio
    except ImportError:  # anyio then asks asyncio each time
        pass
    else:
        sniffio.current_async_library_cvar.set("asyncio")
    await main


def _config(args: argparse.Namespace, target: Target) -> Config:
    from lictor.mcp.lifecycle import Config

    secret = credential(args)
    if not secret:
        raise InvalidRequestError("a runtime credential is needed (LICTOR_CREDENTIAL)")
    url = args.url or os.environ.get("LICTOR_URL") or DEFAULT_URL
    principal = args.principal or parent_principal()
    return Config(url, secret, principal, target, args.name, args.ttl)


def _address(listen: str, allow_remote: bool) -> tuple[str, int]:
    """``--listen``'s host and port; a non-loopback host only with ``--allow-remote``."""
    from lictor.mcp.front import is_loopback

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidRequestError("--listen is HOST:PORT, e.g. 127.0.0.1:7400")
    host = host.strip("[]")
    if not is_loopback(host):
        if not allow_remote:
            raise InvalidRequestError(
                f"--listen {listen} is not a loopback address, and the HTTP front has no "
                "authentication: anyone who reaches it acts as the principal. Serve on "
                "127.0.0.1 (behind something that authenticates), or pass --allow-remote"
            )
        print(
            f"lictor mcp: warning: serving on {host}, which is not loopback, without "
            "authentication: anyone who reaches it acts as the principal",
            file=sys.stderr,
        )
    return host, int(port)


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
        p.add_argument(
            "--hash", help="the definition to approve (without it: show the pending one)"
        )
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
    if not args.hash:
        return _review(args, _pin(args, args.tool))
    digest = check_hash(args.hash)
    reply = call(args, "POST", "/v1/tools/approve", {"tool": args.tool, "hash": digest})
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        print(f"approved {args.tool} {digest}")
    return 0


def _review(args: argparse.Namespace, pin: dict[str, Any]) -> int:
    """Show ``pin``'s pending definition and approve nothing: an admin approves a
    definition they have read, named by its full hash (exit 1)."""
    tool, pending = pin["tool"], pin.get("pending")
    if not pending:
        raise InvalidRequestError(f"{tool} has no pending definition to approve")
    if args.json:
        print(json.dumps(pin, indent=2))
    else:
        print(review_text(pin))
    print(
        f"lictor mcp: nothing approved. Once you have read it, approve it with: "
        f"lictor mcp approve {tool} --hash {pending}",
        file=sys.stderr,
    )
    return 1


def review_text(pin: dict[str, Any]) -> str:
    """A pin's pending definition, its hash and the approved one's, and what changed."""
    approved = _pretty(pin.get("definition")).splitlines(keepends=True)
    pending = _pretty(pin.get("pending_definition"))
    changes = difflib.unified_diff(
        approved, pending.splitlines(keepends=True), "approved", "pending"
    )
    return (
        f"{pin['tool']} changed; calls to it are denied until a definition is approved.\n"
        f"approved: {pin.get('approved')}\n"
        f"pending:  {pin.get('pending')}\n\n"
        f"pending definition:\n{pending}\n\n"
        f"changes from the approved definition:\n{''.join(changes)}"
    ).rstrip()


def _pretty(definition: Any) -> str:
    return json.dumps(definition, indent=2, sort_keys=True, ensure_ascii=False)


def _pin(args: argparse.Namespace, tool: str) -> dict[str, Any]:
    for pin in call(args, "GET", "/v1/tools").get("tools") or ():
        if pin.get("tool") == tool:
            return dict(pin)
    raise InvalidRequestError(f"no tool {tool} has been seen")
