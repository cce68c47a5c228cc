"""Hypothesis against the governance API: bad input is a clean 4xx and writes nothing.

Every execution, policy, entity and runtime endpoint is driven with generated
bodies (random JSON, wrong types, near-valid requests with one field broken,
huge strings within the body limit, deep contexts) and random path ids. The
answer is always one of the documented statuses — never a 5xx — with a
stable error code; a rejected request leaves the log exactly as it was, and
an accepted one grows it by what it reports (a decision is one entry).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lictor.policydir import load_policy_dir
from lictor.server.app import create_app
from lictor.service.log import AuditLog
from lictor.service.policies import source_json
from lictor.wire import ERROR_CLASSES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
PLANNER = {"type": "Agent", "id": "planner-7"}
DEPLOY = {"type": "Action", "id": "deploy"}
STAGING = {"type": "Service", "id": "payments-api-staging"}
Headers = dict[str, str]
EXAMPLE_SOURCE = source_json(load_policy_dir(EXAMPLES / "policies"))
EXAMPLE_ENTITIES: list[dict[str, Any]] = json.loads((EXAMPLES / "entities.json").read_text())

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
huge_strings = st.integers(min_value=0, max_value=60_000).map(lambda n: "x" * n) | st.text(
    min_size=100, max_size=4000
)


def _nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


deep_values = st.integers(min_value=0, max_value=12).map(_nested) | st.integers(
    min_value=13, max_value=400
).map(_nested)
refs = (
    st.sampled_from([PLANNER, DEPLOY, STAGING, 'Agent::"planner-7"', 'Agent::"nobody"'])
    | st.fixed_dictionaries({"type": st.text(max_size=140), "id": st.text(max_size=600)})
    | st.text(max_size=40).map(lambda t: f'Agent::"{t}"')
    | huge_strings
    | json_values
)


def near_valid(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A dict whose every field may be dropped or replaced with junk, plus stray keys."""
    optional = {k: v | json_values for k, v in fields.items()}
    return st.fixed_dictionaries({}, optional=optional).flatmap(
        lambda body: st.dictionaries(st.text(max_size=8), json_values, max_size=2).map(
            lambda extra: {**extra, **body}
        )
    )


def _replace(body: dict[str, Any], pick: int, junk: Any) -> dict[str, Any]:
    keys = sorted(body)
    key = keys[pick % len(keys)] if keys and pick >= 0 else f"stray{pick}"
    return {**body, key: junk}


def broken(valid: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """A valid body with one field (or a stray new one) replaced by junk."""
    junk = json_values | huge_strings | deep_values
    return st.builds(_replace, valid, st.integers(min_value=-1, max_value=8), junk)


contexts = st.dictionaries(st.text(max_size=10), json_values | deep_values, max_size=4) | (
    st.fixed_dictionaries({"s": huge_strings})
)
execution_fields: dict[str, st.SearchStrategy[Any]] = {
    "principal": refs,
    "action": refs,
    "resource": refs,
    "context": contexts,
    "ttl": st.integers(min_value=-5, max_value=4000) | st.sampled_from(["5", True, 1.5]),
    "parent_grant": st.text(max_size=100) | huge_strings,
    "definition": st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True) | st.text(max_size=80),
}
valid_executions = st.fixed_dictionaries(
    {
        "principal": st.sampled_from([PLANNER, 'Agent::"planner-7"', {"type": "Agent", "id": "x"}]),
        "action": st.sampled_from([DEPLOY, 'Action::"deploy"', 'Action::"read"']),
        "resource": st.sampled_from([STAGING, {"type": "Service", "id": "payments-api"}]),
    },
    optional={
        "context": contexts | st.fixed_dictionaries({"arguments": json_values | deep_values}),
        "ttl": st.integers(min_value=1, max_value=3600),
    },
)
path_ids = (
    st.text(max_size=40).map(lambda t: quote(t, safe=""))
    | st.from_regex(r"ex_[0-7][0-9a-hjkmnp-tv-z]{25}", fullmatch=True)
    | st.from_regex(r"ex_[a-z2-7]{26}", fullmatch=True)
    | st.text(alphabet="ex_/.%-0123456789abc", max_size=30)
)


def _is_clean(r: httpx.Response, allowed: set[int]) -> bool:
    event(f"{r.request.method} {r.status_code}")
    if r.status_code not in allowed:
        return False
    if r.status_code >= 400:
        code = r.json()["error"]["code"]
        return code in ERROR_CLASSES or code in ("method_not_allowed", "http_error", "denied")
    return True


def _size(client: TestClient) -> int:
    size: int = client.get("/v1/log/checkpoint").json()["size"]
    return size


