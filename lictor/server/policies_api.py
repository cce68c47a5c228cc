"""Policy and entity routes: admins push, activate and replace; auditors read."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from lictor.errors import ConflictError, NotFoundError
from lictor.server.auth import require_role
from lictor.server.openapi import answers
from lictor.service.policies import Policies, source_from_json
from lictor.service.replay import Replay
from lictor.service.sweeps import Sweeps
from lictor.store.base import Credential

router = APIRouter(tags=["policies"])
Admin = Annotated[Credential, Depends(require_role("admin"))]
Reader = Annotated[Credential, Depends(require_role("admin", "auditor"))]


class SchemaFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(min_length=1, max_length=255)]
    text: str


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    policies: Annotated[dict[str, str], Field(max_length=1000)]
    schema_: Annotated[SchemaFile, Field(alias="schema")]


class PushRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    source: Source


class EntitiesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    entities: Annotated[list[dict[str, Any]], Field(max_length=100_000)]


class Pushed(BaseModel):
    version: str
    new: bool


class PolicyVersion(BaseModel):
    version: str
    pushed_at_ms: int


class PolicyVersions(BaseModel):
    active: str | None
    versions: list[PolicyVersion]


class PolicyShown(PolicyVersion):
    source: dict[str, Any]


class Activated(BaseModel):
    version: str
    log_index: int
    revoked: list[str]


class Backtest(BaseModel):
    candidate: str
    changed: list[dict[str, Any]]
    withheld: int


class Replayed(BaseModel):
    execution: str
    identical: bool
    decisions: list[dict[str, Any]]


class EntitiesVersion(BaseModel):
    version: str


class Entities(EntitiesVersion):
    entities: list[dict[str, Any]]


def _policies(request: Request) -> Policies:
    policies: Policies = request.app.state.policies
    return policies


@router.post(
    "/v1/policies",
    status_code=201,
    operation_id="push_policy",
    responses=answers(Pushed, status=201),
)
def push(body: PushRequest, request: Request, who: Admin) -> dict[str, Any]:
    """Store a policy version (validated; named by the SHA-256 of its content)."""
    source = source_from_json(body.source.model_dump(by_alias=True))
    pushed, new = _policies(request).push(source)
    return {"version": pushed.version, "new": new}


@router.get("/v1/policies", operation_id="list_policies", responses=answers(PolicyVersions))
def versions(request: Request, who: Reader) -> dict[str, Any]:
    policies = _policies(request)
    return {
        "active": policies.active_version(),
        "versions": [p.to_json() for p in policies.versions()],
    }


@router.get(
    "/v1/policies/{version}",
    operation_id="get_policy",
    responses=answers(PolicyShown, NotFoundError),
)
def show(version: str, request: Request, who: Reader) -> dict[str, Any]:
    return _policies(request).get(version).to_json(with_source=True)


@router.post(
    "/v1/policies/{version}/activate",
    operation_id="activate_policy",
    responses=answers(Activated, NotFoundError, ConflictError),
)
def activate(version: str, request: Request, who: Admin) -> dict[str, Any]:
    """Activate a version; every active execution is re-verified, the denied revoked."""
    sweeps: Sweeps = request.app.state.sweeps
    index, revoked = sweeps.activate_policy(version)
    request.app.state.metrics.revocations.labels("policy").inc(len(revoked))
    return {"version": version, "log_index": index, "revoked": list(revoked)}


class BacktestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    source: Source
    since_ms: Annotated[int, Field(ge=0)] = 0


@router.post("/v1/policies/backtest", operation_id="backtest_policy", responses=answers(Backtest))
def backtest(body: BacktestRequest, request: Request, who: Reader) -> dict[str, Any]:
    """Recorded decisions (since ``since_ms``) that the candidate set would decide otherwise.
    An auditor's backtest leaves out executions whose arguments are sealed (``withheld``
    counts them): comparing candidates would otherwise reveal the arguments."""
    source = source_from_json(body.source.model_dump(by_alias=True))
    replay: Replay = request.app.state.replay
    changed, withheld = replay.backtest(source, body.since_ms, sealed=who.role == "admin")
    return {
        "candidate": source.version,
        "changed": [c.to_json() for c in changed],
        "withheld": withheld,
    }


@router.get(
    "/v1/executions/{execution_id}/replay",
    operation_id="replay_execution",
    responses=answers(Replayed, NotFoundError),
)
def replay_execution(execution_id: str, request: Request, who: Reader) -> dict[str, Any]:
    """Every decision of an execution, evaluated again with its recorded inputs."""
    replay: Replay = request.app.state.replay
    results = replay.replay(execution_id)
    return {
        "execution": execution_id,
        "identical": all(r.identical for r in results),
        "decisions": [r.to_json() for r in results],
    }


@router.put(
    "/v1/entities", operation_id="put_entities", responses=answers(EntitiesVersion, ConflictError)
)
def put_entities(body: EntitiesRequest, request: Request, who: Admin) -> dict[str, Any]:
    """Replace the entity set (versioned and logged)."""
    return {"version": _policies(request).put_entities(body.entities)}


@router.get("/v1/entities", operation_id="get_entities", responses=answers(Entities))
def get_entities(request: Request, who: Reader) -> dict[str, Any]:
    version, entities = _policies(request).entities()
    return {"version": version, "entities": entities}
