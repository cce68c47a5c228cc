"""A runtime's keepers renew together (`lictor.sdk.heartbeat`): one call for those due
at about the same time, each answered alone, each keeper's own timeout kept."""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from typing import Any

import pytest

from lictor.errors import ExecutionRevokedError, LictorError, UnavailableError
from lictor.sdk import Client, ExecutionHandle
from lictor.sdk.heartbeat import Heartbeat

from .conftest import DEPLOY, PLANNER, STAGING, Plane

Items = list[dict[str, Any]]


def spied(client: Client, window: float) -> list[Items]:
    """Give ``client`` a heartbeat gathering for ``window`` s; the calls it sends."""
    calls: list[Items] = []

    def send(items: Items, timeout: float) -> list[dict[str, Any] | LictorError]:
        calls.append(items)
        return client.renew_many(items, timeout)

    client.heartbeat = Heartbeat(send, client._renew_alone, window)
    return calls


def test_keepers_due_together_renew_in_one_call(plane: Plane) -> None:
    with plane.client() as client, ExitStack() as blocks:
        calls = spied(client, window=0.25)
        handles: list[ExecutionHandle] = [  # each a child of the one before
            blocks.enter_context(client.execution(PLANNER, DEPLOY, STAGING, ttl=1))
            for _ in range(8)
        ]
        time.sleep(1.6)  # past the 1 s leases: only renewals keep them
        assert [h.lost for h in handles] == [None] * 8
        first = {h.id: h.lease.expires_at_ms for h in handles}
        # still renewing: each lease moves again (a keeper that renewed just before
        # ``first`` is due about 0.6 s later: a third of its lease, then the window)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if all(h.lease.expires_at_ms > first[h.id] for h in handles):
                break
            time.sleep(0.05)
        assert all(h.lease.expires_at_ms > first[h.id] for h in handles)
    renewed = [item["execution"] for call in calls for item in call]
    assert set(renewed) == {h.id for h in handles}
    assert max(len(call) for call in calls) > 1  # gathered, not one call each
    assert not any("grant" in item for call in calls for item in call)  # none signed
    for h in handles:
        assert plane.execution(h.id)["execution"]["state"] == "completed"


def test_a_child_started_after_its_parents_grant_ran_out_gets_a_fresh_one(
    plane: Plane,
) -> None:
    with plane.client() as client:
        calls = spied(client, window=0.05)
        with client.execution(PLANNER, DEPLOY, STAGING, ttl=3) as parent:
            first = parent.grant
            time.sleep(4.5)  # past the first grant's end: renewed in heartbeats, no grant
            assert calls and parent.grant == first and parent.lost is None
            assert parent.grant_until_ms <= time.time() * 1000
            with client.execution(PLANNER, DEPLOY, STAGING, ttl=3) as child:
                assert child.execution["parent_id"] == parent.id
            assert parent.grant != first and parent.grant_until_ms > time.time() * 1000


def test_a_revoked_execution_is_lost_alone_in_its_heartbeat(plane: Plane) -> None:
    with Client(plane.url, plane.runtime_secret, events=False) as client, ExitStack() as blocks:
        calls = spied(client, window=0.25)
        handles = [  # three lineages: revoking one leaves the others alone
            blocks.enter_context(client.execution(PLANNER, DEPLOY, STAGING, ttl=1, root=True))
            for _ in range(3)
        ]
        plane.revoke(handles[1].id)  # no events: the next renewal must find it
        deadline = time.monotonic() + 5
        while handles[1].lost is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert isinstance(handles[1].lost, ExecutionRevokedError)
        time.sleep(0.7)
        assert handles[0].lost is None and handles[2].lost is None
        with pytest.raises(ExecutionRevokedError):
            blocks.close()
    assert any(len(call) > 1 for call in calls)


def _never_alone(execution_id: str, ttl: int | None, timeout: float) -> dict[str, Any]:
    raise AssertionError(f"{execution_id} was sent alone with {timeout} s left")


def test_a_call_that_fails_fails_each_renewal_it_carried() -> None:
    refused = UnavailableError("control plane unreachable")

    def send(items: Items, timeout: float) -> list[dict[str, Any] | LictorError]:
        raise refused

    heartbeat = Heartbeat(send, _never_alone, window=0.2)
    errors: list[BaseException] = []

    def renew(execution_id: str) -> None:
        try:
            heartbeat.renew(execution_id, None, 5.0)
        except LictorError as e:
            errors.append(e)

    threads = [threading.Thread(target=renew, args=(f"ex_{n}",)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert errors == [refused] * 4


def test_a_renewal_out_of_time_fails_alone_and_the_next_one_leads() -> None:
    release = threading.Event()
    sent: list[Items] = []

    def send(items: Items, timeout: float) -> list[dict[str, Any] | LictorError]:
        sent.append(items)
        if len(sent) == 1:
            release.wait(10)  # a hung first call
        return [{"execution": {"id": i["execution"]}} for i in items]

    heartbeat = Heartbeat(send, _never_alone, window=0.0)
    first = threading.Thread(target=heartbeat.renew, args=("ex_slow", None, 30.0))
    first.start()
    while not sent:
        time.sleep(0.01)
    with pytest.raises(UnavailableError):
        heartbeat.renew("ex_waiting", None, 0.4)  # gave up while the first call hung
    release.set()
    first.join(10)
    assert heartbeat.renew("ex_next", 30, 5.0) == {"execution": {"id": "ex_next"}}
    assert sent[-1] == [{"execution": "ex_next", "ttl": 30}]
    assert all(i["execution"] != "ex_waiting" for call in sent[1:] for i in call)
