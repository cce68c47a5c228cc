"""Tool calls through the API: arguments seen by policy, sealed in the log, pinned tools."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lictor.core.policy import PolicySource
from lictor.core.tools import definition_hash
from lictor.service.arguments import PREFIX
from lictor.service.policies import source_json

SCHEMA = """
entity Team;
entity Agent in [Team];
entity Tool;
entity McpServer;
action mcp_session appliesTo { principal: Agent, resource: McpServer };
action call_tool appliesTo {
  principal: Agent,
  resource: Tool,
  context: { arguments: { path?: String, timezone?: String } },
};
"""
POLICIES = """
@id("session")
permit (principal, action == Action::"mcp_session", resource);

@id("write-public")
permit (principal, action == Action::"call_tool", resource == Tool::"fs/write_file")
when { context.arguments has path && context.arguments.path like "/srv/public/*" };

@id("time-utc")
@log_arguments("raw")
permit (principal, action == Action::"call_tool", resource == Tool::"time/get_current_time")
when { context.arguments has timezone && context.arguments.timezone == "UTC" };

@id("no-secrets")
forbid (principal, action == Action::"call_tool", resource)
when { context.arguments has path && context.arguments.path like "*secret*" };
"""
AGENT = {"type": "Agent", "id": "a-1"}
CALL = {"type": "Action", "id": "call_tool"}
WRITE = {"type": "Tool", "id": "fs/write_file"}
TIME = {"type": "Tool", "id": "time/get_current_time"}
WRITE_TOOL = {
    "name": "write_file",
    "description": "Write a file",
    "inputSchema": {"type": "object", "properties": {"path": {"type": "string"}}},
}


@pytest.fixture
def plane(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    """The tool policies active, one agent, one runtime; the runtime's headers."""
    source = source_json(PolicySource.of({"tools.cedar": POLICIES}, "app.cedarschema", SCHEMA))
    pushed = client.post("/v1/policies", json={"source": source}, headers=admin)
    assert pushed.status_code == 201, pushed.text
    entities = [{"uid": AGENT, "attrs": {}, "parents": []}]
    assert client.put("/v1/entities", json={"entities": entities}, headers=admin).is_success
    version = pushed.json()["version"]
    assert client.post(f"/v1/policies/{version}/activate", headers=admin).is_success
    body = {"name": "gw-1", "region": "eu-west-1", "cluster": "a"}
    secret = client.post("/v1/runtimes", json=body, headers=admin).json()["credential"]
    return {"Authorization": f"Bearer {secret}"}


def _call(client: TestClient, runtime: dict[str, str], tool: Any, **body: Any) -> Any:
    request = {"principal": AGENT, "action": CALL, "resource": tool, **body}
    return client.post("/v1/executions", json=request, headers=runtime)


def _log_size(client: TestClient) -> int:
    return int(client.get("/v1/log/checkpoint").json()["size"])


def test_policy_decides_on_declared_arguments_and_ignores_the_rest(
    client: TestClient, plane: dict[str, str]
) -> None:
    public = {"path": "/srv/public/a.txt", "content": "hello", "mode": 420}
    allowed = _call(client, plane, WRITE, context={"arguments": public})
    assert allowed.status_code == 201, allowed.text  # content and mode are not declared
    outside = _call(client, plane, WRITE, context={"arguments": {"path": "/etc/passwd"}})
    assert outside.json()["decision"]["reason_code"] == "not_permitted"
    secret = {"path": "/srv/public/secret.txt"}
    forbidden = _call(client, plane, WRITE, context={"arguments": secret}).json()
    assert forbidden["decision"]["reasons"] == ["no-secrets"]
    mistyped = _call(client, plane, WRITE, context={"arguments": {"path": 7}}).json()
    assert mistyped["decision"]["reason_code"] == "invalid_request"  # declared: type-checked


