"""The server's clock: leases follow a monotonic clock, entry times never decrease.

The server tests step the wall clock of the `lictor serve` process alone by
±1 h with libfaketime (``LD_PRELOAD``, its offset re-read from a file on every
reading; the monotonic clock left real, as a step of the system clock leaves
it). `make test` installs Debian's libfaketime.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lictor.audit import verify_proof
from lictor.core.types import MAX_TIME_MS
from lictor.log.commitment import commit_canonical
from lictor.log.entry import canonical_entry
from lictor.log.proof import TlogProof
from lictor.service.log import AuditLog, ServerClock, entry_time, epoch_ms

from ..conftest import REPO, Server
from ..sdk.conftest import DEPLOY, PLANNER, STAGING, Plane, govern

HOUR_S = 3600
LIBFAKETIME = "/usr/lib/*/faketime/libfaketimeMT.so.1"


# -- the clock and the committer, in process ------------------------------------------


class Wall:
    """A wall clock the test steps, and a monotonic clock it advances."""

    def __init__(self) -> None:
        self.ms = 1_750_000_000_000
        self.ns = 5_000_000_000

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.ms / 1000, UTC)

    def monotonic_ns(self) -> int:
        return self.ns

    def advance(self, ms: int) -> None:
        self.ms += ms
        self.ns += ms * 1_000_000


def test_steps_of_the_wall_clock_do_not_move_the_server_clock() -> None:
    wall = Wall()
    clock = ServerClock(wall, wall.monotonic_ns)
    start = clock.now_ms()
    assert start == wall.ms
    wall.advance(1_500)
    assert clock.now_ms() == start + 1_500
    wall.ms -= HOUR_S * 1000  # stepped back: the clock goes on
    wall.advance(500)
    assert clock.now_ms() == start + 2_000
    wall.ms += 2 * HOUR_S * 1000  # stepped forward: still only what really passed
    wall.advance(250)
    assert clock.now_ms() == start + 2_250


def test_the_server_clock_never_returns_less_than_a_floor_and_advances_from_it() -> None:
    wall = Wall()
    clock = ServerClock(wall, wall.monotonic_ns)
    start = clock.now_ms()
    clock.floor(start + 60_000)  # a newer logged time (a replica ahead, a restart)
    assert clock.now_ms() == start + 60_000
    wall.advance(100)
    assert clock.now_ms() == start + 60_100
    clock.floor(start)  # an older one changes nothing
    assert clock.now_ms() == start + 60_100


def test_a_followed_wall_clock_never_goes_back() -> None:
    wall = Wall()
    clock = ServerClock(wall, None)
    start = clock.now_ms()
    wall.ms -= 10_000
    assert clock.now_ms() == start
    wall.ms += 20_000
    assert clock.now_ms() == start + 10_000


def test_an_overtaken_entry_is_logged_no_earlier_than_the_one_before_it(log: AuditLog) -> None:
    early = log.prepare_event("note", {"text": "prepared first"})
    time.sleep(0.01)
    later = log.append_event("note", {"text": "prepared and logged later"})
    overtaken = log.sequencer.submit(early)  # queued only now: behind `later`
    receipt = log.receipt(overtaken.result(), early)
    assert receipt.entry["time"] == later.entry["time"] != early.entry["time"]
    assert receipt.event is not None and receipt.event["time"] == receipt.entry["time"]
    assert receipt.salt is not None
    event_data = canonical_entry(receipt.event)
    assert (
        commit_canonical(event_data, base64.b64decode(receipt.salt))
        == (receipt.entry["commitment"])
    )
    proof = TlogProof(receipt.index, receipt.hashes, receipt.checkpoint)
    verify_proof(proof, canonical_entry(receipt.entry), log.signer.verifier)
    times = [_time(data) for data in log.store.read_entries(0, log.head().size)]
    assert times == sorted(times)


def _time(data: bytes) -> int:
    return epoch_ms(datetime.fromisoformat(json.loads(data)["time"]))


# -- a real server under libfaketime --------------------------------------------------


class FakeTime:
    """The offset libfaketime adds to the wall clock of the processes started with `env`."""

    def __init__(self, directory: Path) -> None:
        found = glob.glob(LIBFAKETIME)
        assert found, "libfaketime is not installed (make test installs it)"
        self.library = found[0]
        self.file = directory / "faketime"
        self.step(0)

    def step(self, seconds: int) -> None:
        """Set the offset from the real wall clock (the faked processes see it at once)."""
        self.file.write_text(f"{seconds:+d}\n")

    def env(self) -> dict[str, str]:
        return {
            "LD_PRELOAD": self.library,
            "FAKETIME_TIMESTAMP_FILE": str(self.file),
            "FAKETIME_NO_CACHE": "1",
            "DONT_FAKE_MONOTONIC": "1",
        }


@pytest.fixture
def faketime(tmp_path: Path) -> FakeTime:
    return FakeTime(tmp_path)


@pytest.fixture
def serve_faked(
    serve: Callable[..., Server], faketime: FakeTime
) -> Iterator[Callable[..., Server]]:
    """`serve`, with the server process (and only it) under libfaketime."""

    def start(data_dir: Path | None = None) -> Server:
        with pytest.MonkeyPatch.context() as env:
            for name, value in faketime.env().items():
                env.setenv(name, value)
            return serve(data_dir)

    yield start


def entry_times(server: Server) -> list[int]:
    """The time of every entry in the server's log, in log order."""
    with httpx.Client(base_url=server.url, timeout=30) as http:  # one connection, a busy host
        size = http.get("/v1/log/checkpoint").json()["size"]
        found = []
        for index in range(size):
            entry = http.get(f"/v1/log/entries/{index}").json()["entry"]
            found.append(epoch_ms(datetime.fromisoformat(entry["time"])))
    return found


