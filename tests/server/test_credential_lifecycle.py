"""A credential's life: issued, rotated, revoked, expired; each logged before it holds.

The log's clock is one the test moves, so expiry is checked at its exact
moment without sleeping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lictor.datadir import TOKEN_FILE, hash_secret, open_data_dir
from lictor.server.app import create_app
from lictor.service.credentials import key_id
from lictor.service.log import AuditLog

Headers = dict[str, str]


class Clock:
    """A wall clock the test moves."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Plane:
    client: TestClient
    admin: Headers
    admin_token: str
    clock: Clock
    log: AuditLog

    def size(self) -> int:
        return self.log.head().size

    def entry(self, index: int) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(
            f"/v1/log/entries/{index}", headers=self.admin
        ).json()
        return body

    def issue(self, name: str, role: str = "admin", **extra: Any) -> dict[str, Any]:
        r = self.client.post(
            "/v1/credentials", json={"name": name, "role": role, **extra}, headers=self.admin
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def who(self, secret: str) -> tuple[int, str]:
        """The status of a call made with ``secret``, and the name or error code answered."""
        r = self.client.get("/v1/session", headers=bearer(secret))
        body = r.json()
        return r.status_code, body["name"] if r.status_code == 200 else body["error"]["code"]

    def listed(self) -> dict[str, dict[str, Any]]:
        found = self.client.get("/v1/credentials", headers=self.admin).json()["credentials"]
        return {c["name"]: c for c in found}


def bearer(secret: str) -> Headers:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[Plane]:
    clock = Clock()
    data = open_data_dir(tmp_path / "data", "test.example/credentials")
    log = AuditLog(data.store, data.signer, clock=clock)
    token = (data.path / TOKEN_FILE).read_text().strip()
    with TestClient(create_app(log), raise_server_exceptions=False) as client:
        yield Plane(client, bearer(token), token, clock, log)
    log.close()
    data.close()


def test_a_revocation_is_logged_before_it_holds_and_is_final(plane: Plane) -> None:
    secret = plane.issue("ada", "auditor")["credential"]
    assert plane.who(secret) == (200, "ada")
    before = plane.size()
    r = plane.client.post(
        "/v1/credentials/ada/revoke", json={"reason": "left"}, headers=plane.admin
    )
    assert r.status_code == 200, r.text
    assert r.json()["credential"]["state"] == "revoked"
    assert r.json()["credential"]["revoked_by"] == "admin"
    assert plane.size() == before + 1
    logged = plane.entry(before)
    assert logged["entry"]["kind"] == "credential_revoked"
    assert (logged["entry"]["credential"], logged["entry"]["by"]) == ("ada", "admin")
    assert logged["event"]["reason"] == "left"
    assert secret not in json.dumps(logged) and hash_secret(secret).hex() not in json.dumps(logged)
    assert plane.who(secret) == (401, "credential_revoked")
    again = plane.client.post("/v1/credentials/ada/revoke", json={}, headers=plane.admin)
    assert again.status_code == 200 and plane.size() == before + 1  # nothing new to log
    rotate = plane.client.post("/v1/credentials/ada/rotate", json={}, headers=plane.admin)
    assert rotate.status_code == 409 and plane.size() == before + 1
    assert plane.listed()["ada"]["state"] == "revoked"


def test_a_rotation_replaces_the_secret_and_is_logged_without_it(plane: Plane) -> None:
    issued = plane.issue("ops")
    old = issued["credential"]
    assert issued["key_id"] == key_id(hash_secret(old))
    before = plane.size()
    r = plane.client.post("/v1/credentials/ops/rotate", json={}, headers=plane.admin)
    assert r.status_code == 200, r.text
    new = r.json()["credential"]
    assert new != old and r.json()["self"] is False
    assert r.json()["key_id"] == key_id(hash_secret(new)) != issued["key_id"]
    logged = plane.entry(before)
    assert logged["entry"]["kind"] == "credential_rotated"
    assert logged["entry"]["key_id"] == key_id(hash_secret(new))
    for secret in (old, new):
        assert secret not in json.dumps(logged)
        assert hash_secret(secret).hex() not in json.dumps(logged)
    assert plane.who(old) == (401, "credential_revoked")
    assert plane.who(new) == (200, "ops")
    listed = plane.listed()["ops"]
    assert listed["key_id"] == key_id(hash_secret(new)) and listed["rotated_at_ms"] is not None
    assert new not in json.dumps(plane.listed()) and old not in json.dumps(plane.listed())


def test_a_credential_is_named_by_its_key_id_too(plane: Plane) -> None:
    issued = plane.issue("ops")
    r = plane.client.post(
        f"/v1/credentials/{issued['key_id']}/revoke", json={}, headers=plane.admin
    )
    assert r.status_code == 200 and r.json()["credential"]["name"] == "ops"
    assert plane.who(issued["credential"]) == (401, "credential_revoked")
    unknown = plane.client.post("/v1/credentials/key:0000000000000000/revoke", headers=plane.admin)
    assert unknown.status_code == 404


def test_rotating_the_bootstrap_admin_ends_the_old_token(plane: Plane) -> None:
    r = plane.client.post("/v1/credentials/admin/rotate", json={}, headers=plane.admin)
    assert r.status_code == 200, r.text
    assert r.json()["self"] is True and r.json()["role"] == "admin"
    new = r.json()["credential"]
    assert plane.who(plane.admin_token) == (401, "credential_revoked")
    assert plane.who(new) == (200, "admin")
    plane.admin = bearer(new)
    assert plane.listed()["admin"]["key_id"] == key_id(hash_secret(new))


def test_a_credential_fails_at_the_moment_it_expires(plane: Plane) -> None:
    issued = plane.issue("ops", ttl=30)
    secret = issued["credential"]
    assert issued["expires_at_ms"] == issued["created_at_ms"] + 30_000
    logged = plane.entry(plane.size() - 1)
    assert logged["entry"]["expires_at_ms"] == issued["expires_at_ms"]
    plane.clock.now += timedelta(milliseconds=29_999)
    assert plane.who(secret) == (200, "ops")
    assert plane.listed()["ops"]["state"] == "active"
    plane.clock.now += timedelta(milliseconds=1)
    assert plane.who(secret) == (401, "credential_expired")
    assert plane.listed()["ops"]["state"] == "expired"
    # a rotation gives it a new life only when told how long
    keep = plane.client.post("/v1/credentials/ops/rotate", json={}, headers=plane.admin)
    assert keep.status_code == 400
    r = plane.client.post("/v1/credentials/ops/rotate", json={"ttl": 60}, headers=plane.admin)
    assert r.status_code == 200, r.text
    assert plane.who(r.json()["credential"]) == (200, "ops")
    assert plane.who(secret) == (401, "credential_revoked")


def test_the_last_live_admin_cannot_be_revoked(plane: Plane) -> None:
    size = plane.size()
    alone = plane.client.post("/v1/credentials/admin/revoke", json={}, headers=plane.admin)
    assert alone.status_code == 409 and alone.json()["error"]["code"] == "last_admin"
    assert plane.size() == size and plane.who(plane.admin_token) == (200, "admin")
    short = plane.issue("short", ttl=10)["credential"]
    plane.clock.now += timedelta(seconds=10)  # an expired admin does not count
    again = plane.client.post("/v1/credentials/admin/revoke", json={}, headers=plane.admin)
    assert again.json()["error"]["code"] == "last_admin"
    assert plane.who(short) == (401, "credential_expired")
    ops = plane.issue("ops")["credential"]
    r = plane.client.post("/v1/credentials/admin/revoke", json={}, headers=plane.admin)
    assert r.status_code == 200, r.text
    assert plane.who(plane.admin_token) == (401, "credential_revoked")
    last = plane.client.post("/v1/credentials/ops/revoke", json={}, headers=bearer(ops))
    assert last.status_code == 409 and last.json()["error"]["code"] == "last_admin"
    # revoking an auditor or an expired admin is never refused
    plane.admin = bearer(ops)
    plane.issue("ada", "auditor")
    for name in ("ada", "short"):
        r = plane.client.post(f"/v1/credentials/{name}/revoke", json={}, headers=plane.admin)
        assert r.status_code == 200, r.text


def test_a_runtime_credential_rotates_and_expires_and_dies_with_its_runtime(plane: Plane) -> None:
    body = {"name": "edge-1", "region": "eu", "cluster": "c1"}
    old = plane.client.post("/v1/runtimes", json=body, headers=plane.admin).json()["credential"]
    assert plane.listed()["edge-1"]["role"] == "runtime"
    r = plane.client.post("/v1/credentials/edge-1/rotate", json={"ttl": 60}, headers=plane.admin)
    assert r.status_code == 200, r.text
    new = r.json()["credential"]
    beat = {"attestation": {"state": "verified"}}
    path = "/v1/runtimes/edge-1/heartbeat"
    assert plane.client.post(path, json=beat, headers=bearer(old)).status_code == 401
    assert plane.client.post(path, json=beat, headers=bearer(new)).status_code == 200
    plane.clock.now += timedelta(seconds=60)
    assert plane.who(new) == (401, "credential_expired")
    r = plane.client.post("/v1/credentials/edge-1/rotate", json={"ttl": 60}, headers=plane.admin)
    newer = r.json()["credential"]
    assert plane.who(newer) == (200, "edge-1")
    revoke = {"reason": "stolen"}
    assert plane.client.post(
        "/v1/runtimes/edge-1/revoke", json=revoke, headers=plane.admin
    ).is_success
    assert plane.who(newer) == (401, "credential_revoked")
    assert plane.listed()["edge-1"]["state"] == "revoked"
    refused = plane.client.post("/v1/credentials/edge-1/rotate", json={}, headers=plane.admin)
    assert refused.status_code == 409


def test_a_revoked_runtime_reports_no_tools_and_pins_nothing(plane: Plane) -> None:
    body = {"name": "edge-1", "region": "eu", "cluster": "c1"}
    secret = plane.client.post("/v1/runtimes", json=body, headers=plane.admin).json()["credential"]
    revoke = {"reason": "stolen"}
    assert plane.client.post(
        "/v1/runtimes/edge-1/revoke", json=revoke, headers=plane.admin
    ).is_success
    size = plane.size()
    report = {"server": "fs", "tools": [{"name": "read_file", "description": "reads a file"}]}
    r = plane.client.post("/v1/tools/observe", json=report, headers=bearer(secret))
    assert r.status_code == 401 and r.json()["error"]["code"] == "credential_revoked"
    assert plane.size() == size
    assert plane.client.get("/v1/tools", headers=plane.admin).json()["tools"] == []


def test_listing_shows_every_kind_with_state_and_expiry(plane: Plane) -> None:
    plane.issue("ada", "auditor", ttl=3600)
    body = {"name": "edge-1", "region": "eu", "cluster": "c1"}
    assert plane.client.post("/v1/runtimes", json=body, headers=plane.admin).status_code == 201
    listed = plane.listed()
    assert {n: (c["role"], c["state"]) for n, c in listed.items()} == {
        "ada": ("auditor", "active"),
        "admin": ("admin", "active"),
        "edge-1": ("runtime", "active"),
    }
    assert listed["ada"]["expires_at_ms"] is not None and listed["admin"]["expires_at_ms"] is None
    assert all("credential" not in c for c in listed.values())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/credentials", {"name": "ops", "role": "admin", "ttl": 0}),
        ("/v1/credentials", {"name": "ops", "role": "admin", "ttl": "60"}),
        ("/v1/credentials", {"name": "ops", "role": "admin", "ttl": 10**12}),
        ("/v1/credentials/admin/rotate", {"ttl": -1}),
        ("/v1/credentials/admin/rotate", {"secret": "mine"}),
        ("/v1/credentials/admin/revoke", {"reason": 7}),
    ],
)
def test_bad_lifecycle_requests_change_nothing(plane: Plane, path: str, body: Any) -> None:
    size = plane.size()
    r = plane.client.post(path, json=body, headers=plane.admin)
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    assert plane.size() == size and plane.who(plane.admin_token) == (200, "admin")


def test_unknown_credentials_are_not_found(plane: Plane) -> None:
    for action in ("rotate", "revoke"):
        r = plane.client.post(f"/v1/credentials/nobody/{action}", json={}, headers=plane.admin)
        assert r.status_code == 404, r.text
