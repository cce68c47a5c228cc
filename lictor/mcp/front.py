"""Serving a gateway to MCP clients: over stdio, or over Streamable HTTP.

stdio: the gateway is the process an MCP client launches in place of the
server; it serves until the client closes its stdin. Streamable HTTP: the
gateway serves ``http://HOST:PORT/mcp`` (the exact path; no redirect) until
SIGINT or SIGTERM. On a loopback address the Host and Origin headers must
name that address (DNS-rebinding protection), as the MCP specification asks
of local servers. The HTTP front has no authentication of its own: every
client of it acts as the gateway's principal, so bind it to loopback, or
put it behind something that authenticates.

Either way SIGINT and SIGTERM stop serving and then let the gateway close
in order (`lictor.mcp.lifecycle`): no completion is lost to a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from mcp.server.stdio import stdio_server
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Route

from lictor.mcp.gateway import Gateway, GatewayServer
from lictor.mcp.lifecycle import Config, open_gateway

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PATH = "/mcp"


def security(host: str, port: int) -> TransportSecuritySettings | None:
    """DNS-rebinding protection for a loopback address; None elsewhere."""
    if host not in LOOPBACK:
        return None
    names = ["127.0.0.1", "localhost", "[::1]"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:{port}" for name in names],
        allowed_origins=[f"http://{name}:{port}" for name in names],
    )


def _on_signals(stop: Callable[[], object]) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


async def serve_stdio(config: Config) -> None:
    """Serve the gateway on this process's stdin and stdout."""
    async with open_gateway(config) as gateway:
        server = gateway.server()
        serving = asyncio.create_task(_stdio(server))
        _on_signals(serving.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def _stdio(server: GatewayServer) -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: it would re-raise the signal once
    stopped, ending the process before the gateway has closed in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def http_app(gateway: Gateway, host: str, port: int) -> Starlette:
    """The Starlette app serving ``gateway`` at `PATH`."""
    manager = StreamableHTTPSessionManager(
        app=gateway.server(), security_settings=security(host, port)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            yield

    route = Route(PATH, endpoint=StreamableHTTPASGIApp(manager))
    return Starlette(routes=[route], lifespan=lifespan)


async def serve_http(config: Config, host: str, port: int, started: Callable[[], object]) -> None:
    """Serve the gateway at ``http://host:port/mcp``; ``started()`` once it listens."""
    async with open_gateway(config) as gateway:
        app = http_app(gateway, host, port)
        settings = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
        server = _Uvicorn(settings)
        _on_signals(lambda: setattr(server, "should_exit", True))
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started:
            started()
        await serving
