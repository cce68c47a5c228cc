"""Tool calls over stdio served beside the SDK (`lictor.mcp.express`, `lictor.mcp.pipe`):
the gateway wrapping `peer.py --stdio`, driven by the ``mcp`` client and by raw lines."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mcp_types as types
import pytest
from mcp import MCPError, StdioServerParameters

from lictor.mcp.answers import result_hash, wire
from lictor.sdk import verify_receipt

from ..conftest import REPO
from ..sdk.conftest import Plane
from .conftest import PLANNER, gateway_env, stdio_session
from .test_http import (
    GENEROUS_S,
    PUSHED_S,
    active_call,
    calls_of,
    ended,
    revoke_a_slow_call,
    until,
)
from .test_stdio import text

PEER = Path(__file__).parent / "peer.py"
UPSTREAM_VERSION = "2025-11-25"  # what the gateway and peer.py agree on


def gateway_argv(root: Path, *options: str) -> list[str]:
    argv = ["-m", "lictor.cli.main", "mcp", "--principal", PLANNER, *options]
    return [*argv, "--", sys.executable, str(PEER), "--stdio", "--root", str(root)]


def peer_gateway(plane: Plane, root: Path, *options: str) -> StdioServerParameters:
    """How an MCP client launches `lictor mcp` wrapping `peer.py` over stdio."""
    return StdioServerParameters(
        command=sys.executable,
        args=gateway_argv(root, *options),
        env=gateway_env(plane),
        cwd=str(REPO),
    )


def calls(root: Path) -> list[str]:
    log = root / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def started(root: Path) -> str:
    (request,) = [c.split()[1] for c in calls(root) if c.startswith("started")]
    return request


def test_a_call_revoked_in_flight_is_cancelled_at_the_server(plane: Plane, tmp_path: Path) -> None:
    async def run() -> tuple[types.CallToolResult, str, float]:
        async with stdio_session(peer_gateway(plane, tmp_path, "--ttl", "120")) as s:
            return await revoke_a_slow_call(s, plane, lambda: calls(tmp_path))

    result, call, took = asyncio.run(run())
    assert result.is_error and "Lictor stopped tool peer/slow: revoked" in text(result)
    assert f"execution {call} was revoked: operator" in text(result)
    assert took < PUSHED_S
    request = started(tmp_path)
    assert request.startswith("lictor-")  # sent beside the SDK's session, under its own id
    asyncio.run(until(lambda: f"cancelled {request}" in calls(tmp_path)))
    assert plane.execution(call)["execution"]["state"] == "revoked"


def test_a_call_the_client_cancels_is_cancelled_at_the_server_and_completed_so(
    plane: Plane, tmp_path: Path
) -> None:
    async def run() -> str:
        async with stdio_session(peer_gateway(plane, tmp_path)) as s:
            slow = asyncio.create_task(s.call_tool("slow", {"seconds": 120}))
            await until(lambda: any(c.startswith("started") for c in calls(tmp_path)))
            call = active_call(plane, "peer/slow")
            slow.cancel()  # the SDK client sends notifications/cancelled
            await until(ended(plane, call))
            return call

    call = asyncio.run(run())
    view = plane.execution(call)["execution"]
    assert (view["state"], view["outcome"]) == ("completed", "cancelled"), view
    request = started(tmp_path)
    asyncio.run(until(lambda: f"cancelled {request}" in calls(tmp_path)))


def test_the_servers_error_is_passed_on_and_the_call_completed_as_failed(
    plane: Plane, tmp_path: Path
) -> None:
    async def run() -> tuple[MCPError, types.CallToolResult]:
        async with stdio_session(peer_gateway(plane, tmp_path)) as s:
            with pytest.raises(MCPError) as failed:
                await s.call_tool("fail", {})
            return failed.value, await s.call_tool("echo", {"text": "after"})

    error, after = asyncio.run(run())
    assert (error.error.code, error.error.message) == (-32000, "the peer failed on purpose")
    assert text(after) == "after"  # the lane goes on after an error
    (call,) = calls_of(plane, "peer/fail", "completed")
    view = plane.execution(call["id"])
    assert view["execution"]["outcome"] == "failed"
    assert view["transitions"][-1]["result_hash"] == result_hash(wire(error.error))


class Raw:
    """`lictor mcp` driven with JSON-RPC lines, nothing between: what it writes is what
    a client reads."""

    def __init__(self, plane: Plane, root: Path) -> None:
        self.root = root
        self.process = subprocess.Popen(
            [sys.executable, *gateway_argv(root)],
            env=gateway_env(plane),
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self.notified: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    def answer(self, rid: Any) -> dict[str, Any]:
        """The next answer to ``rid`` (notifications and other answers passed over)."""
        deadline = time.monotonic() + GENEROUS_S
        while True:
            line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            message: dict[str, Any] = json.loads(line)
            if "id" not in message:
                self.notified.append(message["method"])
            if message.get("id") == rid and "method" not in message:
                return message

    def initialize(self, version: str) -> dict[str, Any]:
        info = {"name": "raw", "version": "1"}
        params = {"protocolVersion": version, "capabilities": {}, "clientInfo": info}
        self.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params})
        result: dict[str, Any] = self.answer(0)["result"]
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return result

    def call(self, rid: Any, name: str, **params: Any) -> dict[str, Any]:
        request = {"jsonrpc": "2.0", "id": rid, "method": "tools/call"}
        self.send({**request, "params": {"name": name, **params}})
        return self.answer(rid)

    def close(self) -> int:
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(timeout=GENEROUS_S)


@pytest.fixture
def raw(plane: Plane, tmp_path: Path) -> Iterator[Raw]:
    driver = Raw(plane, tmp_path)
    yield driver
    if driver.process.poll() is None:
        driver.process.kill()
        driver.process.wait()


def test_answers_keep_the_callers_id_and_carry_the_result_as_the_server_wrote_it(
    plane: Plane, raw: Raw
) -> None:
    assert raw.initialize(UPSTREAM_VERSION)["protocolVersion"] == UPSTREAM_VERSION
    named = raw.call("call-a", "echo", arguments={"text": "a"})
    numbered = raw.call(7, "echo", arguments={"text": "b"}, _meta={"progressToken": 1})
    denied = raw.call(8, "write_file", arguments={"path": "x", "text": "no"})
    assert not raw.call(9, "slow", arguments={"seconds": 0})["result"]["isError"]
    assert raw.close() == 0
    assert started(raw.root).startswith("lictor-")  # the lane relayed it
    assert (named["id"], numbered["id"]) == ("call-a", 7)
    for answer, said in ((named, "a"), (numbered, "b")):
        result = answer["result"]
        assert result["content"] == [{"type": "text", "text": said}]
        meta = result.pop("_meta")
        assert "resultType" not in result  # as peer.py wrote it, not as a model fills it in
        view = plane.execution(meta["lictor/execution"])
        assert view["execution"]["outcome"] == "succeeded"
        sdk_read = types.CallToolResult.model_validate(result)
        assert view["transitions"][-1]["result_hash"] == result_hash(sdk_read)
        assert verify_receipt(meta["lictor/receipt"], plane.vkey())
    refused = denied["result"]
    assert refused["isError"] is True and "Lictor denied tool peer/write_file" in str(refused)


def test_a_client_speaking_another_version_is_served_through_the_sdk(
    plane: Plane, raw: Raw
) -> None:
    assert raw.initialize("2025-06-18")["protocolVersion"] == "2025-06-18"
    answer = raw.call(1, "echo", arguments={"text": "older"})
    odd = raw.call(2, "echo", arguments={"text": "odd"}, task={"ttl": 1000})
    assert not raw.call(3, "slow", arguments={"seconds": 0})["result"]["isError"]
    assert raw.close() == 0
    assert not started(raw.root).startswith("lictor-")  # the SDK's session sent it
    result = answer["result"]
    assert result["content"] == [{"type": "text", "text": "older"}]
    execution = result["_meta"]["lictor/execution"]
    assert plane.execution(execution)["execution"]["outcome"] == "succeeded"
    assert "result" in odd or "error" in odd  # a member the lane leaves to the SDK


def test_a_client_that_only_calls_is_told_when_the_tool_list_changes(raw: Raw) -> None:
    raw.initialize(UPSTREAM_VERSION)
    assert not raw.call(1, "reword", arguments={"text": "Reworded."})["result"]["isError"]
    raw.call(2, "echo", arguments={"text": "after"})  # the notification came before this
    assert raw.notified == ["notifications/tools/list_changed"]
    assert raw.close() == 0


def peer_pid(root: Path) -> int:
    """The pid of the `peer.py` the gateway started with ``root``."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and str(PEER).encode() in argv[1:2] and str(root).encode() in argv:
            return int(entry.name)
    raise AssertionError("peer.py is not running")


