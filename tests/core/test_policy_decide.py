"""Decisions: allow or deny with reasons, and a deny with a reason code for every failure."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.core import policy as policy_module
from lictor.core.policy import (
    CompiledEntities,
    CompiledPolicy,
    Decision,
    DecisionRequest,
    EntityRef,
    LineageFacts,
    PolicySource,
    ReasonCode,
    RuntimeFacts,
    compile_entities,
    compile_policies,
    decide,
    entities_version,
    lictor_context,
)
from lictor.core.policy_schema import ARGUMENTS, lictor_context_json
from lictor.errors import InvalidRequestError

NOW = 1_700_000_000_000
EU = RuntimeFacts("rt-eu", "eu-west-1", "prod-a", "verified", ("sha256:ab",))
US = RuntimeFacts("rt-us", "us-east-1", "prod-b", "verified")


def agent(name: str) -> EntityRef:
    return EntityRef("Agent", name)


def act(name: str) -> EntityRef:
    return EntityRef("Action", name)


Case = tuple[str, str, EntityRef, RuntimeFacts | None, int, str | None, tuple[str, ...]]
STAGING, PROD = EntityRef("Service", "payments-api-staging"), EntityRef("Service", "payments-api")
CUSTOMERS, REFUND = EntityRef("Dataset", "customers-eu"), EntityRef("Tool", "refund")
FAILED = RuntimeFacts("rt", "eu-west-1", "c", "failed")
SEARCH = EntityRef("Tool", "web-search")
ATTESTED = "production-needs-attested-runtime"
EXAMPLE_CASES: list[Case] = [
    ("planner-7", "deploy", STAGING, None, 0, None, ("team-deploys-own-staging",)),
    ("planner-7", "deploy", PROD, EU, 0, "not_permitted", ()),
    ("release-bot", "deploy", PROD, None, 0, "denied_by_policy", (ATTESTED,)),
    ("release-bot", "deploy", PROD, EU, 0, None, ("release-deploys-production",)),
    ("analyst-3", "read", CUSTOMERS, US, 0, "denied_by_policy", ("data-stays-in-region",)),
    ("analyst-3", "read", CUSTOMERS, EU, 0, None, ("analysts-read",)),
    ("etl-1", "write", CUSTOMERS, FAILED, 0, "denied_by_policy", (ATTESTED,)),
    ("etl-1", "write", CUSTOMERS, EU, 0, None, ("pipelines-read-write",)),
    ("planner-7", "call_tool", REFUND, None, 0, None, ("payments-team-calls-payment-tools",)),
    ("planner-7", "call_tool", REFUND, None, 1, "denied_by_policy", ("no-delegated-payments",)),
    ("analyst-3", "call_tool", SEARCH, None, 2, None, ("agents-call-safe-tools",)),
    ("nobody", "call_tool", SEARCH, None, 0, "unknown_principal", ()),
]


def request(
    principal: str,
    action: str,
    resource: EntityRef,
    runtime: RuntimeFacts | None = None,
    depth: int = 0,
    context: Any = None,
) -> DecisionRequest:
    lineage = None
    if depth:
        lineage = LineageFacts(depth, agent("release-bot"), "ex_parent", "deploy")
    return DecisionRequest(
        principal=agent(principal),
        action=act(action),
        resource=resource,
        now_ms=NOW,
        context={} if context is None else context,
        runtime=runtime or policy_module.NO_RUNTIME,
        lineage=lineage,
    )


@pytest.mark.parametrize("case", EXAMPLE_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2].id}")
def test_example_decisions(
    example_policy: CompiledPolicy, example_entities: CompiledEntities, case: tuple[Any, ...]
) -> None:
    principal, action, resource, runtime, depth, code, reasons = case
    decision = decide(
        example_policy, request(principal, action, resource, runtime, depth), example_entities
    )
    assert (decision.reason_code, decision.reasons) == (code, reasons), decision.errors
    assert decision.allowed == (code is None)
    assert decision.policy_version == example_policy.version
    assert decision.entities_version == example_entities.version


def test_decisions_are_deterministic_and_sliced_like_unsliced(
    example_policy: CompiledPolicy, example_entities: CompiledEntities
) -> None:
    for case in EXAMPLE_CASES:
        req = request(*case[:5])
        first = decide(example_policy, req, example_entities)
        assert decide(example_policy, req, example_entities) == first
        assert decide(example_policy, req, example_entities, sliced=False) == first


def test_decision_to_json(
    example_policy: CompiledPolicy, example_entities: CompiledEntities
) -> None:
    decision = decide(example_policy, request(*EXAMPLE_CASES[2][:5]), example_entities)
    assert decision.to_json() == {
        "allowed": False,
        "reasons": ["production-needs-attested-runtime"],
        "errors": [],
        "policy_version": example_policy.version,
        "entities_version": example_entities.version,
        "reason_code": "denied_by_policy",
    }
    json.dumps(decision.to_json())


@pytest.mark.parametrize("now_ms, allowed", [(NOW + 122, False), (NOW + 123, True)])
def test_now_is_a_datetime_to_the_millisecond(now_ms: int, allowed: bool) -> None:
    """``context.lictor.time.now`` goes to Cedar as text, which the schema makes a
    ``datetime``: compared with one, to the millisecond, and with its methods."""
    schema = PLAIN_SCHEMA.replace("resource: Photo }", "resource: Photo, context: {} }")
    policies = (
        "permit (principal, action, resource) when {\n"
        '  context.lictor.time.now >= datetime("2023-11-14T22:13:20.123Z") &&\n'
        '  context.lictor.time.now.toDate() == datetime("2023-11-14")\n};\n'
    )
    source = PolicySource.of({"time.cedar": policies}, "photos.cedarschema", schema)
    compiled = compile_policies(source)
    req = DecisionRequest(
        principal=EntityRef("User", "bob"),
        action=act("view"),
        resource=EntityRef("Photo", "p1"),
        now_ms=now_ms,
    )
    decision = decide(compiled, req, compile_entities(PLAIN_ENTITIES, compiled))
    assert (decision.allowed, decision.errors) == (allowed, ())


# --- a plain Cedar policy set ---------------------------------------------------------------

PLAIN_SCHEMA = """\
entity User in [Group];
entity Group;
entity Photo { owner: User };
action view, delete appliesTo { principal: User, resource: Photo };
"""
PLAIN_POLICIES = """\
permit (principal in Group::"friends", action == Action::"view", resource);
permit (principal, action, resource) when { resource.owner == principal };
forbid (principal == User::"mallory", action, resource);
"""


def entity(kind: str, name: str, parents: tuple[str, ...] = (), **attrs: Any) -> dict[str, Any]:
    groups = [{"type": "Group", "id": p} for p in parents]
    return {"uid": {"type": kind, "id": name}, "attrs": attrs, "parents": groups}


ALICE = {"__entity": {"type": "User", "id": "alice"}}
PLAIN_ENTITIES: list[dict[str, Any]] = [
    entity("Group", "friends"),
    entity("User", "alice"),
    entity("User", "bob", ("friends",)),
    entity("User", "mallory", ("friends",)),
    entity("Photo", "p1", owner=ALICE),
]


@pytest.fixture(scope="module")
def plain() -> tuple[CompiledPolicy, CompiledEntities]:
    source = PolicySource.of({"photos.cedar": PLAIN_POLICIES}, "photos.cedarschema", PLAIN_SCHEMA)
    compiled = compile_policies(source)
    return compiled, compile_entities(PLAIN_ENTITIES, compiled)


@pytest.mark.parametrize(
    "user, action, allowed, reasons",
    [
        ("alice", "delete", True, ("photos.cedar:2",)),
        ("bob", "view", True, ("photos.cedar:1",)),
        ("bob", "delete", False, ()),
        ("mallory", "view", False, ("photos.cedar:3",)),
    ],
)
def test_a_plain_cedar_set_whose_schema_declares_no_context_works_unchanged(
    plain: tuple[CompiledPolicy, CompiledEntities],
    user: str,
    action: str,
    allowed: bool,
    reasons: tuple[str, ...],
) -> None:
    compiled, entities = plain
    req = DecisionRequest(
        principal=EntityRef("User", user),
        action=act(action),
        resource=EntityRef("Photo", "p1"),
        now_ms=NOW,
    )
    decision = decide(compiled, req, entities)
    assert (decision.allowed, decision.reasons) == (allowed, reasons)
    # The same answer as Cedar alone, with no Lictor context at all.
    cedar_request = {
        "principal": f'User::"{user}"',
        "action": f'Action::"{action}"',
        "resource": 'Photo::"p1"',
        "context": {},
    }
    alone = cedarpy.is_authorized(cedar_request, PLAIN_POLICIES, PLAIN_ENTITIES, PLAIN_SCHEMA)
    assert alone.allowed == allowed
    assert len(alone.diagnostics.reasons) == len(reasons)


# --- fail closed ----------------------------------------------------------------------------


def plain_request(**changes: Any) -> DecisionRequest:
    fields: dict[str, Any] = {
        "principal": EntityRef("User", "alice"),
        "action": act("view"),
        "resource": EntityRef("Photo", "p1"),
        "now_ms": NOW,
    }
    return DecisionRequest(**{**fields, **changes})


@pytest.mark.parametrize(
    "changes, code, message",
    [
        ({"principal": EntityRef("Robot", "r2")}, "unknown_principal", "not in the entity set"),
        ({"resource": EntityRef("Album", "a")}, "invalid_request", "Album"),
        ({"action": act("share")}, "invalid_request", "share"),
        ({"context": {"extra": 1}}, "invalid_request", "extra"),
        ({"context": {"lictor": {}}}, "invalid_request", "reserved"),
        ({"context": {"x": float("nan")}}, "invalid_request", "not JSON"),
        ({"context": {"x": object()}}, "invalid_request", "not JSON"),
        ({"context": {"x": [{"y": float("inf")}]}}, "invalid_request", "not JSON"),
        ({"context": {"x": datetime.now(UTC)}}, "invalid_request", "not JSON"),
        ({"context": [1, 2]}, "invalid_request", "JSON object"),
        ({"context": {1: 2}}, "invalid_request", "JSON object"),
        ({"now_ms": -1}, "invalid_request", "now_ms"),
        ({"now_ms": 1.5}, "invalid_request", "now_ms"),
        ({"principal": 'User::"alice"'}, "invalid_request", "EntityRefs"),
        ({"runtime": RuntimeFacts("r", "eu", "c", digests=(1,))}, "invalid_request", "digests"),  # type: ignore[arg-type]
        ({"lineage": LineageFacts(-1, EntityRef("User", "a"))}, "invalid_request", "depth"),
    ],
)
def test_bad_requests_deny_with_a_reason_code(
    plain: tuple[CompiledPolicy, CompiledEntities], changes: dict[str, Any], code: str, message: str
) -> None:
    compiled, entities = plain
    decision = decide(compiled, plain_request(**changes), entities)
    assert not decision.allowed
    assert decision.reason_code == code
    assert message in " ".join(decision.errors)
    assert decision.policy_version == compiled.version


def test_an_evaluation_error_denies_even_where_cedar_would_allow() -> None:
    policies = (
        "permit (principal, action, resource);\n"
        '@id("flaky-forbid")\n'
        "forbid (principal, action, resource) when { context.n * 9223372036854775807 > 0 };\n"
    )
    schema = PLAIN_SCHEMA.replace("resource: Photo };", "resource: Photo, context: { n: Long } };")
    compiled = compile_policies(PolicySource.of({"p.cedar": policies}, "s.cedarschema", schema))
    entities = compile_entities(PLAIN_ENTITIES, compiled)
    ok = decide(compiled, plain_request(context={"n": 0}), entities)
    assert ok.allowed and ok.reasons == ("p.cedar:1",)
    overflow = decide(compiled, plain_request(context={"n": 2}), entities)
    assert (overflow.allowed, overflow.reason_code) == (False, ReasonCode.POLICY_ERROR)
    assert overflow.reasons == () and "flaky-forbid" in overflow.errors[0]


def test_entities_for_another_schema_are_refused(
    plain: tuple[CompiledPolicy, CompiledEntities],
    example_entities: CompiledEntities,
) -> None:
    compiled, _ = plain
    decision = decide(compiled, plain_request(), example_entities)
    assert decision.reason_code == ReasonCode.INVALID_ENTITIES


def test_per_request_entities_are_validated_and_versioned(
    plain: tuple[CompiledPolicy, CompiledEntities],
) -> None:
    compiled, entities = plain
    carol = {"uid": {"type": "User", "id": "carol"}, "attrs": {}, "parents": []}
    photo = {
        "uid": {"type": "Photo", "id": "p2"},
        "attrs": {"owner": {"__entity": carol["uid"]}},
        "parents": [],
    }
    req = plain_request(
        principal=EntityRef("User", "carol"),
        resource=EntityRef("Photo", "p2"),
        action=act("delete"),
    )
    decision = decide(compiled, req, entities, extra_entities=[carol, photo])
    assert decision.allowed
    assert decision.entities_version == f"{entities.version}+{entities_version([carol, photo])}"
    bad = {"uid": {"type": "Photo", "id": "p3"}, "attrs": {"owner": "carol"}, "parents": []}
    denied = decide(compiled, req, entities, extra_entities=[carol, bad])
    assert denied.reason_code == ReasonCode.INVALID_ENTITIES
    action_override = {
        "uid": {"type": "Action", "id": "delete"},
        "attrs": {},
        "parents": [{"type": "Action", "id": "view"}],
    }
    assert decide(compiled, req, entities, extra_entities=[action_override]).reason_code == (
        ReasonCode.INVALID_ENTITIES
    )


def test_an_engine_failure_is_an_internal_error_deny(
    plain: tuple[CompiledPolicy, CompiledEntities], monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled, entities = plain

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("engine on fire")

    monkeypatch.setattr(cedarpy, "is_authorized", explode)
    monkeypatch.setattr(policy_module, "_DIRECT", explode)
    decision = decide(compiled, plain_request(), entities)
    assert decision == Decision(
        False,
        (),
        ("RuntimeError: engine on fire",),
        compiled.version,
        entities.version,
        ReasonCode.INTERNAL_ERROR,
    )


def test_wrong_argument_types_still_deny(plain: tuple[CompiledPolicy, CompiledEntities]) -> None:
    _, entities = plain
    decision = decide(None, plain_request(), entities)  # type: ignore[arg-type]
    assert (decision.allowed, decision.reason_code) == (False, ReasonCode.INTERNAL_ERROR)


# --- entity sets -----------------------------------------------------------------------------


def test_entity_version_ignores_order_and_sees_every_change() -> None:
    base = entities_version(PLAIN_ENTITIES)
    assert entities_version(list(reversed(PLAIN_ENTITIES))) == base
    changed = json.loads(json.dumps(PLAIN_ENTITIES))
    changed[1]["parents"] = [{"type": "Group", "id": "friends"}]
    assert entities_version(changed) != base


@pytest.mark.parametrize(
    "entities, message",
    [
        ("[]", "must be a list"),
        ([{"attrs": {}}], "uid"),
        ([{"uid": {"type": "User", "id": 3}}], "strings"),
        ([PLAIN_ENTITIES[1], PLAIN_ENTITIES[1]], "twice"),
        ([{"uid": {"type": "User", "id": "a"}, "attrs": {"n": 2**60}, "parents": []}], "canonical"),
        ([{"uid": {"type": "Photo", "id": "a"}, "attrs": {}, "parents": []}], "entities:"),
        ([{"uid": {"type": "Nope", "id": "a"}, "attrs": {}, "parents": []}], "entities:"),
    ],
)
def test_bad_entity_sets_are_refused(
    plain: tuple[CompiledPolicy, CompiledEntities], entities: Any, message: str
) -> None:
    compiled, _ = plain
    with pytest.raises(InvalidRequestError, match=message):
        compile_entities(entities, compiled)


# --- the context.lictor record ---------------------------------------------------------------


def test_lictor_context_record() -> None:
    lineage = LineageFacts(2, EntityRef("Agent", "root"), "ex_p", "deploy")
    record = lictor_context(EU, lineage, 1_700_000_000_123)
    assert record == {
        "runtime": {
            "id": "rt-eu",
            "region": "eu-west-1",
            "cluster": "prod-a",
            "attestation": {"state": "verified", "digests": ["sha256:ab"]},
        },
        "lineage": {
            "depth": 2,
            "root_principal": {"type": "Agent", "id": "root"},
            "parent_id": "ex_p",
            "parent_action": "deploy",
        },
        "time": {
            "epoch_ms": 1_700_000_000_123,
            "now": "2023-11-14T22:13:20.123Z",
        },
    }
    root = lictor_context(policy_module.NO_RUNTIME, LineageFacts.root(EntityRef("Agent", "a")), 0)
    assert root["lineage"] == {"depth": 0, "root_principal": {"type": "Agent", "id": "a"}}
    assert root["runtime"] == {
        "id": "",
        "region": "",
        "cluster": "",
        "attestation": {"state": "none", "digests": []},
    }


TEXT = st.text(max_size=8)
RUNTIME_FACTS = st.builds(
    RuntimeFacts,
    TEXT,
    TEXT,
    TEXT,
    st.sampled_from(["verified", "unverified", "failed", "none"]),
    st.lists(TEXT, max_size=3).map(tuple),
)
LINEAGE_FACTS = st.builds(
    LineageFacts,
    st.integers(0, 40),
    st.builds(EntityRef, st.sampled_from(["Agent", "User"]), st.text("abz-_:", min_size=1)),
    st.none() | TEXT,
    st.none() | TEXT,
)


@settings(max_examples=300, deadline=None)
@given(runtime=RUNTIME_FACTS, lineage=LINEAGE_FACTS, now=st.integers(0, 4_102_444_800_000))
def test_the_record_as_text_reads_as_the_record(
    runtime: RuntimeFacts, lineage: LineageFacts, now: int
) -> None:
    """Written from its parts, each part written once per distinct facts: asked twice
    (the second from the caches), it reads as `lictor_context`'s record each time."""
    for _ in range(2):
        text = lictor_context_json(runtime, lineage, now)
        assert json.loads(text) == lictor_context(runtime, lineage, now)


