"""The governance invariants (DESIGN.md §2–3), through the HTTP API.

- A spawn racing a revocation of its ancestor either fails (denied,
  ``parent_not_active``) or is revoked with it: no survivors.
- A child's lease never outlives its parent's, even after renewals; the
  lineage is at most ``MAX_DEPTH`` deep; a child ends with its parent.
- An unrenewed lease is expired at read time, and the reaper writes the
  ``expired`` transition; an expired execution cannot be renewed.
- Every transition of every execution is one log entry, and every execution
  entry in the log is a transition of its execution.
- Losing trust — a runtime revoked or failing attestation, a principal
  revoked, a stricter policy activated — leaves no survivor, even for
  requests decided concurrently; a renewal re-verifies with fresh facts and
  revokes (``reverify_denied:…``) what a missed sweep left running.
"""

from __future__ import annotations

import base64
import gc
import json
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from lictor.core.lineage import MAX_DEPTH
from lictor.core.types import EntityRef
from lictor.policydir import load_policy_dir
from lictor.server.app import create_app
from lictor.service import executions as executions_module
from lictor.service.log import AuditLog
from lictor.service.policies import source_json
from lictor.service.records import StoredExecution

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PLANNER = {"type": "Agent", "id": "planner-7"}
RELEASE_BOT = {"type": "Agent", "id": "release-bot"}
ANALYST = {"type": "Agent", "id": "analyst-3"}
DATASET = {"type": "Dataset", "id": "customers-eu"}
STAGING = {"type": "Service", "id": "payments-api-staging"}
PROD = {"type": "Service", "id": "payments-api"}
DEPLOY = {"type": "Action", "id": "deploy"}
TRUST_ROUNDS = 30  # each race is lost or won within milliseconds: enough rounds to hit it

Headers = dict[str, str]


def govern(client: httpx.Client, admin: Headers, runtime_name: str = "edge-eu") -> Headers:
    """Example policies active, example entities, one verified runtime; its headers."""
    source = source_json(load_policy_dir(EXAMPLES / "policies"))
    pushed = client.post("/v1/policies", json={"source": source}, headers=admin)
    assert pushed.status_code == 201, pushed.text
    version = pushed.json()["version"]
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    assert client.put("/v1/entities", json={"entities": entities}, headers=admin).is_success
    activated = client.post(f"/v1/policies/{version}/activate", headers=admin)
    assert activated.status_code == 200, activated.text
    body = {"name": runtime_name, "region": "eu-west-1", "cluster": "prod-a"}
    added = client.post("/v1/runtimes", json=body, headers=admin)
    assert added.status_code == 201, added.text
    runtime = {"Authorization": f"Bearer {added.json()['credential']}"}
    beat = {"attestation": {"state": "verified"}}
    r = client.post(f"/v1/runtimes/{runtime_name}/heartbeat", json=beat, headers=runtime)
    assert r.status_code == 200, r.text
    return runtime


def ask(client: httpx.Client, runtime: Headers, **body: Any) -> httpx.Response:
    request = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING, **body}
    return client.post("/v1/executions", json=request, headers=runtime)


def started(client: httpx.Client, runtime: Headers, **body: Any) -> dict[str, Any]:
    r = ask(client, runtime, **body)
    assert r.status_code == 201, r.text
    allowed: dict[str, Any] = r.json()
    return allowed


