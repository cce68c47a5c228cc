"""The MCP gateway end to end: a real control plane, real MCP servers, real
`lictor mcp` processes, driven by the official ``mcp`` client.

Peers: ``mcp-server-time`` (from PyPI) over stdio, and `peer.py` (built
here with the ``mcp`` SDK) over Streamable HTTP, each a process of its own.
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from ..conftest import REPO, Server, free_port
from ..sdk.conftest import Plane
from ..sdk.conftest import govern as sdk_govern

HERE = Path(__file__).parent
PLANNER = 'Agent::"planner-7"'
STRANGER = 'Agent::"stranger"'


def govern(server: Server) -> Plane:
    """The gateway's test policies active, entities loaded, a verified runtime."""
    return sdk_govern(server, HERE / "policies", HERE / "entities.json", "gateway-1")


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    server = Server(tmp_path_factory.mktemp("mcp") / "data", free_port()).start()
    try:
        yield govern(server)
    finally:
        server.kill()


def wait_port(port: int, process: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    """Return once ``port`` accepts connections (raise if ``process`` ends first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {port}")


@dataclass
class Peer:
    """The HTTP test peer: its URL and its root (files, ``calls.log``, ``lookup.txt``)."""

    url: str
    root: Path

    def calls(self) -> list[str]:
        log = self.root / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def reset(self) -> None:
        """Undo what a test changed: tool descriptions, extra tools, files, calls seen."""
        for name in ("lookup.txt", "reword.txt", "many.txt", "calls.log"):
            (self.root / name).unlink(missing_ok=True)
        shutil.rmtree(self.root / "notes", ignore_errors=True)


@pytest.fixture(scope="module")
def peer_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    root = tmp_path_factory.mktemp("peer")
    port = free_port()
    cmd = [sys.executable, str(HERE / "peer.py"), "--port", str(port), "--root", str(root)]
    process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, process)
        yield Peer(f"http://127.0.0.1:{port}/mcp", root)
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def peer(peer_process: Peer) -> Iterator[Peer]:
    """The module's peer, as each test found it: reset after every test."""
    peer_process.reset()
    yield peer_process
    peer_process.reset()


def gateway_env(plane: Plane, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LICTOR_URL": plane.url, "LICTOR_CREDENTIAL": plane.runtime_secret}
    env.pop("LICTOR_GRANT", None)
    env.update(extra)
    return env


@dataclass
class HttpGateway:
    """A `lictor mcp --upstream ... --listen ...` process."""

    process: subprocess.Popen[str]
    url: str

    def stop(self, timeout: float = 20.0) -> tuple[int, str]:
        """SIGTERM, then its exit code and stderr."""
        self.process.terminate()
        _, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, err


def first_line(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    """The first line ``process`` prints; killed, and its stderr shown, if none comes."""
    assert process.stdout is not None
    stdout, lines = process.stdout, queue.Queue[str]()
    threading.Thread(target=lambda: lines.put(stdout.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        process.kill()
        process.wait()
        err = process.stderr.read() if process.stderr else ""
        raise AssertionError(f"printed nothing in {timeout} s; stderr: {err}") from None


@pytest.fixture
def http_gateway() -> Iterator[Callable[..., HttpGateway]]:
    """Start HTTP gateways (each waits until it serves); all stopped at teardown."""
    started: list[HttpGateway] = []

    def start(
        plane: Plane,
        upstream: str,
        *options: str,
        url: str | None = None,
        host: str = "127.0.0.1",
    ) -> HttpGateway:
        port = free_port()
        argv = [sys.executable, "-m", "lictor.cli.main", "mcp", "--upstream", upstream]
        argv += ["--listen", f"{host}:{port}", "--principal", PLANNER, *options]
        env = gateway_env(plane, **({"LICTOR_URL": url} if url else {}))
        process = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        line = first_line(process)  # printed once it listens
        assert "serving" in line, (line, process.poll())
        gateway = HttpGateway(process, f"http://127.0.0.1:{port}/mcp")
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        if gateway.process.poll() is None:
            gateway.process.kill()
            gateway.process.communicate()


@contextlib.asynccontextmanager
async def http_client(url: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session over Streamable HTTP."""
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        yield s


def time_gateway(plane: Plane, *options: str, principal: str = PLANNER) -> StdioServerParameters:
    """How an MCP client launches `lictor mcp` wrapping mcp-server-time."""
    argv = ["-m", "lictor.cli.main", "mcp", "--principal", principal, *options]
    argv += ["--", sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
    return StdioServerParameters(
        command=sys.executable, args=argv, env=gateway_env(plane), cwd=str(REPO)
    )


@contextlib.asynccontextmanager
async def stdio_session(params: StdioServerParameters) -> AsyncIterator[ClientSession]:
    """An initialized MCP client session to a gateway launched over stdio."""
    async with stdio_client(params) as (read, write), ClientSession(read, write) as s:
        await s.initialize()
        yield s
