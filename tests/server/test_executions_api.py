"""Executions end to end through the API, on the example policy set."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lictor.core.grant import verify_grant
from lictor.log.entry import canonical_entry
from lictor.log.note import parse_verifier_key
from lictor.log.proof import TlogProof, parse_tlog_proof, verify_tlog_proof
from lictor.policydir import load_policy_dir
from lictor.service.policies import source_json

from ..strategies import json_values

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLANNER = {"type": "Agent", "id": "planner-7"}
STAGING = {"type": "Service", "id": "payments-api-staging"}
PROD = {"type": "Service", "id": "payments-api"}
DEPLOY = {"type": "Action", "id": "deploy"}


@pytest.fixture
def governed(client: TestClient, admin: dict[str, str]) -> dict[str, Any]:
    """Example policies active, example entities, one verified runtime in eu-west-1."""
    source = source_json(load_policy_dir(EXAMPLES / "policies"))
    pushed = client.post("/v1/policies", json={"source": source}, headers=admin)
    assert pushed.status_code == 201, pushed.text
    version = pushed.json()["version"]
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    assert client.put("/v1/entities", json={"entities": entities}, headers=admin).status_code == 200
    r = client.post(f"/v1/policies/{version}/activate", headers=admin)
    assert r.status_code == 200, r.text
    body = {"name": "edge-eu", "region": "eu-west-1", "cluster": "prod-a"}
    secret = client.post("/v1/runtimes", json=body, headers=admin).json()["credential"]
    runtime = {"Authorization": f"Bearer {secret}"}
    beat = {"attestation": {"state": "verified"}}
    assert client.post("/v1/runtimes/edge-eu/heartbeat", json=beat, headers=runtime).is_success
    return {"version": version, "runtime": runtime}


def _ask(client: TestClient, runtime: dict[str, str], **body: Any) -> Any:
    request = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING, **body}
    return client.post("/v1/executions", json=request, headers=runtime)


def _verify_receipt(client: TestClient, receipt: dict[str, Any]) -> None:
    vkey = parse_verifier_key(client.get("/v1/log/key").json()["vkey"])
    proof = parse_tlog_proof(receipt["tlog_proof"])
    verify_tlog_proof(proof, canonical_entry(receipt["entry"]), [vkey])
    # the proof's two spellings say the same
    hashes = tuple(base64.b64decode(h) for h in receipt["inclusion_proof"])
    checkpoint = receipt["checkpoint"].encode()
    assert proof == TlogProof(receipt["index"], hashes, checkpoint)
    assert receipt["tlog_proof"] == proof.encode()


def test_allow_returns_grant_lease_and_a_verifying_receipt(
    client: TestClient, governed: dict[str, Any]
) -> None:
    r = _ask(client, governed["runtime"])
    assert r.status_code == 201, r.text
    body = r.json()
    execution = body["execution"]
    assert execution["state"] == "active" and execution["policy_version"] == governed["version"]
    assert (
        body["lease"]["ttl"] == 15 and body["lease"]["renew_by_ms"] < body["lease"]["expires_at_ms"]
    )
    assert body["decision"]["reasons"] == ["team-deploys-own-staging"]
    _verify_receipt(client, body["receipt"])
    assert body["receipt"]["entry"]["execution"] == execution["id"]
    assert body["receipt"]["event"]["principal"] == PLANNER  # the private event, for the caller
    app = client.app
    claims = verify_grant(
        body["grant"], app.state.executions.grants.verifier, execution["created_at_ms"]
    )  # type: ignore[attr-defined]
    assert claims.execution_id == execution["id"] and claims.policy_version == governed["version"]
    shown = client.get(f"/v1/executions/{execution['id']}", headers=governed["runtime"]).json()
    assert shown["transitions"][0]["log_index"] == body["receipt"]["index"]


def test_deny_is_403_with_reasons_and_is_logged(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    r = _ask(client, governed["runtime"], resource=PROD)  # planner-7 is not in release
    assert r.status_code == 403, r.text
    body = r.json()
    assert body["error"]["code"] == "denied"
    assert body["execution"]["state"] == "denied"
    assert body["decision"]["reason_code"] == "not_permitted"
    assert "grant" not in body
    _verify_receipt(client, body["receipt"])
    listed = client.get("/v1/executions", params={"state": "denied"}, headers=admin).json()
    assert [e["execution"]["id"] for e in listed["executions"]] == [body["execution"]["id"]]


def test_renew_complete_and_terminal_states_never_change(
    client: TestClient, governed: dict[str, Any]
) -> None:
    runtime = governed["runtime"]
    execution = _ask(client, runtime).json()["execution"]
    renewed = client.post(f"/v1/executions/{execution['id']}/renew", json={}, headers=runtime)
    assert renewed.status_code == 200, renewed.text
    assert (
        renewed.json()["execution"]["lease"]["expires_at_ms"] >= execution["lease"]["expires_at_ms"]
    )
    assert "grant" in renewed.json()
    done = client.post(
        f"/v1/executions/{execution['id']}/complete",
        json={"outcome": "succeeded", "exit_code": 0},
        headers=runtime,
    )
    assert done.status_code == 200 and done.json()["execution"]["state"] == "completed"
    again = client.post(f"/v1/executions/{execution['id']}/renew", json={}, headers=runtime)
    assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_transition"
    states = [t["state"] for t in done.json()["transitions"]]
    assert states == ["active", "completed"]


def _four_and_another_runtimes(
    client: TestClient, runtime: dict[str, str], admin: dict[str, str]
) -> tuple[list[str], str]:
    """Four executions of ``runtime`` (the last completed already) and one of another
    runtime's: their ids."""
    ids = [_ask(client, runtime).json()["execution"]["id"] for _ in range(4)]
    body = {"name": "edge-us", "region": "us-east-1", "cluster": "prod-b"}
    other = client.post("/v1/runtimes", json=body, headers=admin).json()["credential"]
    theirs = _ask(client, {"Authorization": f"Bearer {other}"}).json()["execution"]["id"]
    done = {"outcome": "failed"}
    assert client.post(f"/v1/executions/{ids[3]}/complete", json=done, headers=runtime).is_success
    return ids, theirs


