"""kill -9 at any moment loses no decision a caller heard of (DESIGN.md §3.2).

A real `lictor serve` process governed by the example policies is killed with
SIGKILL at random moments while runtimes take decisions (allow and deny)
through HTTP. After each restart, every decision a caller saw is in the log
at its receipt's index, its receipt verifies against the log's key, and the
execution reads back in the state the caller saw, or a later one.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from lictor.log.entry import canonical_entry
from lictor.log.merkle import leaf_hash
from lictor.log.note import parse_verifier_key
from lictor.log.proof import parse_tlog_proof, verify_tlog_proof
from lictor.policydir import load_policy_dir
from lictor.service.policies import source_json

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PLANNER = {"type": "Agent", "id": "planner-7"}
DEPLOY = {"type": "Action", "id": "deploy"}
ASKS = [
    {"principal": PLANNER, "action": DEPLOY, "resource": {"type": "Service", "id": r}}
    for r in ("payments-api-staging", "payments-api")  # allowed, denied (not in release)
]
LATER = {  # what a state may become after the caller saw it
    "active": {"active", "completed", "revoked", "expired"},
    "denied": {"denied"},
}


def _govern(url: str, token: str) -> list[str]:
    """Example policies active, example entities, verified runtimes; their credentials."""
    admin = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=admin, timeout=10) as client:
        source = source_json(load_policy_dir(EXAMPLES / "policies"))
        version = client.post("/v1/policies", json={"source": source}).json()["version"]
        entities = json.loads((EXAMPLES / "entities.json").read_text())
        assert client.put("/v1/entities", json={"entities": entities}).is_success
        assert client.post(f"/v1/policies/{version}/activate").is_success
        secrets = []
        for name in ("edge-a", "edge-b"):
            body = {"name": name, "region": "eu-west-1", "cluster": "prod-a"}
            secret = client.post("/v1/runtimes", json=body).json()["credential"]
            beat = {"attestation": {"state": "verified"}}
            headers = {"Authorization": f"Bearer {secret}"}
            r = client.post(f"/v1/runtimes/{name}/heartbeat", json=beat, headers=headers)
            assert r.is_success, r.text
            secrets.append(secret)
        return secrets


class Decider(threading.Thread):
    """Asks for executions until the server goes away; remembers every answer."""

    def __init__(self, url: str, secret: str, seed: int) -> None:
        super().__init__(daemon=True)
        self.url, self.secret = url, secret
        self.rng = random.Random(seed)
        self.seen: list[dict[str, Any]] = []

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.secret}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            while True:
                try:
                    r = client.post("/v1/executions", json=self.rng.choice(ASKS))
                except httpx.HTTPError:
                    return
                if r.status_code not in (201, 403):
                    return
                self.seen.append(r.json())


def test_sigkill_loses_no_decision(serve: Callable[..., Any]) -> None:
    rng = random.Random(1867)
    server = serve()
    data_dir = server.data_dir
    secrets = _govern(server.url, server.token)
    vkey = httpx.get(server.url + "/v1/log/key").json()["vkey"]
    seen: list[dict[str, Any]] = []
    for round_ in range(5):
        deciders = [Decider(server.url, s, round_ * 10 + i) for i, s in enumerate(secrets)]
        for decider in deciders:
            decider.start()
        time.sleep(rng.uniform(0.3, 1.2))
        server.kill()
        for decider in deciders:
            decider.join(timeout=30)
            seen += decider.seen
        server = serve(data_dir)
        assert httpx.get(server.url + "/v1/log/key").json()["vkey"] == vkey
        _check_decisions(server.url, server.token, vkey, seen)
    states = {answer["execution"]["state"] for answer in seen}
    assert states == {"active", "denied"} and len(seen) > 50, (states, len(seen))


def _check_decisions(url: str, token: str, vkey: str, seen: list[dict[str, Any]]) -> None:
    verifier = parse_verifier_key(vkey)
    admin = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=admin, timeout=10) as client:
        size = client.get("/v1/log/checkpoint").json()["size"]
        for answer in seen:
            receipt, execution = answer["receipt"], answer["execution"]
            data = canonical_entry(receipt["entry"])
            verify_tlog_proof(parse_tlog_proof(receipt["tlog_proof"]), data, [verifier])
            assert receipt["index"] < size
            logged = client.get(f"/v1/log/entries/{receipt['index']}").json()
            assert logged["entry"] == receipt["entry"]
            assert logged["leaf_hash"] == receipt["leaf_hash"] == _b64_leaf(data)
            assert logged["entry"]["execution"] == execution["id"]
            assert logged["entry"]["state"] == execution["state"]
            now = client.get(f"/v1/executions/{execution['id']}")
            assert now.status_code == 200, now.text
            assert now.json()["execution"]["state"] in LATER[execution["state"]]
            first = now.json()["transitions"][0]
            assert first["log_index"] == receipt["index"] and first["state"] == execution["state"]


def _b64_leaf(data: bytes) -> str:
    return base64.b64encode(leaf_hash(data)).decode()
