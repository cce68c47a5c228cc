"""The events stream reader and what an entry means for a handle; no server."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lictor.errors import ExecutionRevokedError
from lictor.sdk.enforce import ExecutionHandle
from lictor.sdk.events import ended, events


def _handle(execution_id: str = "ex_1") -> ExecutionHandle:
    lease = {"issued_at_ms": 1_000, "expires_at_ms": 16_000}
    return ExecutionHandle(
        {
            "execution": {"id": execution_id, "lease": lease},
            "lease": {"ttl": 15, "expires_at_ms": 16_000, "renew_by_ms": 11_000},
        }
    )


def test_events_are_split_on_blank_lines_with_ids_and_multiline_data() -> None:
    stream = [
        "retry: 1000",
        "",
        "id: 7",
        "event: execution",
        'data: {"a":',
        "data: 1}",
        "",
        ": keepalive",
        "",
        "id: 9",
        "data:x",
        "",
        "data: unterminated",
    ]
    assert list(events(stream)) == [("7", '{"a":\n1}'), ("9", "x")]


def _entry(**fields: Any) -> str:
    return json.dumps({"kind": "execution", **fields})


def test_only_an_ended_state_of_this_execution_loses_the_handle() -> None:
    handle = _handle()
    for data in (
        _entry(execution="ex_2", state="revoked"),
        _entry(execution="ex_1", state="active"),
        "not json",
        "[1, 2]",
        _entry(state="revoked"),
    ):
        assert not ended(handle, data)
        assert handle.lost is None
    assert ended(handle, _entry(execution="ex_1", state="revoked"))
    assert isinstance(handle.lost, ExecutionRevokedError)


@given(st.lists(st.text(max_size=40), max_size=30))
def test_any_stream_is_read_without_raising(lines: list[str]) -> None:
    handle = _handle()
    for _, data in events(lines):
        ended(handle, data)
