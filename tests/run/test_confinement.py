"""A governed command gets what names its execution and nothing that acts as the runtime.

`lictor run` holds the runtime's credential; the command it starts gets
``LICTOR_EXECUTION_ID``, ``LICTOR_GRANT``, ``LICTOR_URL`` and
``TRACEPARENT``, and no credential: not in its environment, not in a
descriptor, not in the supervisor's ``/proc`` files, not in a file it can read
when run as another user. What it can do with its grant is start children of
its own execution (with `lictor run` or the SDK), under its runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lictor.cli.run import REVOKED

from ..conftest import Server
from ..sdk.conftest import Plane, govern
from .conftest import STAGING, Run, wait_dead

# Writes what the command sees to $OUT: its environment, its descriptors, and whether
# it could read its supervisor's environment and memory, or the file in $SECRET_FILE.
PROBE = r"""
import json, os, sys
def attempt(path, mode="rb"):
    try:
        with open(path, mode) as f:
            return "read: " + (f.read(64).hex() if "b" in mode else f.read(64))
    except OSError as e:
        return "refused: " + type(e).__name__
def opens(path):
    try:
        os.close(os.open(path, os.O_RDONLY))
        return "opened"
    except OSError as e:
        return "refused: " + type(e).__name__
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
parent = os.getppid()
seen = {
    "env": dict(os.environ),
    "fds": fds,
    "parent_environ": attempt(f"/proc/{parent}/environ"),
    "parent_mem": opens(f"/proc/{parent}/mem"),
    "secret_file": attempt(os.environ["SECRET_FILE"], "r") if "SECRET_FILE" in os.environ else "",
    "uid": os.getuid(),
}
with open(os.environ["OUT"], "w") as f:
    json.dump(seen, f)
"""


# The interpreter for commands run as ``nobody``: the project's may live under /root.
SYSTEM_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable


@pytest.fixture
def own(serve: Callable[..., Server]) -> Plane:
    """A control plane of this test's own, for a test that freezes it."""
    return govern(serve())


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user can write (for commands run as ``nobody``)."""
    folder = Path(tempfile.mkdtemp(prefix="lictor-confine-", dir="/tmp"))
    folder.chmod(0o777)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _seen(out: Path, run: Run) -> dict[str, Any]:
    code, _, err = run.finish()
    assert code == 0, err
    seen: dict[str, Any] = json.loads(out.read_text())
    return seen


def test_the_command_gets_its_execution_and_no_credential(
    plane: Plane, start_run: Callable[..., Run], tmp_path: Path
) -> None:
    out = tmp_path / "seen.json"
    env = {"OUT": str(out), "LICTOR_PROFILE_SECRET": "something-lictor-only"}
    run = start_run(plane, sys.executable, "-c", PROBE, env=env)
    seen = _seen(out, run)
    env_seen: dict[str, str] = seen["env"]
    assert "LICTOR_CREDENTIAL" not in env_seen
    assert plane.runtime_secret not in json.dumps(env_seen)
    assert "LICTOR_PROFILE_SECRET" not in env_seen  # no LICTOR_* but what names the execution
    assert {k for k in env_seen if k.startswith("LICTOR_")} == {
        "LICTOR_EXECUTION_ID",
        "LICTOR_GRANT",
        "LICTOR_URL",
    }
    assert env_seen["LICTOR_URL"] == plane.url
    assert env_seen["TRACEPARENT"].startswith("00-")
    view = plane.execution(env_seen["LICTOR_EXECUTION_ID"])
    assert view["execution"]["runtime_id"] == "edge-1"
    # nothing inherited but standard input, output and error (the listing is its own)
    extra = {fd: target for fd, target in seen["fds"].items() if int(fd) > 2}
    assert all(target.startswith("/proc/") for target in extra.values()), extra
    assert len(extra) <= 1, extra


def test_a_same_user_command_cannot_read_the_supervisor(
    plane: Plane, shared_dir: Path, start_run: Callable[..., Run]
) -> None:
    """`lictor run` and its command both as ``nobody``: the credential it holds in its
    environment is out of the command's reach (the supervisor is not dumpable)."""
    out = shared_dir / "seen.json"
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    run = start_run(
        plane,
        SYSTEM_PYTHON,
        "-c",
        PROBE,
        env={"OUT": str(out), "HOME": str(shared_dir)},
        wrap=prefix,
    )
    seen = _seen(out, run)
    assert seen["uid"] != 0
    assert seen["parent_environ"].startswith("refused"), seen["parent_environ"]
    assert seen["parent_mem"].startswith("refused"), seen["parent_mem"]
    assert plane.runtime_secret not in json.dumps(seen)


