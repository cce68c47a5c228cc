"""The execution tree: live parents, depth, inheritance, descendants and cascading revokes."""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.core import lease, lineage
from lictor.core.types import (
    EntityRef,
    Execution,
    ExecutionState,
    Lease,
    Lineage,
    new_execution_id,
)
from lictor.errors import InvalidRequestError, InvalidTransitionError

T0 = 1_700_000_000_000
S = ExecutionState
AGENT = EntityRef("Agent", "planner-7")


def eid(n: int) -> str:
    return new_execution_id(0, n.to_bytes(10, "big"))


def node(
    n: int, parent: Execution | None = None, state: S = S.ACTIVE, created: int = T0
) -> Execution:
    """An execution built directly (any state), lease live until T0 + 60 s unless expired."""
    principal = EntityRef("Agent", f"a{n}")
    lin = (
        lineage.root_lineage(eid(n), principal)
        if parent is None
        else lineage.child_fields(parent, principal)
    )
    ex = lease.request(
        execution_id=eid(n), principal=principal, action=AGENT, resource=AGENT,
        context={}, runtime_id=None, lineage=lin, now_ms=created,
    )  # fmt: skip
    if state is S.REQUESTED:
        return ex
    expires = T0 + 500 if state is S.EXPIRED else T0 + 60_000
    live = Lease(15_000, T0, expires, T0)
    return dataclasses.replace(ex, state=S.ACTIVE if state is S.EXPIRED else state, lease=live)


class Tree:
    """An in-memory children lookup."""

    def __init__(self, executions: Sequence[Execution]) -> None:
        self.children: dict[str, list[Execution]] = defaultdict(list)
        for ex in executions:
            if ex.parent_id is not None:
                self.children[ex.parent_id].append(ex)

    def __call__(self, execution_id: str) -> list[Execution]:
        return list(self.children.get(execution_id, []))


def test_root_lineage() -> None:
    assert lineage.root_lineage(eid(1), AGENT) == Lineage(None, eid(1), 0, (AGENT,))


def test_child_fields_extend_the_chain() -> None:
    root = node(1)
    child = node(2, root)
    grandchild = node(3, child)
    assert (grandchild.parent_id, grandchild.root_id, grandchild.depth) == (child.id, root.id, 2)
    assert grandchild.delegation == (root.principal, child.principal, grandchild.principal)


def test_check_child_needs_a_live_parent() -> None:
    lineage.check_child(node(1), T0 + 1_000)
    for state in (S.REQUESTED, S.COMPLETED, S.DENIED, S.REVOKED, S.EXPIRED):
        with pytest.raises(InvalidTransitionError):
            lineage.check_child(node(1, state=state), T0 + 1_000)


def test_check_child_reads_expiry_at_read_time() -> None:
    parent = node(1)
    lineage.check_child(parent, T0 + 59_999)
    with pytest.raises(InvalidTransitionError):
        lineage.check_child(parent, T0 + 60_000)


def test_depth_limit() -> None:
    chain = [node(0)]
    for n in range(1, lineage.MAX_DEPTH + 1):
        lineage.check_child(chain[-1], T0)
        chain.append(node(n, chain[-1]))
    assert chain[-1].depth == lineage.MAX_DEPTH
    with pytest.raises(InvalidRequestError):
        lineage.check_child(chain[-1], T0)
    lineage.check_child(chain[-1], T0, max_depth=lineage.MAX_DEPTH + 1)
    with pytest.raises(InvalidRequestError):
        lineage.check_child(chain[1], T0, max_depth=1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, None])
def test_max_depth_is_validated(bad: object) -> None:
    with pytest.raises(InvalidRequestError):
        lineage.check_child(node(1), T0, max_depth=bad)  # type: ignore[arg-type]


def test_descendants_breadth_first_in_sibling_order() -> None:
    root = node(1)
    late, early = node(2, root, created=T0 + 5), node(3, root, created=T0 + 1)
    same_time_a, same_time_b = node(5, early), node(4, early)
    under_late = node(6, late)
    tree = [root, late, early, same_time_a, same_time_b, under_late]
    order = [ex.id for ex in lineage.descendants(root.id, Tree(tree))]
    assert order == [early.id, late.id, same_time_b.id, same_time_a.id, under_late.id]
    assert lineage.descendants(under_late.id, Tree(tree)) == []


