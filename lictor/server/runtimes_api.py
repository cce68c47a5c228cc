"""Runtime routes: admins add and list runtimes; a runtime heartbeats as itself only."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from lictor.errors import ConflictError, NotFoundError, PermissionDeniedError
from lictor.server.auth import require_role
from lictor.server.openapi import answers
from lictor.service.runtimes import Runtimes
from lictor.service.sweeps import Sweeps
from lictor.store.base import Credential

router = APIRouter(prefix="/v1/runtimes", tags=["runtimes"])
Label = Annotated[str, Field(min_length=1, max_length=63)]


class RuntimeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Label
    region: Label
    cluster: Label


class Attestation(BaseModel):
    """What a runtime reports about itself; policies see it as context.lictor.runtime."""

    model_config = ConfigDict(extra="forbid", strict=True)
    state: Annotated[str, Field(pattern=r"^[a-z_]{1,32}$")]
    digests: Annotated[dict[str, Annotated[str, Field(max_length=200)]], Field(max_length=64)] = {}


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    attestation: Attestation | None = None


class RuntimeView(BaseModel):
    """A runtime as stored (`lictor.service.runtimes.Runtime`)."""

    id: str
    region: str
    cluster: str
    state: str
    attestation: dict[str, Any] | None
    last_heartbeat_ms: int | None
    created_at_ms: int


class RuntimeAdded(BaseModel):
    runtime: RuntimeView
    credential: str


class RuntimeList(BaseModel):
    runtimes: list[RuntimeView]


class RuntimeReply(BaseModel):
    runtime: RuntimeView


class RuntimeChanged(RuntimeReply):
    revoked: list[str]


def _runtimes(request: Request) -> Runtimes:
    runtimes: Runtimes = request.app.state.runtimes
    return runtimes


@router.post("", status_code=201, responses=answers(RuntimeAdded, ConflictError, status=201))
def add_runtime(
    body: RuntimeRequest,
    request: Request,
    _: Annotated[Credential, Depends(require_role("admin"))],
) -> dict[str, Any]:
    """Register a runtime; the reply carries its credential, shown only this once."""
    runtime, secret = _runtimes(request).add(body.name, body.region, body.cluster)
    return {"runtime": asdict(runtime), "credential": secret}


@router.get("", responses=answers(RuntimeList))
def list_runtimes(
    request: Request,
    _: Annotated[Credential, Depends(require_role("admin", "auditor"))],
    region: str | None = None,
    cluster: str | None = None,
) -> dict[str, Any]:
    return {"runtimes": [asdict(r) for r in _runtimes(request).list(region, cluster)]}


@router.get("/{runtime_id}", responses=answers(RuntimeReply, NotFoundError))
def get_runtime(
    runtime_id: str,
    request: Request,
    who: Annotated[Credential, Depends(require_role("admin", "auditor", "runtime"))],
) -> dict[str, Any]:
    _check_self(who, runtime_id)
    return {"runtime": asdict(_runtimes(request).get(runtime_id))}


@router.post(
    "/{runtime_id}/heartbeat", responses=answers(RuntimeChanged, NotFoundError, ConflictError)
)
def heartbeat(
    runtime_id: str,
    body: Heartbeat,
    request: Request,
    who: Annotated[Credential, Depends(require_role("runtime"))],
) -> dict[str, Any]:
    """A runtime's heartbeat; a new attestation is logged and re-verifies its executions."""
    _check_self(who, runtime_id)
    attestation = body.attestation.model_dump() if body.attestation else None
    sweeps: Sweeps = request.app.state.sweeps
    runtime, revoked = sweeps.heartbeat(runtime_id, attestation)
    request.app.state.metrics.revocations.labels("attestation").inc(len(revoked))
    return {"runtime": asdict(runtime), "revoked": list(revoked)}


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: Annotated[str, Field(min_length=1, max_length=200)]


@router.post(
    "/{runtime_id}/revoke", responses=answers(RuntimeChanged, NotFoundError, ConflictError)
)
def revoke_runtime(
    runtime_id: str,
    body: RevokeRequest,
    request: Request,
    _: Annotated[Credential, Depends(require_role("admin"))],
) -> dict[str, Any]:
    """Revoke a runtime: its requests are denied and its active executions revoked."""
    sweeps: Sweeps = request.app.state.sweeps
    runtime, revoked = sweeps.revoke_runtime(runtime_id, body.reason)
    request.app.state.metrics.revocations.labels("runtime").inc(len(revoked))
    return {"runtime": asdict(runtime), "revoked": list(revoked)}


def _check_self(who: Credential, runtime_id: str) -> None:
    if who.role == "runtime" and who.name != runtime_id:
        raise PermissionDeniedError("a runtime may act only as itself")
