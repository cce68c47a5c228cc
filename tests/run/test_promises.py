"""The promises of `lictor run`, each with real processes and a real `lictor serve`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from lictor.cli.run import LEASE_LOST, REVOKED
from lictor.supervise import cgroup_home

from ..conftest import REPO, Server, free_port
from ..sdk.conftest import Plane, govern
from .conftest import STAGING, TREE, Run, alive, wait_dead


@pytest.fixture
def own(serve: Callable[..., Server]) -> Plane:
    """A control plane of this test's own, for tests that kill, stop or restart it."""
    return govern(serve())


def _execution_of(run: Run) -> str:
    pid = run.pids(1)[0]
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    return env[b"LICTOR_EXECUTION_ID"].decode()


@pytest.mark.parametrize("fault", [signal.SIGKILL, signal.SIGSTOP])
def test_a_dead_or_frozen_control_plane_stops_the_work_before_its_lease_ends(
    own: Plane, start_run: Callable[..., Run], fault: signal.Signals
) -> None:
    ttl = 3
    run = start_run(own, ttl=ttl)
    pids = run.pids(3)
    process = own.server.process
    assert process is not None
    os.kill(process.pid, fault)
    faulted = time.monotonic()
    try:
        # the last renewal was sent before the fault, so the lease ends by faulted + ttl
        left = wait_dead(pids, timeout=ttl)
        assert left == [], f"work outlived the lease: {left}"
        assert time.monotonic() - faulted < ttl
        code, _, err = run.finish()
        assert code == LEASE_LOST and "lease lost" in err, err
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGCONT)


def test_revoking_the_root_terminates_three_nested_runs(
    plane: Plane, start_run: Callable[..., Run]
) -> None:
    inner = [sys.executable, "-m", "lictor.cli.main", "run", "--action", "deploy"]
    inner += ["--resource", STAGING, "--"]
    run = start_run(plane, *inner, *inner, "sh", "-c", TREE, env={"LICTOR_URL": plane.url})
    pids = run.pids(3, timeout=30)
    leaf = _execution_of(run)
    lineage = plane.admin("GET", f"/v1/executions/{leaf}/lineage")
    ancestors = [a["execution"]["id"] for a in lineage["ancestors"]]
    assert len(ancestors) == 2, lineage
    plane.revoke(ancestors[0])
    assert wait_dead(pids, timeout=2.0) == []
    code, _, err = run.finish()
    assert code == REVOKED, err
    for execution_id in (*ancestors, leaf):
        view = plane.execution(execution_id)
        assert view["execution"]["state"] == "revoked", view["execution"]
    leaf_reason = plane.execution(leaf)["execution"]["reason"]
    assert ancestors[0] in leaf_reason, leaf_reason  # the log names the cascade's cause


def test_a_process_that_leaves_the_group_is_still_terminated_where_cgroups_exist(
    plane: Plane, start_run: Callable[..., Run]
) -> None:
    escape = 'setsid sh -c \'echo > "$PIDS/$$"; exec sleep 600\' & echo > "$PIDS/$$"; wait'
    run = start_run(plane, "sh", "-c", escape)
    pids = run.pids(2)
    plane.revoke(_execution_of(run))
    code, _, err = run.finish()
    assert code == REVOKED, err
    if cgroup_home() is not None:
        assert wait_dead(pids, timeout=2.0) == []
    else:  # documented limit: only the process group is signalled
        survivors = wait_dead(pids, timeout=1.0)
        assert len(survivors) == 1, "only the escaped process may survive without cgroups"
        os.kill(survivors[0], signal.SIGKILL)


def test_a_killed_supervisor_leaves_no_orphan(plane: Plane, start_run: Callable[..., Run]) -> None:
    run = start_run(plane)
    pids = run.pids(3)
    run.process.kill()
    assert wait_dead(pids, timeout=2.0) == [], "the work outlived its supervisor"


