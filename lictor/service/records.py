"""How executions are stored: the core `Execution` plus what it was decided on.

An execution record holds the execution, the facts its last decision used
(runtime, lineage) and every transition with the log index of its entry. Tags
make it findable by what is asked of the store: state, principal, action and
region (listing, and revoking a principal's work), runtime (a runtime's work),
parent (the lineage walk and revocation's cascade; a root has none); an active
one also carries ``expires`` (its lease expiry as sortable text), so the
reaper finds what is due without reading every active execution. Each tag is
an index entry written with the record, so none is kept that nothing asks for.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from lictor.core.policy import LineageFacts, RuntimeFacts
from lictor.core.types import EntityRef, Execution, ExecutionState, Lease, Outcome, changed
from lictor.errors import EntryError
from lictor.log.entry import MAX_DOCUMENT_SIZE, canonical_document, may_hold_long_integer
from lictor.store.base import Record, RecordWrite

KIND = "execution"


@dataclass(frozen=True)
class StoredExecution:
    """An execution, its decision facts and its transitions (with log indexes)."""

    execution: Execution
    runtime: RuntimeFacts
    lineage: LineageFacts
    transitions: tuple[dict[str, Any], ...] = ()
    decision: dict[str, Any] | None = None
    record_version: int = 0

    def with_transition(
        self,
        execution: Execution,
        at_ms: int,
        log_index: int,
        decision: dict[str, Any] | None,
        runtime: RuntimeFacts | None = None,
    ) -> StoredExecution:
        """Add a transition; one made by a decision keeps the decision and the runtime
        facts it used, so it can be replayed exactly."""
        facts = runtime or self.runtime
        step: dict[str, Any] = {
            "state": str(execution.state),
            "reason": execution.reason,
            "at_ms": at_ms,
            "log_index": log_index,
        }
        if decision is not None:
            step["decision"] = decision
            step["runtime"] = runtime_json(facts)
        return changed(
            self,
            execution=execution,
            runtime=facts,
            transitions=(*self.transitions, step),
            decision=decision if decision is not None else self.decision,
        )

    def write(self) -> RecordWrite:
        e = self.execution
        tags = {
            "state": str(e.state),
            "principal": str(e.principal),
            "action": str(e.action),
            "region": self.runtime.region,
        }
        if e.runtime_id:
            tags["runtime"] = e.runtime_id
        if e.parent_id:
            tags["parent"] = e.parent_id
        if e.state is ExecutionState.ACTIVE and e.lease is not None:
            tags["expires"] = expiry_tag(e.lease.expires_at_ms)
        return RecordWrite(
            KIND, e.id, _document(self.to_json()), self.record_version, tuple(tags.items())
        )

    def to_json(self) -> dict[str, Any]:
        """The stored form. The decision and the runtime facts it used are, as a rule,
        those of the last transition made by a decision: then they are stored there
        only, and read back from it (`from_record`); a record written before reads
        as it was written."""
        value: dict[str, Any] = {
            "execution": execution_json(self.execution),
            "lineage": _lineage_json(self.lineage),
            "transitions": list(self.transitions),
        }
        step, runtime = _last_decided(self.transitions), runtime_json(self.runtime)
        if step is None or step["decision"] != self.decision:
            value["decision"] = self.decision
        if step is None or step.get("runtime") != runtime:
            value["runtime"] = runtime
        return value

    @classmethod
    def from_record(cls, record: Record) -> StoredExecution:
        value = _loaded(record.doc)
        transitions = tuple(value["transitions"])
        step = _last_decided(transitions) or {}
        decision = value["decision"] if "decision" in value else step["decision"]
        runtime = value["runtime"] if "runtime" in value else step["runtime"]
        return cls(
            execution_from_json(value["execution"]),
            runtime_from_json(runtime),
            _lineage_from_json(value["lineage"]),
            transitions,
            decision,
            record.version,
        )


def _last_decided(transitions: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The last transition made by a decision (it holds the decision), if any."""
    for n in range(len(transitions) - 1, -1, -1):
        if "decision" in transitions[n]:
            return transitions[n]
    return None