def test_the_record_as_text_checks_as_the_record_does() -> None:
    lineage = LineageFacts.root(EntityRef("Agent", "a"))
    listed = RuntimeFacts("rt", "eu", "c1", "verified", ["sha256:ab"])  # type: ignore[arg-type]
    assert json.loads(lictor_context_json(listed, lineage, NOW)) == lictor_context(
        listed, lineage, NOW
    )  # unhashable facts: written, not cached
    lone = RuntimeFacts("rt", "eu\ud800", "c1", "verified")
    assert json.loads(lictor_context_json(lone, lineage, NOW)) == lictor_context(
        lone, lineage, NOW
    )  # what orjson will not write, json does (escaped)
    bad = RuntimeFacts("rt", "eu", "c1", "verified", (1,))  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="attestation digests must be strings"):
        lictor_context_json(bad, lineage, NOW)
    with pytest.raises(InvalidRequestError, match="lineage depth"):
        lictor_context_json(EU, LineageFacts(-1, EntityRef("Agent", "a")), NOW)
    with pytest.raises(InvalidRequestError, match="now_ms"):
        lictor_context_json(EU, lineage, -1)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
def schema_request(request: DecisionRequest, arguments: Any) -> dict[str, object]:
    """The request `decide` asks Cedar through the merged schema: the whole record."""
    caller, record = policy_module._context_parts(request, arguments, None)
    return {**policy_module._refs(request), "context": policy_module._with_record(caller, record)}