def effective_state(plane: Plane, execution_id: str) -> str:
    return str(plane.execution(execution_id)["effective_state"])


def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_backward_step_does_not_keep_an_unrenewed_lease_alive(
    serve_faked: Callable[..., Server], faketime: FakeTime
) -> None:
    plane = govern(serve_faked())
    with plane.client() as client:
        execution_id = client.request(PLANNER, DEPLOY, STAGING, ttl=2)["execution"]["id"]
        faketime.step(-HOUR_S)
        # expired once its 2 s have passed (allowing for a slow machine), not an hour later
        wait_until(lambda: effective_state(plane, execution_id) == "expired", timeout=15)
        client.request(PLANNER, DEPLOY, STAGING, ttl=2)  # logged after the step
    times = entry_times(plane.server)
    assert times == sorted(times)


def test_a_forward_step_does_not_end_a_healthy_lictor_run(
    serve_faked: Callable[..., Server], faketime: FakeTime
) -> None:
    plane = govern(serve_faked())
    env = {**os.environ, "LICTOR_CREDENTIAL": plane.runtime_secret}
    env.pop("LICTOR_GRANT", None)
    argv = [sys.executable, "-m", "lictor.cli.main", "run", "--url", plane.url, "--ttl", "10"]
    argv += ["--principal", 'Agent::"planner-7"', "--action", "deploy"]
    argv += ["--resource", 'Service::"payments-api-staging"', "--", "sleep", "8"]
    run = subprocess.Popen(argv, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: bool(active(plane)), timeout=30)
        faketime.step(HOUR_S)
        _, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err.decode()
    (execution,) = plane.admin("GET", "/v1/executions")["executions"]
    assert execution["execution"]["state"] == "completed"
    times = entry_times(plane.server)
    assert times == sorted(times)
    # the entries follow the server's clock, not the stepped wall clock (a generous bound)
    assert times[-1] < (time.time() + 600) * 1000


def active(plane: Plane) -> list[Any]:
    found: list[Any] = plane.admin("GET", "/v1/executions?state=active")["executions"]
    return found


def test_after_a_restart_with_the_clock_gone_back_no_time_goes_back(
    serve_faked: Callable[..., Server], faketime: FakeTime
) -> None:
    server = serve_faked()
    plane = govern(server)
    with plane.client() as client:
        execution_id = client.request(PLANNER, DEPLOY, STAGING, ttl=3)["execution"]["id"]
    before = entry_times(server)
    server.kill()
    faketime.step(-HOUR_S)
    again = Plane(serve_faked(server.data_dir), plane.runtime_secret)
    # the lease passes 3 s after it began, not an hour and 3 s after
    wait_until(lambda: effective_state(again, execution_id) == "expired", timeout=15)
    with again.client() as client:
        later = client.request(PLANNER, DEPLOY, STAGING, ttl=2)
    assert later["execution"]["lease"]["issued_at_ms"] >= before[-1]
    times = entry_times(again.server)
    assert times[: len(before)] == before and times == sorted(times)


@given(st.integers(min_value=0, max_value=MAX_TIME_MS))
def test_an_entry_time_is_rfc_3339_with_milliseconds(at_ms: int) -> None:
    at = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=at_ms)
    expected = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert entry_time(at_ms) == expected
    assert entry_time(at_ms - at_ms % 1000) == expected[:-5] + ".000Z"  # its second, again
