"""Every route, every role: who may call what (DESIGN.md invariant 6).

The table below is the access policy. A route missing from it fails the test,
so no endpoint can be added without deciding who may call it.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from lictor.datadir import hash_secret
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
        path = template
        for marker, value in SAMPLE.items():
            path = path.replace(marker, value)
        if path in STREAMS:
            with client.stream(method, path, headers=headers) as response:
                pass  # the status line is enough; the stream never ends by itself
        else:
            response = client.request(method, path, headers=headers, json={})
        if role in allowed:
            assert response.status_code not in (401, 403), (method, template, response.text)
        else:
            expected = 401 if role == "anonymous" else 403
            assert response.status_code == expected, (method, template, response.text)
