"""Starting and stopping a gateway: what it needs, in which order.

`open_gateway` connects to the upstream first (its name names the MCP
server Lictor governs, unless one is given), then asks for the session in
the background, and yields a `Gateway` ready to serve. On exit, in order:
completions still pending are sent, the session is completed, the event
follower and the control-plane client are closed, and the upstream last
(a wrapped stdio server is stopped).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from lictor.core.tools import check_server
from lictor.errors import ExecutionRevokedError
from lictor.mcp.calls import Governor
from lictor.mcp.catalog import Catalog
from lictor.mcp.completions import Completions
from lictor.mcp.follower import EventFollower
from lictor.mcp.gateway import Gateway
from lictor.mcp.session import Session
from lictor.mcp.upstream import Target, connect
from lictor.sdk import AsyncClient

UNNAMED = "mcp"


@dataclass(frozen=True)
class Config:
    """A gateway: the control plane, who acts, the upstream, and what it is called."""

    url: str
    credential: str
    principal: str
    target: Target
    server: str | None = None
    ttl: int | None = None


def server_name(name: str) -> str:
    """``name`` (an upstream's ``serverInfo.name``) as a server name Lictor accepts:
    runs of other characters become ``-``, at most 128 characters."""
    reduced = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip("._-")[:128]
    return check_server(reduced or UNNAMED)


@asynccontextmanager
async def open_gateway(config: Config) -> AsyncIterator[Gateway]:
    """A gateway to ``config.target``, its session opening; everything closed on exit.

    Enter and exit in the same task (the upstream's transport holds task groups)."""
    async with connect(config.target) as upstream:
        name = check_server(config.server or server_name(upstream.info.name))
        client = AsyncClient(config.url, config.credential, events=False)
        follower = EventFollower(config.url, config.credential)
        session = Session(client, config.principal, name, follower, config.ttl)
        completions = Completions(client)
        governor = Governor(client, config.principal, session, follower, completions, config.ttl)
        ended = ExecutionRevokedError(f"the session of {name} ended")
        session.on_lost.append(lambda: governor.lose_all(ended))
        catalog = Catalog(name, config.principal, client, upstream)
        session.start()
        try:
            yield Gateway(name, config.principal, client, upstream, catalog, governor)
        finally:
            await completions.drain()
            await session.stop()
            await follower.stop()
            await client.aclose()
