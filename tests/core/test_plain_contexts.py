"""A request whose action's context is plain is evaluated without the schema (ADR 25):
the same decisions, reasons and errors as through the merged schema, always."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import cedarpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.core import policy as policy_module
from lictor.core.policy import (
    CompiledEntities,
    CompiledPolicy,
    DecisionRequest,
    EntityRef,
    LineageFacts,
    PolicySource,
    RuntimeFacts,
    compile_entities,
    compile_policies,
    decide,
)
from lictor.core.policy_compile import CallerContexts
from lictor.core.policy_schema import merge_schema, plain_contexts

NOW = 1_700_000_000_123
EU = RuntimeFacts("rt-eu", "eu-west-1", "prod-a", "verified", ("sha256:ab",))

SCHEMA = """
entity Team;
entity Agent in [Team] { level: Long };
entity Tool { locked: Bool };
type Args = { text?: String, n?: Long, tags?: Set<String>, inner?: { ok: Bool } };
type Stamp = { at: datetime };
action invoke appliesTo { principal: Agent, resource: Tool };
action call appliesTo {
  principal: Agent, resource: Tool,
  context: { arguments: { text?: String, n?: Long, tags?: Set<String>, inner?: { ok: Bool } },
             note?: String },
};
action stamped appliesTo { principal: Agent, resource: Tool, context: { stamp?: Stamp } };
action addressed appliesTo { principal: Agent, resource: Tool, context: { ip?: ipaddr } };
action on_behalf appliesTo { principal: Agent, resource: Tool, context: { who?: Agent } };
action escaped appliesTo { principal: Agent, resource: Tool, context: { __entity?: String } };
action aliased appliesTo { principal: Agent, resource: Tool, context: Args };
"""

POLICIES = """
@id("invoke-in-eu")
permit (principal in Team::"agents", action == Action::"invoke", resource)
when { context.lictor.runtime.region == "eu-west-1" &&
       context.lictor.time.now >= datetime("2023-11-14T22:13:20.123Z") };
@id("call-with-text")
permit (principal, action == Action::"call", resource)
when { context.arguments has text && context.arguments.text like "ok*" };
@id("no-big-n")
forbid (principal, action == Action::"call", resource)
when { context.arguments has n && context.arguments.n > principal.level };
@id("no-locked")
forbid (principal, action, resource) when { resource.locked };
@id("stamped-late")
permit (principal, action == Action::"stamped", resource)
when { context has stamp && context.stamp.at > context.lictor.time.now };
@id("addressed-local")
permit (principal, action == Action::"addressed", resource)
when { context has ip && context.ip.isLoopback() };
@id("on-behalf-of-bob")
permit (principal, action == Action::"on_behalf", resource)
when { context has who && context.who == Agent::"bob" };
@id("tags-hold-a")
permit (principal, action == Action::"aliased", resource)
when { context has tags && context.tags.contains("a") && context has inner && context.inner.ok };
@id("root-is-self")
forbid (principal, action == Action::"call", resource)
when { context.lictor.lineage.root_principal.id == "bob" &&
       context.arguments has inner && context.arguments.inner.ok };
"""

ENTITIES: list[dict[str, Any]] = [
    {"uid": {"type": "Team", "id": "agents"}, "attrs": {}, "parents": []},
    {
        "uid": {"type": "Agent", "id": "alice"},
        "attrs": {"level": 3},
        "parents": [{"type": "Team", "id": "agents"}],
    },
    {"uid": {"type": "Agent", "id": "bob"}, "attrs": {"level": 9}, "parents": []},
    {"uid": {"type": "Tool", "id": "search"}, "attrs": {"locked": False}, "parents": []},
    {"uid": {"type": "Tool", "id": "vault"}, "attrs": {"locked": True}, "parents": []},
]


@pytest.fixture(scope="module")
def compiled() -> tuple[CompiledPolicy, CompiledEntities]:
    policy = compile_policies(PolicySource.of({"p.cedar": POLICIES}, "s.cedarschema", SCHEMA))
    return policy, compile_entities(ENTITIES, policy)


def through_the_schema(policy: CompiledPolicy) -> CompiledPolicy:
    return dataclasses.replace(policy, callers=None)


def test_the_actions_whose_context_is_plain() -> None:
    """Text, integers, booleans, sets of those and records of those, at any depth, read
    from inline records and type aliases, in a namespace too; not extension types,
    entity types, a set of records, an attribute named ``__...``, nor a record whose
    alias the merge gave ``context.lictor`` (it then holds a datetime)."""
    schema = (
        SCHEMA
        + """