def test_arguments_are_sealed_in_the_log_and_views_unless_policy_says_raw(
    client: TestClient, plane: dict[str, str], admin: dict[str, str]
) -> None:
    arguments = {"path": "/srv/public/a.txt", "content": "s3cr3t-token"}
    body = _call(client, plane, WRITE, context={"arguments": arguments}).json()
    sealed = body["receipt"]["event"]["context"]["arguments"]
    assert sealed.startswith(PREFIX) and "s3cr3t" not in str(body)
    again = _call(client, plane, WRITE, context={"arguments": arguments}).json()
    assert again["receipt"]["event"]["context"]["arguments"] == sealed  # keyed, deterministic
    other = {**arguments, "content": "other"}
    third = _call(client, plane, WRITE, context={"arguments": other}).json()
    assert third["receipt"]["event"]["context"]["arguments"] != sealed
    plain = hashlib.sha256(b'{"content":"s3cr3t-token","path":"/srv/public/a.txt"}').hexdigest()
    assert plain not in sealed  # not a plain hash anyone could recompute
    shown = client.get(f"/v1/executions/{body['execution']['id']}", headers=admin).json()
    assert shown["execution"]["context"]["arguments"] == sealed
    utc = _call(client, plane, TIME, context={"arguments": {"timezone": "UTC"}}).json()
    assert utc["receipt"]["event"]["context"]["arguments"] == {"timezone": "UTC"}  # @log_arguments
    denied = _call(client, plane, TIME, context={"arguments": {"timezone": "Mars/Base"}}).json()
    assert denied["receipt"]["event"]["context"]["arguments"].startswith(PREFIX)


def test_a_renewal_re_verifies_with_the_raw_arguments(
    client: TestClient, plane: dict[str, str]
) -> None:
    arguments = {"path": "/srv/public/a.txt"}
    granted = _call(client, plane, WRITE, context={"arguments": arguments}).json()
    renewed = client.post(
        f"/v1/executions/{granted['execution']['id']}/renew", json={}, headers=plane
    )
    assert renewed.json()["execution"]["state"] == "active", renewed.text


def test_first_seen_tools_are_pinned_and_a_repeat_report_writes_nothing(
    client: TestClient, plane: dict[str, str], admin: dict[str, str]
) -> None:
    before = _log_size(client)
    report = {"server": "fs", "tools": [WRITE_TOOL]}
    seen = client.post("/v1/tools/observe", json=report, headers=plane).json()["tools"]
    assert seen == [
        {
            "tool": "fs/write_file",
            "name": "write_file",
            "hash": definition_hash(WRITE_TOOL),
            "status": "approved",
            "approved": definition_hash(WRITE_TOOL),
            "pending": None,
            "definition": WRITE_TOOL,
        }
    ]
    assert _log_size(client) == before + 1
    assert client.post("/v1/tools/observe", json=report, headers=plane).is_success
    assert _log_size(client) == before + 1
    pins = client.get("/v1/tools", headers=admin).json()["tools"]
    assert [(p["tool"], p["status"], p["definition"]) for p in pins] == [
        ("fs/write_file", "approved", WRITE_TOOL)
    ]


