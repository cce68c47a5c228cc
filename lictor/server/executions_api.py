"""Execution routes: runtimes request, renew and complete; admins revoke; readers read.

Allow answers 201 with the execution, its grant, lease and receipt; deny
answers 403 with the determining policies, reason code and receipt (the deny
is logged too). A runtime sees and acts on only the executions it started.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from lictor.core import lease as leases
from lictor.core.types import EntityRef, ExecutionState
from lictor.errors import (
    ConflictError,
    InvalidRequestError,
    InvalidTransitionError,
    LictorError,
    NotFoundError,
)
from lictor.server.auth import GRANT_ROLE, GrantCaller, own_execution, require_role
from lictor.server.openapi import ErrorDetail, answers
from lictor.service.executions import Ask, Completion, Executions, Outcome, Renewal
from lictor.service.records import StoredExecution, execution_json
from lictor.service.sweeps import Sweeps
from lictor.store.base import Credential
from lictor.wire import MAX_BATCH, TypedRef, error_body, ref_value

router = APIRouter(prefix="/v1/executions", tags=["executions"])
MAX_CONTEXT_DEPTH = 8
RUNTIME = require_role("runtime")  # who may act on several executions at once
Runtime = Annotated[Credential, Depends(RUNTIME)]
ACTING = require_role("runtime", GRANT_ROLE)  # who may request, renew and complete
Acting = Annotated[Credential, Depends(ACTING)]
Reader = Annotated[Credential, Depends(require_role("admin", "auditor", "runtime"))]
OwnReader = Annotated[Credential, Depends(require_role("admin", "auditor", "runtime", GRANT_ROLE))]
Admin = Annotated[Credential, Depends(require_role("admin"))]
Ttl = Annotated[int, Field(ge=leases.MIN_TTL_MS // 1000, le=leases.MAX_TTL_MS // 1000)]
Hash = Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class Ref(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Annotated[str, Field(min_length=1, max_length=128)]
    id: Annotated[str, Field(min_length=1, max_length=512)]


class ExecutionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    principal: Ref | str
    action: Ref | str
    resource: Ref | str
    context: dict[str, Any] = {}
    parent_grant: Annotated[str | None, Field(max_length=8192)] = None
    ttl: Ttl | None = None
    definition: Hash | None = None


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    principal: Ref | str
    action: Ref | str
    resources: Annotated[list[Ref | str], Field(max_length=1000)]


class RenewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    ttl: Ttl | None = None


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    outcome: Literal["succeeded", "failed", "cancelled"]
    exit_code: Annotated[int, Field(ge=leases.MIN_EXIT_CODE, le=leases.MAX_EXIT_CODE)] | None = None
    summary: Annotated[str, Field(max_length=1024)] | None = None
    result_hash: Hash | None = None


class CompletionItem(CompleteRequest):
    execution: Annotated[str, Field(min_length=1, max_length=64)]


class RenewalItem(RenewRequest):
    execution: Annotated[str, Field(min_length=1, max_length=64)]
    grant: bool = False


class RenewalsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    renewals: Annotated[list[RenewalItem], Field(min_length=1, max_length=MAX_BATCH)]


class CompletionsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    completions: Annotated[list[CompletionItem], Field(min_length=1, max_length=MAX_BATCH)]
    brief: bool = Field(
        default=False,
        description="answer each completion with `Completed` only: for a caller that keeps "
        "nothing of the answer but whether each completion took effect",
    )


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: Annotated[str, Field(min_length=1, max_length=256)]


class ExecutionView(BaseModel):
    """An execution (`execution_json`), the decision that made it and its transitions."""

    execution: dict[str, Any]
    decision: dict[str, Any] | None
    transitions: list[dict[str, Any]]


class Lease(BaseModel):
    ttl: float
    expires_at_ms: int
    renew_by_ms: int


class ExecutionReply(ExecutionView):
    """What a transition answers: the view, and the lease and grant while active,
    the receipt of its log entry, the descendants it revoked."""

    lease: Lease | None = None
    grant: str | None = None
    receipt: dict[str, Any] | None = None
    revoked: list[str] | None = None


class Denial(ExecutionReply):
    """A deny (code ``denied``, with the decision and its receipt), or a caller refused
    (``permission_denied``, the error alone)."""

    error: ErrorDetail
    execution: dict[str, Any] | None = None  # type: ignore[assignment]
    decision: dict[str, Any] | None = None
    transitions: list[dict[str, Any]] | None = None  # type: ignore[assignment]


class Possible(BaseModel):
    resource: dict[str, str]
    possible: bool


class PreviewReply(BaseModel):
    policy_version: str | None
    results: list[Possible]


class CompletionFailed(BaseModel):
    execution: str
    error: ErrorDetail


class Completed(BaseModel):
    """A completion's brief answer: the execution's id, state and outcome, the log index
    of its entry, the descendants it revoked."""

    execution: dict[str, Any]
    log_index: int | None
    revoked: list[str] | None = None


class CompletionsReply(BaseModel):
    """Each completion's answer in its place: `ExecutionReply` (`Completed` when asked
    for ``brief``), or why it failed."""

    results: list[ExecutionReply | Completed | CompletionFailed]


class Renewed(BaseModel):
    """A renewal's answer in a heartbeat: the execution as it now stands, its lease
    while active, a new grant if asked for, the receipt when the renewal was logged
    (a new policy version, new runtime facts, or revoked), the descendants it revoked.
    Its decision and transitions are one ``GET /v1/executions/{id}`` away."""

    execution: dict[str, Any]
    lease: Lease | None = None
    grant: str | None = None
    receipt: dict[str, Any] | None = None
    revoked: list[str] | None = None


class RenewalsReply(BaseModel):
    """Each renewal's answer in its place: `Renewed`, or why it failed."""

    results: list[Renewed | CompletionFailed]


