"""Executions: authorize, renew (re-verify), complete, revoke with cascade, expire.

Decisions are made outside the committer (Cedar is pure and fast to call);
every state change is a command planned *inside* the committer against the
batch's view, so it re-checks what could have moved since the decision: the
active policy version (a stale decision is decided again), the parent's
state and lease. Every transition is one log entry committed in the same
transaction as the record (DESIGN.md §2); a renewal that verified nothing new
only moves the lease. Any failure on the way to a decision is a deny with a
reason code (DESIGN.md §3).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple, TypeVar

from lictor.core import lease as leases
from lictor.core.grant import GrantSigner, VerifiedGrants
from lictor.core.lineage import MAX_DEPTH, check_child, child_fields, plan_revoke, root_lineage
from lictor.core.policy import (
    Decision,
    DecisionRequest,
    LineageFacts,
    ReasonCode,
    RuntimeFacts,
    decide,
)
from lictor.core.policy_schema import ARGUMENTS
from lictor.core.types import (
    EXECUTION_ID_RANDOM_BYTES,
    EntityRef,
    Execution,
    ExecutionState,
    changed,
    new_execution_id,
)
from lictor.errors import (
    ConflictError,
    DepthExceededError,
    GrantError,
    InvalidTransitionError,
    LictorError,
    NotFoundError,
    PermissionDeniedError,
)
from lictor.log.entry import is_plain
from lictor.sequencer import Appended, Command, Plan
from lictor.service.arguments import ArgumentSeal
from lictor.service.entropy import random_bytes
from lictor.service.log import AuditLog, Receipt
from lictor.service.policies import Policies
from lictor.service.records import KIND, StoredExecution
from lictor.service.runtimes import KIND as RUNTIME_KIND
from lictor.service.runtimes import Runtime, Runtimes
from lictor.service.tools import pin_denial
from lictor.store.base import Record, RecordWrite, StoredEntry
from lictor.store.view import StateView

STALE_RETRIES = 3
Waited = TypeVar("Waited")  # what a submit hands back for a command: a future to wait on
# executions whose last record is kept parsed (`Executions._read`): enough for the
# active executions of a busy plane to renew without parsing, at about 6 KB each
PARSED_RECORDS = 16_384
REMEMBERED_ALLOWS = 1 << 17  # allows kept for renewals (`Executions._decide`), at most
PRINCIPAL_REVOCATION = "principal_revocation"
# an allow kept for renewals: execution, policy and entity versions, the runtime's facts
Allowed = tuple[str, str, str, tuple[str, str, str, str, tuple[str, ...]]]


class StaleDecisionError(ConflictError):
    """The active policy changed between a decision and its commit; decide again."""

    code = "stale_decision"


@dataclass(frozen=True)
class Outcome:
    """What a caller gets back: the execution, its decision, grant and receipt."""

    stored: StoredExecution
    receipt: Receipt | None
    grant: str | None = None
    revoked: tuple[str, ...] = ()

    @property
    def execution(self) -> Execution:
        return self.stored.execution


@dataclass(frozen=True)
class Ask:
    """A request for a new execution, as a runtime sends it."""

    runtime_id: str
    principal: EntityRef
    action: EntityRef
    resource: EntityRef
    context: Mapping[str, Any]
    parent_grant: str | None = None
    ttl_ms: int = leases.DEFAULT_TTL_MS
    definition: str | None = None  # the resource's definition hash, checked against its pin


@dataclass(frozen=True)
class Completion:
    """An execution's end as its enforcement point reports it."""

    execution_id: str
    outcome: str
    exit_code: int | None = None
    summary: str | None = None
    result_hash: str | None = None


class Renewal(NamedTuple):
    """One renewal of a runtime's heartbeat (`Executions.renew_many_async`)."""

    execution_id: str
    ttl_ms: int
    grant: bool = False  # whether to sign a new grant for the new lease


class Prepared(NamedTuple):
    """A decision's command and the time it was decided at; for an allowed request,
    the execution it activates if the committer finds nothing changed since (its
    grant is signed while the command commits: `Executions._early_grant`)."""

    command: Command
    now: int
    activated: Execution | None = None


class Read(NamedTuple):
    """An execution record as read before planning, and what it parses to."""

    record: Record
    stored: StoredExecution