def test_a_changed_definition_is_denied_until_an_admin_approves_it(
    client: TestClient, plane: dict[str, str], admin: dict[str, str]
) -> None:
    old, new = WRITE_TOOL, {**WRITE_TOOL, "description": "Write a file. Also mail it out."}
    client.post("/v1/tools/observe", json={"server": "fs", "tools": [old]}, headers=plane)
    changed = client.post("/v1/tools/observe", json={"server": "fs", "tools": [new]}, headers=plane)
    seen = changed.json()["tools"][0]
    assert seen["status"] == "changed" and seen["definition"] == old  # what clients may be shown
    arguments = {"arguments": {"path": "/srv/public/a"}}
    ok = _call(client, plane, WRITE, context=arguments, definition=definition_hash(old))
    assert ok.status_code == 201, ok.text
    refused = _call(client, plane, WRITE, context=arguments, definition=definition_hash(new))
    assert refused.status_code == 403
    assert refused.json()["decision"]["reason_code"] == "definition_changed"
    assert refused.json()["receipt"]["event"]["definition"] == definition_hash(new)
    unnamed = _call(client, plane, WRITE, context=arguments).json()
    assert unnamed["decision"]["reason_code"] == "definition_changed"
    wrong = {"tool": "fs/write_file", "hash": "sha256:" + "0" * 64}
    assert client.post("/v1/tools/approve", json=wrong, headers=admin).status_code == 409
    approve = {"tool": "fs/write_file", "hash": definition_hash(new)}
    assert client.post("/v1/tools/approve", json=approve, headers=plane).status_code == 403
    approved = client.post("/v1/tools/approve", json=approve, headers=admin)
    assert approved.json()["status"] == "approved" and approved.json()["definition"] == new
    now_ok = _call(client, plane, WRITE, context=arguments, definition=definition_hash(new))
    assert now_ok.status_code == 201, now_ok.text
    stale = _call(client, plane, WRITE, context=arguments, definition=definition_hash(old))
    assert stale.json()["decision"]["reason_code"] == "definition_changed"
    entries = [client.get(f"/v1/log/entries/{i}").json() for i in range(_log_size(client))]
    kinds = [e["entry"]["kind"] for e in entries]
    assert [k for k in kinds if k.startswith("tool_")] == [
        "tool_pinned",
        "tool_changed",
        "tool_approved",
    ]


def test_the_hash_covers_what_clients_decide_on(client: TestClient, plane: dict[str, str]) -> None:
    client.post("/v1/tools/observe", json={"server": "fs", "tools": [WRITE_TOOL]}, headers=plane)
    for change in (
        {"annotations": {"readOnlyHint": True}},
        {"title": "Harmless"},
        {"outputSchema": {"type": "object"}},
        {"inputSchema": {"type": "object"}},
    ):
        report = {"server": "fs", "tools": [{**WRITE_TOOL, **change}]}
        seen = client.post("/v1/tools/observe", json=report, headers=plane).json()["tools"][0]
        assert seen["status"] == "changed", change


def test_a_definition_for_a_tool_never_reported_is_denied(
    client: TestClient, plane: dict[str, str]
) -> None:
    arguments = {"arguments": {"path": "/srv/public/a"}}
    r = _call(client, plane, WRITE, context=arguments, definition=definition_hash(WRITE_TOOL))
    assert r.json()["decision"]["reason_code"] == "definition_changed"


@pytest.mark.parametrize(
    "report",
    [
        {"server": "bad server", "tools": []},
        {"server": "fs", "tools": [{"name": ""}]},
        {"server": "fs", "tools": [WRITE_TOOL, WRITE_TOOL]},
        {"server": "fs", "tools": [{"name": "x", "inputSchema": "nope"}]},
        {"server": "fs", "tools": [{"name": "x", "extra": 1}]},
    ],
)
def test_a_malformed_report_is_400_and_writes_nothing(
    client: TestClient, plane: dict[str, str], report: dict[str, Any]
) -> None:
    before = _log_size(client)
    r = client.post("/v1/tools/observe", json=report, headers=plane)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
    assert _log_size(client) == before


def test_preview_says_which_tools_could_be_allowed(
    client: TestClient, plane: dict[str, str]
) -> None:
    never = {"type": "Tool", "id": "fs/delete"}
    body = {"principal": AGENT, "action": CALL, "resources": [WRITE, TIME, never]}
    r = client.post("/v1/executions/preview", json=body, headers=plane)
    assert [x["possible"] for x in r.json()["results"]] == [True, True, False], r.text
    stranger = {**body, "principal": {"type": "Agent", "id": "nobody"}}
    r = client.post("/v1/executions/preview", json=stranger, headers=plane)
    assert [x["possible"] for x in r.json()["results"]] == [False, False, False]


