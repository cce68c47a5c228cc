"""Operations over many executions at once, each one batch: policy activation with
re-verification, re-verification of a runtime's work, revocation by principal or
runtime, and the expiry of leases that passed.

Each is planned in the committer like any command, so everything it changes
(the activation, every revocation and its cascade) commits in one
transaction with one log entry per transition, and executions started
concurrently are either seen by it or planned after it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

from lictor.core import lease as leases
from lictor.core.policy import CompiledEntities, CompiledPolicy, decide
from lictor.core.types import EntityRef, ExecutionState
from lictor.errors import ConflictError
from lictor.log.entry import canonical_entry
from lictor.sequencer import Plan, chain
from lictor.service.executions import (
    PRINCIPAL_REVOCATION,
    Executions,
    reload,
    request_of,
)
from lictor.service.policies import SETTING
from lictor.service.records import KIND, StoredExecution, expiry_tag
from lictor.service.runtimes import KIND as RUNTIME
from lictor.service.runtimes import Runtime, Runtimes
from lictor.store.base import RecordWrite, StoredEntry
from lictor.store.view import StateView

ACTIVE = {"state": str(ExecutionState.ACTIVE)}
SCAN_PAGE = 1000  # active executions the reaper reads per tick until it has read them all
SCANNED = "expiry_scan_done"  # the setting saying the reaper read every active execution
PRINCIPAL = PRINCIPAL_REVOCATION


class Sweeps:
    """Bulk governance operations over an `Executions` service."""

    def __init__(self, executions: Executions) -> None:
        self.executions = executions
        self.log = executions.log
        self.policies = executions.policies
        self.runtimes: Runtimes = executions.runtimes
        self._scanned_all: bool | None = None  # read from the store on first use
        self._scanned_to = ""  # the legacy scan's last key (see `expire_due`)

    def _submit(self, plan: Any) -> Any:
        return self.log.sequencer.submit_commands([plan])[0].result()

    def _revoke_denied(
        self,
        view: StateView,
        filters: Mapping[str, str],
        policy: CompiledPolicy,
        entities: CompiledEntities,
        reason: str,
        now: int,
        first_index: int,
    ) -> tuple[list[StoredEntry], list[RecordWrite]]:
        """Re-decide every active execution matching ``filters``; revoke (cascading) the denied."""

        def allowed(stored: StoredExecution) -> bool:
            e = stored.execution
            facts = _fresh_runtime(view, e.runtime_id) or stored.runtime
            return decide(policy, request_of(e, facts, stored.lineage, now), entities).allowed

        return self._revoke_active(view, filters, reason, now, first_index, spare=allowed)

    def activate_policy(self, version: str) -> tuple[int, tuple[str, ...]]:
        """Make ``version`` active and re-verify every active execution in the same batch.

        Returns the log index of the activation and the ids it revoked.
        """
        now = self.log.now_ms()
        policy = self.policies.compiled(version)
        entities = self.policies.compiled_entities(policy, version)
        public = {"version": version}
        activation = self.log.prepare_event("policy_activated", public, public)

        def plan(view: StateView, first_index: int) -> Plan:
            write = self.policies.activation_write(view, version)
            view.apply([write])
            reason = f"policy_changed:{version}"
            entries, writes = self._revoke_denied(
                view, {}, policy, entities, reason, now, first_index + 1
            )
            revoked = tuple(w.key for w in writes)
            return Plan([activation, *entries], [write, *writes], lambda h: (first_index, revoked))

        try:
            result: tuple[int, tuple[str, ...]] = self._submit(plan)
        finally:
            self.policies.invalidate()
        return result

    def heartbeat(
        self, runtime_id: str, attestation: dict[str, Any] | None
    ) -> tuple[Runtime, tuple[str, ...]]:
        """Record a heartbeat; a new attestation re-decides the runtime's active executions
        in the same commit, revoking those now denied. Returns the runtime and the revoked."""
        beat = self.runtimes.heartbeat_command(runtime_id, attestation)
        version = self.policies.active_version()
        now = self.log.now_ms()
        compiled = None
        if version is not None:
            policy = self.policies.compiled(version)
            compiled = (policy, self.policies.compiled_entities(policy, version))

        def plan(view: StateView, first_index: int) -> Plan:
            step = beat(view, first_index)
            view.apply(step.writes)
            entries: list[StoredEntry] = []
            writes: list[RecordWrite] = []
            if step.entries and compiled is not None:  # logged: the attestation changed
                entries, writes = self._revoke_denied(
                    view,
                    {"runtime": runtime_id},
                    *compiled,
                    "attestation_rejected",
                    now,
                    first_index + len(step.entries),
                )
            revoked = tuple(w.key for w in writes)
            return Plan(
                [*step.entries, *entries],
                [*step.writes, *writes],
                lambda head: (step.finish(head)[0], revoked),
            )

        result: tuple[Runtime, tuple[str, ...]] = self._submit(plan)
        return result

    def revoke_runtime(self, runtime_id: str, reason: str) -> tuple[Runtime, tuple[str, ...]]:
        """Revoke a runtime and, in the same commit, every active execution it started."""
        reason = leases.check_reason(reason)
        mark = self.runtimes.revoke_command(runtime_id, reason)
        now = self.log.now_ms()
        cause = f"runtime_revoked:{reason}"

        def sweep(view: StateView, first_index: int) -> Plan:
            entries, writes = self._revoke_active(
                view, {"runtime": runtime_id}, cause, now, first_index
            )
            return Plan(entries, writes, lambda head: tuple(w.key for w in writes))

        result: tuple[Runtime, tuple[str, ...]] = self._submit(chain(mark, sweep))
        return result

    def revoke_principal(self, principal: EntityRef, reason: str) -> tuple[str, ...]:
        """Revoke a principal: its active executions now, and its requests from now on."""
        now = self.log.now_ms()
        reason = leases.check_reason(reason)
        key = str(principal)
        public = {"principal": principal.to_json()}
        entry = self.log.prepare_event("principal_revoked", {**public, "reason": reason}, {})
        doc = canonical_entry({"principal": principal.to_json(), "reason": reason, "at_ms": now})

        def plan(view: StateView, first_index: int) -> Plan:
            existing = view.get(PRINCIPAL, key)
            mark = RecordWrite(PRINCIPAL, key, doc, existing.version if existing else 0)
            entries, writes = self._revoke_active(
                view, {"principal": key}, reason, now, first_index + 1
            )
            revoked = tuple(w.key for w in writes)
            return Plan([entry, *entries], [mark, *writes], lambda head: revoked)

        result: tuple[str, ...] = self._submit(plan)
        return result

    def _revoke_active(
        self,
        view: StateView,
        filters: Mapping[str, str],
        reason: str,
        now: int,
        first: int,
        spare: Callable[[StoredExecution], bool] | None = None,
    ) -> tuple[list[StoredEntry], list[RecordWrite]]:
        """Revoke (cascading) every active execution matching ``filters`` not ``spare``d."""
        entries: list[StoredEntry] = []
        writes: list[RecordWrite] = []
        for record in view.find(KIND, {**ACTIVE, **filters}):
            stored = reload(view, record.key)  # an earlier cascade may have ended it
            e = stored.execution
            if leases.effective_state(e, now) is not ExecutionState.ACTIVE:
                continue
            if spare is not None and spare(stored):
                continue
            sub = self.executions.revoke_plan(view, e, reason, now, first + len(entries))
            view.apply(sub.writes)
            entries += sub.entries
            writes += sub.writes
        return entries, writes

    def expire_due(self, limit: int = 10_000) -> list[str]:
        """Write the ``expired`` transition of active executions whose lease passed.

        Found through the ``expires`` tag, at most ``limit`` per call. Until it
        has read every active execution once, each call also reads the next
        `SCAN_PAGE` of them (by key), for records written before that tag
        existed: a store holding many active executions is read a page per
        tick, never all at once, and once per store (a setting records it).
        """
        now = self.log.now_ms()
        found = self.log.store.find_records_below(KIND, "expires", expiry_tag(now + 1), limit)
        candidates = {r.key: StoredExecution.from_record(r) for r in found}
        if self._scanned_all is None:
            self._scanned_all = self.log.store.get_record(SETTING, SCANNED) is not None
        if not self._scanned_all:
            page = self.executions.find(ACTIVE, self._scanned_to, SCAN_PAGE)
            candidates.update((s.execution.id, s) for s in page)
            self._scanned_to = page[-1].execution.id if page else self._scanned_to
            if len(page) < SCAN_PAGE:  # read them all: no restart need read them again
                with contextlib.suppress(ConflictError):
                    self.log.store.put_record(RecordWrite(SETTING, SCANNED, b"{}", 0))
                self._scanned_all = True
        due = [
            s.execution.id
            for s in candidates.values()
            if leases.effective_state(s.execution, now) is ExecutionState.EXPIRED
        ]
        commands = [self._expire_command(execution_id, now) for execution_id in due]
        futures = self.log.sequencer.submit_commands(commands) if commands else []
        return [f.result() for f in futures if f.exception() is None]

    def _expire_command(self, execution_id: str, now: int) -> Any:
        def plan(view: StateView, first_index: int) -> Plan:
            current = reload(view, execution_id)
            e = leases.expire(current.execution, now)
            new = current.with_transition(e, now, first_index, None)
            return Plan([self.executions.entry(new)], [new.write()], lambda head: execution_id)

        return plan


def _fresh_runtime(view: StateView, runtime_id: str | None) -> Any:
    if runtime_id is None:
        return None
    record = view.get(RUNTIME, runtime_id)
    return None if record is None else Runtime.from_doc(record.doc).facts
