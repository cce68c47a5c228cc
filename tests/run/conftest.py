"""`lictor run` end to end: real servers, real `lictor run` processes, real process trees."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..conftest import REPO, Server, free_port
from ..sdk.conftest import Plane, govern

STAGING = 'Service::"payments-api-staging"'
PRODUCTION = 'Service::"payments-api"'
PLANNER = 'Agent::"planner-7"'


@dataclass
class Run:
    """A `lictor run` process and where its command reports its process tree."""

    process: subprocess.Popen[str]
    pids_dir: Path

    def pids(self, count: int, timeout: float = 15.0) -> list[int]:
        """The pids the command's tree wrote (waits until ``count`` are there)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [int(p.name) for p in self.pids_dir.iterdir() if p.name.isdigit()]
            if len(found) >= count:
                return sorted(found)
            if self.process.poll() is not None:
                raise AssertionError(f"lictor run ended early: {self.process.communicate()}")
            time.sleep(0.02)
        raise AssertionError(f"only {list(self.pids_dir.iterdir())} of {count} processes started")

    def finish(self, timeout: float = 30.0) -> tuple[int, str, str]:
        """Wait for `lictor run`: its exit code, stdout and stderr."""
        out, err = self.process.communicate(timeout=timeout)
        return self.process.returncode, out, err


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def wait_dead(pids: Sequence[int], timeout: float) -> list[int]:
    """The pids still alive after ``timeout`` seconds (empty: all ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if alive(p)]
        if not left:
            return []
        time.sleep(0.01)
    return [p for p in pids if alive(p)]


# A command whose tree is a shell, a child and a grandchild, each writing its pid to $PIDS.
TREE = (
    'echo > "$PIDS/$$"; '
    '(echo > "$PIDS/$(sh -c \'echo $PPID\')"; sleep 600 & echo > "$PIDS/$!"; wait) & '
    "wait"
)


@pytest.fixture
def start_run(tmp_path: Path) -> Iterator[Callable[..., Run]]:
    """Start `lictor run` processes; any left running are killed at teardown."""
    started: list[Run] = []

    def start(
        plane: Plane,
        *command: str,
        principal: str = PLANNER,
        resource: str = STAGING,
        ttl: int | None = None,
        env: dict[str, str] | None = None,
        url: str | None = None,
        grace: float = 3.0,
        options: Sequence[str] = (),
        wrap: Sequence[str] = (),
    ) -> Run:
        """`lictor run` with ``options`` before ``--``, started through ``wrap`` if given."""
        pids_dir = tmp_path / f"pids{len(started)}"
        pids_dir.mkdir()
        argv = [*wrap, sys.executable, "-m", "lictor.cli.main", "run", "--url", url or plane.url]
        argv += ["--principal", principal, "--action", "deploy", "--resource", resource]
        argv += ["--grace", str(grace), *options]
        if ttl is not None:
            argv += ["--ttl", str(ttl)]
        environment = {
            **os.environ,
            "LICTOR_CREDENTIAL": plane.runtime_secret,
            "PIDS": str(pids_dir),
        }
        environment.pop("LICTOR_GRANT", None)
        environment.update(env or {})
        process = subprocess.Popen(
            [*argv, "--", *(command or ("sh", "-c", TREE))],
            env=environment,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        run = Run(process, pids_dir)
        started.append(run)
        return run

    yield start
    for run in started:
        if run.process.poll() is None:
            run.process.kill()
            run.process.communicate()


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    data: Path = tmp_path_factory.mktemp("run") / "data"
    server = Server(data, free_port()).start()
    try:
        yield govern(server)
    finally:
        server.kill()
