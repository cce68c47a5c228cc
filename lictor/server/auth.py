"""Who is calling: bearer credentials checked against their stored hashes.

Credentials travel as ``Authorization: Bearer <secret>``; only SHA-256 of
the secret is stored, so a database leak does not leak credentials. Roles are
checked per route with `require_role`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from lictor.datadir import hash_secret
from lictor.errors import PermissionDeniedError, UnauthenticatedError
from lictor.service.log import AuditLog
from lictor.store.base import Credential

MAX_CREDENTIAL_LENGTH = 512


def caller(request: Request) -> Credential | None:
    """The caller's credential, None when no credential was sent."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, secret = header.partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret or len(secret) > MAX_CREDENTIAL_LENGTH:
        raise UnauthenticatedError("expected 'Authorization: Bearer <credential>'")
    log: AuditLog = request.app.state.log
    credential = log.store.find_credential(hash_secret(secret))
    if credential is None:
        raise UnauthenticatedError("unknown credential")
    return credential


def require_role(*roles: str) -> Callable[[Request], Awaitable[Credential]]:
    """A dependency admitting only callers whose role is one of ``roles``.

    It runs on the event loop (no thread hop): the store answers a known
    credential from memory, so only a first sight of one reads the database.
    """

    async def check(request: Request) -> Credential:
        credential = caller(request)
        if credential is None:
            raise UnauthenticatedError("this call needs a credential")
        if credential.role not in roles:
            raise PermissionDeniedError(f"role {credential.role!r} may not make this call")
        return credential

    return check
