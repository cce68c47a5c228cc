"""Credential routes, admins only: issue, list, rotate and revoke credentials.

Every change is logged before it takes effect (`lictor.service.credentials`).
A reply that carries a secret (issue, rotate) is the only place it is ever
shown; listings and log entries never hold one. A credential is named by its
name or by its current secret's key id (``key:...``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from lictor.errors import ConflictError, NotFoundError
from lictor.server.auth import require_role
from lictor.server.openapi import answers
from lictor.service.credentials import MAX_TTL_S, Credentials
from lictor.store.base import Credential

router = APIRouter(prefix="/v1/credentials", tags=["credentials"])
Admin = Annotated[Credential, Depends(require_role("admin"))]
Ttl = Annotated[int, Field(ge=1, le=MAX_TTL_S)]


class CredentialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(min_length=1, max_length=63)]
    role: Literal["admin", "auditor"]
    ttl: Ttl | None = None


class RotateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    ttl: Ttl | None = None


class RevokeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    reason: Annotated[str, Field(max_length=200)] = ""


class CredentialView(BaseModel):
    """A credential's lifecycle (`lictor.service.credentials.Issued`), never its secret."""

    name: str
    role: str
    created_at_ms: int
    by: str
    state: str
    expires_at_ms: int | None
    key_id: str | None
    rotated_at_ms: int | None
    revoked_at_ms: int | None
    revoked_by: str | None


class CredentialIssued(CredentialView):
    credential: str


class CredentialRotated(CredentialIssued):
    self_: bool = Field(alias="self")


class CredentialList(BaseModel):
    credentials: list[CredentialView]


class CredentialRevoked(BaseModel):
    credential: CredentialView


def _credentials(request: Request) -> Credentials:
    return Credentials(request.app.state.log)


@router.post(
    "",
    status_code=201,
    operation_id="issue_credential",
    responses=answers(CredentialIssued, ConflictError, status=201),
)
def issue(body: CredentialRequest, request: Request, who: Admin) -> dict[str, Any]:
    """Issue a credential (logged first); the secret is in this reply only."""
    issued, secret = _credentials(request).add(body.name, body.role, who.name, body.ttl)
    return {**asdict(issued), "credential": secret}


@router.get("", operation_id="list_credentials", responses=answers(CredentialList))
def listing(request: Request, who: Admin) -> dict[str, Any]:
    """Every credential with its state (active, revoked, expired) and expiry; never secrets."""
    return {"credentials": _credentials(request).list()}


@router.post(
    "/{name}/rotate",
    operation_id="rotate_credential",
    responses=answers(CredentialRotated, NotFoundError, ConflictError),
)
def rotate(
    name: str, request: Request, who: Admin, body: RotateRequest | None = None
) -> dict[str, Any]:
    """Replace a credential's secret (logged first); the new one is in this reply only.
    ``self`` says whether the caller rotated its own credential (its old secret is dead)."""
    ttl = body.ttl if body is not None else None
    rotated, secret = _credentials(request).rotate(name, who.name, ttl)
    return {**asdict(rotated), "credential": secret, "self": rotated.name == who.name}


@router.post(
    "/{name}/revoke",
    operation_id="revoke_credential",
    responses=answers(CredentialRevoked, NotFoundError, ConflictError),
)
def revoke(
    name: str, request: Request, who: Admin, body: RevokeRequest | None = None
) -> dict[str, Any]:
    """Revoke a credential for good (logged first); refused for the last live admin."""
    reason = body.reason if body is not None else ""
    return {"credential": asdict(_credentials(request).revoke(name, who.name, reason))}
