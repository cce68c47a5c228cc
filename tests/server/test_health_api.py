"""GET /v1/health: who may read it, and that every number is the real one."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from lictor.datadir import hash_secret, open_data_dir
from lictor.policydir import load_policy_dir
from lictor.server.app import REPLICA, create_app
from lictor.service.health import (
    MINUTE_MS,
    LogTail,
    Pulse,
    Sample,
    merge_minutes,
    minute_of,
    quantile,
)
from lictor.service.log import AuditLog
from lictor.service.policies import source_json
from lictor.store.base import Credential, Replica

from ..conftest import Server, start_replicas
from ..postgres import PostgresServer
from ..sdk.conftest import DEPLOY, PLANNER, PRODUCTION, STAGING, govern

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
AUDITOR = "lictor_health-auditor-secret"


class Clock:
    """A clock the test moves: mid-minute, so a test's events share one minute."""

    def __init__(self) -> None:
        start = minute_of(int(time.time() * 1000)) + 20_000
        self.ms = start

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.ms / 1000, UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def plane(tmp_path: Path, clock: Clock) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """An app on a clock of the test's, with an auditor; yields it and the admin's headers."""
    data = open_data_dir(tmp_path / "data", "health.test/log")
    data.store.add_credential(Credential("auditor-1", "auditor", hash_secret(AUDITOR)))
    log = AuditLog(data.store, data.signer, clock=clock)
    admin = {"Authorization": f"Bearer {(tmp_path / 'data' / 'admin.token').read_text().strip()}"}
    try:
        with TestClient(create_app(log), raise_server_exceptions=False) as client:
            yield client, admin
    finally:
        log.close()
        data.close()


