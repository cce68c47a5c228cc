"""A grant as the only credential: children of its own execution, and nothing else.

What a governed command holds is its execution's grant. Authenticated by it
alone, a caller may ask for children of that execution (under its runtime),
renew, complete and read that execution and follow its events; every other
call is refused, and once the execution has ended the grant starts nothing.
A grant is also bound to its runtime when given as a parent by a runtime.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from lictor.errors import InvalidRequestError
from lictor.sdk import Client

from .conftest import DEPLOY, PLANNER, PRODUCTION, STAGING, Plane, cli

OPS = {"type": "Agent", "id": "ops-bot"}  # another principal


def _as(grant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {grant}"}


def _root(plane: Plane, ttl: int | None = None) -> dict[str, Any]:
    with plane.client() as client:
        return client.request(PLANNER, DEPLOY, STAGING, ttl=ttl)


def _post(plane: Plane, path: str, grant: str, body: Any) -> httpx.Response:
    return httpx.post(plane.url + path, json=body, headers=_as(grant))


def test_a_grant_alone_starts_a_child_of_its_execution(plane: Plane) -> None:
    parent = _root(plane)
    body = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
    r = _post(plane, "/v1/executions", parent["grant"], body)
    assert r.status_code == 201, r.text
    child = r.json()["execution"]
    assert child["parent_id"] == parent["execution"]["id"]  # never a root
    assert child["runtime_id"] == parent["execution"]["runtime_id"] == "edge-1"
    # the child's own grant renews and completes it, and reads it
    own = r.json()["grant"]
    renewed = _post(plane, f"/v1/executions/{child['id']}/renew", own, {})
    assert renewed.status_code == 200 and renewed.json()["execution"]["state"] == "active"
    read = httpx.get(plane.url + f"/v1/executions/{child['id']}", headers=_as(own))
    assert read.status_code == 200, read.text
    done = _post(plane, f"/v1/executions/{child['id']}/complete", own, {"outcome": "succeeded"})
    assert done.status_code == 200 and done.json()["execution"]["state"] == "completed"


def test_a_grant_is_refused_everything_else(plane: Plane) -> None:
    mine, other = _root(plane), _root(plane)
    grant = mine["grant"]
    other_id = other["execution"]["id"]
    refused = [
        ("POST", f"/v1/executions/{other_id}/renew", {}),
        ("POST", f"/v1/executions/{other_id}/complete", {"outcome": "succeeded"}),
        ("GET", f"/v1/executions/{other_id}", None),
        ("GET", f"/v1/executions/{mine['execution']['id']}/lineage", None),
        ("GET", "/v1/executions", None),
        (
            "POST",
            "/v1/executions/preview",
            {"principal": PLANNER, "action": DEPLOY, "resources": [STAGING]},
        ),
        (
            "POST",
            "/v1/executions/completions",
            {"completions": [{"execution": mine["execution"]["id"], "outcome": "succeeded"}]},
        ),
        (
            "POST",
            "/v1/executions/renewals",
            {"renewals": [{"execution": mine["execution"]["id"]}]},
        ),
        ("POST", f"/v1/executions/{other_id}/revoke", {"reason": "x"}),
        ("POST", "/v1/runtimes/edge-1/heartbeat", {"attestation": {"state": "verified"}}),
        ("POST", "/v1/tools/observe", {"server": "s", "tools": []}),
        ("POST", "/v1/tools/approve", {}),
        ("GET", "/v1/runtimes/edge-1", None),
        ("POST", "/v1/policies", {}),
        ("GET", "/v1/credentials", None),
        ("POST", "/v1/principals/revoke", {"principal": PLANNER, "reason": "x"}),
    ]
    for method, path, body in refused:
        r = httpx.request(method, plane.url + path, json=body, headers=_as(grant))
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        assert r.json()["error"]["code"] == "permission_denied", r.text
    # a child of another execution, by naming that one's grant as the parent
    body = {
        "principal": PLANNER,
        "action": DEPLOY,
        "resource": STAGING,
        "parent_grant": other["grant"],
    }
    r = _post(plane, "/v1/executions", grant, body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "permission_denied", r.text
    assert plane.execution(other_id)["execution"]["state"] == "active"


def test_a_child_is_still_decided_by_policy(plane: Plane) -> None:
    parent = _root(plane)
    body = {"principal": PLANNER, "action": DEPLOY, "resource": PRODUCTION}
    r = _post(plane, "/v1/executions", parent["grant"], body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "denied", r.text
    assert "receipt" in r.json()  # logged like any other decision


def test_a_grant_dies_with_its_execution(plane: Plane) -> None:
    parent = _root(plane)
    plane.revoke(parent["execution"]["id"])
    body = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
    r = _post(plane, "/v1/executions", parent["grant"], body)
    assert r.status_code == 403, r.text
    assert r.json()["decision"]["reason_code"] == "parent_not_active", r.text
    renew = _post(plane, f"/v1/executions/{parent['execution']['id']}/renew", parent["grant"], {})
    assert renew.status_code >= 400 or renew.json()["execution"]["state"] != "active", renew.text


def test_a_grant_outlives_its_first_exp_while_its_lease_is_renewed(plane: Plane) -> None:
    """The grant handed to a command at start names its execution for as long as the
    lease is kept alive, not only until the ``exp`` written when it was issued."""
    parent = _root(plane, ttl=2)
    with plane.client() as client:
        for _ in range(4):  # 2.4 s: past the first grant's exp (at most 2 s)
            time.sleep(0.6)
            client.renew(parent["execution"]["id"], 2)
    body = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
    r = _post(plane, "/v1/executions", parent["grant"], body)
    assert r.status_code == 201, r.text
    # and once the lease runs out, it starts nothing
    time.sleep(2.2)
    r = _post(plane, "/v1/executions", parent["grant"], body)
    assert r.status_code == 403 and r.json()["decision"]["reason_code"] == "parent_not_active"


def test_bad_grants_are_unauthenticated(plane: Plane) -> None:
    real = _root(plane)["grant"]
    head, payload, signature = real.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    for token in (forged, f"{head}.{payload}", "eyJ" + "A" * 40, f"{head}.e30.{signature}"):
        r = httpx.get(plane.url + "/v1/executions", headers=_as(token))
        assert r.status_code == 401, (token, r.text)
        assert r.json()["error"]["code"] == "unauthenticated"


def test_a_parent_grant_is_bound_to_its_runtime(plane: Plane) -> None:
    """Another runtime holding a genuine grant cannot start children under it."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LICTOR_URL", plane.url)
        env.setenv("LICTOR_CREDENTIAL", plane.server.token)
        out = cli("runtime", "add", "edge-2", "--region", "eu", "--cluster", "c2")
    other = out.split("credential (shown once): ")[1].strip()
    httpx.post(
        plane.url + "/v1/runtimes/edge-2/heartbeat",
        json={"attestation": {"state": "verified"}},
        headers=_as(other),
    ).raise_for_status()
    parent = _root(plane)
    body = {
        "principal": OPS,
        "action": DEPLOY,
        "resource": STAGING,
        "parent_grant": parent["grant"],
    }
    r = httpx.post(plane.url + "/v1/executions", json=body, headers=_as(other))
    assert r.status_code == 403, r.text
    assert r.json()["decision"]["reason_code"] == "invalid_parent_grant", r.text
    assert "edge-1" in r.text  # says whose grant it is


def test_a_client_without_credential_asks_nothing_without_a_grant(plane: Plane) -> None:
    with Client(plane.url) as client, pytest.raises(InvalidRequestError):
        client.request(PLANNER, DEPLOY, STAGING)
