"""``context.arguments``: what policies see of it, and the hint `could_allow`."""

from __future__ import annotations

from typing import Any

import cedarpy
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lictor.core.policy import (
    DecisionRequest,
    EntityRef,
    PolicySource,
    ReasonCode,
    compile_entities,
    compile_policies,
    could_allow,
    decide,
)
from lictor.core.policy_schema import argument_names

SCHEMA = """
entity Agent;
entity Tool;
type Args = { path?: String, "odd name"?: Long, nested?: { a: String } };
type CallContext = { arguments: Args, mode?: String };
action call_tool appliesTo { principal: Agent, resource: Tool, context: CallContext };
action call_inline appliesTo {
  principal: Agent, resource: Tool, context: { arguments: { sql?: String } }
};
action plain appliesTo { principal: Agent, resource: Tool };
action empty appliesTo { principal: Agent, resource: Tool, context: { arguments: {} } };
action whole appliesTo { principal: Agent, resource: Tool, context: { arguments: String } };
namespace Db {
  type Q = { query?: String };
  action run appliesTo { principal: Agent, resource: Tool, context: { arguments: Q } };
}
"""
POLICIES = """
@id("write-tmp")
permit (principal, action == Action::"call_tool", resource == Tool::"write")
when { context.arguments has path && context.arguments.path like "/tmp/*" };
@id("read-any")
permit (principal, action == Action::"call_tool", resource == Tool::"read");
@id("no-rm")
forbid (principal, action, resource == Tool::"rm");
@id("rm")
permit (principal, action, resource == Tool::"rm");
@id("plain")
permit (principal, action == Action::"plain", resource);
"""
AGENT = EntityRef("Agent", "a")


@pytest.fixture(scope="module")
def compiled() -> Any:
    source = PolicySource.of({"p.cedar": POLICIES}, "s.cedarschema", SCHEMA)
    policy = compile_policies(source)
    entities = compile_entities([{"uid": AGENT.to_json(), "attrs": {}, "parents": []}], policy)
    return policy, entities


def test_argument_names_reads_records_types_and_namespaces() -> None:
    names = argument_names(cedarpy.Schema.from_str(SCHEMA))
    assert names[("Action", "call_tool")] == {"path", "odd name", "nested"}
    assert names[("Action", "call_inline")] == {"sql"}
    assert names[("Action", "empty")] == frozenset()
    assert names[("Action", "whole")] is None  # not a record: passed whole to Cedar
    assert names[("Db::Action", "run")] == {"query"}
    assert ("Action", "plain") not in names  # declares no arguments


def test_argument_names_decodes_escapes_and_follows_aliases() -> None:
    schema = cedarpy.Schema.from_str(
        r"""entity Agent; entity Tool;
        type Inner = { "a\tb"?: String, "z\u{200b}"?: String, "q\"x"?: Long, "n\0l"?: Bool };
        type Args = Inner;
        type Twice = Args;
        action c appliesTo { principal: Agent, resource: Tool, context: { arguments: Twice } };
        """
    )
    names = argument_names(schema)[("Action", "c")]
    assert names == {"a\tb", "z\u200b", 'q"x', "n\0l"}


def test_an_escaped_argument_name_is_seen_by_policy() -> None:
    schema = (
        "entity Agent; entity Tool;\n"
        "action c appliesTo { principal: Agent, resource: Tool,"
        ' context: { arguments: { "a\\tb"?: String } } };'
    )
    policies = (
        "permit (principal, action, resource);\n"
        'forbid (principal, action, resource) when { context.arguments has "a\\tb" };'
    )
    policy = compile_policies(PolicySource.of({"p.cedar": policies}, "s.cedarschema", schema))
    entities = compile_entities([{"uid": AGENT.to_json(), "attrs": {}, "parents": []}], policy)
    request = DecisionRequest(
        principal=AGENT,
        action=EntityRef("Action", "c"),
        resource=EntityRef("Tool", "t"),
        now_ms=1_700_000_000_000,
        context={"arguments": {"a\tb": "x", "other": 1}},
    )
    assert decide(policy, request, entities).reasons == ("p.cedar:2",)  # the forbid fired


def _decide(compiled: Any, action: str, tool: str, context: dict[str, Any]) -> Any:
    policy, entities = compiled
    request = DecisionRequest(
        principal=AGENT,
        action=EntityRef("Action", action),
        resource=EntityRef("Tool", tool),
        now_ms=1_700_000_000_000,
        context=context,
    )
    return decide(policy, request, entities)


def test_undeclared_arguments_are_dropped_and_declared_ones_type_checked(compiled: Any) -> None:
    extra = {"path": "/tmp/x", "content": "anything", "flags": [1, {"deep": True}]}
    assert _decide(compiled, "call_tool", "write", {"arguments": extra}).allowed
    assert not _decide(compiled, "call_tool", "write", {"arguments": {"path": "/etc/x"}}).allowed
    wrong = _decide(compiled, "call_tool", "write", {"arguments": {"path": ["/tmp/x"]}})
    assert wrong.reason_code is ReasonCode.INVALID_REQUEST
    nested = {"path": "/tmp/x", "nested": {"a": "x", "b": "undeclared, nested"}}
    strict = _decide(compiled, "call_tool", "write", {"arguments": nested})
    assert strict.reason_code is ReasonCode.INVALID_REQUEST  # only the top level is open
    assert _decide(compiled, "plain", "x", {"arguments": {"anything": 1}}).allowed
    stray = _decide(compiled, "call_tool", "read", {"arguments": {}, "mystery": 1})
    assert stray.reason_code is ReasonCode.INVALID_REQUEST  # the rest of the context is not


@given(st.dictionaries(st.text(max_size=6), st.integers() | st.text(max_size=4), max_size=5))
def test_arguments_policy_cannot_read_never_change_a_decision(
    compiled: Any, extra: dict[str, Any]
) -> None:
    extra.pop("path", None)
    extra.pop("odd name", None)
    extra.pop("nested", None)
    for path in ("/tmp/a", "/etc/a"):
        base = _decide(compiled, "call_tool", "write", {"arguments": {"path": path}})
        more = _decide(compiled, "call_tool", "write", {"arguments": {"path": path, **extra}})
        assert (base.allowed, base.reasons) == (more.allowed, more.reasons)


def test_could_allow_is_false_only_when_no_context_could_allow(compiled: Any) -> None:
    policy, entities = compiled
    call = EntityRef("Action", "call_tool")
    possible = {
        tool: could_allow(policy, entities, AGENT, call, EntityRef("Tool", tool))
        for tool in ("write", "read", "rm", "other")
    }
    assert possible == {"write": True, "read": True, "rm": False, "other": False}
    stranger = EntityRef("Agent", "nobody")
    assert not could_allow(policy, entities, stranger, call, EntityRef("Tool", "read"))
