"""A frozen server (SIGSTOP, then SIGCONT) never revives a lease that passed meanwhile.

A renewal is judged when it commits, not when its request was read: one that
waited in the committer's queue while the process was stopped, until after its
lease's expiry, is refused; so is a child asked for under a parent whose lease
passed meanwhile. To make the freeze fall between the renewal's read
and its commit every time, the test holds the database's write lock first, so
the committer is stuck in an earlier batch (an operator note) with the renewal
queued behind it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import httpx

from lictor.datadir import DB_FILE
from lictor.errors import DeniedError, LeaseExpiredError

from ..conftest import Server
from ..sdk.conftest import DEPLOY, PLANNER, STAGING, govern

LEASE_S = 2
QUEUED_S = 0.5  # generous: the renewal's request is read and queued within it


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """``call()`` started in a thread; the list gets its result or exception."""
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(call())
        except Exception as e:
            out.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


@contextmanager
def write_locked(server: Server) -> Iterator[sqlite3.Connection]:
    """Hold the server's SQLite write lock (its committer waits, readers do not)."""
    conn = sqlite3.connect(server.data_dir / DB_FILE, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
    finally:
        conn.rollback()
        conn.close()


def queued_across_a_freeze(server: Server, call: Callable[[], Any], expires_at: float) -> Any:
    """What ``call()`` answered, having been read and queued behind a commit before
    ``expires_at`` (wall time), then held there by a freeze of the server until a
    second after it."""
    assert server.process is not None
    admin = {"Authorization": f"Bearer {server.token}"}
    with write_locked(server):
        note, _ = _in_thread(
            lambda: httpx.post(
                server.url + "/v1/log/entries",
                json={"kind": "note", "text": "holds the committer"},
                headers=admin,
                timeout=60,
            )
        )
        time.sleep(QUEUED_S)  # the committer is in the note's batch, waiting
        queued, answer = _in_thread(call)
        time.sleep(QUEUED_S)  # the call was read, decided and queued
        assert time.time() < expires_at, "too slow to queue the call before the expiry"
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            time.sleep(max(0.0, expires_at - time.time()) + 1.0)  # the lease passes
        except BaseException:
            os.kill(server.process.pid, signal.SIGCONT)
            raise
    # the lock is released while the server is frozen; it resumes past the expiry
    os.kill(server.process.pid, signal.SIGCONT)
    queued.join(60)
    note.join(60)
    assert len(answer) == 1, answer
    return answer[0]


def test_a_renewal_queued_across_a_freeze_past_its_lease_is_refused(
    serve: Callable[..., Server],
) -> None:
    server = serve()
    plane = govern(server)
    with plane.client() as client:
        granted = client.request(PLANNER, DEPLOY, STAGING, ttl=LEASE_S)
        execution_id = granted["execution"]["id"]
        expires_at = time.time() + LEASE_S  # a bound: the lease began before this
        renew = partial(client.renew, execution_id, ttl=30, timeout=60)
        answer = queued_across_a_freeze(server, renew, expires_at)
        assert isinstance(answer, LeaseExpiredError), answer
        view = plane.execution(execution_id)
        assert view["effective_state"] == "expired"
        assert view["execution"]["lease"]["expires_at_ms"] / 1000 <= expires_at


def test_a_child_queued_across_a_freeze_past_its_parents_lease_is_denied(
    serve: Callable[..., Server],
) -> None:
    server = serve()
    plane = govern(server)
    with plane.client() as client:
        parent = client.request(PLANNER, DEPLOY, STAGING, ttl=LEASE_S)
        expires_at = time.time() + LEASE_S
        child = partial(client.request, PLANNER, DEPLOY, STAGING, parent_grant=parent["grant"])
        answer = queued_across_a_freeze(server, child, expires_at)
        assert isinstance(answer, DeniedError), answer
        assert answer.reason_code == "parent_not_active", answer