class Executions:
    """The governance use cases over the log, runtimes and policies."""

    def __init__(
        self,
        log: AuditLog,
        runtimes: Runtimes,
        policies: Policies,
        grants: GrantSigner,
        max_depth: int = MAX_DEPTH,
        seal: ArgumentSeal | None = None,
    ) -> None:
        self.log = log
        self.runtimes = runtimes
        self.policies = policies
        self.grants = grants
        self.max_depth = max_depth
        self.seal = seal or ArgumentSeal(os.urandom(32))
        self.parent_grants = VerifiedGrants(grants.verifier)
        # by key, oldest first; reused only for the very same record
        self._parsed: OrderedDict[str, Read] = OrderedDict()
        # `_decide`'s allows, by execution, versions and runtime facts: their reasons only,
        # all in tuples of text, which the garbage collector stops traversing (ADR 20)
        self._allowed: dict[Allowed, tuple[str, ...]] = {}
        self._parsed_lock = threading.Lock()

    # -- deciding ---------------------------------------------------------------

    def _decide(self, request: DecisionRequest, execution_id: str | None = None) -> Decision:
        """Cedar's decision on ``request``. With ``execution_id`` (its request, then its
        renewals): an allow made before for that execution under the same policy
        version, entity set and runtime facts, when no policy of the action's slice
        reads the time, is the answer Cedar would give again (ADR 21)."""
        version = self.policies.active_version()
        if version is None:
            return _deny_without_policy("no policy version is active")
        try:
            policy = self.policies.compiled(version)
            entities = self.policies.compiled_entities(policy, version)
        except LictorError as e:  # fail closed
            return _deny_without_policy(e.message, version)
        if execution_id is None or policy.reads_time(request.action):
            return decide(policy, request, entities)
        r = request.runtime
        facts = (r.id, r.region, r.cluster, r.attestation_state, r.digests)
        key = (execution_id, policy.version, entities.version, facts)
        reasons = self._allowed.get(key)
        if reasons is not None:  # an allow as `decide` makes one
            return Decision(True, reasons, (), policy.version, entities.version, None)
        decision = decide(policy, request, entities)
        # a denial ends the execution: nothing to reuse it for
        if decision.allowed and decision == Decision(
            True, decision.reasons, (), policy.version, entities.version, None
        ):
            if len(self._allowed) >= REMEMBERED_ALLOWS:
                self._allowed.clear()
            self._allowed[key] = decision.reasons
        return decision

    def could_allow(
        self, principal: EntityRef, action: EntityRef, resources: Sequence[EntityRef]
    ) -> tuple[str | None, list[bool]]:
        """`Policies.could_allow`, and nothing for a revoked principal."""
        if self.log.store.get_record(PRINCIPAL_REVOCATION, str(principal)) is not None:
            return self.policies.active_version(), [False] * len(resources)
        return self.policies.could_allow(principal, action, resources)

    # -- requesting -------------------------------------------------------------

    def request(self, ask: Ask) -> Outcome:
        """Decide and record a new execution (allowed or denied; both are logged)."""
        return self._decided(lambda: self._request_command(ask))

    async def request_async(self, ask: Ask) -> Outcome:
        """`request` for an event loop: decides in the caller, awaits the commit."""
        return await self._decided_async(lambda: self._request_command(ask))

    def _decided(self, prepare: Callable[[], Prepared]) -> Outcome:
        """Run a decision's command; decide again (`prepare`) while its decision is stale."""
        for _ in range(STALE_RETRIES):
            prepared = prepare()
            committed, early = self._queued(prepared, self.log.sequencer.submit_commands)
            try:
                result = committed.result()
            except StaleDecisionError:
                self.policies.invalidate()
                self.runtimes.forget()
                continue
            return self._with_grant(result, prepared.now, early)
        raise StaleDecisionError("the active policy kept changing; try again")

    async def _decided_async(self, prepare: Callable[[], Prepared]) -> Outcome:
        """`_decided`, awaiting the commit instead of blocking on it."""
        for _ in range(STALE_RETRIES):
            prepared = prepare()
            committed, early = self._queued(prepared, self.log.sequencer.submit_async)
            try:
                result = await committed
            except StaleDecisionError:
                self.policies.invalidate()
                self.runtimes.forget()
                continue
            return self._with_grant(result, prepared.now, early)
        raise StaleDecisionError("the active policy kept changing; try again")

    def _queued(
        self, prepared: Prepared, submit: Callable[[list[Command]], list[Waited]]
    ) -> tuple[Waited, tuple[Execution, str] | None]:
        """Queue ``prepared``'s command with ``submit``: its future, and the grant signed
        meanwhile if the committer had nothing else to do (`_early_grant`)."""
        alone = self.log.sequencer.idle()
        committed = submit([prepared.command])[0]
        return committed, self._early_grant(prepared) if alone else None

    def _request_command(self, ask: Ask) -> Prepared:
        """Decide ``ask`` now: the command that records it, the decision time and, if
        allowed, the execution it activates."""
        now = self.log.now_ms()
        runtime = self.runtimes.for_decision(ask.runtime_id)
        read, denial = self._parent(ask, now)
        parent = read.stored.execution if read else None
        execution_id = new_execution_id(now, random_bytes(EXECUTION_ID_RANDOM_BYTES))
        lineage = (
            child_fields(parent, ask.principal)
            if parent
            else root_lineage(execution_id, ask.principal)
        )
        facts = _lineage_facts(parent, ask.principal)
        request = DecisionRequest(
            principal=ask.principal,
            action=ask.action,
            resource=ask.resource,
            now_ms=now,
            context=ask.context,
            runtime=runtime.facts,
            lineage=facts,
        )
        decision = denial or self._runtime_denial(runtime) or self._decide(request, execution_id)
        execution = leases.request(
            execution_id=execution_id,
            principal=ask.principal,
            action=ask.action,
            resource=ask.resource,
            context=dict(ask.context),
            runtime_id=runtime.id,
            lineage=lineage,
            now_ms=now,
        )
        stored = StoredExecution(execution, request.runtime, facts)
        activated = None
        if decision.allowed:  # as the committer will, unless something changed since
            with contextlib.suppress(LictorError):
                version = decision.policy_version
                activated = leases.activate(execution, now, version, ask.ttl_ms, parent)
        command = self._record_command(
            stored, decision, ask.ttl_ms, now, ask.definition, read, activated
        )
        return Prepared(command, now, activated)

    def _parent(self, ask: Ask, now: int) -> tuple[Read | None, Decision | None]:
        if ask.parent_grant is None:
            return None, None
        try:
            claims = self.parent_grants.identify(ask.parent_grant, now)
        except GrantError as e:
            message = f"parent grant: {e.message}"
            return None, _deny_without_policy(message, code=ReasonCode.INVALID_PARENT_GRANT)
        if claims.runtime_id != ask.runtime_id:
            # bound to its runtime: another runtime holding it cannot use it as a parent
            message = f"parent grant was issued to runtime {claims.runtime_id!r}"
            return None, _deny_without_policy(message, code=ReasonCode.INVALID_PARENT_GRANT)
        return self._read(claims.execution_id), None

    def _principal_denial(self, view: StateView, principal: EntityRef) -> Decision | None:
        if view.get(PRINCIPAL_REVOCATION, str(principal)) is None:
            return None
        message = f"principal {principal} is revoked"
        return _deny_without_policy(message, code=ReasonCode.PRINCIPAL_REVOKED)

    def _runtime_denial(self, runtime: Runtime) -> Decision | None:
        if runtime.state != "active":
            message = f"runtime {runtime.id} is {runtime.state}"
            return _deny_without_policy(message, code=ReasonCode.RUNTIME_REVOKED)
        return None

    def _record_command(
        self,
        stored: StoredExecution,
        decision: Decision,
        ttl_ms: int,
        now: int,
        definition: str | None = None,
        parent_read: Read | None = None,
        activated: Execution | None = None,
    ) -> Command:
        """The command recording ``stored``'s ``decision``; ``activated``: the execution
        the decision activated, used as it is when the decision, and the parent it was
        made under, are still those the committer finds."""
        decided_parent = parent_read.stored.execution if parent_read else None

        def plan(view: StateView, first_index: int) -> Plan:
            current = decision
            self._check_fresh(view, current)
            if current.allowed:
                runtime_id = stored.execution.runtime_id
                current = self._check_runtime(view, runtime_id, stored.runtime) or current
            if current.allowed:
                current = self._principal_denial(view, stored.execution.principal) or current
            if current.allowed:
                resource = stored.execution.resource
                current = pin_denial(view, resource, definition, current.policy_version) or current
            parent = self._view_parent(view, stored.execution, parent_read)
            if current.allowed and parent is not None:
                # judged when the child commits: a request that waited past its parent's
                # lease (a busy committer, a frozen process) is denied
                current = self._check_parent(parent, self.log.now_ms()) or current
            e = stored.execution
            unchanged = current is decision and parent is decided_parent
            if current.allowed and unchanged and activated is not None:
                e = activated  # as decided: nothing it was decided on has moved since
            elif current.allowed:
                e = leases.activate(e, now, current.policy_version, ttl_ms, parent)
            else:
                e = leases.deny(
                    e, now, current.reason_code or "denied", current.policy_version or None
                )
            new = stored.with_transition(e, now, first_index, current.to_json())
            entry, write = self.entry(new, current, definition=definition), new.write()
            return Plan(
                [entry],
                [write],
                lambda head: self._outcome(self._written(new, write), entry, first_index, head),
            )

        return plan

    def _check_runtime(
        self, view: StateView, runtime_id: str | None, decided: RuntimeFacts
    ) -> Decision | None:
        """Deny if the runtime is no longer active; decide again if its facts changed."""
        if runtime_id is None:
            return None
        record = view.get(RUNTIME_KIND, runtime_id)
        if record is None:
            raise NotFoundError(f"no runtime {runtime_id!r}")
        runtime = self.runtimes.parsed(record)
        denial = self._runtime_denial(runtime)
        if denial is None and runtime.facts != decided:
            raise StaleDecisionError("the runtime's attestation changed")
        return denial

    def _check_fresh(self, view: StateView, decision: Decision) -> None:
        """A decision commits only under the policy version it was made with."""
        active = self.policies.active_version(view)
        made_under = decision.policy_version or None
        if made_under is not None and made_under != active:
            raise StaleDecisionError("the active policy changed")
        if decision.reason_code is ReasonCode.NO_ACTIVE_POLICY and active is not None:
            raise StaleDecisionError("a policy became active")

    def _check_parent(self, parent: Execution, now: int) -> Decision | None:
        try:
            check_child(parent, now, self.max_depth)
        except DepthExceededError as e:
            return _deny_without_policy(e.message, code=ReasonCode.DEPTH_EXCEEDED)
        except LictorError as e:
            return _deny_without_policy(e.message, code=ReasonCode.PARENT_NOT_ACTIVE)
        return None

    def _view_parent(
        self, view: StateView, execution: Execution, known: Read | None = None
    ) -> Execution | None:
        if execution.parent_id is None:
            return None
        record = view.get(KIND, execution.parent_id)
        if record is None:
            raise NotFoundError(f"no execution {execution.parent_id}")
        return _parsed(record, known).execution

    # -- log entries and results -------------------------------------------------

    def entry(
        self,
        stored: StoredExecution,
        decision: Decision | None = None,
        summary: str | None = None,
        *,
        definition: str | None = None,
        result_hash: str | None = None,
    ) -> StoredEntry:
        e = stored.execution
        decided = decision.to_json() if decision else stored.decision
        sealed = ARGUMENTS in e.context and not self.raw_arguments(decided)
        public = {
            "execution": e.id,
            "parent": e.parent_id,
            "runtime": e.runtime_id,
            "policy_version": e.policy_version,
            "state": str(e.state),
        }
        context = self.seal.shown(e.context, sealed)
        event = {
            **public,
            "principal": e.principal.to_json(),
            "action": e.action.to_json(),
            "resource": e.resource.to_json(),
            "context": context,
            "reason": e.reason,
            "decision": self.seal.decision(decided, sealed) if decision else None,
        }
        extra = {"summary": summary, "definition": definition, "result_hash": result_hash}
        event.update({k: v for k, v in extra.items() if v is not None})
        # every field but the context is text, None or a decision built from typed text
        # (mypy holds them to it): the entry is plain JSON exactly when the context is
        plain = is_plain(context)
        return self.log.prepare_event("execution", event, public, plain=plain)

    def raw_arguments(self, decision: Mapping[str, Any] | None) -> bool:
        """Whether ``decision`` (as stored) was determined by a policy annotated
        ``@log_arguments("raw")``, so its execution's arguments are shown as they are."""
        if not decision or not decision.get("reasons") or not decision.get("policy_version"):
            return False
        try:
            raw = self.policies.compiled(str(decision["policy_version"])).raw_arguments
        except LictorError:
            return False
        return not raw.isdisjoint(decision["reasons"])

    def sealed(self, stored: StoredExecution) -> bool:
        """Whether readers see ``stored``'s arguments only as a keyed hash."""
        has = ARGUMENTS in stored.execution.context
        return has and not self.raw_arguments(stored.decision)

    def shown(self, stored: StoredExecution) -> StoredExecution:
        """``stored`` as readers see it: its arguments sealed (`lictor.service.arguments`),
        with the decision errors that could quote them."""
        e, sealed = stored.execution, self.sealed(stored)
        if not sealed:
            return stored
        steps = tuple(
            {**t, "decision": self.seal.decision(t["decision"], True)} if "decision" in t else t
            for t in stored.transitions
        )
        return replace(
            stored,
            execution=replace(e, context=self.seal.shown(e.context, True)),
            decision=self.seal.decision(stored.decision, True),
            transitions=steps,
        )

    def _outcome(
        self, stored: StoredExecution, entry: StoredEntry, index: int, head: Any
    ) -> Outcome:
        return Outcome(stored, self.log.receipt(Appended(index, head), entry))

    def _early_grant(self, prepared: Prepared) -> tuple[Execution, str] | None:
        """The grant of the execution ``prepared`` activates, signed while its command
        commits: the signature (most of a grant's cost) runs without the GIL, beside
        the committer. It is handed out only with that very execution once committed
        (`_with_grant`), and dropped otherwise.

        Asked for only when the command is committed alone (`Sequencer.idle`): there
        the grant leaves the answer's path. Under load a busy committer has the commit
        to itself, and signing after it keeps its batches as large as before."""
        if prepared.activated is None:
            return None
        try:
            return prepared.activated, self.grants.sign(prepared.activated, prepared.now)
        except LictorError:
            return None

    def _with_grant(
        self, outcome: Outcome, now: int, early: tuple[Execution, str] | None = None
    ) -> Outcome:
        if outcome.execution.state is not ExecutionState.ACTIVE:
            return outcome
        if early is not None and early[0] is outcome.execution:  # committed as signed
            return changed(outcome, grant=early[1])
        try:
            grant = self.grants.sign(outcome.execution, now)
        except LictorError:
            return outcome  # a lease too short for a grant: the caller renews
        return changed(outcome, grant=grant)

    # -- reading ------------------------------------------------------------------

    def get(self, execution_id: str) -> StoredExecution:
        return self._read(execution_id).stored

    def _read(self, execution_id: str) -> Read:
        """The stored record and what it parses to; a record read before (a parent
        asked for by each of its children) is not parsed again while it is unchanged."""
        record = self.log.store.get_record(KIND, execution_id)
        if record is None:
            raise NotFoundError(f"no execution {execution_id!r}")
        with self._parsed_lock:
            known = self._parsed.get(execution_id)
        if known is not None and _same(known.record, record):
            return known
        read = Read(record, StoredExecution.from_record(record))
        self._keep(read)
        return read

    def _written(self, stored: StoredExecution, write: RecordWrite) -> StoredExecution:
        """``stored`` as committed by ``write``: kept, so that the next read of its record
        (the next renewal's) finds it parsed already."""
        record = write.record()
        read = Read(record, changed(stored, record_version=record.version))
        self._keep(read)
        return read.stored

    def _keep(self, read: Read) -> None:
        """Keep ``read`` as the newest; past `PARSED_RECORDS`, the one kept longest ago
        goes (each renewal keeps its record again: an execution renewing stays)."""
        with self._parsed_lock:
            self._parsed[read.record.key] = read
            self._parsed.move_to_end(read.record.key)
            if len(self._parsed) > PARSED_RECORDS:
                self._parsed.popitem(last=False)  # constant time, as a dict's is not

    def find(
        self, filters: Mapping[str, str], after: str = "", limit: int = 100
    ) -> list[StoredExecution]:
        records = self.log.store.find_records(KIND, dict(filters), after, limit)
        return [StoredExecution.from_record(r) for r in records]

    def lineage(self, execution_id: str) -> tuple[list[StoredExecution], list[StoredExecution]]:
        """Ancestors (root first) and descendants (breadth-first) of an execution."""
        target = self.get(execution_id)
        ancestors: list[StoredExecution] = []
        parent_id = target.execution.parent_id
        while parent_id is not None:
            parent = self.get(parent_id)
            ancestors.insert(0, parent)
            parent_id = parent.execution.parent_id
        descendants: list[StoredExecution] = []
        frontier = [execution_id]
        while frontier:
            children = [c for p in frontier for c in self.find({"parent": p}, limit=100_000)]
            descendants += children
            frontier = [c.execution.id for c in children]
        return ancestors, descendants

    def check_owner(self, stored: StoredExecution, runtime_id: str | None) -> None:
        """A runtime acts only on executions it started (admins pass None)."""
        if runtime_id is not None and stored.execution.runtime_id != runtime_id:
            raise PermissionDeniedError("a runtime acts only on executions it started")

    # -- renewing, completing ------------------------------------------------------

    def renew(
        self, execution_id: str, runtime_id: str, ttl_ms: int = leases.DEFAULT_TTL_MS
    ) -> Outcome:
        """Re-run the authorization with fresh context: a new lease, or revocation."""
        return self._decided(partial(self._renew_command, execution_id, runtime_id, ttl_ms))

    async def renew_async(
        self, execution_id: str, runtime_id: str, ttl_ms: int = leases.DEFAULT_TTL_MS
    ) -> Outcome:
        """`renew` for an event loop."""
        return await self._decided_async(
            partial(self._renew_command, execution_id, runtime_id, ttl_ms)
        )

    async def renew_many_async(
        self, runtime_id: str, renewals: Sequence[Renewal]
    ) -> list[Outcome | LictorError]:
        """Renew each of ``renewals`` as `renew` does (its authorization run again),
        planned together and committed together: a runtime's heartbeat for the
        executions it holds. A new grant only for those that ask for one. Each
        succeeds or fails alone (its error in its place)."""
        planned: list[Prepared | LictorError] = []
        for r in renewals:
            try:
                planned.append(self._renew_command(r.execution_id, runtime_id, r.ttl_ms))
            except LictorError as e:
                planned.append(e)
        # parents before their children: a child's new lease may then reach as far as
        # its parent's new one (it is capped at the parent's expiry as planned)
        order = sorted(range(len(renewals)), key=lambda i: self._depth(renewals[i].execution_id))
        commands = [
            p if isinstance(p, LictorError) else p.command for p in (planned[i] for i in order)
        ]
        settled_in_order = await self._run_together(commands)
        settled: list[Any] = [None] * len(renewals)
        for i, answer in zip(order, settled_in_order, strict=True):
            settled[i] = answer
        done: list[Outcome | LictorError] = []
        for r, planning, answer in zip(renewals, planned, settled, strict=True):
            if isinstance(answer, StaleDecisionError):  # decided under a policy since replaced
                self.policies.invalidate()
                self.runtimes.forget()
                answer = await self._alone(self._renewed_again(r, runtime_id))
            elif r.grant and isinstance(answer, Outcome) and isinstance(planning, Prepared):
                answer = self._with_grant(answer, planning.now)  # signed at the decision's time
            done.append(answer)
        return done

    def _depth(self, execution_id: str) -> int:
        """How deep ``execution_id`` is in its lineage, as last read (0 if unknown)."""
        with self._parsed_lock:
            known = self._parsed.get(execution_id)
        return known.stored.execution.depth if known is not None else 0

    async def _renewed_again(self, renewal: Renewal, runtime_id: str) -> Outcome:
        outcome = await self.renew_async(renewal.execution_id, runtime_id, renewal.ttl_ms)
        return outcome if renewal.grant else changed(outcome, grant=None)

    async def _alone(self, outcome: Awaitable[Outcome]) -> Outcome | LictorError:
        try:
            return await outcome
        except LictorError as e:
            return e

    def _renew_command(self, execution_id: str, runtime_id: str, ttl_ms: int) -> Prepared:
        now = self.log.now_ms()
        read = self._read(execution_id)
        stored = read.stored
        self.check_owner(stored, runtime_id)
        if leases.effective_state(stored.execution, now) is not ExecutionState.ACTIVE:
            leases.renew(stored.execution, now, ttl_ms)  # raises the precise error
        runtime = self.runtimes.for_decision(runtime_id)
        facts = runtime.facts
        decided = self._runtime_denial(runtime) or self._decide(
            request_of(stored.execution, facts, stored.lineage, now), execution_id
        )

        def plan(view: StateView, first_index: int) -> Plan:
            # the lease is judged when the renewal commits, not when it was read: one
            # that waited (a busy committer, a frozen process) past the lease's expiry
            # is refused, never revives it
            at = self.log.now_ms()
            decision = decided
            self._check_fresh(view, decision)
            if decision.allowed:
                decision = self._check_runtime(view, runtime_id, facts) or decision
            current = reload(view, execution_id, read)
            if not decision.allowed:
                reason = f"reverify_denied:{decision.reason_code}"
                return self.revoke_plan(view, current.execution, reason, at, first_index)
            parent = self._view_parent(view, current.execution)
            e = leases.renew(current.execution, at, ttl_ms, parent, decision.policy_version)
            if decision.policy_version == _decided_version(current) and facts == current.runtime:
                same = changed(current, execution=e)
                write = same.write()
                return Plan([], [write], lambda head: Outcome(self._written(same, write), None))
            new = current.with_transition(e, at, first_index, decision.to_json(), facts)
            entry, write = self.entry(new, decision), new.write()
            return Plan(
                [entry],
                [write],
                lambda h: self._outcome(self._written(new, write), entry, first_index, h),
            )

        return Prepared(plan, now)

    async def complete_async(
        self,
        execution_id: str,
        runtime_id: str | None,
        outcome: str,
        exit_code: int | None,
        summary: str | None = None,
        result_hash: str | None = None,
    ) -> Outcome:
        """End an execution as its enforcement point reports; ``summary`` and
        ``result_hash`` are kept in its transition and its (private) log event.
        Awaits the commit on the caller's event loop."""
        plan = self._complete_command(
            execution_id, runtime_id, outcome, exit_code, summary, result_hash
        )
        result: Outcome = await self.log.sequencer.run(plan)
        return result

    async def complete_many_async(
        self, runtime_id: str | None, completions: Sequence[Completion]
    ) -> list[Outcome | LictorError]:
        """Several completions, planned together and committed in one transaction;
        each succeeds or fails alone (its error in its place in the list)."""
        planned: list[Command | LictorError] = []
        for c in completions:
            try:
                planned.append(
                    self._complete_command(
                        c.execution_id, runtime_id, c.outcome, c.exit_code, c.summary, c.result_hash
                    )
                )
            except LictorError as e:
                planned.append(e)
        return await self._run_together(planned)

    async def _run_together(self, planned: Sequence[Command | LictorError]) -> list[Any]:
        """Each command's result, or its error, in its place (errors planning stay where
        they are); the commands go to the committer together, so one commit takes them
        all unless the batch is full."""
        commands = [p for p in planned if not isinstance(p, LictorError)]
        futures = self.log.sequencer.submit_async(commands) if commands else []
        settled = iter(await asyncio.gather(*futures, return_exceptions=True))
        done: list[Any] = []
        for planning in planned:
            answer = planning if isinstance(planning, LictorError) else next(settled)
            if isinstance(answer, BaseException) and not isinstance(answer, LictorError):
                raise answer  # not an answer for one command: a fault of the whole
            done.append(answer)
        return done

    def _complete_command(
        self,
        execution_id: str,
        runtime_id: str | None,
        outcome: str,
        exit_code: int | None,
        summary: str | None,
        result_hash: str | None,
    ) -> Command:
        now = self.log.now_ms()
        read = self._read(execution_id)
        self.check_owner(read.stored, runtime_id)

        def plan(view: StateView, first_index: int) -> Plan:
            current = reload(view, execution_id, read)
            e = leases.complete(current.execution, now, outcome, exit_code)
            new = current.with_transition(e, now, first_index, None)
            said = {"summary": summary, "result_hash": result_hash}
            if any(v is not None for v in said.values()):
                last = {**new.transitions[-1], **{k: v for k, v in said.items() if v is not None}}
                new = replace(new, transitions=(*new.transitions[:-1], last))
            entry = self.entry(new, summary=summary, result_hash=result_hash)
            write = new.write()
            view.apply([write])
            # no child outlives its parent: live descendants end with it
            ended = self.revoke_plan(view, e, f"ancestor_{e.state}:{e.id}", now, first_index + 1)
            ids = tuple(w.key for w in ended.writes)
            return Plan(
                [entry, *ended.entries],
                [write, *ended.writes],
                lambda h: replace(self._outcome(new, entry, first_index, h), revoked=ids),
            )

        return plan

    # -- revoking -------------------------------------------------------------------

    def revoke(self, execution_id: str, reason: str) -> Outcome:
        """Revoke an execution and every live descendant, in one transaction."""
        now = self.log.now_ms()
        reason = leases.check_reason(reason)

        def plan(view: StateView, first_index: int) -> Plan:
            target = reload(view, execution_id).execution
            if leases.effective_state(target, now).is_terminal:
                raise InvalidTransitionError(f"execution {execution_id} is already ended")
            return self.revoke_plan(view, target, reason, now, first_index)

        result: Outcome = self.log.sequencer.submit_commands([plan])[0].result()
        return result

    def revoke_plan(
        self, view: StateView, target: Execution, reason: str, now: int, first_index: int
    ) -> Plan:
        def children_of(parent_id: str) -> Sequence[Execution]:
            records = view.find(KIND, {"parent": parent_id})
            return [StoredExecution.from_record(r).execution for r in records]

        entries: list[StoredEntry] = []
        writes = []
        first: StoredExecution | None = None
        for _, revoked in plan_revoke(target, children_of, now, reason):
            current = reload(view, revoked.id)
            new = current.with_transition(revoked, now, first_index + len(entries), None)
            entries.append(self.entry(new))
            writes.append(new.write())
            first = first or new
        if first is None:  # nothing live to revoke: report the target as it is
            record = _record(view, target.id)  # parsed only if the result is wanted
            return Plan([], [], lambda head: Outcome(StoredExecution.from_record(record), None))
        head_entry, revoked_ids = entries[0], tuple(w.key for w in writes)
        return Plan(
            entries,
            writes,
            lambda h: replace(
                self._outcome(first, head_entry, first_index, h), revoked=revoked_ids
            ),
        )


