"""The one exception tree of Lictor.

Every error carries a stable string ``code``; `lictor.wire` maps codes to HTTP
statuses on the server and back to these classes in clients, so a caller
catches the same exception locally or over HTTP.

    LictorError                      internal
    ├── InvalidRequestError          invalid_request
    │   ├── EntryError               invalid_entry
    │   └── PayloadTooLargeError     payload_too_large
    ├── NotFoundError                not_found
    │   └── DepthExceededError       depth_exceeded
    ├── UnauthenticatedError         unauthenticated
    │   ├── GrantError               invalid_grant
    │   ├── CredentialRevokedError   credential_revoked (or rotated, or its runtime revoked)
    │   └── CredentialExpiredError   credential_expired
    ├── PermissionDeniedError        permission_denied
    │   └── DeniedError              denied (no grant: a deny, or no answer)
    ├── InvalidTransitionError       invalid_transition
    │   ├── LeaseExpiredError        lease_expired
    │   │   └── LeaseLostError       lease_lost (no renewal before the local deadline)
    │   ├── ExecutionRevokedError    revoked (the control plane ended the execution)
    │   └── ParentNotActiveError     parent_not_active
    ├── LogError                     log_error
    │   ├── TreeError                invalid_tree_range
    │   ├── ProofError               invalid_proof
    │   ├── NoteError                invalid_note
    │   │   ├── KeyFormatError       invalid_key
    │   │   └── SignatureError       bad_signature
    │   ├── CheckpointError          invalid_checkpoint
    │   └── TileError                invalid_tile
    ├── AuditError                   audit_failed
    ├── UnavailableError             unavailable
    └── StoreError                   store_error
        ├── ConflictError            conflict
        │   └── LastAdminError       last_admin (the change would leave no live admin)
        └── SchemaError              unknown_schema
"""

from __future__ import annotations

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any


class LictorError(Exception):
    """Root of every error Lictor raises on purpose."""

    code = "internal"

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class InvalidRequestError(LictorError):
    """The caller's input is malformed or out of range."""

    code = "invalid_request"


class EntryError(InvalidRequestError):
    """A log entry is not canonical JSON, or is too large."""

    code = "invalid_entry"


class PayloadTooLargeError(InvalidRequestError):
    """A request body exceeds the server's limit."""

    code = "payload_too_large"


class NotFoundError(LictorError):
    """The named thing does not exist (yet)."""

    code = "not_found"


class DepthExceededError(InvalidRequestError):
    """A child would be deeper than the lineage allows."""

    code = "depth_exceeded"


class UnauthenticatedError(LictorError):
    """No credential, or an unknown one."""

    code = "unauthenticated"


class GrantError(UnauthenticatedError):
    """A grant is malformed, forged, from another issuer or expired."""

    code = "invalid_grant"


class CredentialRevokedError(UnauthenticatedError):
    """The credential was revoked, rotated out, or belongs to a revoked runtime."""

    code = "credential_revoked"


class CredentialExpiredError(UnauthenticatedError):
    """The credential's expiry has passed."""

    code = "credential_expired"


class InvalidTransitionError(LictorError):
    """The execution's state does not allow this transition (terminal states never change)."""

    code = "invalid_transition"


class LeaseExpiredError(InvalidTransitionError):
    """The execution's lease has passed: it is expired, whatever the store says."""

    code = "lease_expired"


class ParentNotActiveError(InvalidTransitionError):
    """A child needs a live parent."""

    code = "parent_not_active"


class PermissionDeniedError(LictorError):
    """The credential's role does not allow the call."""

    code = "permission_denied"


class LogError(LictorError):
    """Anything wrong with transparency-log data."""

    code = "log_error"


class TreeError(LogError):
    """A tree size, index or stored-hash request is out of range."""

    code = "invalid_tree_range"


class ProofError(LogError):
    """An inclusion or consistency proof does not verify or is malformed."""

    code = "invalid_proof"


class NoteError(LogError):
    """A signed note is malformed or does not verify."""

    code = "invalid_note"


class KeyFormatError(NoteError):
    """A signer or verifier key string is malformed."""

    code = "invalid_key"


class SignatureError(NoteError):
    """No trusted signature verifies, or a known key's signature fails."""

    code = "bad_signature"


class CheckpointError(LogError):
    """A checkpoint body is malformed."""

    code = "invalid_checkpoint"


class TileError(LogError):
    """A tile path or tile body is malformed or inconsistent."""

    code = "invalid_tile"


class AuditError(LictorError):
    """An audit found the log inconsistent with itself or with earlier state."""

    code = "audit_failed"


class UnavailableError(LictorError):
    """A dependency (server, database) could not be reached."""

    code = "unavailable"


class StoreError(LictorError):
    """The store failed; nothing was written."""

    code = "store_error"


class ConflictError(StoreError):
    """A compare-and-swap lost: someone else moved the head first."""

    code = "conflict"


class LastAdminError(ConflictError):
    """Refused: the change would leave no live admin credential (no one could govern)."""

    code = "last_admin"


class SchemaError(StoreError):
    """The database schema is one this version does not know."""

    code = "unknown_schema"


class DeniedError(PermissionDeniedError):
    """The execution was not granted; the work must not start."""

    code = "denied"

    def __init__(
        self,
        message: str,
        reason_code: str = "",
        reasons: tuple[str, ...] = (),
        receipt: dict[str, Any] | None = None,
        execution: dict[str, Any] | None = None,
        errors: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.reason_code = reason_code
        self.reasons = reasons
        self.receipt = receipt
        self.execution = execution
        self.errors = errors

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> DeniedError:
        """The error for a 403 ``denied`` reply: its decision, execution and receipt."""
        decision = reply.get("decision") or {}
        message = str((reply.get("error") or {}).get("message") or "denied")
        return cls(
            message,
            str(decision.get("reason_code") or "denied"),
            tuple(str(r) for r in decision.get("reasons") or ()),
            reply.get("receipt"),
            reply.get("execution"),
            tuple(str(e) for e in decision.get("errors") or ()),
        )


class ExecutionRevokedError(InvalidTransitionError):
    """The control plane revoked the execution (or it ended otherwise); stop the work."""

    code = "revoked"


class LeaseLostError(LeaseExpiredError):
    """No renewal succeeded before the local deadline; the lease must be taken as gone."""

    code = "lease_lost"
