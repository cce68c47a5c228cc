"""The hot routes (`lictor.server.hot`) answer exactly as the FastAPI routes they stand for.

Two servers are set up alike, one serving the calls on every execution's path as raw
ASGI and one through FastAPI; each request goes to both, and their answers must agree
on the status, the error code and the fields of the body.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lictor.datadir import open_data_dir
from lictor.policydir import load_policy_dir
from lictor.server.app import create_app
from lictor.service.log import AuditLog
from lictor.service.policies import source_json

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLANNER = {"type": "Agent", "id": "planner-7"}
DEPLOY = {"type": "Action", "id": "deploy"}
STAGING = {"type": "Service", "id": "payments-api-staging"}
PROD = {"type": "Service", "id": "payments-api"}
LIMIT = 4096


class Side:
    """One server: its client, admin and runtime credentials."""

    def __init__(self, client: TestClient, admin: dict[str, str]) -> None:
        self.client = client
        self.admin = admin
        source = source_json(load_policy_dir(EXAMPLES / "policies"))
        version = client.post("/v1/policies", json={"source": source}, headers=admin).json()
        entities = json.loads((EXAMPLES / "entities.json").read_text())
        client.put("/v1/entities", json={"entities": entities}, headers=admin)
        client.post(f"/v1/policies/{version['version']}/activate", headers=admin)
        self.runtime = self._runtime("edge-eu")
        self.other = self._runtime("edge-us")

    def _runtime(self, name: str) -> dict[str, str]:
        body = {"name": name, "region": "eu-west-1", "cluster": "prod-a"}
        secret = self.client.post("/v1/runtimes", json=body, headers=self.admin).json()
        runtime = {"Authorization": f"Bearer {secret['credential']}"}
        beat = {"attestation": {"state": "verified"}}
        self.client.post(f"/v1/runtimes/{name}/heartbeat", json=beat, headers=runtime)
        return runtime

    def started(self) -> dict[str, Any]:
        body = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
        answer = self.client.post("/v1/executions", json=body, headers=self.runtime)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def post(self, path: str, content: bytes, headers: dict[str, str]) -> tuple[Any, ...]:
        answer = self.client.post(path, content=content, headers=headers)
        try:
            body = answer.json()
        except ValueError:
            return answer.status_code, "not json", answer.text
        code = body.get("error", {}).get("code") if isinstance(body, dict) else None
        return answer.status_code, code, sorted(body) if isinstance(body, dict) else body


@pytest.fixture(scope="module")
def sides(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Side, Side]]:
    made: list[tuple[Any, AuditLog, TestClient]] = []
    try:
        for hot in (True, False):
            root = tmp_path_factory.mktemp("hot" if hot else "fastapi")
            data = open_data_dir(root / "data", "test.example/log")
            log = AuditLog(data.store, data.signer)
            app = create_app(log, max_body=LIMIT, hot_routes=hot)
            client = TestClient(app, raise_server_exceptions=False).__enter__()
            made.append((data, log, client))
        token = [(d.path / "admin.token").read_text().strip() for d, _, _ in made]
        yield (
            Side(made[0][2], {"Authorization": f"Bearer {token[0]}"}),
            Side(made[1][2], {"Authorization": f"Bearer {token[1]}"}),
        )
    finally:
        for data, log, client in made:
            client.__exit__(None, None, None)
            log.close()
            data.close()


def _both(sides: tuple[Side, Side], path: str, body: Any, who: str = "runtime", **kw: Any) -> Any:
    """Send one request to both sides; their answers, which must agree."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = kw.get("headers")
    answers = []
    for side in sides:
        sent = headers if headers is not None else getattr(side, who)
        sent = {"Content-Type": "application/json", **sent}
        where = path.replace("{id}", kw.get("id", {}).get(side, ""))
        answers.append(side.post(where, content, sent))
    assert answers[0] == answers[1], f"{path} {body!r}"
    return answers[0]