def shown(client: httpx.Client, headers: Headers, execution_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/executions/{execution_id}", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
def runtime(client: TestClient, admin: Headers) -> Headers:
    return govern(client, admin)


# -- a spawn racing a revoke ---------------------------------------------------------


class Spawner(threading.Thread):
    """Requests one child with a grant picked from ``grants`` after a random pause."""

    def __init__(
        self, client: TestClient, runtime: Headers, grants: list[str], rng: random.Random
    ) -> None:
        super().__init__(daemon=True)
        self.client, self.runtime, self.grants = client, runtime, grants
        self.pause = rng.uniform(0, 0.05)
        self.pick = rng.random()
        self.started_at = 0.0
        self.response: httpx.Response | None = None
        self.renewal: httpx.Response | None = None

    def run(self) -> None:
        time.sleep(self.pause)
        grant = self.grants[int(self.pick * len(self.grants))]
        self.started_at = time.monotonic()
        self.response = ask(self.client, self.runtime, parent_grant=grant)
        if self.response.status_code != 201:
            return
        body = self.response.json()
        self.grants.append(body["grant"])  # grandchildren spawn from it
        if self.pick < 0.5:  # and a renewal races the revocation too
            execution_id = body["execution"]["id"]
            path = f"/v1/executions/{execution_id}/renew"
            self.renewal = self.client.post(path, json={}, headers=self.runtime)


def _race_round(
    client: TestClient, runtime: Headers, admin: Headers, rng: random.Random
) -> tuple[int, int]:
    """One root, one child, spawns racing a revoke of the root; (allowed, denied) spawns."""
    root = started(client, runtime, ttl=600)
    child = started(client, runtime, parent_grant=root["grant"])
    grants = [root["grant"], child["grant"]]
    spawners = [Spawner(client, runtime, grants, rng) for _ in range(rng.randint(6, 14))]
    for spawner in spawners:
        spawner.start()
    time.sleep(rng.uniform(0, 0.05))
    root_id = root["execution"]["id"]
    revoked = client.post(
        f"/v1/executions/{root_id}/revoke", json={"reason": "race"}, headers=admin
    )
    revoke_done = time.monotonic()
    assert revoked.status_code == 200, revoked.text
    in_revocation = set(revoked.json()["revoked"])
    for spawner in spawners:
        spawner.join(timeout=30)
    allowed, denied = _check_spawns(spawners, in_revocation, revoke_done)
    _check_tree(client, admin, root_id, allowed | {root_id, child["execution"]["id"]}, denied)
    return len(allowed), len(denied)


def _check_spawns(
    spawners: list[Spawner], in_revocation: set[str], revoke_done: float
) -> tuple[set[str], set[str]]:
    allowed: set[str] = set()
    denied: set[str] = set()
    for spawner in spawners:
        r = spawner.response
        assert r is not None, "a spawn never answered"
        body = r.json()
        if r.status_code == 201:
            # allowed before the revocation committed, so the revocation reached it
            assert spawner.started_at < revoke_done, "a spawn after the revocation was allowed"
            assert body["execution"]["id"] in in_revocation, "a spawn survived the revocation"
            allowed.add(body["execution"]["id"])
            renewal = spawner.renewal
            if renewal is not None:  # renewed before the revocation, or refused after it
                assert renewal.status_code in (200, 409), renewal.text
        else:
            assert r.status_code == 403, r.text
            assert body["decision"]["reason_code"] == "parent_not_active", body["decision"]
            assert body["execution"]["state"] == "denied"
            denied.add(body["execution"]["id"])
    return allowed, denied


def _check_tree(
    client: TestClient, admin: Headers, root_id: str, allowed: set[str], denied: set[str]
) -> None:
    lineage = client.get(f"/v1/executions/{root_id}/lineage", headers=admin).json()
    tree = {d["execution"]["id"]: d["execution"] for d in lineage["descendants"]}
    tree[root_id] = shown(client, admin, root_id)["execution"]
    assert set(tree) == allowed | denied, "the tree holds exactly the answered spawns"
    for execution_id in allowed:
        assert tree[execution_id]["state"] == "revoked", tree[execution_id]
    for execution_id in denied:
        execution = shown(client, admin, execution_id)["execution"]
        assert execution["state"] == "denied" and execution["reason"] == "parent_not_active"
    active = client.get("/v1/executions", params={"state": "active"}, headers=admin).json()
    assert [e["execution"]["id"] for e in active["executions"]] == [], "a survivor"


def test_a_spawn_racing_a_revoke_fails_or_is_revoked(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    rng = random.Random(8693)
    allowed = denied = 0
    for _ in range(20):
        a, d = _race_round(client, runtime, admin, rng)
        allowed, denied = allowed + a, denied + d
    assert allowed > 0 and denied > 0, (allowed, denied)  # both sides of the race were hit


# -- leases and depth ------------------------------------------------------------------


def _expires(body: dict[str, Any]) -> int:
    expires: int = body["execution"]["lease"]["expires_at_ms"]
    return expires


def test_a_child_lease_never_outlives_its_parent(client: TestClient, runtime: Headers) -> None:
    root = started(client, runtime, ttl=5)
    child = started(client, runtime, parent_grant=root["grant"], ttl=3600)
    grandchild = started(client, runtime, parent_grant=child["grant"], ttl=3600)
    assert _expires(grandchild) <= _expires(child) <= _expires(root)
    ids = [b["execution"]["id"] for b in (root, child, grandchild)]
    parent_expiry = _expires(root)
    for round_ in range(3):
        for execution_id in ids[1:]:
            renewed = client.post(
                f"/v1/executions/{execution_id}/renew", json={"ttl": 3600}, headers=runtime
            )
            assert renewed.status_code == 200, renewed.text
            assert _expires(renewed.json()) <= parent_expiry
        if round_ == 1:  # the root renews for longer: children may follow, never pass it
            r = client.post(f"/v1/executions/{ids[0]}/renew", json={"ttl": 60}, headers=runtime)
            assert r.status_code == 200, r.text
            assert _expires(r.json()) >= parent_expiry
            parent_expiry = _expires(r.json())
    leases = [shown(client, runtime, i)["execution"]["lease"]["expires_at_ms"] for i in ids]
    assert leases[2] <= leases[1] <= leases[0]
    grant = client.post(f"/v1/executions/{ids[2]}/renew", json={}, headers=runtime).json()
    claims = _claims(grant["grant"])
    assert claims["exp"] * 1000 <= leases[0] and claims["depth"] == 2


def test_a_grant_names_the_lease_committed_when_the_parent_moved_before_the_commit(
    client: TestClient, runtime: Headers
) -> None:
    """A grant is signed while its execution commits, for the lease the decision gave
    it; when the committer finds the parent renewed since, the child's lease follows
    the parent's new one, and the grant handed out is signed for that lease."""
    root = started(client, runtime, ttl=5)
    executions: executions_module.Executions = client.app.state.executions  # type: ignore[attr-defined]
    child = executions_module.Ask(
        "edge-eu",
        EntityRef.from_json(PLANNER),
        EntityRef.from_json(DEPLOY),
        EntityRef.from_json(STAGING),
        {},
        root["grant"],
        3_600_000,
    )
    prepared = executions._request_command(child)  # decided under the root's 5 s lease
    assert prepared.activated is not None and prepared.activated.lease is not None
    early = executions._early_grant(prepared)
    renew = {"ttl": 60}
    root_id = root["execution"]["id"]
    renewed = client.post(f"/v1/executions/{root_id}/renew", json=renew, headers=runtime)
    assert renewed.status_code == 200, renewed.text
    committed = executions.log.sequencer.submit_commands([prepared.command])[0].result()
    outcome = executions._with_grant(committed, prepared.now, early)
    lease = outcome.execution.lease
    assert lease is not None and lease.expires_at_ms == _expires(renewed.json())
    assert lease.expires_at_ms > prepared.activated.lease.expires_at_ms
    assert outcome.grant is not None
    assert _claims(outcome.grant)["exp"] == lease.expires_at_ms // 1000


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return claims


def test_lineage_is_at_most_max_depth_deep(client: TestClient, runtime: Headers) -> None:
    chain = [started(client, runtime, ttl=600)]
    while chain[-1]["execution"]["depth"] < MAX_DEPTH:
        chain.append(started(client, runtime, parent_grant=chain[-1]["grant"], ttl=600))
    deepest = chain[-1]["execution"]
    assert deepest["depth"] == MAX_DEPTH and len(deepest["delegation"]) == MAX_DEPTH + 1
    assert deepest["root_id"] == chain[0]["execution"]["id"]
    too_deep = ask(client, runtime, parent_grant=chain[-1]["grant"])
    assert too_deep.status_code == 403, too_deep.text
    assert too_deep.json()["decision"]["reason_code"] == "depth_exceeded"
    assert too_deep.json()["execution"]["reason"] == "depth_exceeded"
    assert "grant" not in too_deep.json()


def test_completing_a_parent_ends_its_live_children(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    """A child needs a live parent (DESIGN.md §3.3): it does not keep running alone."""
    root = started(client, runtime, ttl=600)
    child = started(client, runtime, parent_grant=root["grant"], ttl=600)
    root_id, child_id = root["execution"]["id"], child["execution"]["id"]
    done = client.post(
        f"/v1/executions/{root_id}/complete", json={"outcome": "succeeded"}, headers=runtime
    )
    assert done.status_code == 200, done.text
    after = shown(client, admin, child_id)
    assert after["effective_state"] != "active", after["execution"]
    assert after["execution"]["reason"] == f"ancestor_completed:{root_id}"


# -- expiry ----------------------------------------------------------------------------


@pytest.fixture
def unreaped(log: AuditLog) -> Iterator[TestClient]:
    """The app with a reaper that never runs in a test's lifetime."""
    with TestClient(create_app(log, reap_every=3600), raise_server_exceptions=False) as c:
        yield c


def test_an_unrenewed_lease_is_expired_at_read_time(unreaped: TestClient, admin: Headers) -> None:
    runtime = govern(unreaped, admin)
    body = started(unreaped, runtime, ttl=1)
    execution_id = body["execution"]["id"]
    time.sleep(max(0.0, (_expires(body) - time.time() * 1000) / 1000) + 0.05)
    view = shown(unreaped, admin, execution_id)
    assert view["execution"]["state"] == "active"  # nothing wrote the expiry yet
    assert view["effective_state"] == "expired"
    for verb, payload in (("renew", {}), ("complete", {"outcome": "succeeded"})):
        r = unreaped.post(f"/v1/executions/{execution_id}/{verb}", json=payload, headers=runtime)
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "lease_expired"
    r = unreaped.post(f"/v1/executions/{execution_id}/revoke", json={"reason": "x"}, headers=admin)
    assert r.status_code == 409, r.text
    assert shown(unreaped, admin, execution_id)["transitions"] == body["transitions"]


def test_the_reaper_writes_expired_with_its_log_index(client: TestClient, admin: Headers) -> None:
    runtime = govern(client, admin)
    body = started(client, runtime, ttl=1)
    execution_id = body["execution"]["id"]
    deadline = time.monotonic() + 6
    view = shown(client, admin, execution_id)
    while view["execution"]["state"] != "expired" and time.monotonic() < deadline:
        time.sleep(0.1)
        view = shown(client, admin, execution_id)
    assert view["execution"]["state"] == "expired", "the reaper did not write the expiry"
    assert view["execution"]["reason"] == "lease_expired"
    assert view["execution"]["ended_at_ms"] == _expires(body)
    last = view["transitions"][-1]
    assert last["state"] == "expired"
    entry = client.get(f"/v1/log/entries/{last['log_index']}").json()["entry"]
    assert entry["execution"] == execution_id and entry["state"] == "expired"
    r = client.post(f"/v1/executions/{execution_id}/renew", json={}, headers=runtime)
    assert r.status_code == 409 and r.json()["error"]["code"] == "lease_expired", r.text


# -- every transition is in the log -------------------------------------------------------


def _workload(client: TestClient, runtime: Headers, admin: Headers) -> None:
    """Every kind of transition: allow, deny, renew (same and new facts), complete,
    cascade revoke, expiry, revocation by policy activation and by re-verification."""
    done = started(client, runtime)["execution"]["id"]
    assert client.post(f"/v1/executions/{done}/renew", json={}, headers=runtime).is_success
    beat = {"attestation": {"state": "verified", "digests": {"agent": "sha256:01"}}}
    assert client.post("/v1/runtimes/edge-eu/heartbeat", json=beat, headers=runtime).is_success
    assert client.post(f"/v1/executions/{done}/renew", json={}, headers=runtime).is_success
    outcome = {"outcome": "failed", "exit_code": 3}
    assert client.post(f"/v1/executions/{done}/complete", json=outcome, headers=runtime).is_success
    assert ask(client, runtime, resource=PROD).status_code == 403
    root = started(client, runtime)
    child = started(client, runtime, parent_grant=root["grant"])
    started(client, runtime, parent_grant=child["grant"])
    root_id = root["execution"]["id"]
    r = client.post(f"/v1/executions/{root_id}/revoke", json={"reason": "r"}, headers=admin)
    assert r.status_code == 200, r.text
    assert ask(client, runtime, parent_grant=child["grant"]).status_code == 403
    _end_by_completion_principal_and_runtime(client, runtime, admin)
    short = started(client, runtime, ttl=1)["execution"]["id"]
    prod = started(client, runtime, principal=RELEASE_BOT, resource=PROD)["execution"]["id"]
    running = started(client, runtime)["execution"]["id"]
    time.sleep(1.2)
    client.post(f"/v1/executions/{short}/renew", json={}, headers=runtime)  # 409, or expired
    failed = {"attestation": {"state": "failed"}}
    assert client.post("/v1/runtimes/edge-eu/heartbeat", json=failed, headers=runtime).is_success
    client.post(f"/v1/executions/{prod}/renew", json={}, headers=runtime)
    _freeze(client, admin)
    assert shown(client, admin, running)["execution"]["state"] == "revoked"


def _end_by_completion_principal_and_runtime(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    parent = started(client, runtime)
    started(client, runtime, parent_grant=parent["grant"])
    parent_id = parent["execution"]["id"]
    done = {"outcome": "succeeded"}
    r = client.post(f"/v1/executions/{parent_id}/complete", json=done, headers=runtime)
    assert r.status_code == 200, r.text
    read = {"principal": ANALYST, "action": {"type": "Action", "id": "read"}, "resource": DATASET}
    started(client, runtime, **read)
    body = {"principal": ANALYST, "reason": "left"}
    assert client.post("/v1/principals/revoke", json=body, headers=admin).status_code == 200
    other = _add_runtime(client, admin, "edge-two")
    started(client, other)
    r = client.post("/v1/runtimes/edge-two/revoke", json={"reason": "stolen"}, headers=admin)
    assert r.status_code == 200, r.text


def _freeze(client: TestClient, admin: Headers) -> None:
    source = source_json(load_policy_dir(EXAMPLES / "policies"))
    source["policies"]["freeze.cedar"] = '@id("freeze")\nforbid (principal, action, resource);\n'
    version = client.post("/v1/policies", json={"source": source}, headers=admin).json()["version"]
    r = client.post(f"/v1/policies/{version}/activate", headers=admin)
    assert r.status_code == 200, r.text


def _log_entries(client: TestClient) -> list[dict[str, Any]]:
    size = client.get("/v1/log/checkpoint").json()["size"]
    return [client.get(f"/v1/log/entries/{i}").json()["entry"] for i in range(size)]


def test_every_transition_is_one_log_entry(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    _workload(client, runtime, admin)
    deadline = time.monotonic() + 5  # the reaper writes the short lease's expiry
    while client.get("/v1/executions", params={"state": "active"}, headers=admin).json()[
        "executions"
    ]:
        assert time.monotonic() < deadline, "an execution is still active"
        time.sleep(0.1)
    entries = _log_entries(client)
    listed = client.get("/v1/executions", params={"limit": 1000}, headers=admin).json()
    logged: dict[int, str] = {}
    states: set[str] = set()
    for view in listed["executions"]:
        execution = view["execution"]
        indexes = [t["log_index"] for t in view["transitions"]]
        assert indexes == sorted(set(indexes)), "transitions are in log order, once each"
        assert view["transitions"][-1]["state"] == execution["state"]
        for transition in view["transitions"]:
            entry = entries[transition["log_index"]]
            assert entry["kind"] == "execution", entry
            assert entry["execution"] == execution["id"], (transition, entry)
            assert entry["state"] == transition["state"], (transition, entry)
            assert entry["parent"] == execution["parent_id"]
            logged[transition["log_index"]] = execution["id"]
            states.add(transition["state"])
    in_log = {i for i, e in enumerate(entries) if e["kind"] == "execution"}
    assert in_log == set(logged), "an execution entry that is no transition, or the reverse"
    assert states == {"active", "denied", "completed", "revoked", "expired"}


# -- re-verification ----------------------------------------------------------------------


def _deploy_to_production(client: TestClient, runtime: Headers) -> str:
    body = started(client, runtime, principal=RELEASE_BOT, resource=PROD)
    assert body["decision"]["reasons"] == ["release-deploys-production"]
    execution_id: str = body["execution"]["id"]
    return execution_id


def test_a_failed_attestation_revokes_production_work_and_only_it(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    production = _deploy_to_production(client, runtime)
    staging = started(client, runtime)["execution"]["id"]
    failed = {"attestation": {"state": "failed"}}
    beat = client.post("/v1/runtimes/edge-eu/heartbeat", json=failed, headers=runtime)
    assert beat.status_code == 200, beat.text
    assert beat.json()["revoked"] == [production]
    execution = shown(client, admin, production)
    assert execution["execution"]["state"] == "revoked"
    index = execution["transitions"][-1]["log_index"]
    entry = client.get(f"/v1/log/entries/{index}").json()["entry"]
    assert entry["execution"] == production and entry["state"] == "revoked"
    renewed = client.post(f"/v1/executions/{production}/renew", json={}, headers=runtime)
    assert renewed.status_code == 409, renewed.text
    kept = client.post(f"/v1/executions/{staging}/renew", json={}, headers=runtime)
    assert kept.status_code == 200 and kept.json()["execution"]["state"] == "active", kept.text
    again = ask(client, runtime, principal=RELEASE_BOT, resource=PROD)
    assert again.status_code == 403 and again.json()["decision"]["reasons"] == [
        "production-needs-attested-runtime"
    ]


def test_a_failed_attestation_the_sweep_missed_revokes_at_the_next_renewal(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    """Defence in depth: an attestation recorded without its re-verification (as
    `Runtimes.heartbeat_command` alone does) is still caught by the next renewal."""
    execution_id = _deploy_to_production(client, runtime)
    app: Any = client.app
    beat = app.state.runtimes.heartbeat_command("edge-eu", {"state": "failed", "digests": {}})
    app.state.log.sequencer.submit_commands([beat])[0].result()
    renewed = client.post(f"/v1/executions/{execution_id}/renew", json={}, headers=runtime)
    assert renewed.status_code == 200, renewed.text
    execution = renewed.json()["execution"]
    assert execution["state"] == "revoked", execution
    assert execution["reason"].startswith("reverify_denied:"), execution["reason"]
    assert "grant" not in renewed.json() and "lease" not in renewed.json()
    index = renewed.json()["receipt"]["index"]
    entry = client.get(f"/v1/log/entries/{index}").json()["entry"]
    assert entry["execution"] == execution_id and entry["state"] == "revoked"
    assert shown(client, admin, execution_id)["execution"]["state"] == "revoked"


def test_a_principal_leaving_its_team_is_revoked_at_the_next_renewal(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    execution_id = _deploy_to_production(client, runtime)
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    for entity in entities:
        if entity["uid"] == RELEASE_BOT:
            entity["parents"] = []
    assert client.put("/v1/entities", json={"entities": entities}, headers=admin).is_success
    renewed = client.post(f"/v1/executions/{execution_id}/renew", json={}, headers=runtime)
    assert renewed.status_code == 200, renewed.text
    assert renewed.json()["execution"]["state"] == "revoked"
    assert renewed.json()["execution"]["reason"] == "reverify_denied:not_permitted"
    again = client.post(f"/v1/executions/{execution_id}/renew", json={}, headers=runtime)
    assert again.status_code == 409, again.text


# -- losing trust in a runtime --------------------------------------------------------------


class Requester(threading.Thread):
    """Requests executions in a loop until told to stop; keeps every answer."""

    def __init__(self, client: TestClient, runtime: Headers, body: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.client, self.runtime, self.body = client, runtime, body
        self.stop = threading.Event()
        self.answers: list[httpx.Response] = []

    def run(self) -> None:
        while not self.stop.is_set():
            self.answers.append(ask(self.client, self.runtime, **self.body))


def _race_trust_loss(
    client: TestClient, runtime: Headers, body: dict[str, Any], lose_trust: Any
) -> list[httpx.Response]:
    requesters = [Requester(client, runtime, body) for _ in range(8)]
    for requester in requesters:
        requester.start()
    time.sleep(0.03)
    lose_trust()
    time.sleep(0.02)
    for requester in requesters:
        requester.stop.set()
        requester.join(timeout=30)
    return [a for r in requesters for a in r.answers]


def _survivors(client: TestClient, admin: Headers, runtime_name: str) -> list[str]:
    params = {"state": "active", "runtime": runtime_name, "limit": 1000}
    listed = client.get("/v1/executions", params=params, headers=admin).json()["executions"]
    return [v["execution"]["id"] for v in listed]


def test_requests_racing_a_runtime_revocation_leave_no_survivors(
    client: TestClient, admin: Headers
) -> None:
    for round_ in range(TRUST_ROUNDS):
        name = f"edge-{round_}"
        runtime = govern(client, admin, name) if round_ == 0 else _add_runtime(client, admin, name)

        def revoke(name: str = name) -> None:
            r = client.post(f"/v1/runtimes/{name}/revoke", json={"reason": "stolen"}, headers=admin)
            assert r.status_code == 200, r.text

        answers = _race_trust_loss(client, runtime, {}, revoke)
        assert any(a.status_code == 201 for a in answers)
        survivors = _survivors(client, admin, name)
        assert survivors == [], f"round {round_}: active on a revoked runtime: {survivors}"


def test_requests_racing_a_failed_attestation_leave_no_survivors(
    client: TestClient, admin: Headers
) -> None:
    body = {"principal": RELEASE_BOT, "resource": PROD}
    for round_ in range(TRUST_ROUNDS):
        name = f"edge-{round_}"
        runtime = govern(client, admin, name) if round_ == 0 else _add_runtime(client, admin, name)

        def fail(name: str = name, runtime: Headers = runtime) -> None:
            failed = {"attestation": {"state": "failed"}}
            r = client.post(f"/v1/runtimes/{name}/heartbeat", json=failed, headers=runtime)
            assert r.status_code == 200, r.text

        answers = _race_trust_loss(client, runtime, body, fail)
        assert any(a.status_code == 201 for a in answers)
        survivors = _survivors(client, admin, name)
        assert survivors == [], f"round {round_}: production work on a failed runtime: {survivors}"


def test_requests_racing_a_principal_revocation_leave_no_survivors(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    payments = [{"type": "Team", "id": "payments"}]
    agents = [{"type": "Agent", "id": f"agent-{i}"} for i in range(TRUST_ROUNDS // 3)]
    entities += [{"uid": a, "attrs": {}, "parents": payments} for a in agents]
    assert client.put("/v1/entities", json={"entities": entities}, headers=admin).is_success
    for round_, agent in enumerate(agents):

        def revoke(agent: dict[str, str] = agent) -> None:
            body = {"principal": agent, "reason": "compromised"}
            r = client.post("/v1/principals/revoke", json=body, headers=admin)
            assert r.status_code == 200, r.text

        answers = _race_trust_loss(client, runtime, {"principal": agent}, revoke)
        assert any(a.status_code == 201 for a in answers)
        params = {"state": "active", "principal": f'Agent::"{agent["id"]}"'}
        listed = client.get("/v1/executions", params=params, headers=admin).json()
        survivors = [v["execution"]["id"] for v in listed["executions"]]
        assert survivors == [], f"round {round_}: a revoked principal's work runs: {survivors}"


def test_requests_racing_a_policy_activation_leave_no_survivors(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    source = source_json(load_policy_dir(EXAMPLES / "policies"))
    base = client.post("/v1/policies", json={"source": source}, headers=admin).json()["version"]
    source["policies"]["freeze.cedar"] = '@id("freeze")\nforbid (principal, action, resource);\n'
    frozen = client.post("/v1/policies", json={"source": source}, headers=admin).json()["version"]
    for round_ in range(TRUST_ROUNDS // 4):

        def freeze() -> None:
            r = client.post(f"/v1/policies/{frozen}/activate", headers=admin)
            assert r.status_code == 200, r.text

        answers = _race_trust_loss(client, runtime, {}, freeze)
        assert any(a.status_code == 201 for a in answers)
        active = client.get("/v1/executions", params={"state": "active"}, headers=admin).json()
        survivors = [v["execution"]["id"] for v in active["executions"]]
        assert survivors == [], f"round {round_}: allowed work survived a freeze: {survivors}"
        assert client.post(f"/v1/policies/{base}/activate", headers=admin).status_code == 200


def _add_runtime(client: TestClient, admin: Headers, name: str) -> Headers:
    body = {"name": name, "region": "eu-west-1", "cluster": "prod-a"}
    added = client.post("/v1/runtimes", json=body, headers=admin)
    assert added.status_code == 201, added.text
    runtime = {"Authorization": f"Bearer {added.json()['credential']}"}
    beat = {"attestation": {"state": "verified"}}
    assert client.post(f"/v1/runtimes/{name}/heartbeat", json=beat, headers=runtime).is_success
    return runtime


def test_a_revoked_runtime_cannot_renew_what_the_sweep_missed(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    """Defence in depth: a runtime revoked without the sweep of its executions (as
    `Runtimes.revoke_command` alone does) cannot renew them: its work ends, it does not run on."""
    execution_id = started(client, runtime)["execution"]["id"]
    app: Any = client.app
    mark = app.state.runtimes.revoke_command("edge-eu", "stolen")  # the mark alone, no sweep
    app.state.log.sequencer.submit_commands([mark])[0].result()
    lease = shown(client, admin, execution_id)["execution"]["lease"]
    renewed = client.post(f"/v1/executions/{execution_id}/renew", json={}, headers=runtime)
    assert renewed.status_code in (200, 401, 403, 409), renewed.text
    if renewed.status_code == 401:  # its credential died with it: the lease runs out unrenewed
        assert renewed.json()["error"]["code"] == "credential_revoked"
        assert shown(client, admin, execution_id)["execution"]["lease"] == lease
        return
    if renewed.status_code == 200:
        assert renewed.json()["execution"]["state"] == "revoked", renewed.json()["execution"]
        assert "grant" not in renewed.json()
    assert shown(client, admin, execution_id)["execution"]["state"] != "active"


def test_the_reaper_finds_due_leases_by_their_expiry(unreaped: TestClient, admin: Headers) -> None:
    runtime = govern(unreaped, admin)
    sweeps = unreaped.app.state.sweeps  # type: ignore[attr-defined]
    short, renewed, long = (started(unreaped, runtime, ttl=1) for _ in range(3))
    r = unreaped.post(
        f"/v1/executions/{renewed['execution']['id']}/renew", json={"ttl": 60}, headers=runtime
    )
    assert r.status_code == 200, r.text
    r = unreaped.post(
        f"/v1/executions/{long['execution']['id']}/renew", json={"ttl": 60}, headers=runtime
    )
    assert r.status_code == 200, r.text
    assert sweeps.expire_due() == []  # the first call reads every active execution once
    time.sleep(max(0.0, (_expires(short) - time.time() * 1000) / 1000) + 0.05)
    assert sweeps.expire_due() == [short["execution"]["id"]]  # from the index: only the due one
    assert sweeps.expire_due() == []
    for body, state in ((short, "expired"), (renewed, "active"), (long, "active")):
        assert shown(unreaped, admin, body["execution"]["id"])["execution"]["state"] == state


def test_revoking_a_runtime_and_a_rejected_attestation_are_each_one_commit(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    """The runtime's change and the revocation of its executions commit together, so
    no crash can leave the runtime revoked (or distrusted) with its work still active."""
    app: Any = client.app
    commits: list[int] = []
    app.state.log.sequencer.add_listener(lambda head: commits.append(head.size))
    production = _deploy_to_production(client, runtime)
    before = len(commits)
    beat = {"attestation": {"state": "failed", "digests": {}}}
    r = client.post("/v1/runtimes/edge-eu/heartbeat", json=beat, headers=runtime)
    assert r.status_code == 200 and r.json()["revoked"] == [production], r.text
    assert len(commits) == before + 1
    other = _add_runtime(client, admin, "edge-2")
    ids = [started(client, other)["execution"]["id"] for _ in range(3)]
    before = len(commits)
    r = client.post("/v1/runtimes/edge-2/revoke", json={"reason": "stolen"}, headers=admin)
    assert r.status_code == 200 and sorted(r.json()["revoked"]) == sorted(ids), r.text
    assert len(commits) == before + 1
    for execution_id in ids:
        assert shown(client, admin, execution_id)["execution"]["state"] == "revoked"


def test_the_reaper_reads_untagged_active_executions_a_page_per_tick(
    unreaped: TestClient, admin: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Records written before the ``expires`` tag existed are found by a scan of the
    active executions, one page per call, never all at once."""
    from lictor.service import sweeps as sweeps_module
    from lictor.store.base import RecordWrite

    monkeypatch.setattr(sweeps_module, "SCAN_PAGE", 2)
    runtime = govern(unreaped, admin)
    app: Any = unreaped.app
    store = app.state.log.store
    bodies = [started(unreaped, runtime, ttl=1) for _ in range(5)]
    for body in bodies:  # as an older server wrote them: no expires tag
        record = store.get_record("execution", body["execution"]["id"])
        tags = tuple((t, v) for t, v in record.tags if t != "expires")
        store.put_record(RecordWrite(record.kind, record.key, record.doc, record.version, tags))
    time.sleep(max(0.0, max(_expires(b) for b in bodies) / 1000 - time.time()) + 0.05)
    expired = [app.state.sweeps.expire_due() for _ in range(4)]
    assert [len(e) for e in expired] == [2, 2, 1, 0]
    assert sorted(i for e in expired for i in e) == sorted(b["execution"]["id"] for b in bodies)


def test_the_reaper_reads_untagged_executions_once_per_store(
    unreaped: TestClient, admin: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lictor.service.sweeps import Sweeps

    govern(unreaped, admin)
    app: Any = unreaped.app
    assert app.state.sweeps.expire_due() == []  # the first scan: done, and recorded
    again = Sweeps(app.state.executions)  # as after a restart
    monkeypatch.setattr(app.state.executions, "find", lambda *a, **k: pytest.fail("scanned"))
    assert again.expire_due() == []


# -- a renewal asks Cedar again when its answer could change (ADR 21) -------------------


@pytest.fixture
def cedar_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The requests the executions service puts to Cedar, in order."""
    calls: list[Any] = []
    real = executions_module.decide

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(executions_module, "decide", counted)
    return calls


def renew(client: TestClient, runtime: Headers, execution_id: str) -> dict[str, Any]:
    r = client.post(f"/v1/executions/{execution_id}/renew", json={}, headers=runtime)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_a_renewal_reuses_an_allow_while_nothing_it_depends_on_changed(
    client: TestClient, runtime: Headers, admin: Headers, cedar_calls: list[Any]
) -> None:
    execution_id = started(client, runtime)["execution"]["id"]
    for _ in range(3):  # the example policies read no time: the request's allow stands
        assert renew(client, runtime, execution_id)["execution"]["state"] == "active"
    assert len(cedar_calls) == 1
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    for entity in entities:
        if entity["uid"] == RELEASE_BOT:
            entity["parents"] = []  # another principal's: a new entity set all the same
    assert client.put("/v1/entities", json={"entities": entities}, headers=admin).is_success
    assert renew(client, runtime, execution_id)["execution"]["state"] == "active"
    assert renew(client, runtime, execution_id)["execution"]["state"] == "active"
    assert len(cedar_calls) == 2  # asked once under the new set, then reused again
    beat = {"attestation": {"state": "verified", "digests": {"image": "sha256:" + "a" * 64}}}
    r = client.post("/v1/runtimes/edge-eu/heartbeat", json=beat, headers=runtime)
    assert r.status_code == 200, r.text
    assert renew(client, runtime, execution_id)["execution"]["state"] == "active"
    assert len(cedar_calls) == 3  # the runtime's facts changed: asked again


def test_a_renewal_under_a_policy_that_reads_the_time_asks_every_time(
    client: TestClient, admin: Headers, tmp_path: Path, cedar_calls: list[Any]
) -> None:
    policies = tmp_path / "timed-policies"
    policies.mkdir()
    for source in (EXAMPLES / "policies").iterdir():
        (policies / source.name).write_bytes(source.read_bytes())
    until_ms = int(time.time() * 1000) + 1500
    (policies / "window.cedar").write_text(
        f'@id("closed-after-the-window")\nforbid (principal, action, resource)\n'
        f"when {{ context.lictor.time.epoch_ms > {until_ms} }};\n"
    )
    runtime = govern(client, admin)
    pushed = client.post(
        "/v1/policies", json={"source": source_json(load_policy_dir(policies))}, headers=admin
    )
    version = pushed.json()["version"]
    assert client.post(f"/v1/policies/{version}/activate", headers=admin).status_code == 200
    execution_id = started(client, runtime)["execution"]["id"]
    assert renew(client, runtime, execution_id)["execution"]["state"] == "active"
    assert len(cedar_calls) == 2
    time.sleep(max(0.0, until_ms / 1000 - time.time()) + 0.2)
    execution = renew(client, runtime, execution_id)["execution"]
    assert execution["state"] == "revoked"
    assert execution["reason"] == "reverify_denied:denied_by_policy"
    assert len(cedar_calls) == 3


def test_the_allows_kept_for_renewals_are_nothing_the_collector_traverses(
    client: TestClient, runtime: Headers, cedar_calls: list[Any]
) -> None:
    """Allows kept for renewals (ADR 21) are tuples of text, which CPython stops
    tracking at its first collection: a plane renewing many executions does not make
    every collection traverse them (ADR 20). The reused allow is the one Cedar gave."""
    executions: Any = client.app.state.executions  # type: ignore[attr-defined]
    execution_id = started(client, runtime)["execution"]["id"]
    first = renew(client, runtime, execution_id)
    for _ in range(2):  # a tuple is let go once the tuples inside it were
        gc.collect()
    assert executions._allowed
    for key, reasons in executions._allowed.items():
        assert not gc.is_tracked(key) and not gc.is_tracked(reasons)
    again = renew(client, runtime, execution_id)
    assert len(cedar_calls) == 1  # the request's allow, reused
    assert again["decision"] == first["decision"]
    assert again["decision"]["allowed"] and again["decision"]["reasons"]


def test_a_record_kept_parsed_after_its_write_is_the_one_stored(
    client: TestClient, runtime: Headers, admin: Headers
) -> None:
    app: Any = client.app
    executions, store = app.state.executions, app.state.log.store
    execution_id = started(client, runtime)["execution"]["id"]

    def kept_is_stored() -> None:
        record = store.get_record("execution", execution_id)
        kept = executions._parsed[execution_id]
        assert (kept.record.version, kept.record.doc) == (record.version, record.doc)
        assert kept.stored == StoredExecution.from_record(record)

    kept_is_stored()  # as the request wrote it
    renew(client, runtime, execution_id)
    kept_is_stored()  # a renewal that moved only the lease
    beat = {"attestation": {"state": "verified", "digests": {"image": "sha256:" + "b" * 64}}}
    assert client.post("/v1/runtimes/edge-eu/heartbeat", json=beat, headers=runtime).is_success
    renew(client, runtime, execution_id)
    kept_is_stored()  # a renewal under new runtime facts: a transition, logged
    assert len(shown(client, admin, execution_id)["transitions"]) == 2


def test_a_record_renewed_again_stays_kept_while_older_ones_go(
    client: TestClient, runtime: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    app: Any = client.app
    executions = app.state.executions
    monkeypatch.setattr(executions_module, "PARSED_RECORDS", 3)
    executions._parsed.clear()
    first, second, third = (started(client, runtime)["execution"]["id"] for _ in range(3))
    renew(client, runtime, first)  # the oldest, but renewed: now the newest
    fourth = started(client, runtime)["execution"]["id"]
    assert list(executions._parsed) == [third, first, fourth]
    assert second not in executions._parsed