def test_as_another_user_the_command_cannot_read_the_credential_file(
    plane: Plane, shared_dir: Path, start_run: Callable[..., Run], tmp_path: Path
) -> None:
    secret_file = tmp_path / "runtime.token"
    secret_file.write_text(plane.runtime_secret)
    secret_file.chmod(0o600)
    out = shared_dir / "seen.json"
    env = {"OUT": str(out), "SECRET_FILE": str(secret_file), "LICTOR_CREDENTIAL": ""}
    run = start_run(
        plane,
        SYSTEM_PYTHON,
        "-c",
        PROBE,
        env=env,
        options=["--credential-file", str(secret_file), "--user", "nobody"],
    )
    seen = _seen(out, run)
    assert seen["uid"] == 65534
    assert seen["secret_file"].startswith("refused"), seen["secret_file"]
    assert plane.runtime_secret not in json.dumps(seen)


def test_an_unknown_user_is_not_started(plane: Plane, start_run: Callable[..., Run]) -> None:
    run = start_run(plane, "true", options=["--user", "no-such-user-here"])
    code, _, err = run.finish()
    assert code == 127 and "no user" in err, err


def test_the_sdk_inside_a_command_starts_children_through_the_grant_alone(
    plane: Plane, start_run: Callable[..., Run], tmp_path: Path
) -> None:
    out = tmp_path / "nested.json"
    run = start_run(plane, sys.executable, "-c", _nested_script(), env={"OUT": str(out)})
    code, _, err = run.finish()
    assert code == 0, err
    seen = json.loads(out.read_text())
    child = plane.execution(seen["child"])["execution"]
    assert child["parent_id"] == seen["me"]
    assert child["runtime_id"] == "edge-1"
    assert child["state"] == "completed"
    assert seen["root"] == "InvalidRequestError"  # no credential: no root execution


def _nested_script() -> str:
    return r"""
import json, os
from lictor.sdk import Client
from lictor.errors import LictorError
staging, deploy = 'Service::"payments-api-staging"', 'Action::"deploy"'
with Client(os.environ["LICTOR_URL"]) as client:
    with client.execution('Agent::"planner-7"', deploy, staging) as handle:
        child = handle.id
    try:  # no parent grant given: a root, which needs a credential
        client.request('Agent::"planner-7"', deploy, staging)
        root = "allowed"
    except LictorError as e:
        root = type(e).__name__
with open(os.environ["OUT"], "w") as f:
    json.dump({"child": child, "root": root, "me": os.environ["LICTOR_EXECUTION_ID"]}, f)
"""


def test_a_nested_run_without_credential_is_a_child_and_dies_with_the_parent(
    plane: Plane, start_run: Callable[..., Run]
) -> None:
    inner = [sys.executable, "-m", "lictor.cli.main", "run", "--action", "deploy"]
    inner += ["--resource", STAGING, "--", "sh", "-c", 'echo > "$PIDS/$$"; exec sleep 600']
    run = start_run(plane, *inner)
    pid = run.pids(1, timeout=30)[0]
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    assert b"LICTOR_CREDENTIAL" not in env
    leaf = plane.execution(env[b"LICTOR_EXECUTION_ID"].decode())["execution"]
    assert leaf["parent_id"] is not None and leaf["runtime_id"] == "edge-1"
    plane.revoke(leaf["parent_id"])
    assert wait_dead([pid], timeout=2.0) == []
    code, _, err = run.finish()
    assert code == REVOKED, err


def test_a_command_that_ignores_sigterm_is_dead_before_its_lease_ends(
    own: Plane, start_run: Callable[..., Run]
) -> None:
    """TTL 3 s, grace 2 s, the control plane frozen: SIGKILL comes by the local
    deadline, not ``--grace`` seconds after it."""
    ttl = 3
    stubborn = "trap '' TERM; echo > \"$PIDS/$$\"; while :; do sleep 0.05; done"
    run = start_run(own, "sh", "-c", stubborn, ttl=ttl, grace=2.0)
    pid = run.pids(1)[0]
    process = own.server.process
    assert process is not None
    # freeze right after a renewal was answered, so the lease ends about ttl from now
    _after_a_renewal(own, pid)
    os.kill(process.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        assert wait_dead([pid], timeout=ttl + 2) == []
        died = time.monotonic() - frozen
        assert died < ttl, f"the command outlived its lease: dead {died:.2f} s after the freeze"
    finally:
        os.kill(process.pid, signal.SIGCONT)
    run.finish()


def _after_a_renewal(plane: Plane, pid: int) -> None:
    """Wait until the execution of ``pid`` has just been renewed."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    execution_id = env[b"LICTOR_EXECUTION_ID"].decode()
    first = plane.execution(execution_id)["execution"]["lease"]["expires_at_ms"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if plane.execution(execution_id)["execution"]["lease"]["expires_at_ms"] != first:
            return
        time.sleep(0.01)
    raise AssertionError("no renewal seen")
