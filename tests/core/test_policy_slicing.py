"""Per-action slices: sliced and unsliced evaluation agree on every request of a corpus."""

from __future__ import annotations

from typing import Any

import cedarpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lictor.core.policy import (
    CompiledPolicy,
    DecisionRequest,
    EntityRef,
    LineageFacts,
    PolicySource,
    compile_entities,
    compile_policies,
    decide,
    validate,
)
from lictor.core.policy_schema import NO_RUNTIME, lictor_context
from lictor.core.slicing import lictor_parts, reads_time

CTX = "context: { n: Long, flag: Bool }"
SCHEMA = f"""\
entity Group;
entity User in [Group] {{ level: Long }};
entity Doc {{ level: Long, owner: User }};
action grp;
action top;
action sub in [top];
action a, b, c appliesTo {{ principal: User, resource: Doc, {CTX} }};
action d, e in [grp] appliesTo {{ principal: User, resource: Doc, {CTX} }};
action f in [sub] appliesTo {{ principal: User, resource: Doc, {CTX} }};
action g in [sub, grp] appliesTo {{ principal: User, resource: Doc, {CTX} }};
"""
CONCRETE = ["a", "b", "c", "d", "e", "f", "g"]
GROUPS = ["grp", "top", "sub"]


def uid(kind: str, name: str) -> dict[str, str]:
    return {"type": kind, "id": name}


def entity(kind: str, name: str, attrs: dict[str, Any], parents: list[str]) -> dict[str, Any]:
    return {"uid": uid(kind, name), "attrs": attrs, "parents": [uid("Group", p) for p in parents]}


ENTITIES = [
    entity("Group", "g0", {}, []),
    entity("Group", "g1", {}, []),
    entity("User", "u0", {"level": 1}, ["g0"]),
    entity("User", "u1", {"level": 2}, ["g1"]),
    entity("User", "u2", {"level": 3}, ["g0", "g1"]),
    entity("User", "u3", {"level": 0}, []),
    entity("Doc", "d0", {"level": 0, "owner": {"__entity": uid("User", "u0")}}, []),
    entity("Doc", "d1", {"level": 2, "owner": {"__entity": uid("User", "u1")}}, []),
    entity("Doc", "d2", {"level": 5, "owner": {"__entity": uid("User", "u3")}}, []),
]  # Doc::"d3" is missing on purpose: reading its attributes is an evaluation error.


def action_ref(name: str) -> str:
    return f'Action::"{name}"'


principal_scopes = st.one_of(
    st.just("principal"),
    st.integers(0, 4).map(lambda i: f'principal == User::"u{i}"'),
    st.integers(0, 1).map(lambda i: f'principal in Group::"g{i}"'),
)
action_scopes = st.one_of(
    st.just("action"),
    st.sampled_from(CONCRETE).map(lambda a: f"action == {action_ref(a)}"),
    st.sampled_from(GROUPS).map(lambda a: f"action in {action_ref(a)}"),
    st.lists(st.sampled_from(CONCRETE + GROUPS), min_size=1, max_size=3).map(
        lambda names: "action in [" + ", ".join(map(action_ref, names)) + "]"
    ),
)
resource_scopes = st.one_of(
    st.just("resource"), st.integers(0, 3).map(lambda i: f'resource == Doc::"d{i}"')
)
conditions = st.sampled_from(
    [
        "",
        "when { context.n > 0 }",
        "when { context.n <= -1 }",
        "when { context.flag }",
        "unless { context.flag }",
        "when { principal.level >= resource.level }",
        "when { resource.owner == principal }",
        "when { context.lictor.lineage.depth == 0 }",
        "unless { context.lictor.lineage.depth < 2 }",
        "when { context.n * 4611686018427387904 > 0 }",  # overflows when |n| >= 2
        'when { action == Action::"a" || action in Action::"grp" }',
    ]
)


@st.composite
def policy_texts(draw: st.DrawFn) -> list[str]:
    count = draw(st.integers(5, 40))
    texts = []
    for i in range(count):
        effect = draw(st.sampled_from(["permit", "permit", "forbid"]))
        scope = f"{draw(principal_scopes)}, {draw(action_scopes)}, {draw(resource_scopes)}"
        annotation = f'@id("p{i}") ' if draw(st.booleans()) else ""
        texts.append(f"{annotation}{effect} ({scope}) {draw(conditions)};")
    return texts


