"""One error tree on both sides of HTTP: code -> status -> code -> same class."""

from __future__ import annotations

import pytest

from lictor import errors
from lictor.wire import ERROR_CLASSES, error_body, error_for, status_for


def test_every_error_class_has_a_unique_code() -> None:
    codes = [cls.code for cls in ERROR_CLASSES.values()]
    assert len(codes) == len(set(codes))
    assert ERROR_CLASSES["invalid_tree_range"] is errors.TreeError


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InvalidRequestError("x"), 400),
        (errors.EntryError("x"), 400),
        (errors.PayloadTooLargeError("x"), 413),
        (errors.UnauthenticatedError("x"), 401),
        (errors.PermissionDeniedError("x"), 403),
        (errors.NotFoundError("x"), 404),
        (errors.TreeError("x"), 400),
        (errors.SignatureError("x"), 400),
        (errors.ConflictError("x"), 409),
        (errors.InvalidTransitionError("x"), 409),
        (errors.LeaseExpiredError("x"), 409),
        (errors.GrantError("x"), 401),
        (errors.DepthExceededError("x"), 400),
        (errors.StoreError("x"), 503),
        (errors.LictorError("x"), 500),
    ],
)
def test_errors_round_trip_through_the_wire(error: errors.LictorError, status: int) -> None:
    assert status_for(error) == status
    back = error_for(error_body(error.code, error.message), status)
    assert type(back) is type(error)
    assert back.message == "x"


def test_unknown_or_missing_error_bodies_become_the_root_error() -> None:
    assert type(error_for({"error": {"code": "no_such_code"}}, 418)) is errors.LictorError
    assert "HTTP 502" in error_for("not json", 502).message