def test_descendants_survive_cycles_and_repeats() -> None:
    a, b = node(1), node(2)

    def children_of(execution_id: str) -> list[Execution]:
        return [b, b] if execution_id == a.id else [a, b]

    assert [ex.id for ex in lineage.descendants(a.id, children_of)] == [b.id]


def test_plan_revoke_reasons_and_order() -> None:
    root = node(1)
    child = node(2, root)
    done = node(3, root, state=S.COMPLETED)
    under_done = node(4, done)
    passed = node(5, child, state=S.EXPIRED)
    plan = lineage.plan_revoke(
        root, Tree([root, child, done, under_done, passed]), T0 + 1_000, "operator"
    )
    assert [old.id for old, _ in plan] == [root.id, child.id, under_done.id]
    assert [new.reason for _, new in plan] == ["operator"] + [f"ancestor_revoked:{root.id}"] * 2
    assert all(new.state is S.REVOKED and new.ended_at_ms == T0 + 1_000 for _, new in plan)


def test_plan_revoke_of_an_ended_target_still_reaches_live_descendants() -> None:
    root = node(1, state=S.COMPLETED)
    child = node(2, root)
    plan = lineage.plan_revoke(root, Tree([root, child]), T0, "cleanup")
    assert [(old.id, new.reason) for old, new in plan] == [
        (child.id, f"ancestor_completed:{root.id}")
    ]


def test_plan_revoke_validates_the_reason() -> None:
    with pytest.raises(InvalidRequestError):
        lineage.plan_revoke(node(1), Tree([]), T0, "")


# ---- properties over random trees

STATES = st.sampled_from(list(S))


@st.composite
def trees(draw: st.DrawFn) -> list[Execution]:
    size = draw(st.integers(1, 200))
    executions: list[Execution] = []
    for n in range(size):
        parent = None if n == 0 else executions[draw(st.integers(0, n - 1))]
        if parent is not None and parent.depth >= 40:
            parent = executions[0]
        created = T0 + draw(st.integers(0, 3))
        executions.append(node(n + 1, parent, draw(STATES), created))
    return executions


def _is_live(ex: Execution, now: int) -> bool:
    return not lease.effective_state(ex, now).is_terminal


@settings(max_examples=60, deadline=None)
@given(trees(), st.randoms(use_true_random=False), st.integers(0, 2))
def test_cascade_plan_is_complete_and_exact(
    tree: list[Execution], rnd: random.Random, target_index: int
) -> None:
    now = T0 + 1_000
    target = tree[min(target_index, len(tree) - 1)]
    plan = lineage.plan_revoke(target, Tree(tree), now, "operator")
    planned = [old.id for old, _ in plan]
    below = {ex.id for ex in lineage.descendants(target.id, Tree(tree))}
    expected = {ex.id for ex in tree if (ex.id in below or ex is target) and _is_live(ex, now)}
    assert len(planned) == len(set(planned)) and set(planned) == expected
    position = {ex_id: i for i, ex_id in enumerate(planned)}
    by_id = {ex.id: ex for ex in tree}
    ended = plan[0][1] if plan and plan[0][0] is target else target
    cause = f"ancestor_{lease.effective_state(ended, now)}:{target.id}"
    for old, new in plan:
        assert new.state is S.REVOKED and new.version == old.version + 1
        assert old.parent_id not in position or position[old.parent_id] < position[old.id]
        assert new.reason == ("operator" if old is target else cause)
    assert below == _naive_descendants(target.id, by_id)
    shuffled = Tree(rnd.sample(tree, len(tree)))
    assert [old.id for old, _ in lineage.plan_revoke(target, shuffled, now, "operator")] == planned


def _naive_descendants(root_id: str, by_id: dict[str, Execution]) -> set[str]:
    def ancestors(ex: Execution) -> set[str]:
        found: set[str] = set()
        while ex.parent_id is not None:
            found.add(ex.parent_id)
            ex = by_id[ex.parent_id]
        return found

    return {ex.id for ex in by_id.values() if root_id in ancestors(ex)}