def _runtime(client: TestClient, admin: Headers, name: str = "edge-eu") -> Headers:
    body = {"name": name, "region": "eu-west-1", "cluster": "prod-a"}
    added = client.post("/v1/runtimes", json=body, headers=admin)
    assert added.status_code == 201, added.text
    runtime = {"Authorization": f"Bearer {added.json()['credential']}"}
    beat = {"attestation": {"state": "verified"}}
    assert client.post(f"/v1/runtimes/{name}/heartbeat", json=beat, headers=runtime).is_success
    return runtime


@pytest.fixture
def quiet(log: AuditLog) -> Iterator[TestClient]:
    """The app with a reaper that never runs, so only requests grow the log."""
    with TestClient(create_app(log, reap_every=3600), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def governed(quiet: TestClient, admin: Headers) -> Headers:
    """Example policies active and example entities; a verified runtime's headers."""
    pushed = quiet.post("/v1/policies", json={"source": EXAMPLE_SOURCE}, headers=admin)
    version = pushed.json()["version"]
    assert quiet.put("/v1/entities", json={"entities": EXAMPLE_ENTITIES}, headers=admin).is_success
    assert quiet.post(f"/v1/policies/{version}/activate", headers=admin).is_success
    return _runtime(quiet, admin)


# -- executions ------------------------------------------------------------------------


def _check_request(client: TestClient, runtime: Headers, body: Any) -> None:
    before = _size(client)
    r = client.post("/v1/executions", json=body, headers=runtime)
    assert _is_clean(r, {201, 400, 403, 413}), (body, r.text)
    decided = r.status_code in (201, 403)
    if decided:  # a decision, allow or deny, is logged with its receipt
        answer = r.json()
        assert answer["receipt"]["index"] == before
        assert answer["execution"]["state"] == ("active" if r.status_code == 201 else "denied")
        assert ("grant" in answer) == (r.status_code == 201)
    assert _size(client) == before + (1 if decided else 0), r.text


@FUZZ
@given(body=valid_executions | broken(valid_executions))
def test_execution_requests_near_valid(quiet: TestClient, governed: Headers, body: Any) -> None:
    _check_request(quiet, governed, body)


@FUZZ
@given(body=near_valid(execution_fields) | json_values)
def test_execution_requests_junk(quiet: TestClient, governed: Headers, body: Any) -> None:
    _check_request(quiet, governed, body)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_execution_request_raw_bytes(quiet: TestClient, governed: Headers, raw: bytes) -> None:
    before = _size(quiet)
    headers = {**governed, "Content-Type": "application/json"}
    r = quiet.post("/v1/executions", content=raw, headers=headers)
    assert _is_clean(r, {400}), (raw, r.text)
    assert _size(quiet) == before


transition_bodies: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "renew": st.fixed_dictionaries({}, optional={"ttl": st.integers(min_value=1, max_value=3600)}),
    "complete": st.fixed_dictionaries(
        {"outcome": st.sampled_from(["succeeded", "failed", "cancelled"])},
        optional={
            "exit_code": st.integers(min_value=-(2**31), max_value=2**32 - 1),
            "summary": st.text(max_size=1024),
        },
    ),
    "revoke": st.fixed_dictionaries({"reason": st.text(min_size=1, max_size=256)}),
}
transitions = st.sampled_from(sorted(transition_bodies)).flatmap(
    lambda verb: st.tuples(
        st.just(verb),
        transition_bodies[verb] | broken(transition_bodies[verb]) | json_values,
    )
)


@FUZZ
@given(
    transition=transitions,
    real=st.booleans(),
    target=st.sampled_from(["live", "ended"]) | path_ids,
)
def test_execution_transitions(
    quiet: TestClient,
    governed: Headers,
    admin: Headers,
    transition: tuple[str, Any],
    real: bool,
    target: str,
) -> None:
    verb, body = transition
    if real:
        target = "ended" if target == "ended" else "live"
        asked = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
        created = quiet.post("/v1/executions", json=asked, headers=governed).json()
        execution_id = created["execution"]["id"]
        if target == "ended":
            path = f"/v1/executions/{execution_id}/revoke"
            assert quiet.post(path, json={"reason": "x"}, headers=admin).status_code == 200
        target = execution_id
    headers = admin if verb == "revoke" else governed
    before = _size(quiet)
    r = quiet.post(f"/v1/executions/{target}/{verb}", json=body, headers=headers)
    assert _is_clean(r, {200, 400, 404, 405, 409, 413}), (target, body, r.text)
    after = _size(quiet)
    if r.status_code != 200:
        assert after == before, r.text
    elif verb == "renew":  # a renewal that verified nothing new only moves the lease
        assert after in (before, before + 1)
        assert r.json()["execution"]["state"] == "active"
    elif verb == "complete":  # one entry, and one per live descendant it ended
        assert after == before + 1 + len(r.json().get("revoked", []))
    else:  # one entry per execution the revocation ended
        assert after == before + len(r.json()["revoked"])