class ExecutionDetail(ExecutionView):
    effective_state: str


class ExecutionList(BaseModel):
    executions: list[ExecutionView]
    next: str | None


class Lineage(BaseModel):
    ancestors: list[ExecutionView]
    descendants: list[ExecutionView]


class PrincipalRevoked(BaseModel):
    principal: dict[str, str]
    revoked: list[str]


def _executions(request: Request) -> Executions:
    executions: Executions = request.app.state.executions
    return executions


_KNOWN_REFS: dict[str, EntityRef] = {}  # entities in their text form, as parsed before
_MAX_KNOWN_REFS = 4096


def entity(value: TypedRef | str) -> EntityRef:
    """The entity a body names. Callers name the same few again and again: the text
    form is parsed once (what does not parse is not remembered)."""
    if not isinstance(value, str):
        return EntityRef.from_wire(ref_value(value))
    known = _KNOWN_REFS.get(value)
    if known is None:
        known = EntityRef.parse(value)
        if len(_KNOWN_REFS) >= _MAX_KNOWN_REFS:
            _KNOWN_REFS.clear()
        _KNOWN_REFS[value] = known
    return known


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_CONTEXT_DEPTH:
        raise InvalidRequestError(f"context is nested deeper than {MAX_CONTEXT_DEPTH}")
    children = (
        value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    )
    return max((_depth(c, level + 1) for c in children), default=level)


def _view(stored: StoredExecution, executions: Executions) -> dict[str, Any]:
    stored = executions.shown(stored)
    return {
        "execution": execution_json(stored.execution),
        "decision": stored.decision,
        "transitions": list(stored.transitions),
    }


def _body(outcome: Outcome, executions: Executions) -> dict[str, Any]:
    """`_view` plus what a caller of a transition gets: lease, grant, receipt, cascade."""
    return _after(outcome, _view(outcome.stored, executions))


def _renewed(outcome: Outcome, executions: Executions) -> dict[str, Any]:
    """A heartbeat's answer for one renewal (`Renewed`): `_body` less the decision and
    the transitions."""
    shown = executions.shown(outcome.stored)
    return _after(outcome, {"execution": execution_json(shown.execution)})


def _completed(outcome: Outcome, executions: Executions) -> dict[str, Any]:
    """A completion's brief answer (`Completed`): nothing of the view or the receipt."""
    e = outcome.execution
    body: dict[str, Any] = {
        "execution": {
            "id": e.id,
            "state": str(e.state),
            "outcome": str(e.outcome) if e.outcome else None,
        },
        "log_index": outcome.receipt.index if outcome.receipt is not None else None,
    }
    if outcome.revoked:
        body["revoked"] = list(outcome.revoked)
    return body