namespace App {
  entity User;
  type When = { when: decimal };
  action "ns plain" appliesTo { principal: User, resource: User, context: { n: Long } };
  action "ns decimal" appliesTo { principal: User, resource: User, context: { a: When } };
  action "set of records" appliesTo {
    principal: User, resource: User, context: { xs: Set<{ a: String }> }
  };
}
"""
    )
    actions, optional = plain_contexts(merge_schema(cedarpy.Schema.from_str(schema))[0])
    assert actions == {
        ("Action", "invoke"),
        ("Action", "call"),
        ("Action", "aliased"),
        ("App::Action", "ns plain"),
    }
    rendered = [line.strip().rstrip(",") for line in str(optional).splitlines()]
    # optional in Args (the alias aliased names), invoke, call and ns plain; the other
    # six keep it as it was
    assert rendered.count("lictor?: Lictor::Context") == 4
    assert rendered.count("lictor: Lictor::Context") == 6


def test_a_schema_that_declares_lictor_itself_is_read_alike() -> None:
    schema = (
        """
entity Agent;
entity Tool;
action invoke appliesTo {
  principal: Agent, resource: Tool, context: { lictor: Lictor::Context, n: Long }
};
"""
        + policy_module.LICTOR_CONTEXT_SCHEMA
    )
    policy = compile_policies(PolicySource.of({"p.cedar": "permit(principal,action,resource);"},
                                              "s.cedarschema", schema))  # fmt: skip
    assert policy.callers is not None
    assert policy.callers.actions == {("Action", "invoke")}


def test_an_entity_type_sharing_a_name_is_never_plain() -> None:
    """A name that is both an entity type and a common type is left to the schema,
    whichever Cedar would take it for."""
    schema = """
entity Agent;
entity Tool;
entity Who;
type Who = { id: String };
action invoke appliesTo { principal: Agent, resource: Tool, context: { who: Who } };
"""
    try:
        parsed = cedarpy.Schema.from_str(schema)
    except ValueError:
        return  # this Cedar refuses the clash itself
    assert plain_contexts(merge_schema(parsed)[0])[0] == frozenset()


def test_a_plain_action_is_evaluated_without_the_schema(
    compiled: tuple[CompiledPolicy, CompiledEntities], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With only the parts of ``context.lictor`` its slice could read (none: no record)."""
    policy, entities = compiled
    asked: list[tuple[Any, dict[str, Any]]] = []
    direct = policy_module._DIRECT
    assert direct is not None and policy.callers is not None

    def spy(request: Any, policies: Any, handle: Any, schema: Any, verbose: bool) -> Any:
        asked.append((schema, json.loads(request["context"])))
        return direct(request, policies, handle, schema, verbose)

    monkeypatch.setattr(policy_module, "_DIRECT", spy)
    plain = request("invoke")
    assert decide(policy, plain, entities).allowed
    assert [schema for schema, _ in asked] == [policy.callers.schema, None]  # check, decide
    assert asked[0][1] == {}  # the caller's part alone
    evaluated = asked[1][1]["lictor"]
    assert set(evaluated) == {"runtime", "time"}  # what invoke-in-eu reads
    assert evaluated["time"]["now"] == {
        "__extn": {"fn": "datetime", "arg": "2023-11-14T22:13:20.123Z"}
    }
    asked.clear()
    assert decide(policy, plain, entities).allowed
    assert [schema for schema, _ in asked] == [None]  # the check is kept
    asked.clear()
    tagged = request("aliased", {"tags": ["a"], "inner": {"ok": True}})
    assert decide(policy, tagged, entities).allowed
    assert asked[-1] == (None, {"tags": ["a"], "inner": {"ok": True}})  # no record read
    asked.clear()
    stamped = request("stamped", {"stamp": {"at": "2030-01-01"}})
    assert decide(policy, stamped, entities).allowed
    assert [schema for schema, _ in asked] == [policy.schema]
    assert set(asked[0][1]["lictor"]) == {"runtime", "lineage", "time"}


def test_a_caller_part_the_schema_refuses_gets_cedars_error_in_full(
    compiled: tuple[CompiledPolicy, CompiledEntities],
) -> None:
    policy, entities = compiled
    wrong = request("call", {"arguments": {"text": 5}})
    decision = decide(policy, wrong, entities)
    assert decision.reason_code == "invalid_request"
    assert "lictor" in decision.errors[0]  # the whole context, as the merged schema says it
    assert decision == decide(through_the_schema(policy), wrong, entities)