requests = st.builds(
    lambda p, a, r, n, flag, depth: (p, a, r, n, flag, depth),
    st.integers(0, 4),  # User::"u4" is not in the entity set
    st.sampled_from([*CONCRETE, "grp", "undeclared"]),
    st.integers(0, 3),
    st.integers(-3, 3),
    st.booleans(),
    st.integers(0, 2),
)


def split_into_files(texts: list[str], cuts: int) -> dict[str, str]:
    size = max(1, len(texts) // cuts)
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    return {f"f{i}.cedar": "\n".join(chunk) + "\n" for i, chunk in enumerate(chunks)}


def to_request(raw: tuple[int, str, int, int, bool, int]) -> DecisionRequest:
    p, a, r, n, flag, depth = raw
    principal = EntityRef("User", f"u{p}")
    lineage = LineageFacts(depth, principal, "ex_parent" if depth else None)
    return DecisionRequest(
        principal=principal,
        action=EntityRef("Action", a),
        resource=EntityRef("Doc", f"d{r}"),
        now_ms=1_000,
        context={"n": n, "flag": flag},
        lineage=lineage,
    )


def reference(compiled: CompiledPolicy, files: dict[str, str], req: DecisionRequest) -> Any:
    """Cedar alone on the concatenated text, policy ids mapped back to Lictor's."""
    text = "\n".join(files[name] for name in sorted(files))
    context = {
        **req.context,
        "lictor": lictor_context(
            NO_RUNTIME, req.lineage or LineageFacts.root(req.principal), req.now_ms
        ),
    }
    cedar_request = {
        "principal": req.principal.to_json(),
        "action": req.action.to_json(),
        "resource": req.resource.to_json(),
        "context": context,
    }
    result = cedarpy.is_authorized(cedar_request, text, ENTITIES, compiled.schema)
    ids = [info.id for info in compiled.policies]
    reasons = tuple(sorted(ids[int(r.removeprefix("policy"))] for r in result.diagnostics.reasons))
    return result.decision, reasons, bool(result.diagnostics.errors)


@given(policy_texts(), st.integers(1, 3), st.lists(requests, min_size=10, max_size=40))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_sliced_and_unsliced_evaluation_agree(
    texts: list[str], cuts: int, raw_requests: list[tuple[int, str, int, int, bool, int]]
) -> None:
    files = split_into_files(texts, cuts)
    source = PolicySource.of(files, "gen.cedarschema", SCHEMA)
    assert validate(source) == []
    compiled = compile_policies(source)
    entities = compile_entities(ENTITIES, compiled)
    for raw in raw_requests:
        req = to_request(raw)
        sliced = decide(compiled, req, entities)
        unsliced = decide(compiled, req, entities, sliced=False)
        assert sliced == unsliced
        if req.principal.id == "u4":
            assert sliced.reason_code == "unknown_principal"
            continue
        decision, reasons, errored = reference(compiled, files, req)
        assert sliced.allowed == (decision is cedarpy.Decision.Allow and not errored)
        if not errored and decision is not cedarpy.Decision.NoDecision:
            assert sliced.reasons == reasons


def test_slices_hold_only_policies_about_their_action(example_policy: CompiledPolicy) -> None:
    members = example_policy.slices.members
    assert members[("Action", "call_tool")] == {
        "agents-call-safe-tools",
        "payments-team-calls-payment-tools",
        "no-delegated-payments",
    }
    assert members[("Action", "deploy")] == {
        "team-deploys-own-staging",
        "release-deploys-production",
        "production-needs-attested-runtime",
    }


def test_group_scopes_reach_every_member_and_equal_slices_share_a_handle() -> None:
    policies = (
        '@id("grp") permit (principal, action in Action::"grp", resource);\n'
        '@id("top") permit (principal, action in [Action::"top"], resource);\n'
        '@id("all") forbid (principal, action, resource) when { context.flag };\n'
    )
    compiled = compile_policies(PolicySource.of({"p.cedar": policies}, "s.cedarschema", SCHEMA))
    members = compiled.slices.members
    assert members[("Action", "d")] == members[("Action", "e")] == {"grp", "all"}
    assert members[("Action", "f")] == {"top", "all"}
    assert members[("Action", "g")] == {"grp", "top", "all"}
    assert members[("Action", "a")] == {"all"}
    by_action = compiled.slices.by_action
    assert by_action[("Action", "d")] is by_action[("Action", "e")]
    assert compiled.slice_for(EntityRef("Action", "undeclared")) is compiled.slices.default
    assert len(compiled.slices.default) == 1


# -- which slices could read the time ------------------------------------------------


@pytest.mark.parametrize(
    "condition, reads",
    [
        ("context.lictor.time.epoch_ms > 0", True),
        ('context.lictor.time.now > datetime("2026-01-01T00:00:00Z")', True),
        ('context.lictor["time"].epoch_ms > 0', True),
        ("context.lictor has time", True),  # conservative: a presence test counts
        ("context == {}", True),  # the whole context
        ("[context.lictor].isEmpty()", True),  # the whole record
        ("context.n > 0", False),
        ('context.lictor.runtime.region == "eu"', False),
        ("context.lictor.lineage.depth < 2", False),
        ("context has lictor", False),
        ("principal.level > 1", False),
        ("if context.flag then context.lictor.time.epoch_ms > 0 else false", True),
        ('{"a": context.lictor.time.epoch_ms}.a > 0', True),
    ],
)
def test_a_policy_reads_the_time_only_through_the_context(condition: str, reads: bool) -> None:
    text = f"permit (principal, action, resource) when {{ {condition} }};"
    template = cedarpy.policies_to_pst(text).static_policies["policy0"]
    assert reads_time(template) is reads


def test_a_slice_reads_the_time_if_any_of_its_policies_does() -> None:
    policies = (
        '@id("timed") permit (principal, action == Action::"a", resource)'
        " when { context.lictor.time.epoch_ms > 0 };\n"
        '@id("group") permit (principal, action in Action::"grp", resource)'
        " when { context.lictor.lineage.depth == 0 };\n"
    )
    compiled = compile_policies(PolicySource.of({"p.cedar": policies}, "s.cedarschema", SCHEMA))
    assert compiled.reads_time(EntityRef("Action", "a"))
    assert not compiled.reads_time(EntityRef("Action", "b"))  # no policy applies
    assert not compiled.reads_time(EntityRef("Action", "d"))  # in grp: only the lineage
    assert compiled.reads_time(EntityRef("Action", "nope"))  # undeclared: never reused


# -- which parts of context.lictor a slice could read ---------------------------------


@pytest.mark.parametrize(
    "condition, parts",
    [
        ("principal.level > 1", set()),
        ("context.n > 0", set()),  # the caller's part only
        ('context.lictor.runtime.region == "eu"', {"runtime"}),
        ('context.lictor["lineage"].depth < 2', {"lineage"}),
        ("context.lictor.lineage has parent_id", {"lineage"}),
        ("context.lictor has time", {"time"}),
        ("context.lictor.time.epoch_ms > context.lictor.lineage.depth", {"time", "lineage"}),
        ("context has lictor", None),  # the record itself
        ("[context.lictor].isEmpty()", None),
        ("context == {}", None),  # the whole context
        ('{"a": context}.a has n', None),
        ("if context.flag then context.lictor.lineage.depth > 0 else false", {"lineage"}),
    ],
)  # fmt: skip
def test_the_parts_of_context_lictor_a_policy_could_read(
    condition: str, parts: set[str] | None
) -> None:
    text = f"permit (principal, action, resource) when {{ {condition} }};"
    template = cedarpy.policies_to_pst(text).static_policies["policy0"]
    assert lictor_parts(template) == (None if parts is None else frozenset(parts))


def test_a_slice_reads_what_any_of_its_policies_could() -> None:
    policies = (
        '@id("timed") permit (principal, action == Action::"a", resource)'
        " when { context.lictor.time.epoch_ms > 0 };\n"
        '@id("group") permit (principal, action in Action::"grp", resource)'
        " when { context.lictor.lineage.depth == 0 };\n"
        '@id("whole") forbid (principal, action == Action::"c", resource)'
        " when { context has lictor };\n"
    )
    compiled = compile_policies(PolicySource.of({"p.cedar": policies}, "s.cedarschema", SCHEMA))
    assert compiled.slices.lictor_parts(("Action", "a")) == {"time"}
    assert compiled.slices.lictor_parts(("Action", "b")) == frozenset()  # no policy applies
    assert compiled.slices.lictor_parts(("Action", "d")) == {"lineage"}  # in grp
    assert compiled.slices.lictor_parts(("Action", "c")) is None
    assert compiled.slices.lictor_parts(("Action", "nope")) is None  # undeclared