def test_completion_records_the_result_hash(client: TestClient, plane: dict[str, str]) -> None:
    granted = _call(client, plane, TIME, context={"arguments": {"timezone": "UTC"}}).json()
    digest = "sha256:" + "ab" * 32
    done = client.post(
        f"/v1/executions/{granted['execution']['id']}/complete",
        json={"outcome": "failed", "result_hash": digest},
        headers=plane,
    ).json()
    assert done["transitions"][-1]["result_hash"] == digest
    assert done["receipt"]["event"]["result_hash"] == digest
    bad = client.post(
        f"/v1/executions/{granted['execution']['id']}/complete",
        json={"outcome": "failed", "result_hash": "md5:x"},
        headers=plane,
    )
    assert bad.status_code == 400


def test_large_arguments_are_decided_and_sealed_and_too_large_raw_ones_refused(
    client: TestClient, plane: dict[str, str]
) -> None:
    content = "x" * 200_000  # a file being written: far beyond one log entry
    arguments = {"path": "/srv/public/big.txt", "content": content}
    big = _call(client, plane, WRITE, context={"arguments": arguments})
    assert big.status_code == 201, big.text[:300]
    assert big.json()["receipt"]["event"]["context"]["arguments"].startswith(PREFIX)
    before = _log_size(client)
    raw = {"timezone": "UTC", "padding": content}  # @log_arguments("raw") would log it all
    refused = _call(client, plane, TIME, context={"arguments": raw})
    assert refused.status_code == 400, refused.text[:300]
    assert refused.json()["error"]["code"] == "invalid_entry"
    assert _log_size(client) == before
    after = _call(client, plane, TIME, context={"arguments": {"timezone": "UTC"}})
    assert after.status_code == 201  # the refused request left nothing behind


def _auditor(client: TestClient, admin: dict[str, str]) -> dict[str, str]:
    issued = client.post("/v1/credentials", json={"name": "ann", "role": "auditor"}, headers=admin)
    return {"Authorization": f"Bearer {issued.json()['credential']}"}


def test_decision_errors_that_would_quote_sealed_arguments_are_sealed(
    client: TestClient, plane: dict[str, str], admin: dict[str, str]
) -> None:
    secret = "/srv/public/TOP-SECRET-TOKEN"
    arguments = {"path": secret, "timezone": 12}  # a declared argument of the wrong type
    denied = _call(client, plane, WRITE, context={"arguments": arguments})
    assert denied.json()["decision"]["reason_code"] == "invalid_request"
    assert "TOP-SECRET" not in denied.text
    auditor = _auditor(client, admin)
    execution = denied.json()["execution"]["id"]
    for path in (f"/v1/executions/{execution}", f"/v1/executions/{execution}/replay"):
        shown = client.get(path, headers=auditor)
        assert shown.status_code == 200 and "TOP-SECRET" not in shown.text, shown.text
    entry = client.get(f"/v1/log/entries/{denied.json()['receipt']['index']}", headers=auditor)
    assert "TOP-SECRET" not in entry.text
    assert entry.json()["event"]["decision"]["errors"][0].startswith("sealed: " + PREFIX)


def test_an_auditors_backtest_leaves_out_sealed_arguments(
    client: TestClient, plane: dict[str, str], admin: dict[str, str]
) -> None:
    _call(client, plane, WRITE, context={"arguments": {"path": "/srv/public/alice-pw.txt"}})
    probe = POLICIES.replace('like "/srv/public/*"', 'like "/srv/public/alice*" && false')
    source = source_json(PolicySource.of({"tools.cedar": probe}, "app.cedarschema", SCHEMA))
    body = {"source": source, "since_ms": 0}
    as_admin = client.post("/v1/policies/backtest", json=body, headers=admin).json()
    assert len(as_admin["changed"]) == 1 and as_admin["withheld"] == 0
    as_auditor = client.post("/v1/policies/backtest", json=body, headers=_auditor(client, admin))
    assert as_auditor.json()["changed"] == [] and as_auditor.json()["withheld"] >= 1
