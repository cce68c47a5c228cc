"""The execution tree: who may start a child, what it inherits, what a revoke reaches.

Pure: the tree is read only through a ``children_of`` lookup the caller
supplies (the store's query, or a dict in tests), so nothing here does I/O.
The lookup's contract: ``children_of(id)`` returns every execution whose
``parent_id`` is ``id``, in any order.

Guarantees:

- A child needs a parent that is effectively active at ``now_ms`` (not
  terminal, lease not passed) and may be at most ``max_depth`` deep; a root is
  depth 0, so ``max_depth=16`` allows 17 levels.
- A child inherits its parent's root and the delegation chain, extended by its
  own principal (root first), so ``delegation[-1]`` is always the principal.
- `descendants` is breadth-first with siblings ordered by ``(created_at_ms,
  id)``: every execution comes after its parent, the order does not depend on
  the lookup's order, and a cycle or a repeat in bad data is visited once.
- `plan_revoke` ends the target (if still live) and every descendant that is
  still live at ``now_ms`` — exactly once each, parent before child — with a
  reason naming the cause: the caller's reason for the target,
  ``ancestor_<state>:<target id>`` for descendants (``ancestor_revoked:ex_…``).
  Executions already terminal, or expired at read time, are left out. The
  caller applies the whole plan in one transaction (DESIGN.md invariant 3).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from lictor.core.lease import check_reason, effective_state, revoke
from lictor.core.types import EntityRef, Execution, ExecutionState, Lineage
from lictor.errors import DepthExceededError, InvalidRequestError, ParentNotActiveError

MAX_DEPTH = 16

ChildrenOf = Callable[[str], Sequence[Execution]]
"""Returns the executions whose ``parent_id`` is the given id."""

RevokePlan = list[tuple[Execution, Execution]]
"""(stored execution, its revoked successor) pairs, parent before child."""


def root_lineage(execution_id: str, principal: EntityRef) -> Lineage:
    """The lineage of an execution with no parent: its own root, depth 0."""
    return Lineage(parent_id=None, root_id=execution_id, depth=0, delegation=(principal,))


def check_child(parent: Execution, now_ms: int, max_depth: int = MAX_DEPTH) -> None:
    """Raise unless ``parent`` may start a child at ``now_ms``."""
    if type(max_depth) is not int or max_depth < 1:
        raise InvalidRequestError("max_depth must be a positive integer")
    state = effective_state(parent, now_ms)
    if state is not ExecutionState.ACTIVE:
        raise ParentNotActiveError(f"parent {parent.id} is {state}, not active")
    if parent.depth >= max_depth:
        raise DepthExceededError(f"a child of {parent.id} would be deeper than {max_depth}")


def child_fields(parent: Execution, principal: EntityRef) -> Lineage:
    """The lineage of a child of ``parent`` acting as ``principal``."""
    return Lineage(
        parent_id=parent.id,
        root_id=parent.root_id,
        depth=parent.depth + 1,
        delegation=(*parent.delegation, principal),
    )


def _ordered(children: Sequence[Execution]) -> list[Execution]:
    return sorted(children, key=lambda c: (c.created_at_ms, c.id))


def descendants(root_id: str, children_of: ChildrenOf) -> list[Execution]:
    """Every execution below ``root_id``, breadth-first (see the module docstring)."""
    found: list[Execution] = []
    seen = {root_id}
    queue = deque([root_id])
    while queue:
        for child in _ordered(children_of(queue.popleft())):
            if child.id not in seen:
                seen.add(child.id)
                found.append(child)
                queue.append(child.id)
    return found


def plan_revoke(target: Execution, children_of: ChildrenOf, now_ms: int, reason: str) -> RevokePlan:
    """What revoking ``target`` changes: the target (if live) and every live descendant."""
    check_reason(reason)
    plan: RevokePlan = []
    if not effective_state(target, now_ms).is_terminal:
        plan.append((target, revoke(target, now_ms, reason)))
    ended = plan[0][1] if plan else target
    cause = f"ancestor_{effective_state(ended, now_ms)}:{target.id}"
    for execution in descendants(target.id, children_of):
        if not effective_state(execution, now_ms).is_terminal:
            plan.append((execution, revoke(execution, now_ms, cause)))
    return plan
