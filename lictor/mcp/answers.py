"""What the gateway tells an MCP client when Lictor stops a request, and what it
commits to when a request ends.

Pure: no I/O. A stopped ``tools/call`` is a `CallToolResult` with
``isError: true`` (MCP's way of telling the model a call failed), so an agent
reads why and can go on; a stopped ``resources/read`` or ``prompts/get`` is a
JSON-RPC error, since those results have no error flag. Every answer names
the reason code, the reasons, and the log index of the decision when there is
one, so what the client reads can be checked against the log.

JSON-RPC codes, in the range JSON-RPC leaves to servers and unused by MCP:

- `DENIED` (-32003): no grant: the policy denied, the control plane could
  not be reached or could not decide, or the gateway has no session.
- `REVOKED` (-32004): the grant was lost while the request ran (revoked,
  or its lease could not be renewed), or the control plane refused the
  request for another reason (e.g. the session no longer active).
- `UNAVAILABLE` (-32005): a list (``tools/list``, ``resources/list``,
  ``prompts/list``) could not be filtered (the control plane could not be
  reached, or did not answer), and a list is never shown unfiltered.

Their ``data`` is ``{"lictor": {"reason_code", "reasons", "log_index",
"execution", "receipt"}}``. A refused tool call carries the deny's execution
id and receipt in its ``_meta`` (`EXECUTION_KEY`, `RECEIPT_KEY`), as an
allowed one does (`lictor.mcp.calls`): a client can prove either to an
auditor with nothing but the log's key.

A result's hash is ``sha256:<hex>`` of the RFC 8785 canonical JSON of the
upstream's result as the ``mcp`` SDK serializes it (MCP's camelCase member
names, unset members left out), or of its JSON-RPC error object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

from lictor.errors import DeniedError, LictorError, UnavailableError
from lictor.log.entry import canonical_json

DENIED = -32003
REVOKED = -32004
UNAVAILABLE = -32005
DEFINITION_CHANGED = "definition_changed"
EXECUTION_KEY = "lictor/execution"
RECEIPT_KEY = "lictor/receipt"


@dataclass(frozen=True)
class Relayed:
    """A tool's result both as the upstream wrote it (``wire``, what the client is
    sent) and as the SDK reads it (``model``, what its outcome and hash are of)."""

    wire: dict[str, Any]
    model: types.CallToolResult


def wire(model: BaseModel) -> dict[str, Any]:
    """``model`` as MCP writes it: camelCase members, unset ones left out."""
    value: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return value


def result_hash(value: BaseModel | dict[str, Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a result (or error) as sent."""
    data = canonical_json(wire(value) if isinstance(value, BaseModel) else value)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def error_hash(error: MCPError) -> str:
    """The hash of a JSON-RPC error the upstream answered with."""
    return result_hash(wire(error.error))


def log_index(error: DeniedError) -> int | None:
    index = (error.receipt or {}).get("index")
    return index if isinstance(index, int) else None


def execution_id(error: DeniedError) -> str | None:
    value = (error.execution or {}).get("id") or ((error.receipt or {}).get("entry") or {}).get(
        "execution"
    )
    return str(value) if value is not None else None


def pin_errors(error: DeniedError) -> tuple[str, ...]:
    """What the control plane said of a ``definition_changed`` denial (e.g. that the tool
    was never reported), from the decision its receipt carries; () for other denials,
    whose decision errors may quote arguments."""
    if error.reason_code != DEFINITION_CHANGED:
        return ()
    decision = ((error.receipt or {}).get("event") or {}).get("decision") or {}
    errors = decision.get("errors") if isinstance(decision, dict) else None
    return tuple(str(e) for e in errors) if isinstance(errors, list) else ()


def denial_text(subject: str, error: DeniedError) -> str:
    """Why ``subject`` (e.g. ``tool time/get_current_time``) was not allowed."""
    index = log_index(error)
    if index is None:
        return f"Lictor did not allow {subject}: {error.reason_code}: {error.message}"
    reasons = "".join(f"; {reason}" for reason in (*error.reasons, *pin_errors(error)))
    where = f"log index {index}, execution {execution_id(error)}"
    return f"Lictor denied {subject}: {error.reason_code}{reasons} ({where})"


def refusal_text(subject: str, error: LictorError) -> str:
    """Why ``subject`` was not allowed (`DeniedError`) or stopped while it ran."""
    if isinstance(error, DeniedError):
        return denial_text(subject, error)
    return f"Lictor stopped {subject}: {error.code}: {error.message}"


def denial_data(error: DeniedError) -> dict[str, Any]:
    return {
        "lictor": {
            "reason_code": error.reason_code,
            "reasons": list(error.reasons),
            "log_index": log_index(error),
            "execution": execution_id(error),
            "receipt": error.receipt,
        }
    }


def error_result(text: str, error: LictorError | None = None) -> types.CallToolResult:
    """A tool result that tells the model the call failed, and why; a deny's
    execution and receipt go in its ``_meta``."""
    meta = None
    if isinstance(error, DeniedError) and error.receipt is not None:
        meta = {EXECUTION_KEY: execution_id(error), RECEIPT_KEY: error.receipt}
    content: list[types.ContentBlock] = [types.TextContent(type="text", text=text)]
    return types.CallToolResult(content=content, is_error=True, _meta=meta)


def refusal_error(subject: str, error: LictorError) -> MCPError:
    """The JSON-RPC error for a read or prompt that was denied or stopped."""
    if isinstance(error, DeniedError):
        return MCPError(DENIED, denial_text(subject, error), denial_data(error))
    data = {"lictor": {"reason_code": error.code, "reasons": [error.message]}}
    return MCPError(REVOKED, refusal_text(subject, error), data)


def unavailable_error(what: str, error: LictorError) -> MCPError:
    """The JSON-RPC error for a list that could not be filtered."""
    if isinstance(error, UnavailableError):
        why = f"the control plane cannot be reached: {error.message}"
    else:
        why = f"the control plane could not say which are allowed: {error.code}: {error.message}"
    message = f"Lictor cannot list {what} (it never lists them unfiltered): {why}"
    data = {"lictor": {"reason_code": error.code, "reasons": [error.message]}}
    return MCPError(UNAVAILABLE, message, data)