def _govern(client: TestClient, admin: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Example policies active, one verified runtime edge-1 in eu/c1; its headers."""
    source = source_json(load_policy_dir(EXAMPLES / "policies"))
    version = client.post("/v1/policies", json={"source": source}, headers=admin).json()["version"]
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    assert client.put("/v1/entities", json={"entities": entities}, headers=admin).is_success
    assert client.post(f"/v1/policies/{version}/activate", headers=admin).is_success
    body = {"name": "edge-1", "region": "eu", "cluster": "c1"}
    secret = client.post("/v1/runtimes", json=body, headers=admin).json()["credential"]
    runtime = {"Authorization": f"Bearer {secret}"}
    beat = {"attestation": {"state": "verified", "digests": {"image": "sha256:ab"}}}
    assert client.post("/v1/runtimes/edge-1/heartbeat", json=beat, headers=runtime).is_success
    return version, runtime


def _ask(client: TestClient, runtime: dict[str, str], resource: dict[str, str]) -> Any:
    body = {"principal": PLANNER, "action": DEPLOY, "resource": resource}
    return client.post("/v1/executions", json=body, headers=runtime)


def test_only_admins_and_auditors_may_read_it(plane: tuple[TestClient, dict[str, str]]) -> None:
    client, admin = plane
    _, runtime = _govern(client, admin)
    anonymous = client.get("/v1/health")
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthenticated"
    refused = client.get("/v1/health", headers=runtime)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    for who in (admin, {"Authorization": f"Bearer {AUDITOR}"}):
        assert client.get("/v1/health", headers=who).status_code == 200


def test_the_numbers_are_the_executions_made(
    plane: tuple[TestClient, dict[str, str]], clock: Clock
) -> None:
    client, admin = plane
    version, runtime = _govern(client, admin)
    allowed = [_ask(client, runtime, STAGING) for _ in range(3)]
    assert [r.status_code for r in allowed] == [201, 201, 201]
    assert _ask(client, runtime, PRODUCTION).status_code == 403
    revoke = {"reason": "operator"}
    first = allowed[0].json()["execution"]["id"]
    assert client.post(f"/v1/executions/{first}/revoke", json=revoke, headers=admin).is_success

    body = client.get("/v1/health", headers=admin).json()
    history = body["history"]
    assert len(history["minutes"]) == 60 and history["minutes"][-1] == minute_of(clock.ms)
    assert history["decisions_allowed"][-1] == 3 and sum(history["decisions_allowed"]) == 3
    assert history["decisions_denied"][-1] == 1 and history["revocations"][-1] == 1
    assert history["latency_p50_ms"][-1] > 0 and history["latency_p99_ms"][-1] > 0
    assert history["latency_p50_ms"][:-1] == [None] * 59
    assert history["active"][-1] == 2 and history["log_scan"]["complete_since_ms"] is None
    assert body["executions"] == {"active": 2}
    assert body["policy"]["active_version"] == version

    head = client.get("/v1/log/checkpoint").json()
    assert body["log"]["size"] == head["size"] and body["log"]["origin"] == "health.test/log"
    assert body["log"]["checkpoint_age_s"] == 0.0  # the clock has not moved since
    assert body["database"]["engine"] == "sqlite" and body["database"]["status"] == "ok"
    assert body["database"]["round_trip_ms"] >= 0

    (edge,) = body["runtimes"]
    assert (edge["id"], edge["region"], edge["cluster"], edge["state"]) == (
        "edge-1",
        "eu",
        "c1",
        "active",
    )
    assert edge["last_heartbeat_ms"] == clock.ms and edge["attestation_state"] == "verified"
    assert edge["attestation_digests"] == 1 and edge["decisions_last_hour"] == 4
    assert edge["last_decision"] == {"at_ms": clock.ms, "policy_version": version}

    (me,) = body["replicas"]
    assert me["id"] == REPLICA == body["replica"] and me["self"] and me["state"] == "up"
    assert me["engine"] == "sqlite" and me["counters"]["decisions_allowed"] == 3
    assert me["counters"]["decisions_denied"] == 1 and me["counters"]["revocations"] == 1
    assert me["last_minute"]["decisions"] == 4 and me["active_executions"] == 2


def test_later_minutes_and_other_replicas_rows(
    plane: tuple[TestClient, dict[str, str]], clock: Clock
) -> None:
    client, admin = plane
    _, runtime = _govern(client, admin)
    assert _ask(client, runtime, STAGING).status_code == 201
    clock.ms += 2 * MINUTE_MS
    assert _ask(client, runtime, PRODUCTION).status_code == 403
    store = client.app.state.log.store  # type: ignore[attr-defined]
    gone = {"stopped": True, "engine": "sqlite"}
    store.put_replica(Replica("old/1", "0.0.9", 0, clock.ms - 45_000))
    store.put_replica(Replica("old/2", "0.0.9", 0, clock.ms - 5_000, json.dumps(gone).encode()))
    store.put_replica(Replica("gone/3", "0.0.9", 0, clock.ms - 2 * 3_600_000))

    body = client.get("/v1/health", headers=admin).json()
    states = {r["id"]: r["state"] for r in body["replicas"]}
    assert states == {REPLICA: "up", "old/1": "stale", "old/2": "stopped"}
    history = body["history"]
    assert history["decisions_allowed"][-3:] == [1, 0, 0]
    assert history["decisions_denied"][-3:] == [0, 0, 1]
    assert body["log"]["checkpoint_age_s"] == 0.0
    clock.ms += 5_000
    assert client.get("/v1/health", headers=admin).json()["log"]["checkpoint_age_s"] == 5.0


def test_metrics_count_the_replicas_seen(plane: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = plane
    text = client.get("/metrics").text
    assert 'lictor_replicas{state="up"} 1.0' in text
    assert 'lictor_replicas{state="stale"} 0.0' in text
    assert f'lictor_replica_seen_seconds{{replica="{REPLICA}",state="up"}}' in text


# -- the arithmetic ------------------------------------------------------------------


def test_quantiles_follow_prometheus_histogram_quantile() -> None:
    bounds = [1.0, 2.0, 5.0]
    assert quantile(0.5, bounds, [0, 0, 0, 0]) is None
    assert quantile(0.5, bounds, [10, 10, 10, 10]) == 0.5  # linear from 0 in the first bucket
    assert quantile(0.5, bounds, [0, 4, 8, 8]) == 2.0
    assert quantile(0.75, bounds, [0, 4, 8, 8]) == 3.5
    assert quantile(0.99, bounds, [0, 0, 1, 100]) == 5.0  # past the last bound: that bound


def test_a_pulse_keeps_per_minute_changes() -> None:
    pulse = Pulse([1.0, 2.0], started_at_ms=0)
    pulse.add(Sample(10_000, (1, 2, 2), 5))
    pulse.add(Sample(50_000, (1, 2, 3), 6))
    pulse.add(Sample(70_000, (1, 2, 3), 4))
    assert pulse.minutes() == [[0, [1, 2, 3], 50_000, 6], [60_000, [], 70_000, 4]]
    now = Sample(115_000, (3, 4, 5), 4)
    assert pulse.last_minute(now)["decisions"] == 2  # since the sample at 50 s
    rows = [{"bounds_ms": [1.0, 2.0], "minutes": pulse.minutes(extra=now)}]
    merged = merge_minutes(rows, [1.0, 2.0], [0, 60_000, 120_000])
    assert merged["active"] == [6, 4, None]
    assert merged["latency_p50_ms"] == [1.5, 0.5, None]


def test_the_log_tail_reads_each_entry_once_and_says_when_it_skipped(
    plane: tuple[TestClient, dict[str, str]], clock: Clock
) -> None:
    client, _ = plane
    log: AuditLog = client.app.state.log  # type: ignore[attr-defined]
    for n in range(5):
        clock.ms += 1_000
        log.append_event("note", {"n": n})
    tail = LogTail(log, max_scan=3)
    tail.catch_up(log.head().size, clock.ms)
    assert tail.complete_since_ms == clock.ms - 2_000  # the three newest only
    assert tail.series([minute_of(clock.ms)])["allowed"] == [0]
    assert tail.series([minute_of(clock.ms) - MINUTE_MS])["allowed"] == [None]
    assert tail.last_entry_ms == clock.ms


# -- two replicas on PostgreSQL ------------------------------------------------------


@pytest.fixture
def two_replicas(postgres: PostgresServer, tmp_path: Path) -> Iterator[list[Server]]:
    servers = start_replicas(postgres.database(), tmp_path, 2, "health.test/replicas")
    yield servers
    for server in servers:
        server.kill()


def _until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_two_replicas_show_in_each_others_dashboard(two_replicas: list[Server]) -> None:
    first, second = two_replicas
    secret = govern(second).runtime_secret
    body = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
    r = httpx.post(
        second.url + "/v1/executions", json=body, headers={"Authorization": f"Bearer {secret}"}
    )
    assert r.status_code == 201, r.text
    admin = {"Authorization": f"Bearer {first.token}"}

    def both_up() -> dict[str, Any] | None:
        """The dashboard once the second replica's row reports its decision (<= 5 s)."""
        health: dict[str, Any] = httpx.get(first.url + "/v1/health", headers=admin).json()
        others = [r for r in health["replicas"] if not r["self"]]
        seen = [(r["state"], r["counters"]["decisions_allowed"]) for r in others]
        return health if seen == [("up", 1)] else None

    health = _until(both_up)
    assert health is not None, "the second replica never reported"
    assert [r["state"] for r in health["replicas"]] == ["up", "up"]
    assert health["database"]["engine"] == "postgresql"
    assert sum(health["history"]["decisions_allowed"]) == 1  # decided on the other replica
    assert _until(
        lambda: 'lictor_replicas{state="up"} 2.0' in httpx.get(first.url + "/metrics").text
    )

    second.kill(signal.SIGTERM)  # a clean stop marks its row

    def stopped() -> bool:
        health = httpx.get(first.url + "/v1/health", headers=admin).json()
        return any(r["state"] == "stopped" for r in health["replicas"])

    assert _until(stopped)
