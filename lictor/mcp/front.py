"""Serving a gateway to MCP clients: over stdio, or over Streamable HTTP.

stdio: the gateway is the process an MCP client launches in place of the
server; it serves until the client closes its stdin. Streamable HTTP: the
gateway serves ``http://HOST:PORT/mcp`` (the exact path; no redirect) until
SIGINT or SIGTERM. On a loopback address the Host and Origin headers must
name that address (DNS-rebinding protection), as the MCP specification asks
of local servers. The HTTP front has no authentication of its own: every
client of it acts as the gateway's principal, so bind it to loopback, or
put it behind something that authenticates. Each request is answered with a
JSON body, not an event stream (the specification lets a server choose): the
gateway sends nothing else on a request's behalf before its answer, and a
body read whole lets the client keep its connection for the next request.

Either way the first SIGINT or SIGTERM stops serving and then lets the
gateway close in order (`lictor.mcp.lifecycle`): no completion is lost to a
signal. Over HTTP the streams clients hold open are ended within a second
(a client holding one would otherwise keep the server up for ever; uvicorn
waits at most `GRACE_S` for connections), a request still running then has
no one to answer and is cancelled (at the upstream too) and completed as
``cancelled``, and the process exits 0. A second signal exits at once
(`FORCED_EXIT`): what was still pending is not completed, and those
executions expire, which the log shows too.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator

import uvicorn
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from sse_starlette.sse import AppStatus
from starlette.applications import Starlette
from starlette.routing import Route

from lictor.mcp.express import Express
from lictor.mcp.gateway import Gateway, GatewayServer
from lictor.mcp.lifecycle import Config, open_gateway
from lictor.mcp.stdio import stdio_streams

PATH = "/mcp"
GRACE_S = 5
FORCED_EXIT = 1
log = logging.getLogger("lictor.mcp")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def security(host: str, port: int) -> TransportSecuritySettings | None:
    """DNS-rebinding protection for a loopback address; None elsewhere."""
    if not is_loopback(host):
        return None
    names = ["127.0.0.1", "localhost", "[::1]"]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:{port}" for name in names],
        allowed_origins=[f"http://{name}:{port}" for name in names],
    )


class Stopper:
    """What SIGINT and SIGTERM do: the first calls ``graceful``, a second exits now."""

    def __init__(self, graceful: Callable[[], object]) -> None:
        self._graceful = graceful
        self.signalled = False

    def __call__(self) -> None:
        if self.signalled:
            log.warning("a second signal: exiting without sending what is pending")
            os._exit(FORCED_EXIT)
        self.signalled = True
        self._graceful()


def _on_signals(stop: Callable[[], object]) -> None:
    loop = asyncio.get_running_loop()
    stopper = Stopper(stop)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopper)


async def serve_stdio(config: Config) -> None:
    """Serve the gateway on this process's stdin and stdout."""
    async with open_gateway(config) as gateway:
        server = gateway.server()
        serving = asyncio.create_task(_stdio(server, gateway.express()))
        _on_signals(serving.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serving


async def _stdio(server: GatewayServer, lane: Express | None) -> None:
    async with stdio_streams(lane) as (read, write):
        await server.run(read, write, server.create_initialization_options())


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: it would re-raise the signal once
    stopped, ending the process before the gateway has closed in order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def stop(self) -> None:
        """Stop serving: no new connections, open streams ended (sse-starlette's
        streams end only on this flag, which uvicorn sets only from its own
        signal handlers), requests given `GRACE_S`."""
        AppStatus.should_exit = True
        self.should_exit = True


def http_app(gateway: Gateway, host: str, port: int) -> Starlette:
    """The Starlette app serving ``gateway`` at `PATH`."""
    manager = StreamableHTTPSessionManager(
        app=gateway.server(), security_settings=security(host, port), json_response=True
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
        settings = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=GRACE_S,
        )
        server = _Uvicorn(settings)
        _on_signals(server.stop)
        serving = asyncio.create_task(server.serve())
        while not server.started and not serving.done():
            await asyncio.sleep(0.02)
        if server.started:
            started()
        await serving