VALID = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
CASES: list[tuple[str, Any]] = [
    ("allowed", VALID),
    ("as text", {"principal": 'Agent::"planner-7"', "action": DEPLOY, "resource": STAGING}),
    ("denied", {**VALID, "resource": PROD}),
    ("with ttl", {**VALID, "ttl": 60}),
    ("ttl too long", {**VALID, "ttl": 10**6}),
    ("ttl a float", {**VALID, "ttl": 60.0}),
    ("ttl a string", {**VALID, "ttl": "60"}),
    ("ttl a boolean", {**VALID, "ttl": True}),
    ("unknown field", {**VALID, "colour": "red"}),
    ("missing action", {"principal": PLANNER, "resource": STAGING}),
    ("bad ref", {**VALID, "principal": {"type": "Agent"}}),
    ("ref with extra", {**VALID, "principal": {**PLANNER, "x": 1}}),
    ("ref type too long", {**VALID, "principal": {"type": "A" * 200, "id": "x"}}),
    ("bad text ref", {**VALID, "principal": "planner-7"}),
    ("context a list", {**VALID, "context": []}),
    ("context too deep", {**VALID, "context": {"a": [[[[[[[[[[1]]]]]]]]]]}}),
    ("bad definition", {**VALID, "definition": "sha256:xyz"}),
    ("bad parent grant", {**VALID, "parent_grant": "eyJhbGciOi.x.y"}),
    ("reserved context", {**VALID, "context": {"lictor": {}}}),
    ("not an object", [1, 2]),
    ("null", None),
]


@pytest.mark.parametrize("body", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_a_request_is_answered_alike(sides: tuple[Side, Side], body: Any) -> None:
    _both(sides, "/v1/executions", body)


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"principal": 1, "principal": 2}', b"\xff\xfe{}", b'{"a": NaN}', b"x" * 5000],
    ids=["empty", "truncated", "key twice", "not utf-8", "nan", "too large"],
)
def test_a_malformed_body_is_answered_alike(sides: tuple[Side, Side], raw: bytes) -> None:
    status, code, _ = _both(sides, "/v1/executions", raw)
    assert status in (400, 413) and code in ("invalid_request", "payload_too_large")


def test_callers_are_checked_alike(sides: tuple[Side, Side]) -> None:
    assert _both(sides, "/v1/executions", VALID, headers={})[:2] == (401, "unauthenticated")
    bad = {"Authorization": "Bearer nope"}
    assert _both(sides, "/v1/executions", VALID, headers=bad)[:2] == (401, "unauthenticated")
    assert _both(sides, "/v1/executions", VALID, who="admin")[:2] == (403, "permission_denied")
    wrong = {"Authorization": "Basic abc"}
    assert _both(sides, "/v1/executions", VALID, headers=wrong)[0] == 401
    text = {"Content-Type": "text/plain"}
    for side in sides:
        r = side.client.post("/v1/executions", content=b"{}", headers={**side.runtime, **text})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"


def test_renew_and_complete_are_answered_alike(sides: tuple[Side, Side]) -> None:
    ids = {side: side.started()["execution"]["id"] for side in sides}
    renewed = _both(sides, "/v1/executions/{id}/renew", {"ttl": 30}, id=ids)
    assert renewed[0] == 200 and "lease" in renewed[2]
    assert _both(sides, "/v1/executions/{id}/renew", {}, id=ids)[0] == 200
    assert _both(sides, "/v1/executions/{id}/renew", {"ttl": 0}, id=ids)[0] == 400
    assert _both(sides, "/v1/executions/{id}/renew", None, id=ids)[0] == 400
    assert _both(sides, "/v1/executions/{id}/renew", {}, who="other", id=ids)[0] == 403
    assert _both(sides, "/v1/executions/{id}/complete", {"outcome": "done"}, id=ids)[0] == 400
    assert _both(sides, "/v1/executions/{id}/complete", {}, id=ids)[0] == 400
    done = {"outcome": "succeeded", "exit_code": 0, "summary": "ok"}
    assert _both(sides, "/v1/executions/{id}/complete", done, id=ids)[0] == 200
    assert _both(sides, "/v1/executions/{id}/complete", done, id=ids)[:2] == (
        409,
        "invalid_transition",
    )
    assert _both(sides, "/v1/executions/{id}/renew", {}, id=ids)[0] == 409
    unknown = {side: "ex_" + "a" * 26 for side in sides}
    assert _both(sides, "/v1/executions/{id}/renew", {}, id=unknown)[:2] == (404, "not_found")


