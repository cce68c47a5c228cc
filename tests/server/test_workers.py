"""`lictor serve --workers 2` on the SQLite default: one log, one lineage, whichever
worker answers; a worker that dies is replaced; stopping the server stops them all."""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lictor.cli.serve import cpu_quota, default_workers
from lictor.log.checkpoint import open_checkpoint
from lictor.log.merkle import verify_consistency
from lictor.log.note import parse_verifier_key

from ..conftest import REPO, Server, assert_audit_passes, free_port

EXAMPLES = REPO / "examples"
LICTOR = (sys.executable, "-m", "lictor.cli.main")
PLANNER = {"type": "Agent", "id": "planner-7"}
DEPLOY = {"type": "Action", "id": "deploy"}
STAGING = {"type": "Service", "id": "payments-api-staging"}


def _children(pid: int) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry))
    return found


def _lictor(server: Server, *argv: str) -> str:
    env = {**os.environ, "LICTOR_URL": server.url, "LICTOR_CREDENTIAL": server.token}
    done = subprocess.run(
        [*LICTOR, *argv], env=env, cwd=REPO, capture_output=True, text=True, check=True
    )
    return done.stdout


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "data", free_port(), options=("--workers", "2")).start()
    yield server
    server.kill()


@pytest.fixture
def governed(workers: Server) -> dict[str, str]:
    """The example policies and entities active, and one runtime's credential header."""
    version = _lictor(workers, "policy", "push", str(EXAMPLES / "policies")).split()[1]
    _lictor(workers, "entity", "put", str(EXAMPLES / "entities.json"))
    _lictor(workers, "policy", "activate", version)
    added = _lictor(workers, "runtime", "add", "edge-eu", "--region", "eu-west-1", "--cluster", "a")
    secret = added.split("credential (shown once): ")[1].strip()
    runtime = {"Authorization": f"Bearer {secret}"}
    beat = {"attestation": {"state": "verified"}}
    httpx.post(f"{workers.url}/v1/runtimes/edge-eu/heartbeat", json=beat, headers=runtime)
    return runtime


def _replicas(server: Server, calls: int = 30) -> set[str]:
    """The workers that answered ``calls`` requests, each on a new connection."""
    return {httpx.get(server.url + "/readyz").json()["replica"] for _ in range(calls)}


def test_every_worker_appends_to_one_log(workers: Server) -> None:
    assert len(_replicas(workers)) == 2, "both workers accept connections"
    admin = {"Authorization": f"Bearer {workers.token}"}
    vkey = httpx.get(workers.url + "/v1/log/key").json()["vkey"]
    indexes: list[int] = []
    notes: list[bytes] = []
    failures: list[str] = []
    lock = threading.Lock()

    def write(n: int) -> None:
        for i in range(15):  # a new connection each time: the kernel picks the worker
            body = {"kind": "note", "text": f"{n}/{i}"}
            r = httpx.post(workers.url + "/v1/log/entries", json=body, headers=admin)
            with lock:
                if r.status_code != 201:
                    failures.append(r.text)
                    return
                indexes.append(r.json()["index"])
                notes.append(r.json()["receipt"]["checkpoint"].encode())

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and sorted(set(indexes)) == sorted(indexes), failures[:3]
    final = httpx.get(workers.url + "/v1/log/checkpoint").json()
    roots: dict[int, bytes] = {}
    for note in notes:
        checkpoint, _ = open_checkpoint(note, [parse_verifier_key(vkey)], None)
        assert roots.setdefault(checkpoint.size, checkpoint.root) == checkpoint.root, "a fork"
    for size, root in roots.items():
        if size < final["size"]:
            params = {"first": size, "second": final["size"]}
            proof = httpx.get(workers.url + "/v1/log/proof/consistency", params=params).json()
            hashes = [base64.b64decode(h) for h in proof["hashes"]]
            verify_consistency(size, final["size"], root, base64.b64decode(final["root"]), hashes)
    assert_audit_passes(workers.url, vkey)


def test_connections_opened_at_once_are_spread_over_the_workers(workers: Server) -> None:
    """As a load generator opens them: 32 connections first, then a request on each. Each
    worker listens on a socket of its own (``SO_REUSEPORT``): the kernel spreads them
    by their addresses, instead of the first worker to wake taking most of them."""
    port = int(workers.url.rsplit(":", 1)[1])
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(32)]
    for connection in connections:
        connection.connect()
    answered: Counter[str] = Counter()
    for connection in connections:
        connection.request("GET", "/readyz")
        answered[json.loads(connection.getresponse().read())["replica"]] += 1
        connection.close()
    assert len(answered) == 2 and min(answered.values()) >= 4, answered


