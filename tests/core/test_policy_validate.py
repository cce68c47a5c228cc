"""Validation: every problem with its file, line and column; Lictor's context record merged in."""

from __future__ import annotations

import json
import re
from pathlib import Path

import cedarpy
import pytest

from lictor.core.policy import (
    LICTOR_CONTEXT_SCHEMA,
    LICTOR_CONTEXT_SCHEMA_JSON,
    PolicyIssue,
    PolicySource,
    compile_policies,
    validate,
)
from lictor.core.policy_text import split_policies
from lictor.errors import InvalidRequestError
from lictor.policydir import load_policy_dir

SCHEMA = """\
entity Team;
entity Agent in [Team] { level: Long };
entity Service { env: String, region: String };
action deploy, restart appliesTo { principal: Agent, resource: Service };
"""

GOOD = """\
// Team members may deploy.
@id("team-deploy")
permit (principal in Team::"ops", action == Action::"deploy", resource);

permit (principal, action == Action::"restart", resource)
when { principal.level > 2 };
"""


def issues_of(
    files: dict[str, str], schema: str = SCHEMA, name: str = "app.cedarschema"
) -> list[str]:
    return [str(issue) for issue in validate(PolicySource.of(files, name, schema))]


def test_a_good_set_has_no_issues() -> None:
    assert issues_of({"a.cedar": GOOD}) == []


def test_the_example_set_validates(example_source: PolicySource) -> None:
    assert validate(example_source) == []
    assert len(compile_policies(example_source).policies) == 9


def test_broken_policy_in_a_multi_file_dir_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "app.cedarschema").write_text(SCHEMA)
    (tmp_path / "a.cedar").write_text(GOOD)
    (tmp_path / "b.cedar").write_text(
        "// fine\npermit (principal, action, resource);\n\n"
        'permit (principal, action == Action::"deploy",\n'
        "        resource) when { principal.level >> 1 };\n"
    )
    issues = validate(load_policy_dir(tmp_path))
    assert [str(i) for i in issues] == ["b.cedar:5:43: unexpected token `>`"]
    assert issues[0] == PolicyIssue("b.cedar", 5, 43, None, "unexpected token `>`")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("permit (principal, action ==, resource);", "a.cedar:1:29: unexpected token `,`"),
        (
            'permit (principal, action, resource)\n  when { principal.x == "abc };',
            "a.cedar:2:25: invalid token",
        ),
        (
            "permit (principal, action, resource);\npermit (principal, action, resource)\n",
            "a.cedar:2: unexpected end of input (missing `;`?), in the policy starting here",
        ),
        ("\n\nallow (principal, action, resource);", "a.cedar:3:1: invalid policy effect: allow"),
        (
            "permit (principal,\n  actoin, resource);",
            "a.cedar:2:3: found an invalid variable in the policy scope: actoin",
        ),
        (
            "permit (principal == ?principal, action, resource);",
            "a.cedar:1: templates (policies with ?principal or ?resource) are not supported",
        ),
    ],
)
def test_parse_errors_have_positions(text: str, expected: str) -> None:
    assert issues_of({"a.cedar": text}) == [expected]


def test_type_errors_name_the_policy_and_its_first_line() -> None:
    text = (
        GOOD
        + '\n@id("bad-type")\npermit (principal, action, resource)\n'
        + 'when { principal.level == "x" };\n'
    )
    issues = validate(PolicySource.of({"a.cedar": text}, "app.cedarschema", SCHEMA))
    assert len(issues) == 1
    assert (issues[0].file, issues[0].line, issues[0].policy_id) == ("a.cedar", 8, "bad-type")
    assert "Long and String are not compatible" in issues[0].message
    assert str(issues[0]).startswith("a.cedar:8: policy 'bad-type': ")


def test_policy_ids_default_to_file_and_line_and_must_be_unique() -> None:
    text = 'permit (principal, action, resource);\n@id("x") permit (principal, action, resource);'
    other = 'permit (principal, action, resource); @id("x") forbid (principal, action, resource);'
    issues = validate(PolicySource.of({"a.cedar": text, "b.cedar": other}, "s.cedarschema", SCHEMA))
    assert [str(i) for i in issues] == [
        "b.cedar:1: policy 'x': policy id 'x' is already used at a.cedar:2"
    ]
    compiled = compile_policies(PolicySource.of({"b.cedar": other}, "s.cedarschema", SCHEMA))
    assert [p.id for p in compiled.policies] == ["b.cedar:1:1", "x"]


def test_schema_parse_errors_have_positions() -> None:
    broken = SCHEMA.replace("entity Service {", "entity Service  env: String };\nentity X {")
    assert issues_of({"a.cedar": GOOD}, broken) == [
        "app.cedarschema:3:17: error parsing schema: unexpected token `env`"
    ]
    unresolved = SCHEMA + "entity Robot in [Teem];\n"
    assert issues_of({}, unresolved) == ["app.cedarschema:5:18: failed to resolve type: Teem"]


def test_json_schema_errors_have_positions() -> None:
    text = '{"": {\n  "entityTypes": {},\n  "actionz": {}\n}}'
    [issue] = validate(PolicySource.of({}, "app.cedarschema.json", text))
    assert (issue.file, issue.line) == ("app.cedarschema.json", 3)
    assert "unknown field `actionz`" in issue.message


def test_compile_refuses_an_invalid_set() -> None:
    source = PolicySource.of(
        {"a.cedar": "permit (principal, action ==, resource);"}, "s.cedarschema", SCHEMA
    )
    with pytest.raises(InvalidRequestError, match=re.escape("a.cedar:1:29: unexpected token `,`")):
        compile_policies(source)


