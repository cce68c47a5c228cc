"""Per-action slices of a policy set, so a decision pays only for policies about its action.

Pure: no I/O. Built once per policy version and kept with it.

Guarantee: for every request, evaluating the slice for the request's action
gives the same decision, determining policies and errors as evaluating the
whole set. Why it holds:

- Cedar evaluates a policy as ``principal scope && action scope && resource
  scope && conditions`` with a short-circuiting ``&&``, and scope tests cannot
  fail, so a policy whose action scope does not match the request contributes
  nothing: not a match, not an error. Leaving it out changes nothing.
- A slice keeps every policy whose action scope *can* match its action:
  unconstrained ``action``; ``action == A``; ``action in [...]`` naming ``A``
  or one of its ancestors. The action hierarchy comes from the schema, which is
  authoritative: Lictor builds every entity set with the schema, and Cedar then
  rejects action entities whose parents differ from it.
- A request for an action the schema does not declare fails Cedar's request
  validation before any policy runs; it gets the slice of unconstrained
  policies (`Slices.default`).

Each slice also says whether any of its policies could read the time Lictor
puts in the context (`reads_time`): a slice that cannot gives the same answer
to the same request at any moment, so a renewal of an execution whose other
inputs did not change need not ask Cedar again (ADR 21). And it says which
parts of ``context.lictor`` its policies could read at all (`lictor_parts`):
Cedar asked without the schema is given only those (ADR 25).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import cedarpy
from cedarpy import pst

from lictor.core.policy_schema import CONTEXT_KEY, LICTOR_PARTS

ActionKey = tuple[str, str]
"""An action as ``(type, id)``, e.g. ``("Action", "deploy")``."""


@dataclass(frozen=True, eq=False)
class Slices:
    """One pre-parsed policy set per declared action, plus the default for any other."""

    by_action: Mapping[ActionKey, cedarpy.PolicySet]
    members: Mapping[ActionKey, frozenset[str]]
    default: cedarpy.PolicySet
    timeless: frozenset[ActionKey] = frozenset()  # slices no policy of which reads the time
    # per action, the parts of context.lictor its slice could read (absent: all of it)
    parts: Mapping[ActionKey, frozenset[str]] = dataclasses.field(default_factory=dict)

    def for_action(self, action: ActionKey) -> cedarpy.PolicySet:
        return self.by_action.get(action, self.default)

    def reads_time(self, action: ActionKey) -> bool:
        """Whether a policy of ``action``'s slice could read ``context.lictor.time``
        (an action the schema does not declare: its request fails before any policy
        runs, so no answer for it is reused)."""
        return action not in self.timeless

    def lictor_parts(self, action: ActionKey) -> frozenset[str] | None:
        """The parts of ``context.lictor`` (``runtime``, ``lineage``, ``time``) a policy
        of ``action``'s slice could read; None: the record as a whole."""
        return self.parts.get(action)


def build_policy_set(policies: Mapping[str, pst.Template]) -> cedarpy.PolicySet:
    """A pre-parsed set of ``policies``, each under its key as its Cedar policy id."""
    node = pst.PolicySet(templates={}, static_policies=dict(policies), template_links=())
    return cedarpy.PolicySet.from_pst(node)


def action_ancestors(schema: cedarpy.Schema) -> dict[ActionKey, frozenset[ActionKey]]:
    """Every action the schema declares, with all its ancestors (action groups)."""
    declared = json.loads(str(cedarpy.Entities.from_json_str("[]", schema)))
    parents = {_key(e["uid"]): [_key(p) for p in e["parents"]] for e in declared}
    return {action: _closure(action, parents) for action in parents}


def applies_to(
    scope: pst.ActionConstraint, action: ActionKey, ancestors: frozenset[ActionKey]
) -> bool:
    """Whether a policy with this action scope can match a request for ``action``."""
    if isinstance(scope, pst.ActionEq):
        return _uid_key(scope.entity) == action
    if isinstance(scope, pst.ActionIn):
        return any(_uid_key(u) == action or _uid_key(u) in ancestors for u in scope.entities)
    return True


def build_slices(
    policies: Mapping[str, pst.Template], hierarchy: Mapping[ActionKey, frozenset[ActionKey]]
) -> Slices:
    """The slice for every action in ``hierarchy``; equal slices share one handle."""
    members = {
        action: frozenset(
            pid for pid, p in policies.items() if applies_to(p.action, action, ancestors)
        )
        for action, ancestors in hierarchy.items()
    }
    unconstrained = frozenset(
        pid for pid, p in policies.items() if isinstance(p.action, pst.ScopeAny)
    )
    handles = _handles(policies, [*members.values(), unconstrained])
    by_action = {action: handles[ids] for action, ids in members.items()}
    timed = {pid for pid, p in policies.items() if reads_time(p)}
    timeless = frozenset(action for action, ids in members.items() if timed.isdisjoint(ids))
    read = {pid: lictor_parts(p) for pid, p in policies.items()}
    parts = {action: _union(read[pid] for pid in ids) for action, ids in members.items()}
    known = {action: found for action, found in parts.items() if found is not None}
    return Slices(by_action, members, handles[unconstrained], timeless, known)


