"""The synchronous SDK against a real server: grants, denies, completion, lineage."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from lictor.errors import InvalidTransitionError, LogError, UnavailableError
from lictor.sdk import Client, DeniedError, current_execution, governed, verify_receipt

from ..conftest import free_port
from .conftest import DEPLOY, PLANNER, PRODUCTION, STAGING, Plane


def test_an_allowed_execution_has_a_grant_and_completes_succeeded(
    plane: Plane, client: Client
) -> None:
    with client.execution(PLANNER, DEPLOY, STAGING, ttl=30) as e:
        assert e.grant and e.execution["state"] == "active"
        assert e.lease.ttl == 30 and e.lease.renew_by_ms < e.lease.expires_at_ms
        e.check()
        assert current_execution() is e
    assert current_execution() is None
    proved = verify_receipt(e.receipt or {}, plane.vkey())
    assert proved.entry["execution"] == e.id and proved.event is not None
    assert proved.event["principal"] == PLANNER
    done = client.get(e.id)["execution"]
    assert (done["state"], done["outcome"]) == ("completed", "succeeded")


def test_an_exception_in_the_block_completes_failed_and_propagates(client: Client) -> None:
    with pytest.raises(ZeroDivisionError), client.execution(PLANNER, DEPLOY, STAGING) as e:
        _ = 1 / 0
    done = client.get(e.id)["execution"]
    assert (done["state"], done["outcome"]) == ("completed", "failed")


def test_a_deny_raises_with_reasons_and_a_receipt_that_verifies(
    plane: Plane, client: Client
) -> None:
    ran = False
    with pytest.raises(DeniedError) as denied, client.execution(PLANNER, DEPLOY, PRODUCTION):
        ran = True
    assert not ran
    error = denied.value
    assert error.code == "denied" and error.reason_code == "not_permitted"
    assert error.execution is not None and error.execution["state"] == "denied"
    assert error.receipt is not None
    proved = verify_receipt(json.dumps(error.receipt), plane.vkey())
    assert proved.entry["execution"] == error.execution["id"]
    assert proved.entry["state"] == "denied"
    stranger = {"type": "Agent", "id": "nobody"}
    with pytest.raises(DeniedError) as unknown, client.execution(stranger, DEPLOY, PRODUCTION):
        pass
    assert unknown.value.reason_code == "unknown_principal"
    assert any("nobody" in e for e in unknown.value.errors)  # the decision's messages


def test_an_unreachable_control_plane_is_a_deny() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with Client(url, "whatever") as client:
        with pytest.raises(DeniedError) as denied, client.execution(PLANNER, DEPLOY, STAGING):
            pytest.fail("the block must not run")
        assert denied.value.reason_code == "unreachable" and denied.value.receipt is None
        with pytest.raises(UnavailableError):
            client.get("exec_nope")


def test_a_nested_execution_is_a_child_of_the_enclosing_one(client: Client) -> None:
    with client.execution(PLANNER, DEPLOY, STAGING) as parent:
        with client.execution(PLANNER, DEPLOY, STAGING) as child:
            assert child.execution["parent_id"] == parent.id
            assert current_execution() is child
        assert current_execution() is parent
    assert client.get(child.id)["execution"]["outcome"] == "succeeded"


def test_lictor_grant_from_the_environment_makes_a_child(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    parent = client.request(PLANNER, DEPLOY, STAGING)
    monkeypatch.setenv("LICTOR_GRANT", parent["grant"])
    with client.execution(PLANNER, DEPLOY, STAGING) as child:
        assert child.execution["parent_id"] == parent["execution"]["id"]
    monkeypatch.setenv("LICTOR_GRANT", "not-a-grant")
    with pytest.raises(DeniedError) as denied, client.execution(PLANNER, DEPLOY, STAGING):
        pass
    assert denied.value.reason_code == "invalid_parent_grant"


def test_governed_runs_each_call_as_an_execution(client: Client) -> None:
    @governed(client, principal=PLANNER, action=DEPLOY, resource=STAGING)
    def deploy(version: str) -> str:
        e = current_execution()
        assert e is not None
        return f"{version} under {e.id}"

    result = deploy("v2")
    execution_id = result.split(" under ")[1]
    assert result.startswith("v2") and client.get(execution_id)["execution"]["state"] == "completed"
    with pytest.raises(TypeError):
        governed(client, principal=PLANNER, action=DEPLOY, resource=STAGING)(_coroutine)


async def _coroutine() -> None:
    return None


def _flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[0] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def _tampered(receipt: dict[str, Any]) -> list[dict[str, Any]]:
    """Copies of ``receipt`` each changed in one place a verifier must notice."""
    entry = copy.deepcopy(receipt)
    entry["entry"]["state"] = "completed"
    event = copy.deepcopy(receipt)
    event["event"]["resource"] = {"type": "Service", "id": "payments-api"}
    index = copy.deepcopy(receipt)
    index["index"] += 1
    proof = copy.deepcopy(receipt)
    head, sep, note = proof["tlog_proof"].partition("\n\n")
    root = note.splitlines()[2]  # the checkpoint's root hash: its signature must fail
    proof["tlog_proof"] = head + sep + note.replace(root, _flip(root))
    return [entry, event, index, proof]


def test_a_tampered_receipt_does_not_verify(plane: Plane, client: Client) -> None:
    receipt = client.request(PLANNER, DEPLOY, STAGING)["receipt"]
    vkey = plane.vkey()
    verify_receipt(receipt, vkey)
    for bad in _tampered(receipt):
        with pytest.raises(LogError):
            verify_receipt(bad, vkey)
    other_key = vkey.replace(vkey.split("+")[0], "other.example/log", 1)
    with pytest.raises(LogError):
        verify_receipt(receipt, other_key)


def test_a_root_execution_ignores_the_enclosing_one(client: Client) -> None:
    with (
        client.execution(PLANNER, DEPLOY, STAGING) as outer,
        client.execution(PLANNER, DEPLOY, STAGING, root=True) as inner,
    ):
        assert inner.execution["parent_id"] is None
        assert inner.execution["root_id"] == inner.id != outer.id


def test_complete_many_answers_each_completion_in_its_place(plane: Plane, client: Client) -> None:
    ids = [client.request(PLANNER, DEPLOY, STAGING)["execution"]["id"] for _ in range(2)]
    plane.revoke(ids[1])
    digest = "sha256:" + "0f" * 32
    answers = client.complete_many(
        [
            {"execution": ids[0], "outcome": "succeeded", "result_hash": digest},
            {"execution": ids[1], "outcome": "succeeded"},
        ]
    )
    first, second = answers
    assert isinstance(first, dict) and first["execution"]["state"] == "completed"
    assert first["transitions"][-1]["result_hash"] == digest
    verify_receipt(first["receipt"], plane.vkey())
    assert isinstance(second, InvalidTransitionError)
    assert plane.execution(ids[1])["execution"]["state"] == "revoked"
