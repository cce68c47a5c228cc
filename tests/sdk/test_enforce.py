"""The lease rules of `lictor.sdk.enforce`, with time passed in: no server, no sleeping."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import pytest

from lictor.errors import (
    InvalidTransitionError,
    LeaseExpiredError,
    LictorError,
    UnavailableError,
)
from lictor.sdk import ExecutionHandle, ExecutionRevokedError, LeaseLostError
from lictor.sdk.async_scope import TaskKeeper
from lictor.sdk.enforce import Keeper, outcome_for


def reply(state: str = "active", seconds: float = 3.0, ttl: int = 3) -> dict[str, Any]:
    """A request or renewal reply as the server shapes it (lease from t=0 in server ms)."""
    expires = int(seconds * 1000)
    lease = {"ttl_ms": ttl * 1000, "issued_at_ms": 0, "expires_at_ms": expires, "renew_by_ms": 1}
    body: dict[str, Any] = {
        "execution": {"id": "exec_1", "state": state, "reason": "operator", "lease": lease},
        "grant": "g",
    }
    if state == "active":
        body["lease"] = {"ttl": float(ttl), "expires_at_ms": expires, "renew_by_ms": 1}
    return body


def keeper(sent_at: float = 100.0, seconds: float = 3.0) -> Keeper:
    return Keeper(ExecutionHandle(reply(seconds=seconds)), sent_at, random.Random(7))


def test_the_deadline_comes_before_the_lease_and_renewal_about_a_third_in() -> None:
    k = keeper(sent_at=100.0, seconds=3.0)
    assert 100.0 + 2.5 < k.deadline < 100.0 + 3.0
    assert 100.0 + 0.8 < k.due_at < 100.0 + 1.2 and k.wake_at() == k.due_at
    k.renewed(reply(), sent_at=101.0)
    assert 101.0 + 2.5 < k.deadline < 104.0 and k.handle.lost is None


def test_a_lease_capped_by_its_parent_sets_the_deadline() -> None:
    k = keeper(sent_at=0.0, seconds=0.6)  # asked for 3 s, granted 0.6 s
    assert k.deadline < 0.6 and k.due_at < 0.3


def test_a_transient_failure_retries_until_the_deadline() -> None:
    k = keeper(sent_at=0.0)
    k.failed(UnavailableError("down"), now=1.0)
    assert k.handle.lost is None and 1.0 < k.due_at < 1.5
    assert not k.expired(k.deadline - 0.01) and k.expired(k.deadline)
    k.expire()
    with pytest.raises(LeaseLostError):
        k.handle.check()


@pytest.mark.parametrize(
    ("error", "lost_as"),
    [
        (InvalidTransitionError("execution exec_1 is revoked"), ExecutionRevokedError),
        (LeaseExpiredError("execution exec_1 is expired"), LeaseLostError),
    ],
)
def test_a_refused_renewal_is_final(error: LictorError, lost_as: type[LictorError]) -> None:
    k = keeper()
    k.failed(error, now=101.0)
    assert isinstance(k.handle.lost, lost_as)


def test_a_renewal_answered_revoked_loses_it_and_callbacks_run_once() -> None:
    k = keeper()
    calls: list[int] = []
    k.handle.on_cancel(lambda: calls.append(1))
    k.handle.on_cancel(lambda: 1 / 0)  # a failing callback stops no other
    k.handle.on_cancel(lambda: calls.append(2))
    k.renewed(reply(state="revoked"), sent_at=101.0)
    assert not k.handle.lose(LeaseLostError("again"))
    assert calls == [1, 2] and isinstance(k.handle.lost, ExecutionRevokedError)
    assert "operator" in str(k.handle.lost)


def test_outcomes() -> None:
    assert outcome_for(None) == "succeeded"
    assert outcome_for(ValueError()) == "failed"
    assert outcome_for(KeyboardInterrupt()) == "cancelled"


def test_a_malformed_renewal_reply_never_stops_the_deadline() -> None:
    async def run() -> ExecutionHandle:
        handle = ExecutionHandle(reply(seconds=0.6))
        calls: list[float] = []

        async def renew(timeout: float) -> dict[str, Any]:
            calls.append(timeout)
            return {"not": "a reply"}  # KeyError inside Keeper.renewed

        driver = TaskKeeper(Keeper(handle, time.monotonic(), random.Random(3)), renew)
        driver.start()
        for _ in range(100):  # the deadline is about 0.54 s away
            if handle.lost is not None:
                break
            await asyncio.sleep(0.05)
        await driver.stop()
        assert len(calls) >= 2  # retried, not dead after the first bad answer
        return handle

    handle = asyncio.run(run())
    assert isinstance(handle.lost, LeaseLostError)
