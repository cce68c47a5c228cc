"""Who is calling: bearer credentials checked against their stored hashes.

Credentials travel as ``Authorization: Bearer <secret>``; only SHA-256 of
the secret is stored, so a database leak does not leak credentials. Roles are
checked per route with `require_role`.

A grant may stand in for a credential: a governed command holds its
execution's grant (``LICTOR_GRANT``) and no credential. It authenticates as a
`GrantCaller` (role ``grant``), which names its execution and its runtime,
and which the routes that admit it confine to that one execution: create a
child of it, renew or complete it, read it and follow its events
(`own_execution`). Its signature, issuer and lineage are checked here; what
the execution may still do is decided by its stored state, so the grant dies
with the lease.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import Request

from lictor.core.grant import MAX_GRANT_BYTES, VerifiedGrants
from lictor.datadir import hash_secret
from lictor.errors import GrantError, PermissionDeniedError, UnauthenticatedError
from lictor.service.credentials import CredentialCheck
from lictor.service.log import AuditLog
from lictor.store.base import Credential

MAX_CREDENTIAL_LENGTH = 512
GRANT_ROLE = "grant"
_JWS_START = "eyJ"  # base64url of '{"': what a JWS header starts with, never a credential


@dataclass(frozen=True)
class GrantCaller(Credential):
    """A caller holding a grant: ``name`` is its execution's runtime."""

    execution_id: str
    grant: str


def own_execution(who: Credential, execution_id: str) -> None:
    """A grant caller acts on its own execution only (other callers pass)."""
    if isinstance(who, GrantCaller) and execution_id != who.execution_id:
        raise PermissionDeniedError("a grant acts only on its own execution")


def caller(request: Request) -> Credential | None:
    """The caller's credential, None when no credential was sent."""
    return authenticate(request.headers.get("authorization"), request.app.state)


def authenticate(header: str | None, state: Any) -> Credential | None:
    """The credential an ``Authorization`` header carries (None: no header), checked
    against the app's state (``state.log``, ``state.credential_check``,
    ``state.executions``): `UnauthenticatedError` for one that opens nothing."""
    if header is None:
        return None
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or len(secret) > MAX_GRANT_BYTES:
        raise UnauthenticatedError("expected 'Authorization: Bearer <credential>'")
    log: AuditLog = state.log
    if secret.startswith(_JWS_START):
        return _grant_caller(state.executions.parent_grants, secret, log.now_ms())
    if len(secret) > MAX_CREDENTIAL_LENGTH:
        raise UnauthenticatedError("expected 'Authorization: Bearer <credential>'")
    check: CredentialCheck = state.credential_check  # revoked, rotated out, expired: 401
    return check.authenticate(hash_secret(secret), log.now_ms())


def admit(credential: Credential | None, roles: frozenset[str]) -> Credential:
    """``credential`` if its role is one of ``roles``; else why not (401 or 403)."""
    if credential is None:
        raise UnauthenticatedError("this call needs a credential")
    if credential.role not in roles:
        raise PermissionDeniedError(f"role {credential.role!r} may not make this call")
    return credential


class RoleCheck:
    """A dependency admitting only callers whose role is one of ``roles``.

    It runs on the event loop (no thread hop): the store answers a known
    credential from memory, so only a first sight of one reads the database,
    and its lifecycle (`CredentialCheck`) is read from memory or, on a shared
    store, at most once per `RECHECK_S` per credential. ``roles`` is public so
    the API description can say who may call each route.
    """

    def __init__(self, roles: tuple[str, ...]) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, request: Request) -> Credential:
        return admit(caller(request), self.roles)


def require_role(*roles: str) -> RoleCheck:
    """The `RoleCheck` dependency for ``roles``."""
    return RoleCheck(roles)


def _grant_caller(grants: VerifiedGrants, grant: str, now_ms: int) -> GrantCaller:
    try:
        claims = grants.identify(grant, now_ms)
    except GrantError as e:
        raise UnauthenticatedError(f"grant: {e.message}") from None
    return GrantCaller(claims.runtime_id or "", GRANT_ROLE, b"", claims.execution_id, grant)
