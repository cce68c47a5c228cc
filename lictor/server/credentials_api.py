"""Credential routes: admins issue admin and auditor credentials and list them.

The reply to an issue carries the secret, shown only this once.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from lictor.server.auth import require_role
from lictor.service.credentials import Credentials
from lictor.store.base import Credential

router = APIRouter(prefix="/v1/credentials", tags=["credentials"])
Admin = Annotated[Credential, Depends(require_role("admin"))]


class CredentialRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Annotated[str, Field(min_length=1, max_length=63)]
    role: Literal["admin", "auditor"]


def _credentials(request: Request) -> Credentials:
    return Credentials(request.app.state.log)


@router.post("", status_code=201)
def issue(body: CredentialRequest, request: Request, who: Admin) -> dict[str, Any]:
    """Issue a credential (logged first); the secret is in this reply only."""
    issued, secret = _credentials(request).add(body.name, body.role, who.name)
    return {**asdict(issued), "credential": secret}


@router.get("")
def listing(request: Request, who: Admin) -> dict[str, Any]:
    """The credentials issued through this API (names and roles, never secrets)."""
    return {"credentials": [asdict(c) for c in _credentials(request).list()]}
