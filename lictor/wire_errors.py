"""Error codes on the wire: a `LictorError` to its HTTP status and back.

Errors travel as ``{"error": {"code": "...", "message": "..."}}``. The server
maps a `LictorError` to a status with `status_for`; a client maps a code back
to the same exception class with `error_for`, so callers catch one tree.
Nothing here needs more than the error tree, so a client (`lictor run`, the
CLI) reads errors without loading the body schemas of `lictor.wire`, which
re-exports all of this.
"""

from __future__ import annotations

from lictor import errors

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

_STATUS: dict[type[errors.LictorError], int] = {
    errors.InvalidRequestError: 400,
    errors.PayloadTooLargeError: 413,
    errors.UnauthenticatedError: 401,
    errors.PermissionDeniedError: 403,
    errors.NotFoundError: 404,
    errors.LogError: 400,
    errors.AuditError: 409,
    errors.ConflictError: 409,
    errors.InvalidTransitionError: 409,
    errors.UnavailableError: 503,
    errors.StoreError: 503,
    errors.SchemaError: 500,
}


def status_for(error: errors.LictorError) -> int:
    """The HTTP status for an error: the entry of its nearest listed class."""
    return status_of(type(error))


def status_of(error_class: type[errors.LictorError]) -> int:
    """The HTTP status for errors of a class: the entry of its nearest listed class."""
    for cls in error_class.__mro__:
        if cls in _STATUS:
            return _STATUS[cls]
    return 500


def _all_error_classes() -> dict[str, type[errors.LictorError]]:
    found: dict[str, type[errors.LictorError]] = {}
    pending: list[type[errors.LictorError]] = [errors.LictorError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


ERROR_CLASSES = _all_error_classes()


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_for(body: Any, status: int) -> errors.LictorError:
    """Rebuild the exception a server reported, from its JSON error body."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        return errors.LictorError(f"HTTP {status} without an error body")
    cls = ERROR_CLASSES.get(str(detail.get("code")), errors.LictorError)
    return cls(str(detail.get("message", "")))
