"""A replica frozen inside its write turn stops no one else's writes (ADR 14).

Two `lictor serve` replicas on one database take decisions from client
threads; one is SIGSTOPped while it holds the writers' lock (found in
``pg_locks``: the holder's client port is one of the frozen process's
sockets). The other must decide again within the bound, the frozen one's
in-flight batch must fail without writing anything when it wakes, it must
serve again, and the log must be one tree holding every acknowledged decision.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from lictor.store.postgres import _WRITER_LOCK

from ..conftest import Server, assert_audit_passes, start_replicas
from ..postgres import PostgresServer
from ..sdk.conftest import govern

ORIGIN = "test.example/frozen-writer"
LICTOR = (sys.executable, "-m", "lictor.cli.main")
RESUME_WITHIN_S = 2.0  # the contract: the others decide again this soon after the stop
FROZEN_FOR_S = 4.0
CLIENTS_PER_REPLICA = 3
BODY = {
    "principal": 'Agent::"planner-7"',
    "action": 'Action::"deploy"',
    "resource": 'Service::"payments-api-staging"',
    "ttl": 300,
}
_TURN_HOLDER = (
    "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
    " WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()"
    " AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1"
)


@dataclass(frozen=True)
class Call:
    """One decision asked of a replica, and what it answered."""

    replica: int
    sent: float
    done: float
    status: int
    body: dict[str, Any]


@pytest.fixture
def fleet(postgres: PostgresServer, tmp_path: Path) -> Iterator[tuple[list[Server], str]]:
    """Two replicas on a fresh database, and the database's URL."""
    database = postgres.database()
    servers = start_replicas(database, tmp_path, 2, ORIGIN)
    yield servers, database
    for server in servers:
        server.kill()  # SIGKILL ends a stopped process too


def _decide(
    server: Server,
    replica: int,
    headers: dict[str, str],
    calls: list[Call],
    running: threading.Event,
) -> None:
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        while running.is_set():
            sent = time.monotonic()
            r = client.post("/v1/executions", json=BODY)
            calls.append(Call(replica, sent, time.monotonic(), r.status_code, r.json()))


def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of the sockets process ``pid`` has open (from /proc)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with_link = os.readlink(f"/proc/{pid}/fd/{fd}")
        if with_link.startswith("socket:["):
            inodes.add(with_link[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _holds_the_turn(db: psycopg.Connection[Any], pid: int) -> bool:
    key = (_WRITER_LOCK >> 32, _WRITER_LOCK & 0xFFFFFFFF)
    row = db.execute(_TURN_HOLDER, key).fetchone()
    return row is not None and row[0] in _local_ports(pid)


def _stop_inside_its_turn(server: Server, database: str) -> float:
    """SIGSTOP ``server`` until it is caught holding the write turn; when it stopped."""
    assert server.process is not None
    pid = server.process.pid
    with psycopg.connect(database, autocommit=True) as db:
        for _ in range(200):
            os.kill(pid, signal.SIGSTOP)
            stopped = time.monotonic()
            time.sleep(0.1)  # a commit it had sent is done by now
            if _holds_the_turn(db, pid):
                return stopped
            os.kill(pid, signal.SIGCONT)
            time.sleep(random.uniform(0.02, 0.2))
    raise AssertionError("never caught the replica inside its write turn")


def test_a_replica_frozen_in_its_write_turn_stops_no_one_else(
    fleet: tuple[list[Server], str],
) -> None:
    servers, database = fleet
    frozen, other = servers
    assert frozen.process is not None
    plane = govern(other)
    headers = {"Authorization": f"Bearer {plane.runtime_secret}"}
    calls: list[Call] = []
    running = threading.Event()
    running.set()
    clients = [
        threading.Thread(target=_decide, args=(servers[n], n, headers, calls, running))
        for n in range(2)
        for _ in range(CLIENTS_PER_REPLICA)
    ]
    for t in clients:
        t.start()
    try:
        time.sleep(1.0)  # both replicas busy
        try:
            stopped = _stop_inside_its_turn(frozen, database)
            time.sleep(FROZEN_FOR_S)
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)
        woke = time.monotonic()
        time.sleep(2.0)  # both serve again
    finally:
        running.clear()
        for t in clients:
            t.join(timeout=90)

    # the other replica decided again within the bound, while the frozen one slept
    resumed = [c.done for c in calls if c.replica == 1 and c.sent >= stopped and c.status == 201]
    assert resumed and min(resumed) - stopped <= RESUME_WITHIN_S, (
        f"the other replica's first decision after the stop took "
        f"{(min(resumed) - stopped) if resumed else float('inf'):.2f} s"
    )
    assert any(c.done < woke - 1.0 for c in calls if c.replica == 1 and c.sent >= stopped)
    # the frozen replica's in-flight batch failed when it woke, and nothing else failed
    failed = [c for c in calls if c.status != 201]
    assert failed, "the frozen replica's in-flight batch did not fail"
    for call in failed:
        assert (call.replica, call.status) == (0, 503), call
        assert call.body["error"]["code"] == "store_error" and call.sent < stopped, call
    # it serves again
    assert any(c.replica == 0 and c.sent >= woke and c.status == 201 for c in calls)
    # one tree, holding every acknowledged decision and nothing of the failed batch
    acknowledged = {c.body["execution"]["id"]: c.body for c in calls if c.status == 201}
    with psycopg.connect(database, autocommit=True) as db:
        stored = db.execute("SELECT key FROM records WHERE kind = 'execution'").fetchall()
        entries = dict(db.execute("SELECT idx, data FROM entries").fetchall())
    assert {row[0] for row in stored} == set(acknowledged)
    for execution_id, body in acknowledged.items():
        index = body["receipt"]["index"]
        assert execution_id.encode() in bytes(entries[index]), (execution_id, index)
    vkey = httpx.get(other.url + "/v1/log/key").json()["vkey"]
    for server in servers:
        assert_audit_passes(server.url, vkey)
