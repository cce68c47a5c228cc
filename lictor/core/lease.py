"""The execution lifecycle (DESIGN.md §2) as pure transitions, each taking ``now_ms``.

No I/O, no clock: the caller passes the time in milliseconds since the epoch
and stores what comes back (comparing and swapping on ``version``).

    requested ──deny──▶ denied
    requested ──activate─▶ active ──complete──▶ completed
                             ├──renew──▶ active (a new lease)
                             ├──revoke──▶ revoked   (also from requested)
                             └──expire──▶ expired   (only once the lease has passed)

Guarantees:

- Every transition returns a new `Execution` with ``version + 1``, or raises;
  nothing is ever half-applied.
- Terminal states never change: any transition from one raises `ConflictError`.
- An active execution whose lease has passed is expired at read time
  (`effective_state`), whether or not `expire` has been stored yet; renewing,
  completing or revoking it raises `ConflictError`, and only `expire` applies.
- A child's lease never outlives its parent's: `grant_lease` caps it at the
  parent's expiry and refuses a parent that is not effectively active. A
  renewal never moves a lease's expiry earlier, so a parent's expiry only
  grows and every child granted under it stays within it.
- TTLs are whole milliseconds in [`MIN_TTL_MS`, `MAX_TTL_MS`]; a capped lease
  may be shorter than `MIN_TTL_MS`. Reasons are 1..`MAX_REASON_LENGTH`
  printable characters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lictor.core.types import (
    EntityRef,
    Execution,
    ExecutionState,
    Lease,
    Lineage,
    Outcome,
    changed,
    check_execution_id,
    check_label,
    check_time_ms,
)
from lictor.errors import (
    InvalidRequestError,
    InvalidTransitionError,
    LeaseExpiredError,
    ParentNotActiveError,
)

DEFAULT_TTL_MS = 15_000
MIN_TTL_MS = 1_000
MAX_TTL_MS = 3_600_000
MAX_REASON_LENGTH = 256
MAX_POLICY_VERSION_LENGTH = 128
MAX_RUNTIME_ID_LENGTH = 128
MIN_EXIT_CODE = -(2**31)
MAX_EXIT_CODE = 2**32 - 1
EXPIRED_REASON = "lease_expired"

_State = ExecutionState


def check_ttl(ttl_ms: object) -> int:
    """``ttl_ms`` if it is an integer in [`MIN_TTL_MS`, `MAX_TTL_MS`]."""
    if type(ttl_ms) is not int or not MIN_TTL_MS <= ttl_ms <= MAX_TTL_MS:
        raise InvalidRequestError(f"ttl_ms must be an integer in [{MIN_TTL_MS}, {MAX_TTL_MS}]")
    return ttl_ms


def check_reason(reason: object) -> str:
    """``reason`` if it is 1..`MAX_REASON_LENGTH` characters with no control characters."""
    return check_label(reason, "reason", MAX_REASON_LENGTH)


def _check_policy_version(version: object) -> str:
    return check_label(version, "policy version", MAX_POLICY_VERSION_LENGTH)


def effective_state(execution: Execution, now_ms: int) -> ExecutionState:
    """The state as of ``now_ms``: an active execution past its lease is expired."""
    if execution.state is _State.ACTIVE and not _lease_live(execution, now_ms):
        return _State.EXPIRED
    return execution.state


def _lease_live(execution: Execution, now_ms: int) -> bool:
    return execution.lease is not None and execution.lease.is_live(now_ms)


def grant_lease(now_ms: int, ttl_ms: int, parent: Execution | None) -> Lease:
    """A lease from ``now_ms`` for ``ttl_ms``, capped at a live parent's expiry."""
    check_time_ms(now_ms, "now_ms")
    expires = now_ms + check_ttl(ttl_ms)
    if parent is not None:
        if effective_state(parent, now_ms) is not _State.ACTIVE or parent.lease is None:
            raise ParentNotActiveError(f"parent {parent.id} is not active")
        expires = min(expires, parent.lease.expires_at_ms)
    return _lease(ttl_ms, now_ms, expires)


