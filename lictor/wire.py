"""Wire shapes shared by server and clients: error codes, their HTTP statuses, and bodies.

Errors travel as ``{"error": {"code": "...", "message": "..."}}``. The server
maps a `LictorError` to a status with `status_for`; a client maps a code back
to the same exception class with `error_for`, so callers catch one tree.
Those live in `lictor.wire_errors` (no schema library: clients load that
alone) and are re-exported here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol

import msgspec

from lictor.core.lease import MAX_EXIT_CODE, MAX_TTL_MS, MIN_EXIT_CODE, MIN_TTL_MS
from lictor.wire_errors import ERROR_CLASSES as ERROR_CLASSES  # re-exported, as below
from lictor.wire_errors import error_body as error_body
from lictor.wire_errors import error_for as error_for
from lictor.wire_errors import status_for as status_for
from lictor.wire_errors import status_of as status_of

MAX_BATCH = 256  # renewals or completions in one call

# -- the bodies of the calls on every execution's path, as typed structures ---------------
# The server reads them with msgspec (`lictor.server.hot`); their bounds are those of the
# API description (`lictor.server.executions_api`), which a test holds them to.

Sha256 = Annotated[str, msgspec.Meta(pattern=r"^sha256:[0-9a-f]{64}\Z")]  # \Z: no newline
TtlSeconds = Annotated[int, msgspec.Meta(ge=MIN_TTL_MS // 1000, le=MAX_TTL_MS // 1000)]
ExitCode = Annotated[int, msgspec.Meta(ge=MIN_EXIT_CODE, le=MAX_EXIT_CODE)]


class RefBody(msgspec.Struct, forbid_unknown_fields=True):
    """An entity as a JSON object (the other form is the ``Type::"id"`` text)."""

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=512)]


class ExecutionRequestBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/executions``."""

    principal: RefBody | str
    action: RefBody | str
    resource: RefBody | str
    context: dict[str, Any] = msgspec.field(default_factory=dict)
    parent_grant: Annotated[str, msgspec.Meta(max_length=8192)] | None = None
    ttl: TtlSeconds | None = None
    definition: Sha256 | None = None


class RenewBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/executions/{id}/renew``."""

    ttl: TtlSeconds | None = None


class RenewalBody(msgspec.Struct, forbid_unknown_fields=True):
    """One renewal of ``POST /v1/executions/renewals``."""

    execution: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    ttl: TtlSeconds | None = None
    grant: bool = False


class RenewalsBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/executions/renewals``: a runtime's heartbeat for what it holds."""

    renewals: Annotated[list[RenewalBody], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]


class CompleteBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/executions/{id}/complete``."""

    outcome: Literal["succeeded", "failed", "cancelled"]
    exit_code: ExitCode | None = None
    summary: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    result_hash: Sha256 | None = None


class CompletionBody(CompleteBody, forbid_unknown_fields=True, kw_only=True):
    """One completion of ``POST /v1/executions/completions``."""

    execution: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class CompletionsBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/executions/completions``: several ends, committed together; ``brief``
    asks for each answered with its execution's id, state and outcome and its log index
    only."""

    completions: Annotated[list[CompletionBody], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    brief: bool = False


class TypedRef(Protocol):
    """An entity as a body's object form reads it (msgspec's `RefBody`, or pydantic's)."""

    type: str
    id: str


def ref_value(ref: TypedRef | str) -> dict[str, str] | str:
    """An entity of a body in the form `lictor.core.types.EntityRef.from_wire` reads."""
    return ref if isinstance(ref, str) else {"type": ref.type, "id": ref.id}