completion_items = st.lists(
    st.tuples(st.sampled_from(["live", "ended", "missing"]), transition_bodies["complete"]),
    min_size=1,
    max_size=5,
)


def _batch_items(
    quiet: TestClient, governed: Headers, admin: Headers, items: Any
) -> list[dict[str, Any]]:
    """Each ``(kind, body)`` as a batch's item: ``body`` naming a live execution, one
    revoked, or one that does not exist."""
    asked = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
    batch = []
    for n, (kind, body) in enumerate(items):
        execution_id = f"ex_{n:026d}"
        if kind != "missing":
            created = quiet.post("/v1/executions", json=asked, headers=governed).json()
            execution_id = created["execution"]["id"]
        if kind == "ended":
            path = f"/v1/executions/{execution_id}/revoke"
            assert quiet.post(path, json={"reason": "x"}, headers=admin).status_code == 200
        batch.append({"execution": execution_id, **body})
    return batch


@FUZZ
@given(items=completion_items, mangled=st.none() | json_values)
def test_completions(
    quiet: TestClient, governed: Headers, admin: Headers, items: Any, mangled: Any
) -> None:
    """A batch of completions: each live one ends with one entry, each other one is
    answered with its error, and a malformed batch changes nothing."""
    completions = _batch_items(quiet, governed, admin, items)
    before = _size(quiet)
    payload = {"completions": completions} if mangled is None else mangled
    r = quiet.post("/v1/executions/completions", json=payload, headers=governed)
    assert _is_clean(r, {200, 400, 413}), (payload, r.text)
    if r.status_code != 200:
        assert _size(quiet) == before and mangled is not None, r.text
        return
    codes = [x.get("error", {}).get("code") for x in r.json()["results"]]
    expected = {"live": None, "ended": "invalid_transition", "missing": "not_found"}
    assert codes == [expected[kind] for kind, _ in items]
    assert _size(quiet) == before + codes.count(None)


renewal_bodies = st.fixed_dictionaries(
    {},
    optional={"ttl": st.integers(min_value=1, max_value=3600), "grant": st.booleans()},
)
renewal_items = st.lists(
    st.tuples(st.sampled_from(["live", "ended", "missing"]), renewal_bodies),
    min_size=1,
    max_size=5,
)


@FUZZ
@given(items=renewal_items, mangled=st.none() | json_values)
def test_renewals(
    quiet: TestClient, governed: Headers, admin: Headers, items: Any, mangled: Any
) -> None:
    """A runtime's renewals together: each live one gets a new lease (and logs nothing
    new, its authorization unchanged), each other one is answered with its error, and
    a malformed batch changes nothing."""
    renewals = _batch_items(quiet, governed, admin, items)
    before = _size(quiet)
    payload = {"renewals": renewals} if mangled is None else mangled
    r = quiet.post("/v1/executions/renewals", json=payload, headers=governed)
    assert _is_clean(r, {200, 400, 413}), (payload, r.text)
    assert _size(quiet) == before, r.text
    if r.status_code != 200:
        assert mangled is not None, r.text
        return
    results = r.json()["results"]
    codes = [x.get("error", {}).get("code") for x in results]
    expected = {"live": None, "ended": "invalid_transition", "missing": "not_found"}
    assert codes == [expected[kind] for kind, _ in items]
    for (kind, body), x in zip(items, results, strict=True):
        if kind == "live":
            assert x["execution"]["state"] == "active"
            assert ("grant" in x) == body.get("grant", False)
            assert x["lease"]["ttl"] == body.get("ttl", 15)


@FUZZ
@given(
    target=path_ids,
    suffix=st.sampled_from(["", "/lineage", "/replay"]),
    params=st.dictionaries(
        st.sampled_from(["state", "principal", "runtime", "region", "action", "after", "limit"]),
        st.text(max_size=30) | st.integers(min_value=-(2**70), max_value=2**70).map(str),
        max_size=4,
    ),
)
def test_execution_reads(
    quiet: TestClient,
    governed: Headers,
    admin: Headers,
    target: str,
    suffix: str,
    params: dict[str, str],
) -> None:
    before = _size(quiet)
    r = quiet.get(f"/v1/executions/{target}{suffix}", headers=admin)
    assert _is_clean(r, {200, 400, 404, 405}), (target, r.text)
    for headers in (admin, governed):
        listed = quiet.get("/v1/executions", params=params, headers=headers)
        assert _is_clean(listed, {200, 400}), (params, listed.text)
    assert _size(quiet) == before


