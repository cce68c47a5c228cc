"""Every route, every role: who may call what (DESIGN.md invariant 6).

The table below is the access policy. A route missing from it fails the test,
so no endpoint can be added without deciding who may call it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lictor.core import lease as leases
from lictor.core.lineage import root_lineage
from lictor.core.types import EntityRef
from lictor.datadir import TOKEN_FILE, hash_secret, open_data_dir
from lictor.server.app import create_app
from lictor.service.log import AuditLog
from lictor.store.base import Credential

PUBLIC = {"anonymous", "admin", "runtime", "auditor"}
ACCESS: dict[tuple[str, str], set[str]] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("HEAD", "/openapi.json"): PUBLIC,
    ("GET", "/v1/log/key"): PUBLIC,
    ("GET", "/v1/log/checkpoint"): PUBLIC,
    ("GET", "/v1/log/entries/{index}"): PUBLIC,
    ("POST", "/v1/log/entries"): {"admin"},
    ("GET", "/v1/log/proof/inclusion"): PUBLIC,
    ("GET", "/v1/log/proof/consistency"): PUBLIC,
    ("GET", "/log/checkpoint"): PUBLIC,
    ("HEAD", "/log/checkpoint"): PUBLIC,
    ("GET", "/log/tile/{path:path}"): PUBLIC,
    ("HEAD", "/log/tile/{path:path}"): PUBLIC,
    ("POST", "/v1/runtimes"): {"admin"},
    ("GET", "/v1/runtimes"): {"admin", "auditor"},
    ("GET", "/v1/runtimes/{runtime_id}"): {"admin", "auditor", "runtime"},
    ("POST", "/v1/runtimes/{runtime_id}/heartbeat"): {"runtime"},
    ("GET", "/v1/events"): {"admin", "auditor", "runtime"},
    ("POST", "/v1/policies"): {"admin"},
    ("GET", "/v1/policies"): {"admin", "auditor"},
    ("GET", "/v1/policies/{version}"): {"admin", "auditor"},
    ("POST", "/v1/policies/{version}/activate"): {"admin"},
    ("PUT", "/v1/entities"): {"admin"},
    ("GET", "/v1/entities"): {"admin", "auditor"},
    ("POST", "/v1/executions"): {"runtime"},
    ("GET", "/v1/executions"): {"admin", "auditor", "runtime"},
    ("GET", "/v1/executions/{execution_id}"): {"admin", "auditor", "runtime"},
    ("GET", "/v1/executions/{execution_id}/lineage"): {"admin", "auditor", "runtime"},
    ("POST", "/v1/executions/{execution_id}/renew"): {"runtime"},
    ("POST", "/v1/executions/{execution_id}/complete"): {"runtime"},
    ("POST", "/v1/executions/completions"): {"runtime"},
    ("POST", "/v1/executions/renewals"): {"runtime"},
    ("POST", "/v1/executions/{execution_id}/revoke"): {"admin"},
    ("POST", "/v1/executions/preview"): {"admin", "auditor", "runtime"},
    ("POST", "/v1/tools/observe"): {"runtime"},
    ("GET", "/v1/tools"): {"admin", "auditor"},
    ("POST", "/v1/tools/approve"): {"admin"},
    ("POST", "/v1/policies/backtest"): {"admin", "auditor"},
    ("POST", "/v1/runtimes/{runtime_id}/revoke"): {"admin"},
    ("POST", "/v1/principals/revoke"): {"admin"},
    ("GET", "/v1/executions/{execution_id}/replay"): {"admin", "auditor"},
    ("GET", "/v1/session"): {"admin", "auditor", "runtime"},
    ("POST", "/v1/credentials"): {"admin"},
    ("GET", "/v1/credentials"): {"admin"},
    ("POST", "/v1/credentials/{name}/rotate"): {"admin"},
    ("POST", "/v1/credentials/{name}/revoke"): {"admin"},
    ("GET", "/v1/health"): {"admin", "auditor"},
    ("GET", "/v1/demo"): {"admin", "auditor"},
    ("POST", "/v1/demo/start"): {"admin"},
    ("POST", "/v1/demo/stop"): {"admin"},
    ("GET", "/console"): PUBLIC,
    ("GET", "/console/"): PUBLIC,
    ("GET", "/console/{page}"): PUBLIC,
    ("GET", "/console/static/{path:path}"): PUBLIC,
}
STREAMS = {"/v1/events"}
SAMPLE = {
    "{index}": "0",
    "{page}": "proof",
    "{path:path}": "0/000",
    "{runtime_id}": "edge-1",
    "{version}": "0" * 64,
    "{execution_id}": "ex_" + "a" * 26,
    "{name}": "nobody-here",
}


def _flatten(routes: list[Any]) -> list[Any]:
    """Routes of an app, looking inside included routers."""
    flat = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        flat += _flatten(inner.routes) if inner is not None else [route]
    return flat


def _routes(client: TestClient) -> list[tuple[str, str]]:
    found = []
    for route in _flatten(client.app.routes):  # type: ignore[attr-defined]
        path = getattr(route, "path", "")
        for method in sorted(getattr(route, "methods", None) or ()):
            found.append((method, path))
    return found


def _ask(client: TestClient, method: str, template: str, headers: dict[str, str]) -> Any:
    """The response to ``method`` on ``template`` filled with `SAMPLE` values."""
    path = template
    for marker, value in SAMPLE.items():
        path = path.replace(marker, value)
    if path not in STREAMS:
        return client.request(method, path, headers=headers, json={})
    with client.stream(method, path, headers=headers) as response:
        if response.status_code != 200:  # an error's body; a stream never ends by itself
            response.read()
        return response


def test_every_route_is_in_the_access_table(client: TestClient) -> None:
    routes = set(_routes(client))
    assert routes == set(ACCESS), (
        f"unlisted: {sorted(routes - set(ACCESS))}; stale: {sorted(set(ACCESS) - routes)}"
    )


@pytest.mark.parametrize("role", ["anonymous", "admin", "runtime", "auditor"])
def test_every_route_checks_the_callers_role(
    client: TestClient, log: AuditLog, admin: dict[str, str], role: str
) -> None:
    r = client.post(
        "/v1/runtimes", json={"name": "edge-1", "region": "r", "cluster": "c"}, headers=admin
    )
    runtime_secret = r.json()["credential"]
    log.store.add_credential(Credential("aud", "auditor", hash_secret("lictor_aud")))
    headers = {
        "anonymous": {},
        "admin": admin,
        "runtime": {"Authorization": f"Bearer {runtime_secret}"},
        "auditor": {"Authorization": "Bearer lictor_aud"},
    }[role]
    for (method, template), allowed in ACCESS.items():
        response = _ask(client, method, template, headers)
        if role in allowed:
            assert response.status_code not in (401, 403), (method, template, response.text)
        else:
            expected = 401 if role == "anonymous" else 403
            assert response.status_code == expected, (method, template, response.text)


# A grant, as its execution's bearer, is admitted by these routes only (each confines it to
# its own execution; `tests/sdk/test_grant_callers.py` shows what it may do there).
GRANT_ROUTES = {
    ("POST", "/v1/executions"),
    ("POST", "/v1/executions/{execution_id}/renew"),
    ("POST", "/v1/executions/{execution_id}/complete"),
    ("GET", "/v1/executions/{execution_id}"),
    ("GET", "/v1/events"),
}


def _grant_for(client: TestClient, execution_id: str, now_ms: int) -> str:
    """A genuine grant of this app for an active execution ``execution_id`` on edge-1."""
    planner = EntityRef("Agent", "planner-7")
    requested = leases.request(
        execution_id=execution_id,
        principal=planner,
        action=EntityRef("Action", "deploy"),
        resource=EntityRef("Service", "payments-api"),
        context={},
        runtime_id="edge-1",
        lineage=root_lineage(execution_id, planner),
        now_ms=now_ms,
    )
    active = leases.activate(requested, now_ms, "0" * 64)
    grant: str = client.app.state.executions.grants.sign(active, now_ms)  # type: ignore[attr-defined]
    return grant


def test_a_grant_is_refused_by_every_route_but_its_own(client: TestClient, log: AuditLog) -> None:
    grant = _grant_for(client, SAMPLE["{execution_id}"], log.now_ms())
    headers = {"Authorization": f"Bearer {grant}"}
    for (method, template), allowed in ACCESS.items():
        response = _ask(client, method, template, headers)
        if allowed == PUBLIC or (method, template) in GRANT_ROUTES:
            assert response.status_code not in (401, 403), (method, template, response.text)
        else:
            assert response.status_code == 403, (method, template, response.text)
            assert response.json()["error"]["code"] == "permission_denied"


class _Clock:
    """A wall clock the test moves: expiry is decided at the request's time, never by sleeping."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str], _Clock]]:
    """An app whose log reads a clock the test moves; with the admin's headers."""
    clock = _Clock()
    data = open_data_dir(tmp_path / "clocked", "test.example/clocked")
    log = AuditLog(data.store, data.signer, clock=clock)
    admin = {"Authorization": f"Bearer {(data.path / TOKEN_FILE).read_text().strip()}"}
    with TestClient(create_app(log), raise_server_exceptions=False) as client:
        yield client, admin, clock
    log.close()
    data.close()


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _dead_credential(client: TestClient, admin: dict[str, str], clock: _Clock, how: str) -> str:
    """A secret that worked a moment ago and no longer does, ended the way ``how`` says."""
    if how == "runtime-revoked":
        body = {"name": "edge-9", "region": "r", "cluster": "c"}
        secret = str(client.post("/v1/runtimes", json=body, headers=admin).json()["credential"])
        assert client.get("/v1/session", headers=_bearer(secret)).status_code == 200
        r = client.post("/v1/runtimes/edge-9/revoke", json={"reason": "stolen"}, headers=admin)
        assert r.status_code == 200, r.text
        return secret
    body = {"name": "ops", "role": "admin"} | ({"ttl": 60} if how == "expired" else {})
    secret = str(client.post("/v1/credentials", json=body, headers=admin).json()["credential"])
    assert client.get("/v1/session", headers=_bearer(secret)).status_code == 200
    if how == "revoked":
        r = client.post("/v1/credentials/ops/revoke", json={}, headers=admin)
    elif how == "rotated-out":
        r = client.post("/v1/credentials/ops/rotate", json={}, headers=admin)
    else:
        clock.now += timedelta(seconds=60)  # the moment of expiry
        return secret
    assert r.status_code == 200, r.text
    return secret


@pytest.mark.parametrize("how", ["revoked", "rotated-out", "expired", "runtime-revoked"])
def test_a_dead_credential_fails_on_every_route(
    clocked: tuple[TestClient, dict[str, str], _Clock], how: str
) -> None:
    client, admin, clock = clocked
    runtime = {"name": "edge-1", "region": "r", "cluster": "c"}
    assert client.post("/v1/runtimes", json=runtime, headers=admin).status_code == 201
    secret = _dead_credential(client, admin, clock, how)
    code = "credential_expired" if how == "expired" else "credential_revoked"
    for (method, template), allowed in ACCESS.items():
        response = _ask(client, method, template, _bearer(secret))
        if allowed == PUBLIC:  # a public route reads a credential only when one is sent
            assert response.status_code != 403, (method, template, response.text)
            if response.status_code != 401:
                continue
        assert response.status_code == 401, (method, template, response.text)
        assert response.json()["error"]["code"] == code, (method, template, response.text)
