"""The API description is true: what ``/openapi.json`` says is what the server does.

Schemathesis generates requests from the description for every operation, once
per role (anonymous, admin, auditor, runtime), and checks each answer against
it: no 5xx, a described status, its content type and its schema. The plain
tests pin what a client relies on: no 422 anywhere, a bearer scheme, stable
and unique operation ids, 401 and 403 with the `Error` schema wherever a
credential is needed, the roles of `test_roles.ACCESS`, and ``Allow``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from lictor.datadir import hash_secret
from lictor.service.log import AuditLog
from lictor.store.base import Credential

from .test_roles import ACCESS, PUBLIC

ROLES = ("anonymous", "admin", "auditor", "runtime")
EXAMPLES = 8  # per operation and role
STREAMS = {"follow_events"}  # never ends: checked by test_the_event_stream_is_described
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
ERROR = {"$ref": "#/components/schemas/Error"}
SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
METHODS = ("get", "head", "post", "put", "patch", "delete")


@pytest.fixture
def api(client: TestClient, log: AuditLog, admin: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The served description and each role's headers (a runtime registered, an auditor
    credential stored)."""
    body = {"name": "edge-1", "region": "r", "cluster": "c"}
    runtime = client.post("/v1/runtimes", json=body, headers=admin).json()["credential"]
    log.store.add_credential(Credential("aud", "auditor", hash_secret("lictor_aud")))
    headers = {
        "anonymous": {},
        "admin": admin,
        "auditor": {"Authorization": "Bearer lictor_aud"},
        "runtime": {"Authorization": f"Bearer {runtime}"},
    }
    yield {"document": client.get("/openapi.json").json(), "headers": headers}


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield method.upper(), path, operation


def test_the_description_states_the_key_facts(api: dict[str, Any]) -> None:
    document = api["document"]
    assert "422" not in str(document) and "HTTPValidationError" not in str(document)
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    ids = [op["operationId"] for _, _, op in _operations(document)]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)
    assert all(SNAKE.match(i) for i in ids), [i for i in ids if not SNAKE.match(i)]
    for method, path, operation in _operations(document):
        responses = operation["responses"]
        for status, response in responses.items():
            if int(status) >= 400:
                assert set(response["content"]) == {"application/json"}, (method, path, status)
        success = [r for s, r in responses.items() if int(s) < 300]
        assert success and all(r["content"] for r in success), (method, path)
        for content in (c for r in success for c in r["content"].values()):
            assert content["schema"] not in ({}, {"type": "object"}), (method, path)
        if method in ("POST", "PUT"):
            assert responses["413"]["content"]["application/json"]["schema"] == ERROR
            assert responses["400"]["content"]["application/json"]["schema"] == ERROR


def test_security_and_roles_agree_with_the_access_table(api: dict[str, Any]) -> None:
    described = set()
    for method, path, operation in _operations(api["document"]):
        key = (method, path.replace("/log/tile/{path}", "/log/tile/{path:path}"))
        described.add(key)
        allowed = ACCESS[key]
        responses = operation["responses"]
        if allowed == PUBLIC:
            assert operation["security"] in ([], [{}, {"bearer": []}]), key
            assert "403" not in responses, key
            continue
        assert operation["security"] == [{"bearer": []}], key
        roles = set(operation["x-lictor-roles"]) - {"grant"}  # a grant is its execution's bearer
        assert roles == allowed, key
        for status in ("401", "403"):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == ERROR or status == "403", (key, status)
    undescribed = {k for k in ACCESS if k not in described}
    assert all(
        path in ("/openapi.json", "/healthz", "/readyz", "/metrics") or path.startswith("/console")
        for _, path in undescribed
    ), undescribed


def test_a_method_a_path_does_not_serve_is_405_with_every_method_it_does(
    client: TestClient, api: dict[str, Any]
) -> None:
    paths = api["document"]["paths"]
    templates = {p: re.compile(re.sub(r"\{[^}]+\}", "[^/]+", p) + "$") for p in paths}
    for path in paths:
        concrete = re.sub(r"\{[^}]+\}", "x", path)  # /v1/executions/x is GET too, as a read
        served = {m.upper() for p, t in templates.items() if t.match(concrete) for m in paths[p]}
        for method in {"GET", "POST", "PUT", "DELETE", "PATCH"} - served:
            r = client.request(method, concrete)
            assert r.status_code == 405, (method, path, r.status_code)
            assert set(r.headers["allow"].split(", ")) == served, (method, path)
            assert r.json()["error"]["code"] == "method_not_allowed"


def test_the_event_stream_is_described(client: TestClient, api: dict[str, Any]) -> None:
    responses = api["document"]["paths"]["/v1/events"]["get"]["responses"]
    assert set(responses["200"]["content"]) == {"text/event-stream"}
    for role in ROLES:
        with client.stream("GET", "/v1/events", headers=api["headers"][role]) as r:
            assert str(r.status_code) in responses, role
            media = r.headers["content-type"].split(";")[0]
            assert media in responses[str(r.status_code)]["content"], role


@pytest.mark.parametrize("role", ROLES)
def test_every_operation_answers_as_described(
    client: TestClient, api: dict[str, Any], role: str
) -> None:
    """Generated requests for every operation, with ``role``'s credential, answered as
    the description says (`CHECKS`)."""
    schema = schemathesis.openapi.from_dict(api["document"])
    headers = api["headers"][role]
    tested = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.definition.raw.get("operationId") in STREAMS:
            continue

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def answers_as_described(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url="http://testserver", headers=headers)
            response = client.request(**_httpx(kwargs))
            case.validate_response(response, checks=CHECKS, headers=headers)

        answers_as_described()
        tested += 1
    assert tested >= 45


def _httpx(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Schemathesis's request (for `requests`) as `httpx` arguments."""
    sent = {k: v for k, v in kwargs.items() if k in ("method", "url", "headers", "params", "json")}
    if isinstance(kwargs.get("data"), (bytes, str)):
        sent["content"] = kwargs["data"]
    return sent
