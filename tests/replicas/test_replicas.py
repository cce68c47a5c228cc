"""Several `lictor serve` replicas on one PostgreSQL database: one log, no forks."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lictor.log.checkpoint import open_checkpoint
from lictor.log.merkle import verify_consistency
from lictor.log.note import parse_verifier_key

from ..conftest import REPO, Server, assert_audit_passes, start_replicas
from ..postgres import PostgresServer

ORIGIN = "test.example/replicas"
LICTOR = (sys.executable, "-m", "lictor.cli.main")


@pytest.fixture
def replicas(postgres: PostgresServer, tmp_path: Path) -> Iterator[list[Server]]:
    """Three replicas on one fresh database; the first made the keys the others copy."""
    servers = start_replicas(postgres.database(), tmp_path, 3, ORIGIN)
    yield servers
    for server in servers:
        server.kill()


def _admin(server: Server) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def test_concurrent_writers_on_three_replicas_make_one_log(replicas: list[Server]) -> None:
    vkey = httpx.get(replicas[0].url + "/v1/log/key").json()["vkey"]
    verifier = parse_verifier_key(vkey)
    indexes: list[int] = []
    seen: list[bytes] = []
    lock = threading.Lock()
    writing = threading.Event()
    writing.set()
    failures: list[str] = []

    def write(server: Server, worker: int) -> None:
        with httpx.Client(base_url=server.url, headers=_admin(server), timeout=30) as client:
            for i in range(15):
                r = client.post(
                    "/v1/log/entries", json={"kind": "note", "text": f"{server.port}/{worker}/{i}"}
                )
                if r.status_code != 201:
                    failures.append(r.text)
                    return
                with lock:
                    indexes.append(r.json()["index"])
                    seen.append(r.json()["receipt"]["checkpoint"].encode())

    def collect() -> None:
        while writing.is_set():
            for server in replicas:
                note = httpx.get(server.url + "/v1/log/checkpoint").json()["checkpoint"]
                with lock:
                    seen.append(note.encode())

    writers = [threading.Thread(target=write, args=(s, w)) for s in replicas for w in range(2)]
    collector = threading.Thread(target=collect)
    collector.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    writing.clear()
    collector.join()
    assert failures == [] and len(indexes) == 3 * 2 * 15, failures[:3]
    assert sorted(indexes) == sorted(set(indexes)), "two appends got one index"
    final = httpx.get(replicas[2].url + "/v1/log/checkpoint").json()
    assert final["size"] >= len(indexes) and set(indexes) <= set(range(final["size"]))
    final_root = base64.b64decode(final["root"])
    roots: dict[int, bytes] = {}
    for note in seen:
        checkpoint, _ = open_checkpoint(note, [verifier], ORIGIN)
        assert roots.setdefault(checkpoint.size, checkpoint.root) == checkpoint.root, "a fork"
    for size, root in roots.items():
        if 0 < size < final["size"]:
            proof = httpx.get(
                replicas[size % 3].url + "/v1/log/proof/consistency",
                params={"first": size, "second": final["size"]},
            ).json()
            hashes = [base64.b64decode(h) for h in proof["hashes"]]
            verify_consistency(size, final["size"], root, final_root, hashes)
    assert_audit_passes(replicas[1].url, vkey)


def test_an_event_committed_on_one_replica_reaches_subscribers_of_another(
    replicas: list[Server],
) -> None:
    writer, reader = replicas[0], replicas[2]
    size = httpx.get(reader.url + "/v1/log/checkpoint").json()["size"]
    received: list[tuple[float, Any]] = []

    def subscribe() -> None:
        params = {"after": str(size - 1)} if size else {}
        with httpx.stream(
            "GET", reader.url + "/v1/events", params=params, headers=_admin(reader), timeout=10
        ) as r:
            for line in r.iter_lines():
                if line.startswith("data:"):
                    received.append((time.monotonic(), line))
                    return

    listener = threading.Thread(target=subscribe, daemon=True)
    listener.start()
    time.sleep(0.5)  # subscribed and idle
    sent = time.monotonic()
    r = httpx.post(
        writer.url + "/v1/log/entries", json={"kind": "note", "text": "x"}, headers=_admin(writer)
    )
    assert r.status_code == 201, r.text
    listener.join(timeout=5)
    assert received, "the other replica never streamed the event"
    assert received[0][0] - sent <= 1.0
    assert '"kind":"note"' in received[0][1]


def test_the_reaper_fails_over_with_no_missed_and_no_double_expiry(
    replicas: list[Server],
) -> None:
    """The first replica reaps (it has led since it started); SIGKILL it mid-work."""
    from ..sdk.conftest import govern

    plane = govern(replicas[1])
    runtime = {"Authorization": f"Bearer {plane.runtime_secret}"}
    body = {
        "principal": 'Agent::"planner-7"',
        "action": 'Action::"deploy"',
        "resource": 'Service::"payments-api-staging"',
        "ttl": 1,
    }
    ids = []
    for n in range(6):
        r = httpx.post(replicas[1 + n % 2].url + "/v1/executions", json=body, headers=runtime)
        assert r.status_code == 201, r.text
        ids.append(r.json()["execution"]["id"])
    replicas[0].kill()  # the reaper dies with the leases still running
    admin = _admin(replicas[2])
    deadline = time.monotonic() + 15
    states: dict[str, list[str]] = {}
    while time.monotonic() < deadline:
        views = [
            httpx.get(f"{replicas[2].url}/v1/executions/{i}", headers=admin).json() for i in ids
        ]
        states = {v["execution"]["id"]: [t["state"] for t in v["transitions"]] for v in views}
        if all(s[-1] == "expired" for s in states.values()):
            break
        time.sleep(0.2)
    assert all(s == ["active", "expired"] for s in states.values()), states


def test_cascades_and_policy_changes_hold_whichever_replica_is_called(
    replicas: list[Server], tmp_path: Path
) -> None:
    from ..sdk.conftest import govern

    plane = govern(replicas[0])
    runtime = {"Authorization": f"Bearer {plane.runtime_secret}"}
    body: dict[str, Any] = {
        "principal": 'Agent::"planner-7"',
        "action": 'Action::"deploy"',
        "resource": 'Service::"payments-api-staging"',
    }
    root = httpx.post(replicas[1].url + "/v1/executions", json=body, headers=runtime).json()
    child = httpx.post(
        replicas[2].url + "/v1/executions",
        json={**body, "parent_grant": root["grant"]},
        headers=runtime,
    ).json()
    assert child["execution"]["parent_id"] == root["execution"]["id"]
    r = httpx.post(
        f"{replicas[0].url}/v1/executions/{root['execution']['id']}/revoke",
        json={"reason": "operator"},
        headers=_admin(replicas[0]),
    )
    assert r.status_code == 200 and child["execution"]["id"] in r.json()["revoked"], r.text
    # a policy activated on one replica decides the next request on another
    stricter = tmp_path / "policies"
    shutil.copytree(REPO / "examples" / "policies", stricter)
    (stricter / "freeze.cedar").write_text(
        '@id("freeze")\nforbid (principal, action == Action::"deploy", resource);\n'
    )
    env = {"LICTOR_URL": replicas[2].url, "LICTOR_CREDENTIAL": replicas[2].token}
    pushed = subprocess.run(
        [*LICTOR, "policy", "push", str(stricter)], capture_output=True, text=True, env=env
    )
    assert pushed.returncode == 0, pushed.stderr
    version = pushed.stdout.split()[1]
    activated = subprocess.run(
        [*LICTOR, "policy", "activate", version], capture_output=True, text=True, env=env
    )
    assert activated.returncode == 0, activated.stderr
    denied = httpx.post(replicas[1].url + "/v1/executions", json=body, headers=runtime)
    assert denied.status_code == 403, denied.text
    assert denied.json()["decision"]["reasons"] == ["freeze"]


def test_each_replica_reports_itself_and_the_database(replicas: list[Server]) -> None:
    seen = set()
    for server in replicas:
        ready = httpx.get(server.url + "/readyz").json()
        assert (ready["status"], ready["database"], ready["engine"]) == ("ok", "ok", "postgresql")
        seen.add(ready["replica"])
        metrics = httpx.get(server.url + "/metrics").text
        assert f'lictor_replica{{engine="postgresql",replica="{ready["replica"]}"}} 1.0' in metrics
    assert len(seen) == 3


def test_a_failed_attestation_on_one_replica_decides_the_next_request_on_another(
    replicas: list[Server],
) -> None:
    """The deciding replica may hold the runtime's facts from a moment ago; the commit
    checks them again in the database and decides again with the new ones."""
    from ..sdk.conftest import govern

    plane = govern(replicas[0])
    runtime = {"Authorization": f"Bearer {plane.runtime_secret}"}
    body = {
        "principal": 'Agent::"release-bot"',
        "action": 'Action::"deploy"',
        "resource": 'Service::"payments-api"',
    }
    allowed = httpx.post(replicas[1].url + "/v1/executions", json=body, headers=runtime)
    assert allowed.status_code == 201, allowed.text  # replica 1 now knows the runtime verified
    beat = {"attestation": {"state": "failed"}}
    r = httpx.post(replicas[0].url + "/v1/runtimes/edge-1/heartbeat", json=beat, headers=runtime)
    assert r.status_code == 200 and allowed.json()["execution"]["id"] in r.json()["revoked"]
    denied = httpx.post(replicas[1].url + "/v1/executions", json=body, headers=runtime)
    assert denied.status_code == 403, denied.text
    assert denied.json()["decision"]["reasons"] == ["production-needs-attested-runtime"]