# --- context.lictor in the schema ----------------------------------------------------------

USES_LICTOR = """\
permit (principal, action == Action::"deploy", resource)
when { context.lictor.runtime.region == resource.region
       && context.lictor.runtime.attestation.state == "verified"
       && context.lictor.lineage.depth < 3
       && context.lictor.time.epoch_ms > 0 };
"""


def test_policies_may_use_context_lictor_without_declaring_it() -> None:
    assert issues_of({"a.cedar": USES_LICTOR}) == []


def test_a_misspelt_lictor_attribute_is_a_type_error() -> None:
    [issue] = issues_of({"a.cedar": USES_LICTOR.replace("runtime.region", "runtime.regoin")})
    assert issue.startswith("a.cedar:1: ") and "regoin" in issue


def test_a_schema_that_declares_the_fragment_itself_validates() -> None:
    declared = SCHEMA.replace(
        "resource: Service };", "resource: Service, context: { lictor: Lictor::Context } };"
    )
    assert issues_of({"a.cedar": USES_LICTOR}, declared + LICTOR_CONTEXT_SCHEMA) == []


def test_a_json_schema_with_the_fragment_validates() -> None:
    schema = json.loads(LICTOR_CONTEXT_SCHEMA_JSON)
    applies = {"principalTypes": ["Agent"], "resourceTypes": ["Service"]}
    context = {"type": "Record", "attributes": {"lictor": {"type": "Lictor::Context"}}}
    schema[""] = {
        "entityTypes": {
            "Agent": {},
            "Service": {"shape": {"type": "Record", "attributes": {"region": {"type": "String"}}}},
        },
        "actions": {"deploy": {"appliesTo": {**applies, "context": context}}},
    }
    text = USES_LICTOR.replace('&& context.lictor.runtime.attestation.state == "verified"', "")
    assert issues_of({"a.cedar": text}, json.dumps(schema), "app.cedarschema.json") == []
    del schema["Lictor"]
    schema[""]["actions"]["deploy"]["appliesTo"] = applies
    assert issues_of({"a.cedar": text}, json.dumps(schema), "app.cedarschema.json") == []


def test_context_common_types_get_the_record_too() -> None:
    schema = SCHEMA.replace("resource: Service };", "resource: Service, context: Ctx };")
    schema += "type Ctx = { ticket?: String };\n"
    assert issues_of({"a.cedar": USES_LICTOR}, schema) == []


@pytest.mark.parametrize(
    "schema, expected",
    [
        (
            SCHEMA.replace(
                "resource: Service };", "resource: Service, context: { lictor: String } };"
            ),
            "context.lictor must have Lictor's record type",
        ),
        (SCHEMA + "namespace Lictor { type Context = {}; }", "namespace Lictor is reserved"),
    ],
)
def test_a_conflicting_lictor_declaration_is_an_issue(schema: str, expected: str) -> None:
    issues = issues_of({"a.cedar": GOOD}, schema)
    assert issues and all(i.startswith("app.cedarschema: context.lictor") for i in issues)
    assert expected in issues[0]


def test_the_fragment_is_the_same_in_both_formats() -> None:
    human = str(cedarpy.Schema.from_str(LICTOR_CONTEXT_SCHEMA))
    from_json = str(cedarpy.Schema.from_json_str(LICTOR_CONTEXT_SCHEMA_JSON))
    assert re.sub(r"__cedar::(String|Long)", r"\1", from_json) == human


def test_split_policies_skips_semicolons_in_strings_and_comments() -> None:
    text = (
        'permit(principal, action, resource) when { "a;b" == "\\";" }; // c;\n'
        "// x;\nforbid(principal, action, resource);\n// end"
    )
    chunks = split_policies(text)
    assert [c.text[c.start - c.offset :].split("(")[0] for c in chunks] == ["permit", "forbid"]
    joined = "".join(c.text for c in chunks)
    assert text.startswith(joined) and text[len(joined) :].strip() == "// end"


def test_the_example_readme_shows_the_fragment_as_it_is() -> None:
    readme = Path(__file__).resolve().parents[2] / "examples" / "policies" / "README.md"
    assert LICTOR_CONTEXT_SCHEMA in readme.read_text()


def test_namespaced_schemas_get_the_record_in_every_form_of_context() -> None:
    schema = """\
namespace App {
  type Ctx = { ticket?: String };
  entity Agent;
  entity Service { region: String };
  action deploy appliesTo { principal: Agent, resource: Service, context: Ctx };
  action read appliesTo { principal: Agent, resource: Service, context: { t: Ctx } };
  action ops;
  action restart in [ops] appliesTo { principal: Agent, resource: Service };
}
action top appliesTo { principal: App::Agent, resource: App::Service, context: App::Ctx };
"""
    policy = (
        "permit (principal, action, resource)\n"
        "when { context.lictor.runtime.region == resource.region };\n"
        'forbid (principal, action in App::Action::"ops", resource)\n'
        'unless { context.lictor.runtime.attestation.state == "verified" };\n'
    )
    source = PolicySource.of({"a.cedar": policy}, "app.cedarschema", schema)
    assert validate(source) == []
    members = compile_policies(source).slices.members
    assert members[("App::Action", "restart")] == {"a.cedar:1", "a.cedar:3"}
    assert members[("Action", "top")] == {"a.cedar:1"}