def _lease(ttl_ms: int, issued_ms: int, expires_ms: int) -> Lease:
    return Lease(ttl_ms, issued_ms, expires_ms, issued_ms + (expires_ms - issued_ms) // 3)


def request(
    *,
    execution_id: str,
    principal: EntityRef,
    action: EntityRef,
    resource: EntityRef,
    context: Mapping[str, object],
    runtime_id: str | None,
    lineage: Lineage,
    now_ms: int,
) -> Execution:
    """A new execution in ``requested`` state, version 1, with no lease yet."""
    _check_lineage(check_execution_id(execution_id), principal, lineage)
    if not isinstance(context, Mapping) or not all(isinstance(k, str) for k in context):
        raise InvalidRequestError("context must be an object with string keys")
    if runtime_id is not None:
        check_label(runtime_id, "runtime id", MAX_RUNTIME_ID_LENGTH)
    return Execution(
        id=execution_id,
        principal=principal,
        action=action,
        resource=resource,
        context=dict(context),
        runtime_id=runtime_id,
        parent_id=lineage.parent_id,
        root_id=lineage.root_id,
        depth=lineage.depth,
        delegation=lineage.delegation,
        state=_State.REQUESTED,
        policy_version=None,
        lease=None,
        created_at_ms=check_time_ms(now_ms, "now_ms"),
    )


def _check_lineage(execution_id: str, principal: EntityRef, lineage: Lineage) -> None:
    is_root = lineage.parent_id is None
    consistent = (
        len(lineage.delegation) == lineage.depth + 1
        and lineage.delegation[-1] == principal
        and (lineage.depth == 0) == is_root
        and (lineage.root_id == execution_id) == is_root
        and lineage.parent_id != execution_id
    )
    if not consistent:
        raise InvalidRequestError("lineage does not fit this execution and principal")


def _require(execution: Execution, now_ms: int, allowed: tuple[ExecutionState, ...]) -> None:
    check_time_ms(now_ms, "now_ms")
    state = effective_state(execution, now_ms)
    if state not in allowed:
        error = LeaseExpiredError if state is _State.EXPIRED else InvalidTransitionError
        raise error(f"execution {execution.id} is {state}")


def _check_parent(execution: Execution, parent: Execution | None) -> None:
    parent_id = None if parent is None else parent.id
    if parent_id != execution.parent_id:
        raise InvalidRequestError(f"execution {execution.id} needs its own parent, not {parent_id}")


def _next(execution: Execution, **changes: Any) -> Execution:
    return changed(execution, version=execution.version + 1, **changes)


def activate(
    execution: Execution,
    now_ms: int,
    policy_version: str,
    ttl_ms: int = DEFAULT_TTL_MS,
    parent: Execution | None = None,
) -> Execution:
    """requested → active: the decision allowed; the first lease starts now."""
    _require(execution, now_ms, (_State.REQUESTED,))
    _check_parent(execution, parent)
    lease = grant_lease(now_ms, ttl_ms, parent)
    version = _check_policy_version(policy_version)
    return _next(execution, state=_State.ACTIVE, lease=lease, policy_version=version)


def deny(
    execution: Execution, now_ms: int, reason: str, policy_version: str | None = None
) -> Execution:
    """requested → denied, with the decision's reason (and policy version, if any)."""
    _require(execution, now_ms, (_State.REQUESTED,))
    version = None if policy_version is None else _check_policy_version(policy_version)
    changes = {"reason": check_reason(reason), "policy_version": version}
    return _next(execution, state=_State.DENIED, ended_at_ms=now_ms, **changes)


def renew(
    execution: Execution,
    now_ms: int,
    ttl_ms: int = DEFAULT_TTL_MS,
    parent: Execution | None = None,
    policy_version: str | None = None,
) -> Execution:
    """active → active with a new lease from now; never moves the expiry earlier.

    ``policy_version`` records the version the renewal re-verified against;
    None keeps the current one.
    """
    _require(execution, now_ms, (_State.ACTIVE,))
    _check_parent(execution, parent)
    fresh = grant_lease(now_ms, ttl_ms, parent)
    assert execution.lease is not None  # an effectively active execution has one
    expires = max(fresh.expires_at_ms, execution.lease.expires_at_ms)
    version = execution.policy_version
    if policy_version is not None:
        version = _check_policy_version(policy_version)
    return _next(execution, lease=_lease(ttl_ms, now_ms, expires), policy_version=version)


def complete(
    execution: Execution, now_ms: int, outcome: Outcome | str, exit_code: int | None = None
) -> Execution:
    """active → completed, with the outcome and exit code the enforcement point reports."""
    _require(execution, now_ms, (_State.ACTIVE,))
    if exit_code is not None and (
        type(exit_code) is not int or not MIN_EXIT_CODE <= exit_code <= MAX_EXIT_CODE
    ):
        raise InvalidRequestError(f"exit code must be an integer in [{MIN_EXIT_CODE}, 2^32)")
    result = _outcome(outcome)
    return _next(
        execution, state=_State.COMPLETED, ended_at_ms=now_ms, outcome=result, exit_code=exit_code
    )


def _outcome(value: str) -> Outcome:
    try:
        return Outcome(value)
    except ValueError as e:
        choices = ", ".join(o.value for o in Outcome)
        raise InvalidRequestError(f"outcome must be one of {choices}") from e


def revoke(execution: Execution, now_ms: int, reason: str) -> Execution:
    """requested or active → revoked: authority ends now, for ``reason``."""
    _require(execution, now_ms, (_State.REQUESTED, _State.ACTIVE))
    return _next(execution, state=_State.REVOKED, ended_at_ms=now_ms, reason=check_reason(reason))


def expire(execution: Execution, now_ms: int) -> Execution:
    """active (lease passed) → expired; ``ended_at_ms`` is when the lease ran out."""
    _require(execution, now_ms, (_State.EXPIRED,))
    if execution.state is not _State.ACTIVE or execution.lease is None:
        raise InvalidTransitionError(f"execution {execution.id} is {execution.state}")
    ended = execution.lease.expires_at_ms
    return _next(execution, state=_State.EXPIRED, ended_at_ms=ended, reason=EXPIRED_REASON)