def test_the_checks_kept_are_bounded(
    compiled: tuple[CompiledPolicy, CompiledEntities], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy, entities = compiled
    assert policy.callers is not None
    monkeypatch.setattr(CallerContexts, "KEPT", 8)
    policy.callers.checked.clear()
    for n in range(20):
        decide(policy, request("call", {"arguments": {"n": n}}), entities)
        assert 0 < len(policy.callers.checked) <= 8
    policy.callers.checked.clear()
    long_text = "ok" + "x" * CallerContexts.KEPT_TEXT
    assert decide(policy, request("call", {"arguments": {"text": long_text}}), entities).allowed
    assert policy.callers.checked == {}


def request(
    action: str,
    context: dict[str, Any] | None = None,
    principal: str = "alice",
    resource: str = "search",
    lineage: LineageFacts | None = None,
) -> DecisionRequest:
    return DecisionRequest(
        principal=EntityRef("Agent", principal),
        action=EntityRef("Action", action),
        resource=EntityRef("Tool", resource),
        now_ms=NOW,
        context=context or {},
        runtime=EU,
        lineage=lineage,
    )


SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.sampled_from(["ok", "okay", "no", "a", "127.0.0.1", "2030-01-01", "bob", ""])
    | st.text(max_size=4)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                ["text", "n", "tags", "inner", "ok", "at", "type", "id", "__entity", "x"]
            ),
            inner,
            max_size=3,
        )
    ),
    max_leaves=8,
)
CONTEXTS = st.dictionaries(
    st.sampled_from(["arguments", "note", "stamp", "ip", "who", "tags", "inner", "__entity", "y"]),
    VALUES,
    max_size=3,
)
ARGS = st.fixed_dictionaries(
    {},
    optional={
        "text": st.sampled_from(["ok", "okay", "no", ""]) | st.text(max_size=3),
        "n": st.integers(min_value=-2, max_value=12),
        "tags": st.lists(st.sampled_from(["a", "b"]), max_size=3),
        "inner": st.fixed_dictionaries({"ok": st.booleans()}),
    },
)
AT = st.sampled_from(["2030-01-01", "2000-01-01T00:00:00Z", "2030-01-01T00:00:00+0100", "x"])
IP = st.sampled_from(["127.0.0.1", "10.0.0.1", "::1", "nope"])
WHO = st.sampled_from(
    [
        {"type": "Agent", "id": "bob"},
        {"__entity": {"type": "Agent", "id": "bob"}},
        {"type": "Agent", "id": "alice"},
        {"type": "Tool", "id": "bob"},
        "bob",
    ]
)
WELL_TYPED = {  # contexts each action's schema takes (mostly), so policies do run
    "invoke": st.just({}),
    "call": st.fixed_dictionaries({"arguments": ARGS}, optional={"note": st.text(max_size=3)}),
    "stamped": st.fixed_dictionaries({}, optional={"stamp": st.fixed_dictionaries({"at": AT})}),
    "addressed": st.fixed_dictionaries({}, optional={"ip": IP}),
    "on_behalf": st.fixed_dictionaries({}, optional={"who": WHO}),
    "escaped": st.fixed_dictionaries({}, optional={"__entity": st.sampled_from(["x", ""])}),
    "aliased": ARGS,
    "absent": st.just({}),
}


@settings(max_examples=600, deadline=None)
@given(
    data=st.data(),
    action=st.sampled_from(sorted(WELL_TYPED)),
    principal=st.sampled_from(["alice", "bob"]),
    resource=st.sampled_from(["search", "vault", "elsewhere"]),
    delegated=st.booleans(),
)
def test_every_request_is_decided_as_through_the_schema(
    compiled: tuple[CompiledPolicy, CompiledEntities],
    data: st.DataObject,
    action: str,
    principal: str,
    resource: str,
    delegated: bool,
) -> None:
    """Allowed, denied, refused by the schema and failing policies alike, for plain
    actions and the others, with contexts well typed and not."""
    policy, entities = compiled
    context = data.draw(WELL_TYPED[action] | CONTEXTS)
    lineage = LineageFacts(1, EntityRef("Agent", "bob"), "ex_1", "invoke") if delegated else None
    asked = request(action, context, principal, resource, lineage)
    assert decide(policy, asked, entities) == decide(through_the_schema(policy), asked, entities)