def reload(view: StateView, execution_id: str, known: Read | None = None) -> StoredExecution:
    """The execution as ``view`` has it; ``known`` (read before planning) is reused
    when the view holds the very same record, so it is not parsed twice."""
    return _parsed(_record(view, execution_id), known)


def _parsed(record: Record, known: Read | None) -> StoredExecution:
    if known is not None and _same(known.record, record):
        return known.stored
    return StoredExecution.from_record(record)


def _same(a: Record, b: Record) -> bool:
    return a.key == b.key and a.version == b.version and a.doc == b.doc


def _record(view: StateView, execution_id: str) -> Record:
    record = view.get(KIND, execution_id)
    if record is None:
        raise NotFoundError(f"no execution {execution_id!r}")
    return record


def _decided_version(stored: StoredExecution) -> str | None:
    return None if stored.decision is None else stored.decision.get("policy_version")


def _lineage_facts(parent: Execution | None, principal: EntityRef) -> LineageFacts:
    if parent is None:
        return LineageFacts.root(principal)
    return LineageFacts(
        depth=parent.depth + 1,
        root_principal=parent.delegation[0],
        parent_id=parent.id,
        parent_action=parent.action.id,
    )


def request_of(
    e: Execution, runtime: RuntimeFacts, lineage: LineageFacts, now: int
) -> DecisionRequest:
    return DecisionRequest(
        principal=e.principal,
        action=e.action,
        resource=e.resource,
        now_ms=now,
        context=e.context,
        runtime=runtime,
        lineage=lineage,
    )


def _deny_without_policy(
    message: str, version: str = "", code: ReasonCode = ReasonCode.NO_ACTIVE_POLICY
) -> Decision:
    """A deny reached before (or instead of) evaluating policy."""
    return Decision(False, (), (message,), version, "", code)