def _loaded(doc: bytes) -> Any:
    """A record's document read back: with orjson, unless it may hold an integer of 19
    digits or more (which orjson would read as a float) or orjson refuses it (an
    escaped lone surrogate): `json` reads those exactly as they were written."""
    if not may_hold_long_integer(doc):
        try:
            return orjson.loads(doc)
        except orjson.JSONDecodeError:
            pass
    return json.loads(doc)


def _document(value: dict[str, Any]) -> bytes:
    """A record's bytes: JSON with sorted keys, so equal records are equal bytes.

    A record is stored beside the log, never hashed into it, so it need not be
    RFC 8785's form (an entry is; `canonical_document`); orjson writes it many
    times faster. What orjson cannot write (an integer beyond 64 bits) goes
    through `canonical_document`, which refuses what it must."""
    try:
        data = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return canonical_document(value)
    if len(data) > MAX_DOCUMENT_SIZE:
        limit = MAX_DOCUMENT_SIZE
        raise EntryError(f"an execution record is {len(data)} bytes; the limit is {limit}")
    return data


def expiry_tag(at_ms: int) -> str:
    """The ``expires`` tag of an active execution: its lease expiry, sortable as text."""
    return f"{at_ms:016d}"


def runtime_json(facts: RuntimeFacts) -> dict[str, Any]:
    return {  # `dataclasses.asdict` order, without its deep copy
        "id": facts.id,
        "region": facts.region,
        "cluster": facts.cluster,
        "attestation_state": facts.attestation_state,
        "digests": list(facts.digests),
    }


def runtime_from_json(value: dict[str, Any]) -> RuntimeFacts:
    return RuntimeFacts(**{**value, "digests": tuple(value["digests"])})


def execution_json(e: Execution) -> dict[str, Any]:
    """The wire and storage form of an execution."""
    return {
        "id": e.id,
        "principal": e.principal.to_json(),
        "action": e.action.to_json(),
        "resource": e.resource.to_json(),
        "context": dict(e.context),
        "runtime_id": e.runtime_id,
        "parent_id": e.parent_id,
        "root_id": e.root_id,
        "depth": e.depth,
        "delegation": [p.to_json() for p in e.delegation],
        "state": str(e.state),
        "policy_version": e.policy_version,
        "lease": _lease_json(e.lease) if e.lease else None,
        "created_at_ms": e.created_at_ms,
        "ended_at_ms": e.ended_at_ms,
        "outcome": str(e.outcome) if e.outcome else None,
        "exit_code": e.exit_code,
        "reason": e.reason,
        "version": e.version,
    }


def execution_from_json(v: dict[str, Any]) -> Execution:
    return Execution(
        id=v["id"],
        principal=EntityRef.from_json(v["principal"]),
        action=EntityRef.from_json(v["action"]),
        resource=EntityRef.from_json(v["resource"]),
        context=v["context"],
        runtime_id=v["runtime_id"],
        parent_id=v["parent_id"],
        root_id=v["root_id"],
        depth=v["depth"],
        delegation=tuple(EntityRef.from_json(p) for p in v["delegation"]),
        state=ExecutionState(v["state"]),
        policy_version=v["policy_version"],
        lease=Lease(**v["lease"]) if v["lease"] else None,
        created_at_ms=v["created_at_ms"],
        ended_at_ms=v["ended_at_ms"],
        outcome=Outcome(v["outcome"]) if v["outcome"] else None,
        exit_code=v["exit_code"],
        reason=v["reason"],
        version=v["version"],
    )


def _lease_json(lease: Lease) -> dict[str, Any]:
    return {
        "ttl_ms": lease.ttl_ms,
        "issued_at_ms": lease.issued_at_ms,
        "expires_at_ms": lease.expires_at_ms,
        "renew_by_ms": lease.renew_by_ms,
    }


def _lineage_json(facts: LineageFacts) -> dict[str, Any]:
    return {
        "depth": facts.depth,
        "root_principal": facts.root_principal.to_json(),
        "parent_id": facts.parent_id,
        "parent_action": facts.parent_action,
    }


def _lineage_from_json(v: dict[str, Any]) -> LineageFacts:
    return LineageFacts(
        depth=v["depth"],
        root_principal=EntityRef.from_json(v["root_principal"]),
        parent_id=v["parent_id"],
        parent_action=v["parent_action"],
    )