def test_a_port_some_other_server_listens_on_is_refused(workers: Server, tmp_path: Path) -> None:
    port = workers.url.rsplit(":", 1)[1]
    argv = [*LICTOR, "serve", "--data-dir", str(tmp_path / "other"), "--port", port]
    second = subprocess.run(
        [*argv, "--workers", "2"], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert second.returncode == 1 and f"port {port} is in use" in second.stderr
    assert httpx.get(workers.url + "/healthz").status_code == 200


def test_a_revocation_holds_on_every_worker(workers: Server, governed: dict[str, str]) -> None:
    body = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
    started = [
        httpx.post(workers.url + "/v1/executions", json=body, headers=governed).json()
        for _ in range(6)
    ]
    parent = started[0]
    child_body = {**body, "parent_grant": parent["grant"]}
    child = httpx.post(workers.url + "/v1/executions", json=child_body, headers=governed).json()
    assert child["execution"]["parent_id"] == parent["execution"]["id"]
    admin = {"Authorization": f"Bearer {workers.token}"}
    revoked = httpx.post(
        f"{workers.url}/v1/executions/{parent['execution']['id']}/revoke",
        json={"reason": "test"},
        headers=admin,
    ).json()
    assert revoked["revoked"] == [parent["execution"]["id"], child["execution"]["id"]]
    for execution in (parent, child):  # on new connections, so on both workers
        for _ in range(6):
            r = httpx.post(
                f"{workers.url}/v1/executions/{execution['execution']['id']}/renew",
                json={},
                headers=governed,
            )
            assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"
    for execution in started[1:]:
        r = httpx.post(
            f"{workers.url}/v1/executions/{execution['execution']['id']}/renew",
            json={},
            headers=governed,
        )
        assert r.status_code == 200, r.text


def test_a_dead_worker_is_replaced_and_the_log_stays_whole(workers: Server) -> None:
    assert workers.process is not None
    before = _children(workers.process.pid)
    assert len(before) == 2
    os.kill(min(before), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = _children(workers.process.pid)
        if len(now) == 2 and now != before and len(_replicas(workers, 10)) == 2:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"no replacement worker: {workers.log_file.read_text()[-2000:]}")
    assert "exited (-9)" in workers.log_file.read_text()
    admin = {"Authorization": f"Bearer {workers.token}"}
    r = httpx.post(
        workers.url + "/v1/log/entries", json={"kind": "note", "text": "after"}, headers=admin
    )
    assert r.status_code == 201, r.text


def test_stopping_the_server_stops_its_workers_and_frees_the_directory(
    workers: Server, tmp_path: Path
) -> None:
    assert workers.process is not None
    children = _children(workers.process.pid)
    workers.process.send_signal(signal.SIGTERM)
    assert workers.process.wait(timeout=30) == 0
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    again = Server(workers.data_dir, free_port()).start()  # the lock was released
    again.kill()


def test_one_directory_one_server_and_no_demo_with_workers(workers: Server, tmp_path: Path) -> None:
    second = subprocess.run(
        [*LICTOR, "serve", "--data-dir", str(workers.data_dir), "--port", str(free_port())],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert second.returncode == 1 and "in use by another process" in second.stderr
    demo = subprocess.run(
        [*LICTOR, "serve", "--data-dir", str(tmp_path / "d"), "--demo", "--workers", "2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert demo.returncode == 1 and "--workers" in demo.stderr
    assert httpx.get(workers.url + "/healthz").status_code == 200


def test_a_worker_needs_the_lock_its_server_holds(workers: Server, tmp_path: Path) -> None:
    """A descriptor opened on the lock file by anyone else is not the server's lock."""
    lock = os.open(workers.data_dir / "lock", os.O_RDWR)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    try:
        fds = f"{lock},{listener.fileno()}"
        argv = [*LICTOR, "serve", "--data-dir", str(workers.data_dir), "--worker-fds", fds]
        intruder = subprocess.run(
            argv,
            pass_fds=(lock, listener.fileno()),
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=60,
        )
    finally:
        os.close(lock)
        listener.close()
    assert intruder.returncode == 1 and "in use by another process" in intruder.stderr


@pytest.mark.parametrize("cores", [1, 2])
def test_without_workers_a_server_runs_one_worker_per_core_it_may_use(
    tmp_path: Path, cores: int
) -> None:
    """The default follows the CPU affinity the server starts with (as ``taskset`` or a
    container's CPU set gives it); one core: one process, no workers."""
    allowed = sorted(os.sched_getaffinity(0))[:cores]
    port = free_port()
    argv = [*LICTOR, "serve", "--data-dir", str(tmp_path / "data"), "--port", str(port)]
    with (tmp_path / "serve.log").open("wb") as out:
        server = subprocess.Popen(
            argv,
            stdout=out,
            stderr=out,
            cwd=REPO,
            preexec_fn=lambda: os.sched_setaffinity(0, allowed),
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        announced = (tmp_path / "serve.log").read_text()
        if len(allowed) > 1:
            assert f"with {len(allowed)} workers" in announced, announced
            assert len(_children(server.pid)) == len(allowed)
            replicas = {httpx.get(f"http://127.0.0.1:{port}/readyz").json()["replica"]}
            for _ in range(40):
                replicas.add(httpx.get(f"http://127.0.0.1:{port}/readyz").json()["replica"])
            assert len(replicas) == len(allowed)
        else:
            assert announced.startswith("lictor: serving log") and " workers (" not in announced
            assert _children(server.pid) == set()
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "200000 100000\n"}, 2.0),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "50000 100000\n"}, 0.5),
        ({"cpu.max": "garbage\n"}, None),
        ({"cpu.max": "100000 0\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
        ({"cpu/cpu.cfs_quota_us": "300000\n"}, None),
        ({}, None),
    ],
)
def test_a_control_groups_cpu_quota_is_read_from_v2_or_v1_files(
    tmp_path: Path, files: dict[str, str], quota: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cpu_quota(tmp_path) == quota
    cores = len(os.sched_getaffinity(0))
    expected = cores if quota is None else min(cores, math.ceil(quota))
    assert default_workers(tmp_path) == max(1, expected)