def test_a_server_that_dies_mid_call_fails_the_call_and_the_gateway_ends_cleanly(
    plane: Plane, raw: Raw
) -> None:
    raw.initialize(UPSTREAM_VERSION)
    request = {"jsonrpc": "2.0", "id": 1, "method": "tools/call"}
    raw.send({**request, "params": {"name": "slow", "arguments": {"seconds": 120}}})
    asyncio.run(until(lambda: any(c.startswith("started") for c in calls(raw.root))))
    call = active_call(plane, "peer/slow")
    os.kill(peer_pid(raw.root), signal.SIGKILL)
    error = raw.answer(1)["error"]
    assert error["code"] == types.CONNECTION_CLOSED and "ended" in error["message"], error
    asyncio.run(until(ended(plane, call)))
    view = plane.execution(call)["execution"]
    assert (view["state"], view["outcome"]) == ("completed", "failed"), view
    assert raw.close() == 0


def test_a_client_that_leaves_mid_call_is_answered_connection_closed_and_the_call_cancelled(
    plane: Plane, raw: Raw
) -> None:
    raw.initialize(UPSTREAM_VERSION)
    request = {"jsonrpc": "2.0", "id": "left", "method": "tools/call"}
    raw.send({**request, "params": {"name": "slow", "arguments": {"seconds": 120}}})
    asyncio.run(until(lambda: any(c.startswith("started") for c in calls(raw.root))))
    call = active_call(plane, "peer/slow")
    assert raw.process.stdin is not None
    raw.process.stdin.close()  # the client goes away with the call in flight
    error = raw.answer("left")["error"]
    assert error["code"] == types.CONNECTION_CLOSED, error
    assert raw.process.wait(timeout=GENEROUS_S) == 0
    view = plane.execution(call)["execution"]
    assert (view["state"], view["outcome"]) == ("completed", "cancelled"), view
    request_id = started(raw.root)
    asyncio.run(until(lambda: f"cancelled {request_id}" in calls(raw.root)))