def test_a_policy_that_denies_running_work_terminates_it(
    own: Plane, start_run: Callable[..., Run], tmp_path: Path
) -> None:
    run = start_run(own)
    pids = run.pids(3)
    stricter = tmp_path / "policies"
    shutil.copytree(REPO / "examples" / "policies", stricter)
    (stricter / "freeze.cedar").write_text(
        '@id("freeze")\nforbid (principal, action == Action::"deploy", resource);\n'
    )
    env = {**os.environ, "LICTOR_URL": own.url, "LICTOR_CREDENTIAL": own.server.token}
    lictor = [sys.executable, "-m", "lictor.cli.main", "policy"]
    pushed = subprocess.run(
        [*lictor, "push", str(stricter)], env=env, capture_output=True, text=True
    )
    assert pushed.returncode == 0, pushed.stderr
    version = pushed.stdout.split()[1]
    activated = subprocess.run(
        [*lictor, "activate", version], env=env, capture_output=True, text=True
    )
    assert activated.returncode == 0, activated.stderr
    assert wait_dead(pids, timeout=2.0) == []
    code, _, err = run.finish()
    assert code == REVOKED and "revoked" in err, err


def test_a_quick_restart_of_the_control_plane_does_not_stop_the_work(
    own: Plane, start_run: Callable[..., Run]
) -> None:
    run = start_run(own, "sh", "-c", 'echo > "$PIDS/$$"; sleep 4; exit 0', ttl=6)
    pids = run.pids(1)
    execution_id = _execution_of(run)
    own.server.kill()
    own.server.start()
    assert all(alive(p) for p in pids), "a restart well inside the lease stopped the work"
    code, _, err = run.finish()
    assert code == 0, err
    transitions = own.execution(execution_id)["transitions"]
    assert [t["state"] for t in transitions] == ["active", "completed"]
    for step in transitions:
        entry = httpx.get(f"{own.url}/v1/log/entries/{step['log_index']}").json()["entry"]
        assert entry["execution"] == execution_id and entry["state"] == step["state"]


class EventsCut:
    """A loopback proxy that forwards every connection except event streams."""

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target = target_port
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        first = client.recv(65536)
        if first.startswith(b"GET /v1/events"):
            client.close()  # the stream is cut; everything else goes through
            return
        upstream = socket.create_connection(("127.0.0.1", self._target))
        upstream.sendall(first)
        threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
        _pipe(client, upstream)

    def close(self) -> None:
        self._server.close()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def events_cut(plane: Plane) -> Iterator[EventsCut]:
    proxy = EventsCut(plane.server.port)
    yield proxy
    proxy.close()


def test_with_the_events_stream_cut_renewals_still_enforce_revocation(
    plane: Plane, start_run: Callable[..., Run], events_cut: EventsCut
) -> None:
    ttl = 3
    run = start_run(plane, ttl=ttl, url=events_cut.url)
    pids = run.pids(3)
    plane.revoke(_execution_of(run))
    interval = ttl / 3 * 1.15  # a renewal is due a third of the lease after the last one
    assert wait_dead(pids, timeout=interval + 1.0) == [], "not enforced by the next renewal"
    code, _, err = run.finish()
    assert code == REVOKED and "pushed" not in err, err  # seen by a renewal, not an event


def test_a_supervisor_killed_while_it_waits_for_its_decision_leaves_nothing(
    plane: Plane, start_run: Callable[..., Run]
) -> None:
    """Its command's shell is already waiting at its gate, in its cgroup (ADR 11): the
    watchdog ends it and removes the cgroup; the command never runs."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts, never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        run = start_run(plane, "sh", "-c", 'echo > "$PIDS/ran"', url=url)
        home = cgroup_home()
        mine = f"lictor-run-{run.process.pid}-"
        deadline = time.monotonic() + 10
        while home and not any(n.startswith(mine) for n in os.listdir(home)):
            assert time.monotonic() < deadline, "no cgroup was made for the command"
            time.sleep(0.02)
        time.sleep(0.3)  # its request is out, unanswered
        run.process.kill()
        run.process.communicate()
        deadline = time.monotonic() + 5
        while home and any(n.startswith(mine) for n in os.listdir(home)):
            assert time.monotonic() < deadline, "the waiting command's cgroup was left behind"
            time.sleep(0.02)
        assert not (run.pids_dir / "ran").exists()
    finally:
        silent.close()