def _batched(
    sides: tuple[Side, Side], path: str, key: str, items: Any, mine: dict[Side, str], who: str
) -> list[Any]:
    """Send a batch to both sides: ``items`` under ``key`` (``"MINE"`` standing for each
    side's own execution), or ``items`` as the whole body. The status, the error code and
    each result's state or error code, which must agree."""
    answers = []
    for side in sides:
        body = items
        if isinstance(items, list):
            own = [
                {**i, "execution": mine[side]} if i.get("execution") == "MINE" else i for i in items
            ]
            body = {key: own}
        r = side.client.post(path, json=body, headers=getattr(side, who))
        reply = r.json()
        results = reply.get("results", []) if isinstance(reply, dict) else []
        shown = [x.get("error", {}).get("code") or x["execution"]["state"] for x in results]
        answers.append((r.status_code, reply.get("error", {}).get("code"), shown))
    assert answers[0] == answers[1], items
    return list(answers[0])


def test_renewals_are_answered_alike(sides: tuple[Side, Side]) -> None:
    mine = {side: side.started()["execution"]["id"] for side in sides}

    def renewals(items: Any, who: str = "runtime") -> list[Any]:
        return _batched(sides, "/v1/executions/renewals", "renewals", items, mine, who)

    unknown = "ex_" + "a" * 26
    assert renewals([{"execution": "MINE", "ttl": 30}, {"execution": unknown}]) == [
        200,
        None,
        ["active", "not_found"],
    ]
    assert renewals([{"execution": "MINE"}], who="admin")[:2] == [403, "permission_denied"]
    assert renewals([{"execution": "MINE"}] * 2)[:2] == [400, "invalid_request"]
    assert renewals([{"execution": "MINE", "ttl": 0}])[:2] == [400, "invalid_request"]
    assert renewals({"renewals": []})[:2] == [400, "invalid_request"]
    assert renewals({"renewal": [{"execution": "x"}]})[:2] == [400, "invalid_request"]
    mixed = [{"execution": "MINE"}, {"execution": unknown}]
    assert renewals(mixed, who="other")[2] == ["permission_denied", "not_found"]
    for side in sides:
        side.grant = {"Authorization": f"Bearer {side.started()['grant']}"}  # type: ignore[attr-defined]
    assert renewals([{"execution": "MINE"}], who="grant")[:2] == [403, "permission_denied"]


def test_completions_are_answered_alike(sides: tuple[Side, Side]) -> None:
    mine = {side: side.started()["execution"]["id"] for side in sides}

    def completions(items: Any, who: str = "runtime") -> list[Any]:
        return _batched(sides, "/v1/executions/completions", "completions", items, mine, who)

    unknown = "ex_" + "a" * 26
    done = {"execution": "MINE", "outcome": "succeeded"}
    assert completions([done], who="admin")[:2] == [403, "permission_denied"]
    assert completions([done] * 2)[:2] == [400, "invalid_request"]
    assert completions([{**done, "outcome": "done"}])[:2] == [400, "invalid_request"]
    assert completions([{**done, "colour": "red"}])[:2] == [400, "invalid_request"]
    assert completions([{"execution": "MINE"}])[:2] == [400, "invalid_request"]
    assert completions([{**done, "result_hash": "sha256:xyz"}])[:2] == [400, "invalid_request"]
    assert completions([{**done, "execution": ""}])[:2] == [400, "invalid_request"]
    assert completions({"completions": []})[:2] == [400, "invalid_request"]
    assert completions({"completions": [done], "brief": 1})[:2] == [400, "invalid_request"]
    assert completions({"completion": [done]})[:2] == [400, "invalid_request"]
    mixed = [done, {"execution": unknown, "outcome": "failed"}]
    assert completions(mixed, who="other")[2] == ["permission_denied", "not_found"]
    for side in sides:
        side.grant = {"Authorization": f"Bearer {side.started()['grant']}"}  # type: ignore[attr-defined]
    assert completions([done], who="grant")[:2] == [403, "permission_denied"]
    first = completions([{**done, "exit_code": 0}, {"execution": unknown, "outcome": "failed"}])
    assert first[:2] == [200, None] and first[2][1] == "not_found"
    assert first[2][0] != "not_found"  # ended, as both sides say
    again = completions([done])
    assert again[0] == 200 and again[2][0] not in (first[2][0], None)
    for side in sides:  # brief, each side answers alike, and with the same members
        body = {"completions": [{**done, "execution": side.started()["execution"]["id"]}]}
        r = side.client.post(
            "/v1/executions/completions", json={**body, "brief": True}, headers=side.runtime
        )
        assert r.status_code == 200, r.text
        (result,) = r.json()["results"]
        assert set(result) == {"execution", "log_index"}
        assert set(result["execution"]) == {"id", "state", "outcome"}


