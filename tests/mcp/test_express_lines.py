"""What the express lane and the upstream's pipe make of any line: they take only what
is theirs, never raise, and leave the rest to the SDK (fuzzed with Hypothesis)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.mcp.express import Express, Relay
from lictor.mcp.pipe import Pipe

from ..strategies import json_values, mutations

VERSION = "2025-11-25"
CALL = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "echo"}}
ANSWERED: dict[str, Any] = {"content": [], "isError": False}


def line(value: Any) -> bytes:
    return json.dumps(value).encode() + b"\n"


class Writer:
    """What the lane writes answers to."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.lines.append(data)

    async def drain(self) -> None:
        return None


async def relayed(name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
    return {**ANSWERED, "content": [{"type": "text", "text": name}]}


async def opened(relay: Relay = relayed) -> tuple[Express, Writer]:
    """A lane whose client has initialized in the upstream's version."""
    lane, writer = Express(relay, VERSION), Writer()
    lane.attach(writer)  # type: ignore[arg-type]
    initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}
    assert not lane.take(line(initialize))
    lane.sent(json.dumps({"jsonrpc": "2.0", "id": 0, "result": {"protocolVersion": VERSION}}))
    assert lane.open
    return lane, writer


def test_the_lane_opens_only_on_the_answer_to_the_clients_initialize_in_its_version() -> None:
    async def run() -> list[bool]:
        seen = []
        for first, answer_id, version in [
            ("initialize", 0, VERSION),
            ("initialize", 1, VERSION),  # an answer to another request
            ("initialize", 0, "2025-06-18"),  # another version: the SDK serves calls
            ("ping", 0, VERSION),  # the first request was not initialize
        ]:
            lane = Express(relayed, VERSION)
            lane.take(line({"jsonrpc": "2.0", "id": 0, "method": first}))
            answer = {"jsonrpc": "2.0", "id": answer_id, "result": {"protocolVersion": version}}
            lane.sent(json.dumps(answer))
            seen.append(lane.open)
        return seen

    assert asyncio.run(run()) == [True, False, False, False]


def test_a_call_is_answered_under_its_id_and_a_cancelled_one_not_at_all() -> None:
    async def run() -> list[bytes]:
        lane, writer = await opened()
        assert lane.take(line({**CALL, "id": "a"}))
        assert lane.take(line({**CALL, "id": 9}))
        cancel = {"requestId": "9"}  # "9" and 9 are one id, as the SDK has it
        assert lane.take(
            line({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel})
        )
        await asyncio.sleep(0.01)
        return writer.lines

    (answer,) = [json.loads(x) for x in asyncio.run(run())]
    assert answer == {
        "jsonrpc": "2.0",
        "id": "a",
        "result": {**ANSWERED, "content": [{"type": "text", "text": "echo"}]},
    }


def test_arguments_reach_the_relay_exactly_as_written() -> None:
    seen: list[Any] = []

    async def relay(name: str, arguments: dict[str, Any] | None) -> dict[str, Any]:
        seen.append(arguments)
        return ANSWERED

    async def run() -> None:
        lane, _ = await opened(relay)
        wide = {"n": -(2**63) - 1, "m": 2**64 + 1, "x": 0.1, "t": "\u00e9"}
        assert lane.take(line({**CALL, "params": {"name": "echo", "arguments": wide}}))
        await asyncio.sleep(0.01)

    asyncio.run(run())
    assert seen == [{"n": -(2**63) - 1, "m": 2**64 + 1, "x": 0.1, "t": "\u00e9"}]
    assert isinstance(seen[0]["m"], int)


@given(st.one_of(st.binary(max_size=200), mutations(st.just(line(CALL)))))
@settings(max_examples=300, deadline=None)
def test_the_lane_reads_any_line_without_raising(data: bytes) -> None:
    async def run() -> bool:
        lane, _ = await opened()
        return lane.take(data)

    try:
        message = json.loads(data)
    except ValueError:
        message = None
    taken = asyncio.run(run())
    if taken:  # only a well-formed tools/call is the lane's
        assert isinstance(message, dict) and message["method"] == "tools/call"
        assert isinstance(message["params"]["name"], str)


@given(json_values())
@settings(max_examples=300, deadline=None)
def test_the_lane_takes_only_calls_whose_params_the_sdk_path_would_serve_the_same(
    params: Any,
) -> None:
    async def run() -> bool:
        lane, _ = await opened()
        return lane.take(line({**CALL, "params": params}))

    taken = asyncio.run(run())
    well_formed = (
        isinstance(params, dict)
        and set(params) <= {"name", "arguments", "_meta"}
        and isinstance(params.get("name"), str)
        and isinstance(params.get("arguments", {}), dict | None)
        and isinstance(params.get("_meta", {}), dict | None)
        and "io.modelcontextprotocol/protocolVersion" not in (params.get("_meta") or {})
    )
    assert taken == well_formed


@given(
    st.one_of(
        json_values(),
        st.builds(
            lambda v: {"jsonrpc": "2.0", "id": "lictor-1", **v},
            st.dictionaries(st.sampled_from(["result", "error", "id"]), json_values(), max_size=3),
        ),
    )
)
@settings(max_examples=300, deadline=None)
def test_the_pipe_routes_any_upstream_line_without_raising(value: Any) -> None:
    async def run() -> tuple[bool, asyncio.Future[dict[str, Any]]]:
        pipe = Pipe(None, None)  # type: ignore[arg-type]
        waiting: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        pipe._waiting["lictor-1"] = waiting
        return pipe._answered(line(value)), waiting

    routed, waiting = asyncio.run(run())
    if routed:
        assert isinstance(value, dict) and value.get("id") == "lictor-1"
        assert waiting.done()
        if waiting.exception() is None:
            assert waiting.result() == value["result"] and "error" not in value
    else:
        assert not waiting.done()
