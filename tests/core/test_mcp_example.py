"""The MCP example policy set (`examples/mcp`) decides what its comments say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lictor.core.policy import (
    DecisionRequest,
    EntityRef,
    compile_entities,
    compile_policies,
    could_allow,
    decide,
)
from lictor.policydir import load_policy_dir

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mcp"
CALL = EntityRef("Action", "call_tool")


@pytest.fixture(scope="module")
def compiled() -> Any:
    policy = compile_policies(load_policy_dir(EXAMPLE))
    entities = compile_entities(json.loads((EXAMPLE / "entities.json").read_text()), policy)
    return policy, entities


@pytest.mark.parametrize(
    ("agent", "tool", "arguments", "allowed"),
    [
        ("coder-1", "fs/write_file", {"path": "/srv/work/out/a.txt", "content": "x"}, True),
        ("coder-1", "fs/write_file", {"path": "/srv/work/src/a.py", "content": "x"}, False),
        ("coder-1", "fs/write_file", {"path": "/srv/work/out/../../etc/passwd"}, False),
        ("coder-1", "fs/read_text_file", {"path": "/srv/work/out/.env"}, False),
        ("reviewer-1", "fs/write_file", {"path": "/srv/work/out/a.txt"}, False),
        ("reviewer-1", "fs/read_text_file", {"path": "/srv/work/src/a.py", "head": 10}, True),
        ("reviewer-1", "fs/move_file", {"source": "/srv/work/a", "destination": "/srv/b"}, False),
        ("reviewer-1", "time/get_current_time", {"timezone": "Europe/Paris"}, True),
        ("reviewer-1", "time/get_current_time", {"timezone": "America/New_York"}, False),
    ],
)
def test_example_decisions(
    compiled: Any, agent: str, tool: str, arguments: dict[str, Any], allowed: bool
) -> None:
    policy, entities = compiled
    request = DecisionRequest(
        principal=EntityRef("Agent", agent),
        action=CALL,
        resource=EntityRef("Tool", tool),
        now_ms=1_800_000_000_000,
        context={"arguments": arguments},
    )
    decision = decide(policy, request, entities)
    assert decision.allowed is allowed, decision


def test_example_tool_list_hint(compiled: Any) -> None:
    policy, entities = compiled
    tools = ["fs/write_file", "fs/read_text_file", "fs/move_file", "time/convert_time"]
    shown = [
        could_allow(policy, entities, EntityRef("Agent", "reviewer-1"), CALL, EntityRef("Tool", t))
        for t in tools
    ]
    assert shown == [False, True, False, False]
