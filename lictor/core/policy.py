"""Cedar policy decisions, and the one place to import policy handling from.

Pure: no I/O, no clock (the request carries ``now_ms``), no randomness.

    source = PolicySource.of({"teams.cedar": text}, "app.cedarschema", schema_text)
    issues = validate(source)                    # [] or PolicyIssue(file, line, column, …)
    policy = compile_policies(source)            # keep one per source.version
    entities = compile_entities(entity_list, policy)   # keep one per (version, schema)
    decision = decide(policy, DecisionRequest(principal=…, action=…, resource=…,
                                              now_ms=now), entities)

Guarantees of `decide`:

- It never raises. Anything that goes wrong on the way is a deny with a
  `ReasonCode` and the messages in ``errors`` (DESIGN.md invariant 1).
- A policy that fails to evaluate makes the decision a deny
  (``policy_error``) even where Cedar alone would allow: Cedar skips an
  erroring policy, which could skip a ``forbid``.
- The principal must be in the entity set (``unknown_principal`` otherwise);
  every request is validated against the schema (``invalid_request``).
- Cedar reads ``context.lictor`` against the schema at every call, which is
  most of a call's cost; Lictor builds that record to the schema's shape
  (checked when the policy compiles). So a request whose action's context is
  plain (text, integers, booleans, sets and records of them: see
  `lictor.core.policy_schema.plain_contexts`) has only the caller's part
  checked, against the schema with ``context.lictor`` optional, and is
  evaluated without a schema: once checked, such JSON reads the same either
  way. Cedar is then given only the parts of ``context.lictor`` the action's
  slice could read (`lictor.core.slicing.lictor_parts`; none: no record). A
  caller's part that fails the check goes the whole way through the merged
  schema, so its error is the one Cedar gives there (ADR 25).
- Same policy version, entity version and request give the same `Decision`:
  ``reasons`` (the determining policy ids) and ``errors`` are sorted.
- Only the slice of policies about the request's action is evaluated; the
  result is the same as evaluating the whole set (see `lictor.core.slicing`).
- ``context.arguments`` (a tool's or a job's arguments) is open: attributes the
  action's schema does not declare in it are dropped before evaluation, since
  no policy that validates against the schema can read them; declared ones
  are type-checked as usual. An action that declares no ``arguments`` sees none.

Reason codes (``Decision.reason_code``, None when allowed):

    denied_by_policy    a forbid matched; ``reasons`` are the forbids
    not_permitted       no permit matched (the default deny)
    policy_error        a policy failed to evaluate; ``errors`` name it
    invalid_request     malformed request, ``context.lictor`` supplied by the
                        caller, or a request the schema rejects (undeclared
                        action, principal/resource type not in ``appliesTo``,
                        context not of the declared type)
    invalid_entities    per-request entities do not conform to the schema, or
                        the entity set was compiled for another schema
    unknown_principal   the principal is not in the entity set
    internal_error      anything else (a bug, or a failure inside the engine)

Set by the service before any policy runs: ``no_active_policy``,
``invalid_parent_grant``, ``parent_not_active``, ``depth_exceeded``,
``runtime_revoked``, ``principal_revoked``, ``definition_changed`` (the
resource's definition is not the one pinned and approved, see
`lictor.service.tools`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import cedarpy
import orjson

from lictor.core.policy_compile import (
    CallerContexts,
    CompiledPolicy,
    PolicyInfo,
    PolicyIssue,
    PolicySource,
    compile_policies,
    schema_version,
    validate,
)
from lictor.core.policy_entities import (
    CompiledEntities,
    canonical_entities,
    compile_entities,
    entities_version,
)
from lictor.core.policy_schema import (
    ARGUMENTS,
    CONTEXT_KEY,
    LICTOR_CONTEXT_SCHEMA,
    LICTOR_CONTEXT_SCHEMA_JSON,
    LICTOR_PARTS,
    NO_RUNTIME,
    LineageFacts,
    RuntimeFacts,
    lictor_context,
    lictor_context_json,
)
from lictor.core.types import EntityRef
from lictor.errors import InvalidRequestError

__all__ = [
    "LICTOR_CONTEXT_SCHEMA",
    "LICTOR_CONTEXT_SCHEMA_JSON",
    "NO_RUNTIME",
    "CompiledEntities",
    "CompiledPolicy",
    "Decision",
    "DecisionRequest",
    "EntityRef",
    "LineageFacts",
    "PolicyInfo",
    "PolicyIssue",
    "PolicySource",
    "ReasonCode",
    "RuntimeFacts",
    "canonical_entities",
    "compile_entities",
    "compile_policies",
    "could_allow",
    "decide",
    "entities_version",
    "lictor_context",
    "schema_version",
    "validate",
]


class ReasonCode(StrEnum):
    """Why a decision denies; see the module docstring."""

    DENIED_BY_POLICY = "denied_by_policy"
    NOT_PERMITTED = "not_permitted"
    POLICY_ERROR = "policy_error"
    INVALID_REQUEST = "invalid_request"
    INVALID_ENTITIES = "invalid_entities"
    UNKNOWN_PRINCIPAL = "unknown_principal"
    INTERNAL_ERROR = "internal_error"
    # reached before policy is evaluated (set by the service, never by `decide`)
    NO_ACTIVE_POLICY = "no_active_policy"
    INVALID_PARENT_GRANT = "invalid_parent_grant"
    PARENT_NOT_ACTIVE = "parent_not_active"
    DEPTH_EXCEEDED = "depth_exceeded"
    RUNTIME_REVOKED = "runtime_revoked"
    PRINCIPAL_REVOKED = "principal_revoked"
    DEFINITION_CHANGED = "definition_changed"


@dataclass(frozen=True, kw_only=True)
class DecisionRequest:
    """Who wants to do what to which resource, with the facts Lictor adds.

    ``lineage`` None means a root execution of ``principal``. ``context`` is
    the caller's JSON object; the key ``lictor`` is Lictor's and may not be in it.
    """

    principal: EntityRef
    action: EntityRef
    resource: EntityRef
    now_ms: int
    context: Mapping[str, Any] = field(default_factory=dict, hash=False)
    runtime: RuntimeFacts = NO_RUNTIME
    lineage: LineageFacts | None = None


@dataclass(frozen=True)
class Decision:
    """Allow or deny, the determining policy ids, what was used, and what went wrong."""

    allowed: bool
    reasons: tuple[str, ...]
    errors: tuple[str, ...]
    policy_version: str
    entities_version: str
    reason_code: ReasonCode | None

    def to_json(self) -> dict[str, object]:
        return {
            "allowed": self.allowed,
            "reasons": list(self.reasons),
            "errors": list(self.errors),
            "policy_version": self.policy_version,
            "entities_version": self.entities_version,
            "reason_code": None if self.reason_code is None else str(self.reason_code),
        }


def decide(
    policy: CompiledPolicy,
    request: DecisionRequest,
    entities: CompiledEntities,
    *,
    extra_entities: Sequence[Mapping[str, Any]] = (),
    sliced: bool = True,
) -> Decision:
    """The decision for ``request``; never raises (see the module docstring).

    ``extra_entities`` are added for this request only (validated with the
    schema); ``sliced=False`` evaluates the whole set, for tests.
    """
    try:
        return _decide(policy, request, entities, extra_entities, sliced)
    except InvalidRequestError as e:
        return _deny(policy, entities, ReasonCode.INVALID_REQUEST, e.message)
    except Exception as e:  # fail closed: whatever broke, the answer is deny
        return _deny(policy, entities, ReasonCode.INTERNAL_ERROR, f"{type(e).__name__}: {e}")


def _decide(
    policy: CompiledPolicy,
    request: DecisionRequest,
    entities: CompiledEntities,
    extra: Sequence[Mapping[str, Any]],
    sliced: bool,
) -> Decision:
    if entities.schema_version != policy.schema_version:
        message = "the entity set was compiled for another schema"
        return _deny(policy, entities, ReasonCode.INVALID_ENTITIES, message)
    refs = _refs(request)
    callers = _plain(policy, request.action)
    parts = _parts_read(policy, request.action) if callers is not None else None
    caller, record = _context_parts(request, policy.arguments, parts)
    if extra:
        try:
            entities = entities.with_added(extra, policy)
        except InvalidRequestError as e:
            return _deny(policy, entities, ReasonCode.INVALID_ENTITIES, e.message)
    if (request.principal.type, request.principal.id) not in entities.uids:
        message = f"principal {request.principal} is not in the entity set"
        return _deny(policy, entities, ReasonCode.UNKNOWN_PRINCIPAL, message)
    policies = policy.slice_for(request.action) if sliced else policy.policy_set
    schema: cedarpy.Schema | None = None
    if callers is None or not _caller_checked(callers, request, refs, caller):
        schema = policy.schema
        if parts is not None:  # the record was written for Cedar without the schema
            record = _record_json(request, None)
    context = _with_record(caller, record)
    answer = _cedar_answer({**refs, "context": context}, policies, entities.handle, schema)
    return _from_answer(answer, policy, entities)


def _plain(policy: CompiledPolicy, action: EntityRef) -> CallerContexts | None:
    """``policy``'s `CallerContexts` if ``action``'s context is plain (and this cedarpy
    can be asked without its wrappers), else None."""
    callers = policy.callers
    if callers is None or _DIRECT is None or _NO_ENTITIES is None:
        return None
    return callers if (action.type, action.id) in callers.actions else None


def _parts_read(policy: CompiledPolicy, action: EntityRef) -> frozenset[str]:
    """The parts of ``context.lictor`` a policy of ``action``'s slice could read (all of
    them when one could read the record as a whole)."""
    parts = policy.slices.lictor_parts((action.type, action.id))
    return LICTOR_PARTS if parts is None else parts


def _caller_checked(
    callers: CallerContexts, request: DecisionRequest, refs: dict[str, object], caller: str
) -> bool:
    """Whether the schema with ``context.lictor`` optional takes the request with the
    caller's part of the context: asked of Cedar with no policies and no entities, the
    answer kept by `CallerContexts`."""
    p, a, r = request.principal, request.action, request.resource
    key = (p.type, p.id, a.type, a.id, r.type, r.id, caller)
    found = callers.checked.get(key)
    if found is None:
        asked = {**refs, "context": caller}
        answer = orjson.loads(_DIRECT(asked, _NO_POLICIES, _NO_ENTITIES, callers.schema, False))
        found = answer["decision"] in ("Allow", "Deny")
        if len(caller) <= CallerContexts.KEPT_TEXT:
            if len(callers.checked) >= CallerContexts.KEPT:
                callers.checked.clear()
            callers.checked[key] = found
    return found


def _direct_call() -> Any:
    """cedarpy's extension function deciding one request, or None where this cedarpy
    lacks it (the public API is used then)."""
    call = getattr(getattr(cedarpy, "_internal", None), "is_authorized", None)
    return call if callable(call) else None


_DIRECT = _direct_call()
_NO_POLICIES = cedarpy.PolicySet.from_str("")
_NO_ENTITIES = getattr(cedarpy.Entities.from_json_str("[]"), "_inner", None)


def _cedar_answer(
    request: Mapping[str, object],
    policies: cedarpy.PolicySet,
    entities: cedarpy.Entities,
    schema: cedarpy.Schema | None,
) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """Cedar's decision for ``request`` (its context already JSON text): "Allow",
    "Deny" or "NoDecision", the determining policies and the errors, sorted.

    cedarpy's `is_authorized` makes a batch of one of the request, calls its
    extension, reads the answer's JSON with the standard library and wraps it in
    objects: about 20 µs of a decision beyond the call itself. The extension's
    own function for one request is called here instead, its answer read with
    orjson, when this cedarpy has it (tests hold both ways to the same answers)."""
    inner = getattr(entities, "_inner", None)
    if _DIRECT is None or inner is None:
        result = cedarpy.is_authorized(dict(request), policies, entities, schema)
        diagnostics = result.diagnostics
        return (
            result.decision.name,
            tuple(sorted(diagnostics.reasons)),
            tuple(sorted(diagnostics.errors)),
        )
    answer = orjson.loads(_DIRECT(request, policies, inner, schema, False))
    found = answer.get("diagnostics") or {}
    reasons, errors = found.get("reason") or (), found.get("errors") or ()
    return str(answer["decision"]), tuple(sorted(reasons)), tuple(sorted(errors))


def _refs(request: DecisionRequest) -> dict[str, object]:
    refs = (request.principal, request.action, request.resource)
    if not all(isinstance(ref, EntityRef) for ref in refs):
        raise InvalidRequestError("principal, action and resource must be EntityRefs")
    return {
        "principal": request.principal.to_json(),
        "action": request.action.to_json(),
        "resource": request.resource.to_json(),
    }


def _context_parts(
    request: DecisionRequest,
    arguments: Mapping[tuple[str, str], frozenset[str] | None],
    parts: frozenset[str] | None,
) -> tuple[str, str]:
    """The caller's part of the context and ``context.lictor`` (whole, for the schema;
    or ``parts`` of it, see `lictor_context_json`), each as JSON text."""
    context = request.context
    if not isinstance(context, Mapping) or not all(isinstance(k, str) for k in context):
        raise InvalidRequestError("context must be a JSON object")
    if CONTEXT_KEY in context:
        raise InvalidRequestError(f"context.{CONTEXT_KEY} is reserved for Lictor")
    context = declared_arguments(context, (request.action.type, request.action.id), arguments)
    record = _record_json(request, parts)
    return (_object_json(context) if context else "{}"), record


def _record_json(request: DecisionRequest, parts: frozenset[str] | None) -> str:
    lineage = request.lineage or LineageFacts.root(request.principal)
    return lictor_context_json(request.runtime, lineage, request.now_ms, parts=parts)


def _with_record(caller: str, record: str) -> str:
    """The caller's context (an object's JSON text) with ``context.lictor`` added (none
    when ``record`` is empty)."""
    if not record:
        return caller
    if caller == "{}":
        return f'{{"{CONTEXT_KEY}":{record}}}'
    return f'{caller[:-1]},"{CONTEXT_KEY}":{record}}}'


def _object_json(context: Mapping[str, object]) -> str:
    """A caller's context (a non-empty object) as JSON text, or `InvalidRequestError`."""
    if _without_floats(context):  # orjson would write a NaN as null; json refuses it
        try:
            return orjson.dumps(context, option=_ONLY_JSON).decode()
        except orjson.JSONEncodeError:
            pass  # a key that is not text, an integer beyond 64 bits: json says which
    try:
        return json.dumps(context, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise InvalidRequestError(f"context is not JSON: {e}") from None


# orjson refuses (rather than converts) what json would refuse too
_ONLY_JSON = (
    orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)


def _without_floats(value: object) -> bool:
    """Whether ``value`` holds no float (nor anything but dicts, lists and scalars)."""
    pending = [value]
    while pending:
        v = pending.pop()
        if isinstance(v, dict):
            pending.extend(v.values())
        elif isinstance(v, list):
            pending.extend(v)
        elif not (v is None or isinstance(v, (str, int))):  # bool is an int
            return False
    return True


def could_allow(
    policy: CompiledPolicy,
    entities: CompiledEntities,
    principal: EntityRef,
    action: EntityRef,
    resource: EntityRef,
) -> bool:
    """Whether some context could make the policy allow this request: Cedar's partial
    evaluation with the context unknown is not a deny. A hint for what to offer
    (which tools to list), never a decision; any error is False."""
    if (principal.type, principal.id) not in entities.uids:
        return False
    request = {"principal": str(principal), "action": str(action), "resource": str(resource)}
    try:
        result = cedarpy.is_authorized_partial(
            request, policy.slice_for(action), entities.handle, policy.schema
        )
    except Exception:  # fail closed: a hint that cannot be computed offers nothing
        return False
    return result.decision is not cedarpy.Decision.Deny and not result.diagnostics.errors


def declared_arguments(
    context: Mapping[str, Any],
    action: tuple[str, str],
    arguments: Mapping[tuple[str, str], frozenset[str] | None],
) -> Mapping[str, Any]:
    """``context`` with only the ``arguments`` attributes ``action``'s schema declares:
    none (no ``arguments`` at all) if it declares no ``arguments``; every one if it
    declares ``arguments`` as something other than a record."""
    given = context.get(ARGUMENTS)
    if not isinstance(given, Mapping):
        return context
    if action not in arguments:
        return {k: v for k, v in context.items() if k != ARGUMENTS}
    declared = arguments[action]
    if declared is None:
        return context
    return {**context, ARGUMENTS: {k: v for k, v in given.items() if k in declared}}


def _from_answer(
    answer: tuple[str, tuple[str, ...], tuple[str, ...]],
    policy: CompiledPolicy,
    entities: CompiledEntities,
) -> Decision:
    decision, reasons, errors = answer
    if decision not in ("Allow", "Deny"):  # NoDecision: the request could not be built
        return _deny(policy, entities, ReasonCode.INVALID_REQUEST, *errors)
    if errors:
        return _deny(policy, entities, ReasonCode.POLICY_ERROR, *errors)
    if decision == "Allow":
        return Decision(True, reasons, (), policy.version, entities.version, None)
    code = ReasonCode.DENIED_BY_POLICY if reasons else ReasonCode.NOT_PERMITTED
    return Decision(False, reasons, (), policy.version, entities.version, code)


def _deny(
    policy: CompiledPolicy, entities: CompiledEntities, code: ReasonCode, *errors: str
) -> Decision:
    # getattr: this also runs when a caller passed the wrong objects, and must not raise.
    versions = (str(getattr(policy, "version", "")), str(getattr(entities, "version", "")))
    return Decision(False, (), tuple(errors) or (str(code),), *versions, code)