# -- policies and entities -----------------------------------------------------------------

policy_texts = (
    st.text(max_size=200)
    | huge_strings
    | st.sampled_from(
        [
            "permit (principal, action, resource);",
            'forbid (principal, action == Action::"deploy", resource) when { 1 + "a" };',
            '@id("x") permit (principal == Agent::"a", action, resource) when { context.x.y };',
            "permit (principal, action, resource) when { 9223372036854775807 + 1 == 0 };",
            'permit (principal, action, resource) when { "a" like "*****************" };',
        ]
    )
)
schema_texts = (
    st.text(max_size=200)
    | st.just((EXAMPLES / "policies" / "app.cedarschema").read_text())
    | json_values.map(json.dumps)
)


def _with_policy(name: str, text: str) -> dict[str, Any]:
    return {**EXAMPLE_SOURCE, "policies": {**EXAMPLE_SOURCE["policies"], name: text}}


example_sources = st.builds(
    _with_policy, st.sampled_from(["deploy.cedar", "extra.cedar", "", "a/b.cedar"]), policy_texts
) | broken(st.just(EXAMPLE_SOURCE))
sources = example_sources | near_valid(
    {
        "policies": st.dictionaries(st.text(max_size=30), policy_texts, max_size=3),
        "schema": near_valid(
            {
                "name": st.sampled_from(["app.cedarschema", "s.cedarschema.json", "x", ""]),
                "text": schema_texts,
            }
        ),
    }
)


@FUZZ
@given(body=st.fixed_dictionaries({"source": example_sources}) | near_valid({"source": sources}))
def test_policy_pushes(quiet: TestClient, admin: Headers, body: Any) -> None:
    before = _size(quiet)
    r = quiet.post("/v1/policies", json=body, headers=admin)
    assert _is_clean(r, {201, 400, 413}), (body, r.text)
    grew = 1 if r.status_code == 201 and r.json()["new"] else 0
    assert _size(quiet) == before + grew, r.text


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {"source": example_sources},
        optional={"since_ms": st.integers(min_value=-1, max_value=2**63)},
    )
    | near_valid({"source": sources, "since_ms": json_values})
)
def test_backtests_write_nothing(
    quiet: TestClient, governed: Headers, admin: Headers, body: Any
) -> None:
    before = _size(quiet)
    r = quiet.post("/v1/policies/backtest", json=body, headers=admin)
    assert _is_clean(r, {200, 400, 413}), (body, r.text)
    assert _size(quiet) == before


