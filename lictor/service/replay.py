"""Deterministic governance: replay a logged decision, backtest a candidate policy.

A decision is a pure function of its inputs (principal, action, resource,
context, runtime facts, lineage facts, time), the policy version and the
entity version. Every transition made by a decision keeps all of them, so
`replay` can evaluate it again exactly and say whether the answer is the
same; `backtest` evaluates recorded decisions under a policy set that is not
active (or not even pushed) and lists those whose answer would change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lictor.core.policy import (
    CompiledPolicy,
    DecisionRequest,
    PolicySource,
    compile_policies,
    decide,
)
from lictor.errors import NotFoundError
from lictor.service.executions import Executions
from lictor.service.policies import Policies
from lictor.service.records import KIND, StoredExecution, runtime_from_json
from lictor.store.base import Store

PAGE = 1000


@dataclass(frozen=True)
class Replayed:
    """One recorded decision and the answer it gets now."""

    execution_id: str
    log_index: int
    at_ms: int
    recorded: dict[str, Any]
    replayed: dict[str, Any]

    @property
    def identical(self) -> bool:
        return self.recorded == self.replayed

    @property
    def changed(self) -> bool:
        return bool(self.recorded["allowed"] != self.replayed["allowed"])

    def to_json(self) -> dict[str, Any]:
        return {
            "execution": self.execution_id,
            "log_index": self.log_index,
            "at_ms": self.at_ms,
            "identical": self.identical,
            "recorded": self.recorded,
            "replayed": self.replayed,
        }


class Replay:
    """Replays and backtests over the stored executions.

    Results show decisions as readers see them (`Executions.shown`: errors that
    could quote sealed arguments are sealed). A backtest can leave out the
    executions whose arguments are sealed: a reader who may not see them could
    otherwise learn them one candidate policy at a time."""

    def __init__(self, store: Store, policies: Policies, executions: Executions) -> None:
        self.store = store
        self.policies = policies
        self.executions = executions

    def replay(self, execution_id: str) -> list[Replayed]:
        """Every decision of an execution, evaluated again with its recorded inputs."""
        record = self.store.get_record(KIND, execution_id)
        if record is None:
            raise NotFoundError(f"no execution {execution_id!r}")
        stored = StoredExecution.from_record(record)
        return [self._evaluate(stored, step, None) for step in _decided(stored)]

    def backtest(
        self, source: PolicySource, since_ms: int = 0, sealed: bool = True
    ) -> tuple[list[Replayed], int]:
        """Recorded decisions since ``since_ms`` whose answer ``source`` would change, and
        how many executions were left out (those with sealed arguments, unless ``sealed``)."""
        candidate = compile_policies(source)
        changed, withheld = [], 0
        for stored in self._executions():
            if not sealed and self.executions.sealed(stored):
                withheld += 1
                continue
            for step in _decided(stored):
                if step["at_ms"] >= since_ms:
                    result = self._evaluate(stored, step, candidate)
                    if result.changed:
                        changed.append(result)
        return changed, withheld

    def _executions(self) -> Iterator[StoredExecution]:
        after = ""
        while True:
            page = self.store.find_records(KIND, {}, after, PAGE)
            yield from (StoredExecution.from_record(r) for r in page)
            if len(page) < PAGE:
                return
            after = page[-1].key

    def _evaluate(
        self, stored: StoredExecution, step: dict[str, Any], candidate: CompiledPolicy | None
    ) -> Replayed:
        recorded = step["decision"]
        version = recorded["policy_version"]
        policy = candidate or self.policies.compiled(version)
        entities = self.policies.compiled_entities(
            policy, policy.version, recorded["entities_version"] or None
        )
        e = stored.execution
        request = DecisionRequest(
            principal=e.principal,
            action=e.action,
            resource=e.resource,
            now_ms=step["at_ms"],
            context=e.context,
            runtime=runtime_from_json(step["runtime"]),
            lineage=stored.lineage,
        )
        now = decide(policy, request, entities).to_json()
        hidden = self.executions.sealed(stored)
        shown = self.executions.seal.decision
        return Replayed(
            e.id, step["log_index"], step["at_ms"], shown(recorded, hidden), shown(now, hidden)
        )


def _decided(stored: StoredExecution) -> list[dict[str, Any]]:
    """Transitions that were decided by policy (not those denied before any policy ran)."""
    return [t for t in stored.transitions if t.get("decision") and t["decision"]["policy_version"]]
