"""How executions are stored: the JSON forms keep `dataclasses.asdict`'s keys and order."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.core.policy import LineageFacts, RuntimeFacts
from lictor.core.types import EntityRef, Execution, ExecutionState, Lease, changed
from lictor.service.records import (
    StoredExecution,
    _document,
    _lease_json,
    _loaded,
    runtime_json,
)
from lictor.store.base import Record


def test_runtime_and_lease_json_are_asdict_in_field_order() -> None:
    facts = RuntimeFacts("rt-1", "eu", "c1", "verified", ("sha256:a", "sha256:b"))
    expected = asdict(facts) | {"digests": ["sha256:a", "sha256:b"]}
    assert list(runtime_json(facts).items()) == list(expected.items())
    lease = Lease(ttl_ms=30_000, issued_at_ms=1, expires_at_ms=30_001, renew_by_ms=10_001)
    assert list(_lease_json(lease).items()) == list(asdict(lease).items())


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)  # what a record can hold
    | st.integers(min_value=2**53, max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(), JSON_VALUES, max_size=6))
def test_a_record_reads_back_as_written(value: dict[str, Any]) -> None:
    doc = _document({"context": value})
    assert _loaded(doc) == json.loads(doc) == {"context": value}


def test_a_record_orjson_refuses_reads_back_through_json() -> None:
    doc = b'{"context": {"s": "\\ud800"}, "n": 123456789012345678901}'
    assert _loaded(doc) == json.loads(doc)
    assert _loaded(b'{"s": "\\ud800"}') == {"s": "\ud800"}


def _decided() -> StoredExecution:
    e = Execution(
        id="ex_01",
        principal=EntityRef("Agent", "a"),
        action=EntityRef("Action", "go"),
        resource=EntityRef("Tool", "t"),
        context={},
        runtime_id="rt-1",
        parent_id=None,
        root_id="ex_01",
        depth=0,
        delegation=(EntityRef("Agent", "a"),),
        lease=Lease(ttl_ms=30_000, issued_at_ms=1, expires_at_ms=30_001, renew_by_ms=10_001),
        state=ExecutionState.ACTIVE,
        policy_version="p1",
        created_at_ms=1,
    )
    facts = RuntimeFacts("rt-1", "eu", "c1", "verified", ())
    first = StoredExecution(e, facts, LineageFacts.root(e.principal))
    decision = {"allowed": True, "reasons": ["r"], "policy_version": "p1"}
    return first.with_transition(e, 1, 7, decision, facts)


def _record(stored: StoredExecution) -> Record:
    write = stored.write()
    return Record(write.kind, write.key, 1, write.doc, write.tags)


def test_a_decision_and_its_runtime_facts_are_stored_once_and_read_back() -> None:
    stored = _decided()
    doc = json.loads(stored.write().doc)
    assert "decision" not in doc and "runtime" not in doc  # in the transition only
    assert doc["transitions"][-1]["decision"] == stored.decision
    assert StoredExecution.from_record(_record(stored)) == changed(stored, record_version=1)
    # ended without a decision, on facts reported since: kept beside the transitions
    moved = RuntimeFacts("rt-1", "eu", "c1", "revoked", ())
    ended = stored.with_transition(
        changed(stored.execution, state=ExecutionState.REVOKED), 2, 8, None, moved
    )
    doc = json.loads(ended.write().doc)
    assert "decision" not in doc and doc["runtime"] == runtime_json(moved)
    assert StoredExecution.from_record(_record(ended)) == changed(ended, record_version=1)


def test_a_record_stored_with_its_decision_beside_the_transitions_reads_as_written() -> None:
    stored = _decided()
    old = {**json.loads(stored.write().doc), "decision": {"allowed": False}}
    old["runtime"] = runtime_json(RuntimeFacts("rt-1", "us", "c9", "unverified", ()))
    read = StoredExecution.from_record(Record("execution", "ex_01", 3, _document(old), ()))
    assert read.decision == {"allowed": False} and read.runtime.region == "us"
