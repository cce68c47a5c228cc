"""Issuing people's credentials: admins only, logged before they work, names unique."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lictor.service.log import AuditLog


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_an_issued_auditor_reads_everything_and_changes_nothing(
    client: TestClient, admin: dict[str, str], log: AuditLog
) -> None:
    before = log.head().size
    r = client.post("/v1/credentials", json={"name": "ada", "role": "auditor"}, headers=admin)
    assert r.status_code == 201, r.text
    issued = r.json()
    assert (issued["name"], issued["role"], issued["by"]) == ("ada", "auditor", "admin")
    secret = issued["credential"]
    assert client.get("/v1/session", headers=_bearer(secret)).json() == {
        "name": "ada",
        "role": "auditor",
    }
    assert client.get("/v1/executions", headers=_bearer(secret)).status_code == 200
    assert client.get("/v1/policies", headers=_bearer(secret)).status_code == 200
    refused = client.post(
        "/v1/credentials", json={"name": "eve", "role": "admin"}, headers=_bearer(secret)
    )
    assert refused.status_code == 403
    # logged, with who issued it, and never the secret
    entry = client.get(f"/v1/log/entries/{before}", headers=admin).json()
    assert entry["entry"]["kind"] == "credential_added"
    assert secret not in str(entry)
    assert log.head().size == before + 1
    listed = client.get("/v1/credentials", headers=admin).json()["credentials"]
    assert [(c["name"], c["role"], c["state"]) for c in listed] == [
        ("ada", "auditor", "active"),
        ("admin", "admin", "active"),  # the bootstrap credential is listed too
    ]
    assert secret not in str(listed)


def test_names_are_unique_and_nothing_is_issued_twice(
    client: TestClient, admin: dict[str, str], log: AuditLog
) -> None:
    assert (
        client.post(
            "/v1/credentials", json={"name": "ops", "role": "admin"}, headers=admin
        ).status_code
        == 201
    )
    size = log.head().size
    again = client.post("/v1/credentials", json={"name": "ops", "role": "auditor"}, headers=admin)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "conflict"
    assert log.head().size == size


@pytest.mark.parametrize(
    "body",
    [
        {"name": "ops", "role": "runtime"},
        {"name": "Bad Name", "role": "auditor"},
        {"name": "", "role": "auditor"},
        {"name": "x" * 64, "role": "auditor"},
        {"name": "ok", "role": "auditor", "secret": "mine"},
        {"name": 7, "role": "auditor"},
    ],
)
def test_bad_requests_are_refused_and_write_nothing(
    client: TestClient, admin: dict[str, str], log: AuditLog, body: object
) -> None:
    size = log.head().size
    r = client.post("/v1/credentials", json=body, headers=admin)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_request"
    assert log.head().size == size


def test_a_name_names_one_credential(client: TestClient, admin: dict[str, str]) -> None:
    runtime = {"name": "edge-1", "region": "eu", "cluster": "c1"}
    assert client.post("/v1/runtimes", json=runtime, headers=admin).status_code == 201
    for name in ("admin", "edge-1"):
        r = client.post("/v1/credentials", json={"name": name, "role": "admin"}, headers=admin)
        assert r.status_code == 409, name
    assert (
        client.post(
            "/v1/credentials", json={"name": "ada", "role": "auditor"}, headers=admin
        ).status_code
        == 201
    )
    taken = {"name": "ada", "region": "eu", "cluster": "c1"}
    assert client.post("/v1/runtimes", json=taken, headers=admin).status_code == 409