def test_a_grant_caller_is_confined_alike(sides: tuple[Side, Side]) -> None:
    started = {side: side.started() for side in sides}
    for side in sides:
        side.grant = {"Authorization": f"Bearer {started[side]['grant']}"}  # type: ignore[attr-defined]
    ids = {side: started[side]["execution"]["id"] for side in sides}
    child = _both(sides, "/v1/executions", VALID, who="grant")
    assert child[0] == 201
    assert _both(sides, "/v1/executions/{id}/renew", {}, who="grant", id=ids)[0] == 200
    others = {side: side.started()["execution"]["id"] for side in sides}
    assert _both(sides, "/v1/executions/{id}/renew", {}, who="grant", id=others)[0] == 403


def test_other_routes_pass_through(sides: tuple[Side, Side]) -> None:
    hot, _ = sides
    assert hot.client.get("/v1/executions", headers=hot.admin).status_code == 200
    preview = {"principal": PLANNER, "action": DEPLOY, "resources": [STAGING]}
    r = hot.client.post("/v1/executions/preview", json=preview, headers=hot.admin)
    assert r.status_code == 200 and r.json()["results"][0]["possible"] is True
    assert hot.client.post("/v1/executions/x/nothing", headers=hot.runtime).status_code == 404


values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
fields = st.sampled_from(
    ["principal", "action", "resource", "context", "ttl", "definition", "parent_grant", "x"]
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    changes=st.dictionaries(fields, values | st.sampled_from([PLANNER, 'Agent::"a"']), max_size=3)
)
def test_any_body_is_answered_alike(sides: tuple[Side, Side], changes: dict[str, Any]) -> None:
    _both(sides, "/v1/executions", {**VALID, **changes})


def test_a_fault_in_the_lane_is_a_500_and_the_server_keeps_serving(
    sides: tuple[Side, Side], monkeypatch: pytest.MonkeyPatch
) -> None:
    hot, _ = sides
    state = hot.client.app.state  # type: ignore[attr-defined]

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(state.executions, "request_async", broken)
    r = hot.client.post("/v1/executions", json=VALID, headers=hot.runtime)
    assert r.status_code == 500 and r.json() == {
        "error": {"code": "internal", "message": "internal error"}
    }
    monkeypatch.undo()
    assert hot.started()["execution"]["state"] == "active"


def _raw(side: Side, path: str, content: bytes, headers: list[tuple[str, str]]) -> tuple[int, str]:
    answer = side.client.post(path, content=content, headers=headers)
    return answer.status_code, answer.json().get("error", {}).get("code", "")


def test_headers_and_media_types_are_read_alike(sides: tuple[Side, Side]) -> None:
    body = json.dumps(VALID).encode()
    for side in sides:
        runtime = ("Authorization", side.runtime["Authorization"])
        admin = ("Authorization", side.admin["Authorization"])
        cases = {
            # the first of two Authorization headers is the caller, as Starlette reads it
            "admin first": ([admin, runtime, ("Content-Type", "application/json")], 403),
            "runtime first": ([runtime, admin, ("Content-Type", "application/json")], 201),
            "no media type": ([runtime], 400),
            "text, no caller": ([("Content-Type", "text/plain")], 401),
            "text": ([runtime, ("Content-Type", "text/plain")], 400),
        }
        for name, (headers, status) in cases.items():
            assert _raw(side, "/v1/executions", body, headers)[0] == status, name


def test_a_hash_with_a_trailing_newline_is_refused_alike(sides: tuple[Side, Side]) -> None:
    ids = {side: side.started()["execution"]["id"] for side in sides}
    done = {"outcome": "succeeded", "result_hash": "sha256:" + "a" * 64 + "\n"}
    assert _both(sides, "/v1/executions/{id}/complete", done, id=ids)[0] == 400
    assert _both(sides, "/v1/executions", {**VALID, "definition": done["result_hash"]})[0] == 400
