"""Two replicas on one PostgreSQL database: a credential changed through one holds on the other.

Each replica remembers a credential's standing for at most `RECHECK_S`; a
change made through the other must hold there within that bound (asserted
with a generous margin), and at once on the replica that made it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lictor.datadir import TOKEN_FILE, open_data_dir
from lictor.server.app import create_app
from lictor.service.credentials import RECHECK_S
from lictor.service.log import AuditLog

from ..postgres import PostgresServer

MARGIN_S = 10.0
Headers = dict[str, str]


def bearer(secret: str) -> Headers:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def replicas(
    postgres: PostgresServer, tmp_path: Path
) -> Iterator[tuple[TestClient, TestClient, Headers]]:
    """Two in-process replicas on one fresh database (the second with the first's keys)."""
    url = postgres.database()
    first = open_data_dir(tmp_path / "a", "test.example/replicas", database=url)
    (tmp_path / "b").mkdir(mode=0o700)
    for name in ("log.key", "grant.key", TOKEN_FILE):
        shutil.copy2(tmp_path / "a" / name, tmp_path / "b" / name)
    second = open_data_dir(tmp_path / "b", database=url)
    logs = [AuditLog(d.store, d.signer) for d in (first, second)]
    admin = bearer((tmp_path / "a" / TOKEN_FILE).read_text().strip())
    with (
        TestClient(create_app(logs[0]), raise_server_exceptions=False) as a,
        TestClient(create_app(logs[1]), raise_server_exceptions=False) as b,
    ):
        yield a, b, admin
    for log, data in zip(logs, (first, second), strict=True):
        log.close()
        data.close()


def _status(client: TestClient, secret: str) -> tuple[int, str]:
    r = client.get("/v1/session", headers=bearer(secret))
    return r.status_code, r.json()["name"] if r.status_code == 200 else r.json()["error"]["code"]


def _refused_within(client: TestClient, secret: str, bound_s: float) -> tuple[int, str]:
    """Ask with ``secret`` until it is refused or ``bound_s`` passed; the last answer."""
    deadline = time.monotonic() + bound_s
    answer = _status(client, secret)
    while answer[0] == 200 and time.monotonic() < deadline:
        time.sleep(0.05)
        answer = _status(client, secret)
    return answer


def test_a_revocation_through_one_replica_holds_on_the_other(
    replicas: tuple[TestClient, TestClient, Headers],
) -> None:
    a, b, admin = replicas
    body = {"name": "ada", "role": "auditor"}
    secret = a.post("/v1/credentials", json=body, headers=admin).json()["credential"]
    assert _status(b, secret) == (200, "ada")  # the other replica now remembers it
    assert a.post("/v1/credentials/ada/revoke", json={}, headers=admin).status_code == 200
    assert _status(a, secret) == (401, "credential_revoked")  # at once where it was made
    assert _refused_within(b, secret, RECHECK_S + MARGIN_S) == (401, "credential_revoked")


def test_a_rotation_through_one_replica_holds_on_the_other(
    replicas: tuple[TestClient, TestClient, Headers],
) -> None:
    a, b, admin = replicas
    body = {"name": "ops", "role": "admin"}
    old = a.post("/v1/credentials", json=body, headers=admin).json()["credential"]
    assert _status(b, old) == (200, "ops")
    new = a.post("/v1/credentials/ops/rotate", json={}, headers=admin).json()["credential"]
    assert _status(b, new) == (200, "ops")  # a secret it does not know is read afresh
    assert _refused_within(b, old, RECHECK_S + MARGIN_S) == (401, "credential_revoked")


def test_a_runtime_revoked_through_one_replica_is_refused_by_the_other(
    replicas: tuple[TestClient, TestClient, Headers],
) -> None:
    a, b, admin = replicas
    body = {"name": "edge-1", "region": "eu", "cluster": "c1"}
    secret = a.post("/v1/runtimes", json=body, headers=admin).json()["credential"]
    assert _status(b, secret) == (200, "edge-1")
    r = a.post("/v1/runtimes/edge-1/revoke", json={"reason": "stolen"}, headers=admin)
    assert r.status_code == 200, r.text
    assert _status(a, secret) == (401, "credential_revoked")
    assert _refused_within(b, secret, RECHECK_S + MARGIN_S) == (401, "credential_revoked")
    events = b.get("/v1/events", headers=bearer(secret))
    assert events.status_code == 401