def test_completions_are_answered_each_alone_and_committed_together(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    runtime = governed["runtime"]
    ids, theirs = _four_and_another_runtimes(client, runtime, admin)
    digest = "sha256:" + "ab" * 32
    items = [
        {"execution": ids[0], "outcome": "succeeded", "result_hash": digest},
        {"execution": "ex_" + "z" * 26, "outcome": "succeeded"},
        {"execution": ids[1], "outcome": "cancelled"},
        {"execution": ids[3], "outcome": "succeeded"},
        {"execution": ids[2], "outcome": "failed", "exit_code": 3, "summary": "broke"},
    ]
    size = client.get("/v1/log/checkpoint").json()["size"]
    r = client.post("/v1/executions/completions", json={"completions": items}, headers=runtime)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x.get("error", {}).get("code") for x in results] == [
        None,
        "not_found",
        None,
        "invalid_transition",
        None,
    ]
    assert results[1]["execution"] == items[1]["execution"]
    done = [results[i] for i in (0, 2, 4)]
    assert [x["execution"]["state"] for x in done] == ["completed"] * 3
    assert [x["execution"]["id"] for x in done] == [ids[0], ids[1], ids[2]]
    assert done[0]["transitions"][-1]["result_hash"] == digest
    assert done[2]["transitions"][-1]["summary"] == "broke"
    for x in done:
        _verify_receipt(client, x["receipt"])
    # one transaction: three entries, every receipt proved against the same checkpoint
    assert len({x["receipt"]["checkpoint"] for x in done}) == 1
    grown = client.get("/v1/log/checkpoint").json()["size"]
    assert grown == size + 3
    # another runtime's execution is refused in its place, the rest goes on
    mixed = [
        {"execution": theirs, "outcome": "succeeded"},
        {"execution": ids[0], "outcome": "succeeded"},
    ]
    r = client.post("/v1/executions/completions", json={"completions": mixed}, headers=runtime)
    codes = [x["error"]["code"] for x in r.json()["results"]]
    assert codes == ["permission_denied", "invalid_transition"]