@FUZZ
@given(version=path_ids | st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
def test_policy_versions(
    quiet: TestClient, governed: Headers, admin: Headers, version: str
) -> None:
    before = _size(quiet)
    shown = quiet.get(f"/v1/policies/{version}", headers=admin)
    assert _is_clean(shown, {200, 400, 404, 405}), (version, shown.text)
    r = quiet.post(f"/v1/policies/{version}/activate", headers=admin)
    assert _is_clean(r, {400, 404, 405}), (version, r.text)
    assert _size(quiet) == before


TEAMS = [{"type": "Team", "id": t} for t in ("payments", "release", "analytics", "nobody")]
valid_entities = st.fixed_dictionaries(
    {
        "uid": st.fixed_dictionaries(
            {"type": st.sampled_from(["Agent", "Team", "Service", "Nope"]), "id": st.text()}
        ),
        "attrs": st.just({}) | st.dictionaries(st.sampled_from(["environment", "x"]), scalars),
        "parents": st.lists(st.sampled_from(TEAMS), max_size=2),
    }
)
entity_dicts = (
    valid_entities
    | broken(valid_entities)
    | near_valid(
        {
            "uid": refs,
            "attrs": st.dictionaries(st.text(max_size=10), json_values | deep_values, max_size=3),
            "parents": st.lists(refs, max_size=3),
        }
    )
)


def _with_entity(at: int, entity: dict[str, Any]) -> dict[str, Any]:
    entities = list(EXAMPLE_ENTITIES)
    entities[at % len(entities)] = entity
    return {"entities": entities}


@FUZZ
@given(
    body=st.builds(_with_entity, st.integers(min_value=0), entity_dicts | broken(entity_dicts))
    | near_valid({"entities": st.lists(entity_dicts, max_size=4)})
    | json_values
)
def test_entity_replacements(
    quiet: TestClient, governed: Headers, admin: Headers, body: Any
) -> None:
    before_entities = quiet.get("/v1/entities", headers=admin).json()["version"]
    before = _size(quiet)
    r = quiet.put("/v1/entities", json=body, headers=admin)
    assert _is_clean(r, {200, 400, 413}), (body, r.text)
    if r.status_code != 200:
        assert _size(quiet) == before, r.text
        assert quiet.get("/v1/entities", headers=admin).json()["version"] == before_entities
    else:
        assert _size(quiet) in (before, before + 1)
        restored = quiet.put("/v1/entities", json={"entities": EXAMPLE_ENTITIES}, headers=admin)
        assert restored.status_code == 200, restored.text
    # whatever was stored, decisions still come out as a clean allow or deny
    asked = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
    decided = quiet.post("/v1/executions", json=asked, headers=governed)
    assert decided.status_code == 201, decided.text


# -- runtimes ----------------------------------------------------------------------------


@FUZZ
@given(
    body=near_valid(
        {
            "name": st.text(max_size=70),
            "region": st.text(max_size=70),
            "cluster": st.text(max_size=70),
        }
    )
    | json_values,
    beat=near_valid(
        {
            "attestation": near_valid(
                {
                    "state": st.text(max_size=40),
                    "digests": st.dictionaries(st.text(max_size=10), st.text(max_size=210)),
                }
            )
        }
    )
    | json_values,
    who=path_ids,
)
def test_runtime_registration_and_heartbeats(
    quiet: TestClient, governed: Headers, admin: Headers, body: Any, beat: Any, who: str
) -> None:
    before = _size(quiet)
    r = quiet.post("/v1/runtimes", json=body, headers=admin)
    assert _is_clean(r, {201, 400, 409, 413}), (body, r.text)
    assert _size(quiet) == before + (1 if r.status_code == 201 else 0)
    before = _size(quiet)
    beat_r = quiet.post("/v1/runtimes/edge-eu/heartbeat", json=beat, headers=governed)
    assert _is_clean(beat_r, {200, 400}), (beat, beat_r.text)
    if beat_r.status_code != 200:
        assert _size(quiet) == before
    other = quiet.post(f"/v1/runtimes/{who}/heartbeat", json={}, headers=governed)
    assert _is_clean(other, {200, 400, 403, 404, 405}), (who, other.text)


# -- tools ---------------------------------------------------------------------------------

tool_definitions = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=12)},
    optional={
        "description": st.text(max_size=40) | st.none(),
        "inputSchema": st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    },
)
valid_reports = st.fixed_dictionaries(
    {
        "server": st.from_regex(r"[a-z][a-z0-9._-]{0,10}", fullmatch=True),
        "tools": st.lists(tool_definitions, max_size=4, unique_by=lambda t: t["name"]),
    }
)


@FUZZ
@given(body=valid_reports | broken(valid_reports) | json_values)
def test_tool_reports(quiet: TestClient, governed: Headers, body: Any) -> None:
    before = _size(quiet)
    r = quiet.post("/v1/tools/observe", json=body, headers=governed)
    assert _is_clean(r, {200, 400, 413}), (body, r.text)
    if r.status_code != 200:
        assert _size(quiet) == before
        return
    seen = r.json()["tools"]
    assert len(seen) == len(body["tools"])
    after = _size(quiet)
    assert after <= before + len(seen)  # at most one entry per tool
    again = quiet.post("/v1/tools/observe", json=body, headers=governed)
    assert again.json() == r.json() and _size(quiet) == after  # a repeat changes nothing


@FUZZ
@given(
    body=near_valid(
        {
            "tool": st.text(max_size=30),
            "hash": st.from_regex(r"sha256:[0-9a-f]{64}", fullmatch=True),
        }
    )
)
def test_tool_approvals(quiet: TestClient, admin: Headers, body: Any) -> None:
    before = _size(quiet)
    r = quiet.post("/v1/tools/approve", json=body, headers=admin)
    assert _is_clean(r, {400, 404, 409, 413}), (body, r.text)
    assert _size(quiet) == before


@FUZZ
@given(
    body=near_valid({"principal": refs, "action": refs, "resources": st.lists(refs, max_size=5)})
)
def test_previews_write_nothing(quiet: TestClient, governed: Headers, body: Any) -> None:
    before = _size(quiet)
    r = quiet.post("/v1/executions/preview", json=body, headers=governed)
    assert _is_clean(r, {200, 400, 413}), (body, r.text)
    if r.status_code == 200:
        assert len(r.json()["results"]) == len(body["resources"])
    assert _size(quiet) == before
