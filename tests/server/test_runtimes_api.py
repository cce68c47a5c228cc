"""Runtimes: added by admins, heartbeat as themselves, attestation changes logged."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from lictor.datadir import hash_secret
from lictor.service.log import AuditLog
from lictor.store.base import Credential


def _add(client: TestClient, admin: dict[str, str], name: str) -> dict[str, Any]:
    body = {"name": name, "region": "eu-west", "cluster": "c1"}
    r = client.post("/v1/runtimes", json=body, headers=admin)
    assert r.status_code == 201, r.text
    added: dict[str, Any] = r.json()
    return added


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _size(client: TestClient) -> int:
    size: int = client.get("/v1/log/checkpoint").json()["size"]
    return size


def test_an_admin_adds_a_runtime_and_gets_its_credential_once(
    client: TestClient, admin: dict[str, str], log: AuditLog
) -> None:
    added = _add(client, admin, "edge-1")
    assert added["runtime"]["region"] == "eu-west" and added["runtime"]["state"] == "active"
    secret = added["credential"]
    credential = log.store.find_credential(hash_secret(secret))
    assert credential == Credential("edge-1", "runtime", hash_secret(secret))
    assert _size(client) == 1  # runtime_added is logged
    entry = client.get("/v1/log/entries/0").json()["entry"]
    assert entry["kind"] == "runtime_added" and entry["runtime"] == "edge-1"
    again = client.post(
        "/v1/runtimes", json={"name": "edge-1", "region": "x", "cluster": "y"}, headers=admin
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
    assert _size(client) == 1


def test_bad_runtime_requests_are_refused(client: TestClient, admin: dict[str, str]) -> None:
    for body in (
        {"name": "Edge 1", "region": "r", "cluster": "c"},
        {"name": "e", "region": "r"},
        {"name": "e", "region": "r", "cluster": "c", "extra": 1},
        {"name": "e", "region": "r/../x", "cluster": "c"},
    ):
        r = client.post("/v1/runtimes", json=body, headers=admin)
        assert r.status_code == 400, (body, r.text)
    assert _size(client) == 0


def test_heartbeats_are_self_only_and_log_new_attestations(
    client: TestClient, admin: dict[str, str]
) -> None:
    one = _bearer(_add(client, admin, "edge-1")["credential"])
    _add(client, admin, "edge-2")
    attestation = {"state": "verified", "digests": {"agent": "sha256:ab"}}
    r = client.post("/v1/runtimes/edge-1/heartbeat", json={"attestation": attestation}, headers=one)
    assert r.status_code == 200, r.text
    assert r.json()["runtime"]["attestation"] == attestation
    assert _size(client) == 3  # two runtime_added, one runtime_attested
    r = client.post("/v1/runtimes/edge-1/heartbeat", json={"attestation": attestation}, headers=one)
    assert r.status_code == 200 and _size(client) == 3  # same attestation: not logged
    assert r.json()["runtime"]["last_heartbeat_ms"] is not None
    other = client.post("/v1/runtimes/edge-2/heartbeat", json={}, headers=one)
    assert other.status_code == 403
    as_admin = client.post("/v1/runtimes/edge-1/heartbeat", json={}, headers=admin)
    assert as_admin.status_code == 403


def test_who_may_read_runtimes(client: TestClient, admin: dict[str, str], log: AuditLog) -> None:
    one = _bearer(_add(client, admin, "edge-1")["credential"])
    log.store.add_credential(Credential("aud", "auditor", hash_secret("lictor_aud")))
    auditor = _bearer("lictor_aud")
    assert [r["id"] for r in client.get("/v1/runtimes", headers=auditor).json()["runtimes"]] == [
        "edge-1"
    ]
    assert client.get("/v1/runtimes", headers=one).status_code == 403
    assert client.get("/v1/runtimes").status_code == 401
    assert client.get("/v1/runtimes/edge-1", headers=one).status_code == 200
    assert client.get("/v1/runtimes/edge-1", headers=auditor).status_code == 200
    assert client.get("/v1/runtimes/nope", headers=admin).status_code == 404
    assert client.post("/v1/runtimes", json={}, headers=auditor).status_code == 403