def test_brief_completions_answer_with_the_state_and_the_log_index_only(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    runtime = governed["runtime"]
    ids, _ = _four_and_another_runtimes(client, runtime, admin)
    items = [
        {"execution": ids[0], "outcome": "succeeded", "result_hash": "sha256:" + "cd" * 32},
        {"execution": ids[3], "outcome": "succeeded"},  # already completed
        {"execution": ids[1], "outcome": "cancelled"},
    ]
    body = {"completions": items, "brief": True}
    r = client.post("/v1/executions/completions", json=body, headers=runtime)
    assert r.status_code == 200, r.text
    first, refused, third = r.json()["results"]
    assert first == {
        "execution": {"id": ids[0], "state": "completed", "outcome": "succeeded"},
        "log_index": first["log_index"],
    }
    assert refused["error"]["code"] == "invalid_transition"
    assert third["execution"] == {"id": ids[1], "state": "completed", "outcome": "cancelled"}
    for answer in (first, third):  # the index of the entry the completion was logged as
        view = client.get(f"/v1/executions/{answer['execution']['id']}", headers=admin).json()
        assert view["transitions"][-1]["log_index"] == answer["log_index"]
    assert third["log_index"] == first["log_index"] + 1
    loose = {"completions": items[:1], "brief": "yes"}
    r = client.post("/v1/executions/completions", json=loose, headers=runtime)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "completions",
    [
        [],
        [{"execution": "ex_1", "outcome": "succeeded"}] * 2,
        [{"execution": f"ex_{n}", "outcome": "succeeded"} for n in range(257)],
        [{"execution": "ex_1", "outcome": "finished"}],
        [{"execution": "ex_1", "outcome": "succeeded", "extra": 1}],
    ],
)
def test_malformed_completions_are_refused_whole(
    client: TestClient, governed: dict[str, Any], completions: list[dict[str, Any]]
) -> None:
    size = client.get("/v1/log/checkpoint").json()["size"]
    body = {"completions": completions}
    r = client.post("/v1/executions/completions", json=body, headers=governed["runtime"])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert client.get("/v1/log/checkpoint").json()["size"] == size