def _union(parts: Iterable[frozenset[str] | None]) -> frozenset[str] | None:
    found: set[str] = set()
    for part in parts:
        if part is None:
            return None
        found |= part
    return frozenset(found)


def lictor_parts(policy: pst.Template) -> frozenset[str] | None:
    """The parts of ``context.lictor`` (``runtime``, ``lineage``, ``time``) that
    ``policy``'s conditions could read, or None when they could read the record as a
    whole: the whole ``context``, ``context.lictor`` itself (``context has lictor``
    included), or an attribute of it Lictor does not write."""
    found: set[str] = set()
    for _, path in _context_reads(policy):
        if path is None:
            return None
        if path[:1] != (CONTEXT_KEY,):
            continue  # the caller's part
        if len(path) < 2 or path[1] not in LICTOR_PARTS:
            return None
        found.add(path[1])
    return frozenset(found)


# What `context.lictor` holds besides the time (`lictor.core.policy_schema.lictor_context`)
_NOT_TIME = LICTOR_PARTS - {"time"}


def reads_time(policy: pst.Template) -> bool:
    """Whether ``policy``'s conditions could read ``context.lictor.time``: they read
    ``context``, or ``context.lictor``, other than through one of its other parts
    (``context.x``, ``context.lictor.runtime...``, ``context has lictor``).
    Conservative: ``context.lictor has time`` counts as reading it."""
    return any(path is None or _into_time(node, path) for node, path in _context_reads(policy))


def _context_reads(policy: pst.Template) -> Iterator[tuple[object, tuple[str, ...] | None]]:
    """Each place ``policy``'s conditions read the context: the syntax node, and the
    attributes it reads into the context (None: the whole context)."""
    pending: list[object] = [clause.expr for clause in policy.clauses]
    while pending:
        node = pending.pop()
        path = _context_path(node)
        if path is not None:  # an access into the context; nothing else below it
            yield node, path
        elif isinstance(node, pst.Var) and node.name == "context":
            yield node, None  # the whole context
        else:
            pending.extend(_children(node))


def _into_time(node: object, path: tuple[str, ...]) -> bool:
    if path[:1] != (CONTEXT_KEY,):
        return False  # another part of the context
    if len(path) > 1 and path[1] in _NOT_TIME:
        return False
    return not (isinstance(node, pst.HasAttr) and path == (CONTEXT_KEY,))  # `context has lictor`


def _context_path(node: object) -> tuple[str, ...] | None:
    """The attributes ``node`` reads into ``context`` (outermost last), or None if it
    is not a chain of attribute accesses on ``context``."""
    names: list[str] = []
    while True:
        if isinstance(node, pst.GetAttr):
            names.append(node.attr)
            node = node.base
        elif isinstance(node, pst.HasAttr):
            names.extend(reversed(node.attrs))
            node = node.base
        else:
            break
    if names and isinstance(node, pst.Var) and node.name == "context":
        return tuple(reversed(names))
    return None


def _children(node: object) -> list[object]:
    """The syntax nodes directly inside ``node``."""
    if not dataclasses.is_dataclass(node):
        return []
    found: list[object] = []
    for f in dataclasses.fields(node):
        value = getattr(node, f.name)
        if isinstance(value, Mapping):
            found.extend(value.values())
        elif isinstance(value, (tuple, list)):
            found.extend(value)
        else:
            found.append(value)
    return found


def _handles(
    policies: Mapping[str, pst.Template], groups: Iterable[frozenset[str]]
) -> dict[frozenset[str], cedarpy.PolicySet]:
    handles: dict[frozenset[str], cedarpy.PolicySet] = {}
    for ids in groups:
        if ids not in handles:
            handles[ids] = build_policy_set({pid: policies[pid] for pid in sorted(ids)})
    return handles


def _key(uid: Mapping[str, str]) -> ActionKey:
    return (uid["type"], uid["id"])


def _uid_key(uid: pst.EntityUid) -> ActionKey:
    return (str(uid.type), uid.id)


def _closure(
    action: ActionKey, parents: Mapping[ActionKey, list[ActionKey]]
) -> frozenset[ActionKey]:
    seen: set[ActionKey] = set()
    stack = list(parents.get(action, []))
    while stack:
        parent = stack.pop()
        if parent not in seen:
            seen.add(parent)
            stack.extend(parents.get(parent, []))
    return frozenset(seen)