def _after(outcome: Outcome, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with what follows a transition: lease, grant, receipt, cascade."""
    e = outcome.execution
    if e.lease is not None and e.state is ExecutionState.ACTIVE:
        body["lease"] = {
            "ttl": e.lease.ttl_ms / 1000,
            "expires_at_ms": e.lease.expires_at_ms,
            "renew_by_ms": e.lease.renew_by_ms,
        }
    if outcome.grant:
        body["grant"] = outcome.grant
    if outcome.receipt is not None:
        body["receipt"] = outcome.receipt.to_json()
    if outcome.revoked:
        body["revoked"] = list(outcome.revoked)
    return body


@router.post(
    "",
    status_code=201,
    operation_id="request_execution",
    response_model=None,
    responses=answers(ExecutionReply, NotFoundError, InvalidTransitionError, status=201)
    | {403: {"model": Denial, "description": "denied, permission_denied"}},
)
async def request_execution(body: ExecutionRequest, request: Request, who: Acting) -> Any:
    """Authorize a new execution; 201 with a grant, or 403 with the reasons.

    A grant caller may ask only for children of its own execution."""
    status, answer = await decide(body, who, request.app.state)
    return JSONResponse(answer, status_code=status)


class Asked(Protocol):
    """A request for an execution as a body reads it: pydantic's `ExecutionRequest` or
    msgspec's `lictor.wire.ExecutionRequestBody`."""

    @property
    def principal(self) -> TypedRef | str: ...
    @property
    def action(self) -> TypedRef | str: ...
    @property
    def resource(self) -> TypedRef | str: ...
    @property
    def context(self) -> dict[str, Any]: ...
    @property
    def parent_grant(self) -> str | None: ...
    @property
    def ttl(self) -> int | None: ...
    @property
    def definition(self) -> str | None: ...


async def decide(asked: Asked, who: Credential, state: Any) -> tuple[int, dict[str, Any]]:
    """Decide and record ``asked`` for ``who``: the answer's status and body (201 with
    the grant, or 403 with the reasons). ``state``: the app's state."""
    _depth(asked.context)
    executions: Executions = state.executions
    ttl = (asked.ttl or leases.DEFAULT_TTL_MS // 1000) * 1000
    ask = Ask(
        who.name,
        entity(asked.principal),
        entity(asked.action),
        entity(asked.resource),
        asked.context,
        _parent_grant(asked.parent_grant, who, executions),
        ttl,
        asked.definition,
    )
    started = time.perf_counter()
    outcome = await executions.request_async(ask)
    allowed = outcome.execution.state is ExecutionState.ACTIVE
    reason = str((outcome.stored.decision or {}).get("reason_code") or "")
    state.metrics.count_decision(allowed, reason, time.perf_counter() - started)
    if allowed:
        return 201, _body(outcome, executions)
    denied = {"error": {"code": "denied", "message": _denial(outcome)}}
    return 403, {**denied, **_body(outcome, executions)}


async def renew_answer(
    execution_id: str, ttl: int | None, who: Credential, executions: Executions
) -> dict[str, Any]:
    """Renew ``execution_id`` for ``who``: the answer's body."""
    own_execution(who, execution_id)
    outcome = await executions.renew_async(execution_id, who.name, _ttl_ms(ttl))
    return _body(outcome, executions)


async def renewals_answer(
    renewals: list[tuple[str, int | None, bool]], who: Credential, executions: Executions
) -> dict[str, Any]:
    """Renew each ``(execution id, ttl in s, grant wanted)`` for the runtime ``who``,
    committed together: the answer's body, each renewal's answer in its place."""
    ids = [execution_id for execution_id, _, _ in renewals]
    if len(set(ids)) != len(ids):
        raise InvalidRequestError("each execution may be renewed once per call")
    asked = [Renewal(execution_id, _ttl_ms(ttl), grant) for execution_id, ttl, grant in renewals]
    outcomes = await executions.renew_many_async(who.name, asked)
    return {"results": _results(ids, outcomes, executions, _renewed)}


class Completing(Protocol):
    """One completion as a body reads it: pydantic's `CompletionItem` or msgspec's
    `lictor.wire.CompletionBody`."""

    @property
    def execution(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def summary(self) -> str | None: ...
    @property
    def result_hash(self) -> str | None: ...


async def completions_answer(
    asked: Sequence[Completing], who: Credential, executions: Executions, brief: bool = False
) -> dict[str, Any]:
    """Complete each of ``asked`` for the runtime ``who``, committed together: the
    answer's body, each completion's answer (`_completed` if ``brief``) in its place."""
    ids = [c.execution for c in asked]
    if len(set(ids)) != len(ids):
        raise InvalidRequestError("each execution may be completed once per call")
    completions = [
        Completion(c.execution, c.outcome, c.exit_code, c.summary, c.result_hash) for c in asked
    ]
    outcomes = await executions.complete_many_async(who.name, completions)
    return {"results": _results(ids, outcomes, executions, _completed if brief else _body)}


def _ttl_ms(ttl: int | None) -> int:
    return (ttl or leases.DEFAULT_TTL_MS // 1000) * 1000


def _results(
    ids: list[str],
    outcomes: list[Outcome | LictorError],
    executions: Executions,
    answer: Callable[[Outcome, Executions], dict[str, Any]] = _body,
) -> list[dict[str, Any]]:
    """Each outcome's ``answer``, or its error naming its execution, in its place."""
    return [
        {"execution": execution_id, **error_body(o.code, o.message)}
        if isinstance(o, LictorError)
        else answer(o, executions)
        for execution_id, o in zip(ids, outcomes, strict=True)
    ]


async def complete_answer(
    asked: Completion, who: Credential, executions: Executions
) -> dict[str, Any]:
    """Complete ``asked.execution_id`` for ``who`` as ``asked`` says: the answer's body."""
    own_execution(who, asked.execution_id)
    outcome = await executions.complete_async(
        asked.execution_id,
        who.name,
        asked.outcome,
        asked.exit_code,
        asked.summary,
        asked.result_hash,
    )
    return _body(outcome, executions)


def _parent_grant(given: str | None, who: Credential, executions: Executions) -> str | None:
    """The parent grant to decide with: a grant caller's own, unless it names another
    grant of the same execution (a renewal's newer grant)."""
    if not isinstance(who, GrantCaller):
        return given
    if given is None or given == who.grant:
        return who.grant
    try:
        parent = executions.parent_grants.identify(given, executions.log.now_ms()).execution_id
    except LictorError:
        parent = None
    own_execution(who, parent or "")
    return given


def _denial(outcome: Outcome) -> str:
    decision = outcome.stored.decision or {}
    return f"denied: {decision.get('reason_code')} {decision.get('reasons') or ''}".strip()


@router.post("/preview", operation_id="preview_executions", responses=answers(PreviewReply))
def preview(body: PreviewRequest, request: Request, who: Reader) -> dict[str, Any]:
    """For each resource, whether the active policy could allow the action under some
    context: a hint for what to offer (a gateway's tool list), never a permission."""
    executions = _executions(request)
    principal, action = entity(body.principal), entity(body.action)
    resources = [entity(r) for r in body.resources]
    version, possible = executions.could_allow(principal, action, resources)
    results = [
        {"resource": r.to_json(), "possible": p} for r, p in zip(resources, possible, strict=True)
    ]
    return {"policy_version": version, "results": results}


@router.post(
    "/{execution_id}/renew",
    operation_id="renew_execution",
    responses=answers(ExecutionReply, NotFoundError, InvalidTransitionError, ConflictError),
)
async def renew(execution_id: str, body: RenewRequest, request: Request, who: Acting) -> Any:
    """Re-run the authorization with fresh context: a new lease, or revoked (with why)."""
    return JSONResponse(await renew_answer(execution_id, body.ttl, who, _executions(request)))


@router.post(
    "/{execution_id}/complete",
    operation_id="complete_execution",
    responses=answers(ExecutionReply, NotFoundError, InvalidTransitionError, ConflictError),
)
async def complete(execution_id: str, body: CompleteRequest, request: Request, who: Acting) -> Any:
    """End an execution with its outcome; live descendants end with it."""
    asked = Completion(execution_id, body.outcome, body.exit_code, body.summary, body.result_hash)
    return JSONResponse(await complete_answer(asked, who, _executions(request)))


@router.post(
    "/completions", operation_id="complete_executions", responses=answers(CompletionsReply)
)
async def complete_many(body: CompletionsRequest, request: Request, who: Runtime) -> Any:
    """End several executions in one transaction; each succeeds or fails alone, its
    answer (`complete`'s body, or ``error``) in its place in ``results``."""
    answer = await completions_answer(body.completions, who, _executions(request), body.brief)
    return JSONResponse(answer)


@router.post("/renewals", operation_id="renew_executions", responses=answers(RenewalsReply))
async def renew_many(body: RenewalsRequest, request: Request, who: Runtime) -> Any:
    """Renew several executions of the calling runtime (its heartbeat for the work it
    holds), each re-authorized as `renew` does, committed together; each succeeds or
    fails alone, its answer (`renew`'s body, or ``error``) in its place in ``results``."""
    renewals = [(r.execution, r.ttl, r.grant) for r in body.renewals]
    return JSONResponse(await renewals_answer(renewals, who, _executions(request)))


@router.post(
    "/{execution_id}/revoke",
    operation_id="revoke_execution",
    responses=answers(ExecutionReply, NotFoundError, InvalidTransitionError, ConflictError),
)
def revoke(execution_id: str, body: RevokeRequest, request: Request, who: Admin) -> Any:
    """Revoke an execution and every live descendant, in one transaction."""
    executions = _executions(request)
    outcome = executions.revoke(execution_id, body.reason)
    request.app.state.metrics.revocations.labels("execution").inc(len(outcome.revoked))
    return _body(outcome, executions)


@router.get("", operation_id="list_executions", responses=answers(ExecutionList))
def list_executions(
    request: Request,
    who: Reader,
    state: Annotated[str | None, Query(max_length=16)] = None,
    principal: Annotated[str | None, Query(max_length=700)] = None,
    runtime: Annotated[str | None, Query(max_length=63)] = None,
    region: Annotated[str | None, Query(max_length=63)] = None,
    action: Annotated[str | None, Query(max_length=700)] = None,
    after: Annotated[str, Query(max_length=64)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Executions by state, principal, runtime, region or action; paginated by id."""
    filters = {
        k: v
        for k, v in (
            ("state", state),
            ("principal", principal),
            ("runtime", runtime),
            ("region", region),
            ("action", action),
        )
        if v
    }
    if who.role == "runtime":
        filters["runtime"] = who.name
    executions = _executions(request)
    found = executions.find(filters, after, limit)
    last = found[-1].execution.id if len(found) == limit else None
    return {"executions": [_view(s, executions) for s in found], "next": last}


@router.get(
    "/{execution_id}",
    operation_id="get_execution",
    responses=answers(ExecutionDetail, NotFoundError),
)
def get_execution(execution_id: str, request: Request, who: OwnReader) -> dict[str, Any]:
    """An execution with every transition and the log index of each."""
    own_execution(who, execution_id)
    executions = _executions(request)
    stored = executions.get(execution_id)
    executions.check_owner(stored, who.name if who.role == "runtime" else None)
    view = _view(stored, executions)
    now = executions.log.now_ms()
    view["effective_state"] = str(leases.effective_state(stored.execution, now))
    return view


@router.get(
    "/{execution_id}/lineage", operation_id="get_lineage", responses=answers(Lineage, NotFoundError)
)
def lineage(execution_id: str, request: Request, who: Reader) -> dict[str, Any]:
    """Ancestors (root first) and descendants, each with its transitions."""
    executions = _executions(request)
    executions.check_owner(
        executions.get(execution_id), who.name if who.role == "runtime" else None
    )
    ancestors, descendants = executions.lineage(execution_id)
    return {
        "ancestors": [_view(s, executions) for s in ancestors],
        "descendants": [_view(s, executions) for s in descendants],
    }


principals = APIRouter(prefix="/v1/principals", tags=["executions"])


class PrincipalRevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    principal: Ref | str
    reason: Annotated[str, Field(min_length=1, max_length=256)]


@principals.post("/revoke", operation_id="revoke_principal", responses=answers(PrincipalRevoked))
def revoke_principal(body: PrincipalRevokeRequest, request: Request, who: Admin) -> Any:
    """Revoke a principal: its active executions now (cascading), its requests from now on."""
    sweeps: Sweeps = request.app.state.sweeps
    principal = entity(body.principal)
    revoked = sweeps.revoke_principal(principal, body.reason)
    request.app.state.metrics.revocations.labels("principal").inc(len(revoked))
    return {"principal": principal.to_json(), "revoked": list(revoked)}