def test_renewals_are_answered_each_alone_and_committed_together(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    runtime = governed["runtime"]
    ids, theirs = _four_and_another_runtimes(client, runtime, admin)
    items = [
        {"execution": ids[0], "ttl": 60, "grant": True},
        {"execution": "ex_" + "z" * 26},
        {"execution": ids[1]},
        {"execution": ids[3]},
        {"execution": theirs},
        {"execution": ids[2], "ttl": 20, "grant": True},
    ]
    commits: list[int] = []
    client.app.state.log.sequencer.add_listener(lambda head: commits.append(head.size))  # type: ignore[attr-defined]
    r = client.post("/v1/executions/renewals", json={"renewals": items}, headers=runtime)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    codes = [x.get("error", {}).get("code") for x in results]
    assert codes == [None, "not_found", None, "invalid_transition", "permission_denied", None]
    assert [results[i]["execution"] for i in (1, 3, 4)] == [
        items[i]["execution"] for i in (1, 3, 4)
    ]
    renewed = [results[i] for i in (0, 2, 5)]
    assert [x["execution"]["id"] for x in renewed] == [ids[0], ids[1], ids[2]]
    assert [x["lease"]["ttl"] for x in renewed] == [60, 15, 20]  # 15 s: the default
    assert "grant" not in renewed[1]  # a grant only when asked for
    verifier = client.app.state.executions.grants.verifier  # type: ignore[attr-defined]
    for x in (renewed[0], renewed[2]):
        claims = verify_grant(x["grant"], verifier, x["execution"]["lease"]["issued_at_ms"])
        assert claims.execution_id == x["execution"]["id"]
        assert claims.expires_at_ms == x["lease"]["expires_at_ms"] // 1000 * 1000
    # a heartbeat's answer: the execution and its lease (and a grant if asked), no history
    granted, plain = ["execution", "grant", "lease"], ["execution", "lease"]
    assert [sorted(x) for x in renewed] == [granted, plain, granted]
    assert {x["execution"]["state"] for x in renewed} == {"active"}
    assert len(commits) == 1  # three leases moved in one transaction, nothing to log


def test_a_child_renewed_before_its_parent_in_one_call_follows_the_parents_new_lease(
    client: TestClient, governed: dict[str, Any]
) -> None:
    runtime = governed["runtime"]
    parent = _ask(client, runtime, ttl=5).json()
    child = _ask(client, runtime, ttl=5, parent_grant=parent["grant"]).json()
    items = [  # the child first: the parent is renewed first all the same
        {"execution": child["execution"]["id"], "ttl": 60},
        {"execution": parent["execution"]["id"], "ttl": 60},
    ]
    r = client.post("/v1/executions/renewals", json={"renewals": items}, headers=runtime)
    assert r.status_code == 200, r.text
    renewed_child, renewed_parent = (x["lease"]["expires_at_ms"] for x in r.json()["results"])
    assert renewed_parent > parent["lease"]["expires_at_ms"] + 50_000
    assert renewed_child == renewed_parent  # capped at the parent's new expiry, not its old


def test_a_renewal_among_others_is_revoked_when_its_authorization_no_longer_holds(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    runtime = governed["runtime"]
    ids = [_ask(client, runtime).json()["execution"]["id"] for _ in range(2)]
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    for entity in entities:
        if entity["uid"]["id"] == "planner-7":
            entity["parents"] = []  # no longer on a team that may deploy
    assert client.put("/v1/entities", json={"entities": entities}, headers=admin).is_success
    items = [{"execution": i} for i in ids]
    r = client.post("/v1/executions/renewals", json={"renewals": items}, headers=runtime)
    assert r.status_code == 200, r.text
    for x in r.json()["results"]:
        assert x["execution"]["state"] == "revoked"
        assert x["execution"]["reason"] == "reverify_denied:not_permitted"
        assert "grant" not in x or x["grant"] is None
        _verify_receipt(client, x["receipt"])


@pytest.mark.parametrize(
    "others",
    [
        [{"execution": "ex_1"}] * 2,
        [{"execution": f"ex_{n}"} for n in range(256)],
        [{"execution": "ex_1", "ttl": 0}],
        [{"execution": "ex_1", "ttl": "30"}],
        [{"execution": ""}],
        [{"execution": "ex_1", "extra": 1}],
        [{"execution": "SELF"}],
    ],
    ids=["twice", "too many", "ttl 0", "ttl text", "empty id", "extra field", "self twice"],
)
def test_malformed_renewals_are_refused_whole(
    client: TestClient, governed: dict[str, Any], others: list[dict[str, Any]]
) -> None:
    runtime = governed["runtime"]
    execution = _ask(client, runtime).json()["execution"]
    mine = {"execution": execution["id"]}
    items = [mine, *(mine if o == {"execution": "SELF"} else o for o in others)]
    r = client.post("/v1/executions/renewals", json={"renewals": items}, headers=runtime)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
    shown = client.get(f"/v1/executions/{execution['id']}", headers=runtime).json()
    assert shown["execution"]["lease"] == execution["lease"]  # not renewed
    r = client.post("/v1/executions/renewals", json={"renewals": []}, headers=runtime)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def test_revoking_a_parent_revokes_every_descendant_in_one_transaction(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    runtime = governed["runtime"]
    root = _ask(client, runtime).json()
    child = _ask(client, runtime, parent_grant=root["grant"]).json()
    grandchild = _ask(client, runtime, parent_grant=child["grant"]).json()
    assert grandchild["execution"]["depth"] == 2
    assert grandchild["execution"]["root_id"] == root["execution"]["id"]
    r = client.post(
        f"/v1/executions/{root['execution']['id']}/revoke",
        json={"reason": "incident"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    revoked = r.json()["revoked"]
    ids = [x["execution"]["id"] for x in (root, child, grandchild)]
    assert revoked == ids
    for execution_id in ids:
        shown = client.get(f"/v1/executions/{execution_id}", headers=admin).json()
        assert shown["execution"]["state"] == "revoked"
    reasons = [
        client.get(f"/v1/executions/{i}", headers=admin).json()["execution"]["reason"] for i in ids
    ]
    assert reasons[0] == "incident" and reasons[1].startswith("ancestor_revoked:")
    late = _ask(client, runtime, parent_grant=child["grant"])
    assert late.status_code == 403
    assert late.json()["decision"]["reason_code"] == "parent_not_active"
    lineage = client.get(f"/v1/executions/{ids[1]}/lineage", headers=admin).json()
    assert [a["execution"]["id"] for a in lineage["ancestors"]] == ids[:1]
    assert ids[2] in [d["execution"]["id"] for d in lineage["descendants"]]


def test_a_runtime_acts_only_on_its_own_executions(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    execution = _ask(client, governed["runtime"]).json()["execution"]
    body = {"name": "edge-us", "region": "us-east-1", "cluster": "c"}
    other = {
        "Authorization": "Bearer "
        + client.post("/v1/runtimes", json=body, headers=admin).json()["credential"]
    }
    assert (
        client.post(f"/v1/executions/{execution['id']}/renew", json={}, headers=other).status_code
        == 403
    )
    assert client.get(f"/v1/executions/{execution['id']}", headers=other).status_code == 403
    assert client.get("/v1/executions", headers=other).json()["executions"] == []


def test_activating_a_stricter_policy_revokes_running_work(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    running = _ask(client, governed["runtime"]).json()["execution"]
    source = source_json(load_policy_dir(EXAMPLES / "policies"))
    source["policies"]["freeze.cedar"] = (
        '@id("freeze")\nforbid (principal, action == Action::"deploy", resource);\n'
    )
    version = client.post("/v1/policies", json={"source": source}, headers=admin).json()["version"]
    r = client.post(f"/v1/policies/{version}/activate", headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["revoked"] == [running["id"]]
    shown = client.get(f"/v1/executions/{running['id']}", headers=admin).json()["execution"]
    assert shown["state"] == "revoked" and shown["reason"] == f"policy_changed:{version}"
    denied = _ask(client, governed["runtime"])
    assert denied.status_code == 403 and denied.json()["decision"]["reasons"] == ["freeze"]


def test_no_active_policy_denies(client: TestClient, admin: dict[str, str]) -> None:
    body = {"name": "edge-eu", "region": "eu-west-1", "cluster": "prod-a"}
    secret = client.post("/v1/runtimes", json=body, headers=admin).json()["credential"]
    r = _ask(client, {"Authorization": f"Bearer {secret}"})
    assert r.status_code == 403 and r.json()["decision"]["reason_code"] == "no_active_policy"


@pytest.mark.parametrize(
    "body",
    [
        {"principal": PLANNER, "action": DEPLOY},
        {"principal": {"type": "Agent"}, "action": DEPLOY, "resource": STAGING},
        {"principal": "not an entity", "action": DEPLOY, "resource": STAGING},
        {"principal": PLANNER, "action": DEPLOY, "resource": STAGING, "ttl": 0},
        {"principal": PLANNER, "action": DEPLOY, "resource": STAGING, "extra": 1},
        {
            "principal": PLANNER,
            "action": DEPLOY,
            "resource": STAGING,
            "context": {"a": [[[[[[[[[[1]]]]]]]]]]},
        },
    ],
)
def test_malformed_requests_are_400_and_write_nothing(
    client: TestClient, governed: dict[str, Any], body: dict[str, Any]
) -> None:
    size = client.get("/v1/log/checkpoint").json()["size"]
    r = client.post("/v1/executions", json=body, headers=governed["runtime"])
    assert r.status_code == 400, r.text
    assert client.get("/v1/log/checkpoint").json()["size"] == size


def test_replay_is_identical_even_after_entities_change_and_backtest_finds_changes(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    allowed = _ask(client, governed["runtime"]).json()["execution"]["id"]
    denied = _ask(client, governed["runtime"], resource=PROD).json()["execution"]["id"]
    renewed = client.post(f"/v1/executions/{allowed}/renew", json={}, headers=governed["runtime"])
    assert renewed.status_code == 200
    # planner-7 leaves the payments team: a new decision would differ, a replay must not
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    for entity in entities:
        if entity["uid"] == PLANNER:
            entity["parents"] = []
    assert client.put("/v1/entities", json={"entities": entities}, headers=admin).is_success
    for execution_id in (allowed, denied):
        replay = client.get(f"/v1/executions/{execution_id}/replay", headers=admin).json()
        assert replay["identical"] is True, replay
        assert replay["decisions"]
    source = source_json(load_policy_dir(EXAMPLES / "policies"))
    same = client.post("/v1/policies/backtest", json={"source": source}, headers=admin).json()
    assert same["changed"] == []
    source["policies"]["freeze.cedar"] = '@id("freeze")\nforbid (principal, action, resource);\n'
    frozen = client.post("/v1/policies/backtest", json={"source": source}, headers=admin).json()
    changed = {(c["execution"], c["replayed"]["allowed"]) for c in frozen["changed"]}
    assert changed == {(allowed, False)}
    assert len(frozen["changed"]) == 1  # the renewal verified nothing new: not a decision record
    assert client.get("/v1/policies", headers=admin).json()["active"] == governed["version"]


RELEASE_BOT = {"type": "Agent", "id": "release-bot"}


def test_a_failed_attestation_revokes_the_runtimes_production_work(
    client: TestClient, governed: dict[str, Any]
) -> None:
    runtime = governed["runtime"]
    prod = _ask(client, runtime, principal=RELEASE_BOT, resource=PROD)
    assert prod.status_code == 201, prod.text
    staging = _ask(client, runtime).json()["execution"]["id"]
    beat = {"attestation": {"state": "failed"}}
    r = client.post("/v1/runtimes/edge-eu/heartbeat", json=beat, headers=runtime)
    assert r.status_code == 200 and r.json()["revoked"] == [prod.json()["execution"]["id"]]
    shown = client.get(f"/v1/executions/{staging}", headers=runtime).json()["execution"]
    assert shown["state"] == "active"  # staging deploys do not need attestation


def test_revoking_a_runtime_or_a_principal_ends_their_work_and_future_requests(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    runtime = governed["runtime"]
    first = _ask(client, runtime).json()["execution"]["id"]
    bot = _ask(client, runtime, principal=RELEASE_BOT, resource=PROD).json()["execution"]["id"]
    r = client.post(
        "/v1/principals/revoke",
        json={"principal": 'Agent::"planner-7"', "reason": "compromised"},
        headers=admin,
    )
    assert r.status_code == 200 and r.json()["revoked"] == [first]
    again = _ask(client, runtime)
    assert (
        again.status_code == 403 and again.json()["decision"]["reason_code"] == "principal_revoked"
    )
    r = client.post("/v1/runtimes/edge-eu/revoke", json={"reason": "stolen"}, headers=admin)
    assert r.status_code == 200 and r.json()["revoked"] == [bot]
    assert r.json()["runtime"]["state"] == "revoked"
    late = _ask(client, runtime, principal=RELEASE_BOT, resource=PROD)
    # a revoked runtime's credential opens nothing: refused before any decision
    assert late.status_code == 401 and late.json()["error"]["code"] == "credential_revoked"
    shown = client.get(f"/v1/executions/{bot}", headers=admin).json()["execution"]
    assert shown["reason"] == "runtime_revoked:stolen"


def test_metrics_count_decisions_and_revocations(
    client: TestClient, governed: dict[str, Any], admin: dict[str, str]
) -> None:
    root = _ask(client, governed["runtime"]).json()["execution"]["id"]
    _ask(client, governed["runtime"], resource=PROD)
    client.post(f"/v1/executions/{root}/revoke", json={"reason": "x"}, headers=admin)
    text = client.get("/metrics").text
    assert 'lictor_decisions_total{reason="",result="allow"} 1.0' in text
    assert 'lictor_decisions_total{reason="not_permitted",result="deny"} 1.0' in text
    assert 'lictor_revocations_total{cause="execution"} 1.0' in text
    assert "lictor_active_executions 0.0" in text
    assert "lictor_decision_seconds_count 2.0" in text


def test_completing_a_parent_ends_its_live_children(
    client: TestClient, governed: dict[str, Any]
) -> None:
    runtime = governed["runtime"]
    parent = _ask(client, runtime).json()
    child = _ask(client, runtime, parent_grant=parent["grant"]).json()["execution"]["id"]
    done = client.post(
        f"/v1/executions/{parent['execution']['id']}/complete",
        json={"outcome": "succeeded"},
        headers=runtime,
    )
    assert done.status_code == 200 and done.json()["revoked"] == [child]
    shown = client.get(f"/v1/executions/{child}", headers=runtime).json()["execution"]
    assert shown["state"] == "revoked"
    assert shown["reason"] == f"ancestor_completed:{parent['execution']['id']}"


@pytest.mark.parametrize(
    "change",
    [{"ttl": "5"}, {"ttl": 5.0}, {"ttl": True}, {"principal": 7}, {"context": "{}"}],
)
def test_bodies_are_read_strictly(
    client: TestClient, governed: dict[str, Any], change: dict[str, Any]
) -> None:
    """A number in a string, a float for an integer, a boolean for a number: all refused."""
    before = client.get("/v1/log/checkpoint").text
    r = _ask(client, governed["runtime"], **change)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request", r.text
    assert client.get("/v1/log/checkpoint").text == before  # nothing was logged


def test_a_completion_summary_is_kept_in_its_transition_and_its_receipt(
    client: TestClient, governed: dict[str, Any]
) -> None:
    runtime = governed["runtime"]
    execution_id = _ask(client, runtime).json()["execution"]["id"]
    body = {"outcome": "succeeded", "exit_code": 0, "summary": "deployed 3 services"}
    r = client.post(f"/v1/executions/{execution_id}/complete", json=body, headers=runtime)
    assert r.status_code == 200, r.text
    assert r.json()["receipt"]["event"]["summary"] == "deployed 3 services"
    _verify_receipt(client, r.json()["receipt"])
    shown = client.get(f"/v1/executions/{execution_id}", headers=runtime).json()
    assert shown["transitions"][-1]["summary"] == "deployed 3 services"
    assert "summary" not in r.json()["receipt"]["entry"]  # private: only its commitment is public


def test_a_read_execution_is_parsed_again_only_once_its_record_changed(
    client: TestClient, governed: dict[str, Any]
) -> None:
    runtime, executions = governed["runtime"], client.app.state.executions  # type: ignore[attr-defined]
    execution_id = _ask(client, runtime).json()["execution"]["id"]
    first = executions.get(execution_id)
    assert executions.get(execution_id) is first  # the same record: parsed once
    done = client.post(
        f"/v1/executions/{execution_id}/complete", json={"outcome": "succeeded"}, headers=runtime
    )
    assert done.status_code == 200, done.text
    after = executions.get(execution_id)
    assert after is not first and str(after.execution.state) == "completed"
    assert after.record_version == first.record_version + 1


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(context=st.dictionaries(st.text(max_size=8), json_values(8), max_size=4))
def test_what_is_logged_is_rfc8785_whatever_the_context_holds(
    client: TestClient, governed: dict[str, Any], context: dict[str, Any]
) -> None:
    """Floats and keys beyond ASCII in a context (allowed or not, a decision is logged)
    leave an entry and a committed event in RFC 8785's bytes; an integer beyond 2**53,
    which RFC 8785 cannot write, is refused and nothing is logged."""
    r = _ask(client, governed["runtime"], context=context)
    if r.status_code == 400:  # RFC 8785 has no form for an integer beyond 2**53
        assert r.json()["error"]["code"] == "invalid_entry", r.text
        return
    assert r.status_code in (201, 403), r.text
    receipt = r.json()["receipt"]
    _verify_receipt(client, receipt)
    leaf = hashlib.sha256(b"\x00" + rfc8785.dumps(receipt["entry"])).digest()
    assert base64.b64decode(receipt["leaf_hash"]) == leaf
    event = rfc8785.dumps(receipt["event"])
    salt = base64.b64decode(receipt["salt"])
    expected = "sha256:" + hashlib.sha256(salt + event).hexdigest()
    assert receipt["entry"]["commitment"] == expected