@given(
    context=st.dictionaries(st.text().filter(lambda k: k not in ("lictor", ARGUMENTS)), JSON_VALUES)
)
def test_cedar_reads_the_context_given(context: dict[str, Any]) -> None:
    """(``arguments`` the action's schema does not declare are dropped first: that is
    tests/core/test_arguments.py's.)"""
    request = plain_request(context=context, runtime=EU)
    given = json.loads(schema_request(request, {})["context"])
    lineage = LineageFacts.root(request.principal)
    assert given.pop("lictor") == lictor_context(EU, lineage, NOW)
    assert given == json.loads(json.dumps(context))


REFS = st.sampled_from(
    [
        EntityRef("User", "alice"),
        EntityRef("User", "mallory"),
        EntityRef("User", "nobody"),
        EntityRef("Group", "friends"),
        act("view"),
        act("delete"),
        act("unknown"),
        EntityRef("Photo", "p1"),
        EntityRef("Photo", "p2"),  # not in the entities: reading its owner is an error
        EntityRef("Nope", "x"),
    ]
)


@settings(max_examples=200, deadline=None)
@given(
    principal=REFS,
    action=REFS,
    resource=REFS,
    context=st.dictionaries(st.sampled_from(["level", "reason", "n"]), JSON_VALUES, max_size=3),
)
def test_the_extension_called_directly_answers_as_cedarpys_api(
    principal: EntityRef,
    action: EntityRef,
    resource: EntityRef,
    context: dict[str, Any],
    plain: tuple[CompiledPolicy, CompiledEntities],
) -> None:
    """`_cedar_answer` calls cedarpy's extension itself (when it has the function):
    allowed, denied, failed to build (NoDecision) and evaluation errors must read
    exactly as through cedarpy's public API."""
    compiled, entities = plain
    request = plain_request(principal=principal, action=action, resource=resource, context=context)
    cedar = schema_request(request, compiled.arguments)
    args = (cedar, compiled.policy_set, entities.handle, compiled.schema)
    assert policy_module._DIRECT is not None  # this cedarpy has it: the direct way is tested
    direct = policy_module._cedar_answer(*args)
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(policy_module, "_DIRECT", None)
        public = policy_module._cedar_answer(*args)
    assert direct == public
    assert direct[0] in ("Allow", "Deny", "NoDecision")
