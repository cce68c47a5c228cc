"""Lease keeping against a real server: renewal, revocation, a control plane that dies."""

from __future__ import annotations

import threading
import time

import pytest

from lictor.core.lease import MIN_TTL_MS
from lictor.sdk import Client, ExecutionRevokedError, LeaseLostError
from lictor.sdk.connections import Connections
from lictor.sdk.events import EventWatcher

from .conftest import DEPLOY, PLANNER, STAGING, Plane

MIN_TTL = MIN_TTL_MS // 1000


def test_renewal_keeps_a_short_lease_alive_past_its_ttl(plane: Plane, client: Client) -> None:
    with client.execution(PLANNER, DEPLOY, STAGING, ttl=MIN_TTL) as e:
        first_expiry = e.lease.expires_at_ms
        end = time.monotonic() + 2.5 * MIN_TTL
        while time.monotonic() < end:
            e.check()
            time.sleep(0.1)
        assert e.lease.expires_at_ms > first_expiry
        assert plane.execution(e.id)["effective_state"] == "active"
    done = client.get(e.id)["execution"]
    assert (done["state"], done["outcome"]) == ("completed", "succeeded")


def test_a_revoked_execution_is_lost_and_its_callbacks_run_once(
    plane: Plane, client: Client
) -> None:
    ttl = 2
    calls: list[str] = []
    cancelled = threading.Event()
    with (
        pytest.raises(ExecutionRevokedError),
        client.execution(PLANNER, DEPLOY, STAGING, ttl=ttl) as e,
    ):
        e.on_cancel(lambda: calls.append("first"))
        e.on_cancel(cancelled.set)
        plane.revoke(e.id)
        assert cancelled.wait(timeout=ttl), "revocation not seen within one lease"
        e.on_cancel(lambda: calls.append("late"))  # runs at once
        e.check()
    assert calls == ["first", "late"]
    assert isinstance(e.lost, ExecutionRevokedError)
    assert client.get(e.id)["execution"]["state"] == "revoked"  # not completed after


def test_a_dead_control_plane_loses_the_lease_before_it_expires(own_plane: Plane) -> None:
    lost_at_ms: list[float] = []
    with (
        own_plane.client() as client,
        pytest.raises(LeaseLostError),
        client.execution(PLANNER, DEPLOY, STAGING, ttl=2) as e,
    ):
        e.on_cancel(lambda: lost_at_ms.append(time.time() * 1000))
        own_plane.server.kill()
        deadline = time.monotonic() + 10
        while e.lost is None and time.monotonic() < deadline:
            time.sleep(0.02)
        e.check()
    assert lost_at_ms and lost_at_ms[0] < e.lease.expires_at_ms


def test_a_revocation_is_pushed_well_before_the_next_renewal(plane: Plane, client: Client) -> None:
    """On a 15 s lease the first renewal comes after 4 s; the events stream is faster."""
    cancelled = threading.Event()
    with (
        pytest.raises(ExecutionRevokedError),
        client.execution(PLANNER, DEPLOY, STAGING, ttl=15) as e,
    ):
        e.on_cancel(cancelled.set)
        time.sleep(0.2)  # let the stream open
        plane.revoke(e.id)
        assert cancelled.wait(timeout=2.0), "the revocation was not pushed"
        assert "pushed by the log" in str(e.lost)
        e.check()


def test_stopping_a_watcher_ends_its_blocked_read_at_once(plane: Plane) -> None:
    """The stream waits for events in a read when `stop` is called: stopping shuts its
    socket down, so the thread is over when `stop` returns (not left to time out)."""
    headers = {"Authorization": f"Bearer {plane.runtime_secret}"}
    with (
        Client(plane.url, plane.runtime_secret, events=False) as client,
        client.execution(PLANNER, DEPLOY, STAGING, ttl=15) as e,
    ):
        after = (e.receipt or {})["index"]
        watcher = EventWatcher(Connections(plane.url), headers, e, after)
        watcher.start()
        time.sleep(0.3)  # let the stream open and block in its read
        watcher.stop()
        following = [t for t in threading.enumerate() if t.name == f"lictor-events-{e.id}"]
        assert not following and e.lost is None
