"""The execution lifecycle: every state against every transition, leases, expiry at read time."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lictor.core import lease
from lictor.core.lineage import child_fields, root_lineage
from lictor.core.types import (
    EntityRef,
    Execution,
    ExecutionState,
    Lease,
    Outcome,
    new_execution_id,
)
from lictor.errors import InvalidRequestError, InvalidTransitionError, LictorError

T0 = 1_700_000_000_000
TTL = lease.DEFAULT_TTL_MS
AGENT = EntityRef("Agent", "planner-7")
TOOL = EntityRef("Agent", "tool-1")
S = ExecutionState


def eid(n: int) -> str:
    return new_execution_id(0, n.to_bytes(10, "big"))


def requested(n: int = 1, parent: Execution | None = None, now: int = T0) -> Execution:
    principal = AGENT if parent is None else TOOL
    lineage = root_lineage(eid(n), principal) if parent is None else child_fields(parent, principal)
    return lease.request(
        execution_id=eid(n),
        principal=principal,
        action=EntityRef("Action", "deploy"),
        resource=EntityRef("Service", "payments"),
        context={"ticket": "CHG-1"},
        runtime_id="rt-1",
        lineage=lineage,
        now_ms=now,
    )


def active(n: int = 1, parent: Execution | None = None, now: int = T0, ttl: int = TTL) -> Execution:
    return lease.activate(requested(n, parent, now), now, "pv1", ttl, parent)


def test_request_builds_a_root() -> None:
    ex = requested()
    assert (ex.state, ex.version, ex.lease, ex.policy_version) == (S.REQUESTED, 1, None, None)
    assert (ex.parent_id, ex.root_id, ex.depth, ex.delegation) == (None, ex.id, 0, (AGENT,))
    assert ex.created_at_ms == T0


def test_request_copies_the_context() -> None:
    context: dict[str, object] = {"a": 1}
    ex = lease.request(
        execution_id=eid(9), principal=AGENT, action=AGENT, resource=AGENT,
        context=context, runtime_id=None, lineage=root_lineage(eid(9), AGENT), now_ms=T0,
    )  # fmt: skip
    context["a"] = 2
    assert ex.context == {"a": 1}


@pytest.mark.parametrize(
    "change",
    [
        {"root_id": eid(5)},
        {"depth": 1},
        {"delegation": (TOOL,)},
        {"delegation": (AGENT, AGENT)},
        {"parent_id": eid(5)},
        {"parent_id": eid(1), "depth": 1, "delegation": (AGENT, AGENT)},
    ],
)
def test_request_refuses_inconsistent_lineage(change: dict[str, object]) -> None:
    lineage = dataclasses.replace(root_lineage(eid(1), AGENT), **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        lease.request(
            execution_id=eid(1), principal=AGENT, action=AGENT, resource=AGENT,
            context={}, runtime_id=None, lineage=lineage, now_ms=T0,
        )  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        {"execution_id": "ex_1"},
        {"context": []},
        {"context": {1: 2}},
        {"runtime_id": ""},
        {"runtime_id": "a\n"},
    ],
)
def test_request_refuses_bad_fields(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "execution_id": eid(1), "principal": AGENT, "action": AGENT, "resource": AGENT,
        "context": {}, "runtime_id": None, "lineage": root_lineage(eid(1), AGENT), "now_ms": T0,
    }  # fmt: skip
    with pytest.raises(InvalidRequestError):
        lease.request(**(fields | bad))  # type: ignore[arg-type]


# ---- leases


def test_grant_lease_for_a_root() -> None:
    assert lease.grant_lease(T0, 9_000, None) == Lease(9_000, T0, T0 + 9_000, T0 + 3_000)


def test_child_lease_is_capped_by_the_parent() -> None:
    parent = active(ttl=10_000)
    child = lease.grant_lease(T0 + 4_000, 60_000, parent)
    assert child.expires_at_ms == T0 + 10_000
    assert child.renew_by_ms == T0 + 4_000 + 2_000  # a third of the capped span
    assert lease.grant_lease(T0 + 4_000, 5_000, parent).expires_at_ms == T0 + 9_000


@pytest.mark.parametrize(
    "parent",
    [
        requested(),
        lease.revoke(active(), T0 + 1, "r"),
        lease.complete(active(), T0 + 1, "succeeded"),
        active(ttl=1_000),  # passed at read time
    ],
)
def test_a_dead_parent_grants_no_lease(parent: Execution) -> None:
    with pytest.raises(InvalidTransitionError):
        lease.grant_lease(T0 + 1_000, TTL, parent)


@pytest.mark.parametrize("ttl", [0, 999, 3_600_001, -1, 1.5, True, "15000", None])
def test_ttl_bounds(ttl: object) -> None:
    with pytest.raises(InvalidRequestError):
        lease.grant_lease(T0, ttl, None)  # type: ignore[arg-type]


@pytest.mark.parametrize("ttl", [lease.MIN_TTL_MS, lease.MAX_TTL_MS])
def test_ttl_limits_are_inclusive(ttl: int) -> None:
    assert lease.grant_lease(T0, ttl, None).ttl_ms == ttl


def test_lease_is_live_until_its_expiry() -> None:
    ex = active(ttl=5_000)
    assert lease.effective_state(ex, T0 + 4_999) is S.ACTIVE
    assert lease.effective_state(ex, T0 + 5_000) is S.EXPIRED
    assert lease.effective_state(ex, T0 + 10**9) is S.EXPIRED
    assert ex.state is S.ACTIVE  # read-time view; nothing stored changed


def test_other_states_are_read_as_stored() -> None:
    ex = lease.revoke(active(ttl=5_000), T0 + 1, "r")
    assert lease.effective_state(ex, T0 + 10**9) is S.REVOKED
    assert lease.effective_state(requested(), T0 + 10**9) is S.REQUESTED


# ---- the transition table: every state x every operation

LIVE = T0 + 1_000  # time at which operations run; "active/passed" has a 1 s lease
STATES: dict[str, Callable[[], Execution]] = {
    "requested": requested,
    "active": active,
    "active/passed": lambda: active(ttl=1_000),
    "completed": lambda: lease.complete(active(), T0 + 1, Outcome.SUCCEEDED, 0),
    "denied": lambda: lease.deny(requested(), T0 + 1, "no policy permits"),
    "revoked": lambda: lease.revoke(active(), T0 + 1, "operator"),
    "expired": lambda: lease.expire(active(ttl=1_000), T0 + 1_000),
}
OPERATIONS: dict[str, Callable[[Execution], Execution]] = {
    "activate": lambda ex: lease.activate(ex, LIVE, "pv2"),
    "deny": lambda ex: lease.deny(ex, LIVE, "forbidden", "pv2"),
    "renew": lambda ex: lease.renew(ex, LIVE, TTL),
    "complete": lambda ex: lease.complete(ex, LIVE, "failed", 3),
    "revoke": lambda ex: lease.revoke(ex, LIVE, "operator"),
    "expire": lambda ex: lease.expire(ex, LIVE),
}
ALLOWED = {
    ("requested", "activate"): S.ACTIVE,
    ("requested", "deny"): S.DENIED,
    ("requested", "revoke"): S.REVOKED,
    ("active", "renew"): S.ACTIVE,
    ("active", "complete"): S.COMPLETED,
    ("active", "revoke"): S.REVOKED,
    ("active/passed", "expire"): S.EXPIRED,
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("operation", OPERATIONS)
def test_transition_table(state: str, operation: str) -> None:
    before = STATES[state]()
    expected = ALLOWED.get((state, operation))
    if expected is None:
        with pytest.raises(InvalidTransitionError):
            OPERATIONS[operation](before)
        return
    after = OPERATIONS[operation](before)
    assert after.state is expected
    assert after.version == before.version + 1
    assert (after.id, after.principal, after.root_id) == (
        before.id,
        before.principal,
        before.root_id,
    )
    assert after.ended_at_ms is None if expected is S.ACTIVE else after.ended_at_ms is not None


def test_every_state_is_in_the_table() -> None:
    assert {s.split("/")[0] for s in STATES} == {s.value for s in ExecutionState}


def test_activate_sets_lease_and_policy_version() -> None:
    ex = lease.activate(requested(), T0, "pv9", 6_000)
    assert ex.lease == Lease(6_000, T0, T0 + 6_000, T0 + 2_000)
    assert ex.policy_version == "pv9"


@pytest.mark.parametrize("version", ["", None, "x" * 129, 7])
def test_activate_needs_a_policy_version(version: object) -> None:
    with pytest.raises(InvalidRequestError):
        lease.activate(requested(), T0, version)  # type: ignore[arg-type]


def test_deny_records_reason_and_version() -> None:
    ex = lease.deny(requested(), T0 + 5, "no_permit", "pv3")
    assert (ex.reason, ex.policy_version, ex.ended_at_ms, ex.lease) == (
        "no_permit",
        "pv3",
        T0 + 5,
        None,
    )
    assert lease.deny(requested(), T0, "unknown principal").policy_version is None


def test_renew_moves_the_lease_forward() -> None:
    ex = lease.renew(active(ttl=6_000), T0 + 3_000, 6_000, policy_version="pv2")
    assert ex.lease == Lease(6_000, T0 + 3_000, T0 + 9_000, T0 + 5_000)
    assert ex.policy_version == "pv2"
    assert lease.renew(ex, T0 + 4_000, 6_000).policy_version == "pv2"


def test_renew_never_moves_the_expiry_earlier() -> None:
    ex = lease.renew(active(ttl=60_000), T0 + 1_000, 1_000)
    assert ex.lease is not None
    assert ex.lease.expires_at_ms == T0 + 60_000
    assert ex.lease.ttl_ms == 1_000


def test_renewing_an_expired_lease_is_refused() -> None:
    ex = active(ttl=2_000)
    assert lease.renew(ex, T0 + 1_999).lease is not None
    with pytest.raises(InvalidTransitionError, match="expired"):
        lease.renew(ex, T0 + 2_000)


def test_child_renewal_is_capped_by_the_parent() -> None:
    parent = active(ttl=10_000)
    child = active(2, parent, now=T0 + 1_000, ttl=5_000)
    renewed = lease.renew(child, T0 + 5_500, 5_000, parent)
    assert renewed.lease is not None and renewed.lease.expires_at_ms == T0 + 10_000
    parent = lease.renew(parent, T0 + 8_000, 10_000)
    renewed = lease.renew(renewed, T0 + 9_000, 5_000, parent)
    assert renewed.lease is not None and renewed.lease.expires_at_ms == T0 + 14_000


def test_a_child_needs_its_own_parent() -> None:
    parent = active()
    child = active(2, parent)
    with pytest.raises(InvalidRequestError):
        lease.renew(child, T0 + 1, TTL)  # parent left out
    with pytest.raises(InvalidRequestError):
        lease.renew(child, T0 + 1, TTL, active(3))  # someone else's
    with pytest.raises(InvalidRequestError):
        lease.renew(parent, T0 + 1, TTL, child)  # a root has none
    with pytest.raises(InvalidRequestError):
        lease.activate(requested(2, parent), T0, "pv1")


def test_a_child_of_a_revoked_parent_cannot_renew() -> None:
    parent = active()
    child = active(2, parent)
    with pytest.raises(InvalidTransitionError):
        lease.renew(child, T0 + 1, TTL, lease.revoke(parent, T0 + 1, "r"))


def test_complete_records_outcome() -> None:
    ex = lease.complete(active(), T0 + 7, "failed", -9)
    assert (ex.outcome, ex.exit_code, ex.ended_at_ms) == (Outcome.FAILED, -9, T0 + 7)
    assert lease.complete(active(), T0, Outcome.CANCELLED).exit_code is None


@pytest.mark.parametrize(
    ("outcome", "code"),
    [
        ("ok", 0),
        ("", 0),
        ("succeeded", 1.0),
        ("succeeded", True),
        ("failed", 2**32),
        ("failed", -(2**31) - 1),
    ],
)
def test_complete_validates(outcome: str, code: object) -> None:
    with pytest.raises(InvalidRequestError):
        lease.complete(active(), T0, outcome, code)  # type: ignore[arg-type]


@pytest.mark.parametrize("reason", ["", "x" * 257, "line\nbreak", None, 3])
def test_reasons_are_validated(reason: object) -> None:
    with pytest.raises(InvalidRequestError):
        lease.revoke(active(), T0, reason)  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError):
        lease.deny(requested(), T0, reason)  # type: ignore[arg-type]


def test_expire_waits_for_the_lease() -> None:
    ex = active(ttl=2_000)
    with pytest.raises(InvalidTransitionError):
        lease.expire(ex, T0 + 1_999)
    expired = lease.expire(ex, T0 + 50_000)
    assert (expired.ended_at_ms, expired.reason) == (T0 + 2_000, lease.EXPIRED_REASON)


@pytest.mark.parametrize("now", [-1, 1.0, None])
def test_time_is_validated(now: object) -> None:
    with pytest.raises(InvalidRequestError):
        lease.revoke(active(), now, "r")  # type: ignore[arg-type]


# ---- properties over random histories

STEP = st.tuples(
    st.sampled_from(["renew", "renew_parent", "complete", "revoke", "expire", "expire_parent"]),
    st.integers(0, 20_000),
    st.integers(lease.MIN_TTL_MS, 30_000),
)


@given(st.lists(STEP, max_size=30))
def test_random_histories_keep_the_invariants(steps: list[tuple[str, int, int]]) -> None:
    now = T0
    parent = active(ttl=20_000)
    child = active(2, parent, ttl=20_000)
    for op, dt, ttl in steps:
        now += dt
        parent, child = _apply(op, parent, child, now, ttl)
        assert child.lease is not None and parent.lease is not None
        assert child.lease.expires_at_ms <= parent.lease.expires_at_ms
        if lease.effective_state(child, now) is S.ACTIVE:
            assert lease.effective_state(parent, now) is S.ACTIVE


def _apply(
    op: str, parent: Execution, child: Execution, now: int, ttl: int
) -> tuple[Execution, Execution]:
    target = parent if op.endswith("_parent") else child
    action: dict[str, Callable[[], Execution]] = {
        "renew": lambda: lease.renew(child, now, ttl, parent),
        "renew_parent": lambda: lease.renew(parent, now, ttl),
        "complete": lambda: lease.complete(child, now, "succeeded"),
        "revoke": lambda: lease.revoke(child, now, "r"),
        "expire": lambda: lease.expire(child, now),
        "expire_parent": lambda: lease.expire(parent, now),
    }
    try:
        after = action[op]()
    except LictorError:
        return parent, child
    assert not lease.effective_state(target, now).is_terminal or op.startswith("expire")
    assert not target.state.is_terminal
    assert after.version == target.version + 1
    return (after, child) if target is parent else (parent, after)
