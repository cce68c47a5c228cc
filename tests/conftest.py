"""Shared fixtures: real `lictor serve` processes on loopback, free ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from lictor.datadir import open_data_dir
from lictor.service.log import AuditLog

from .postgres import PostgresServer

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "vectors"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """A real `lictor serve` process."""

    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    options: tuple[str, ...] = ()
    log_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_file = self.data_dir.parent / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def start(self, timeout: float = 30.0) -> Server:
        cmd = [sys.executable, "-m", "lictor.cli.main", "serve", "--data-dir", str(self.data_dir)]
        cmd += ["--port", str(self.port), *self.options]
        if not {"--workers", "--demo"} & set(self.options):
            cmd += ["--workers", "1"]  # one process unless asked: its metrics are all of them
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=REPO)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_file.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError("server did not become healthy")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(timeout=30)


SHARED_FILES = ("log.key", "grant.key", "admin.token")


def assert_audit_passes(url: str, vkey: str) -> None:
    """`lictor log audit` of the log served at ``url`` succeeds with key ``vkey``."""
    argv = [sys.executable, "-m", "lictor.cli.main", "log", "audit", f"{url}/log", "--key", vkey]
    audit = subprocess.run(argv, capture_output=True, text=True, cwd=REPO)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def start_replicas(database: str, root: Path, count: int, origin: str) -> list[Server]:
    """``count`` `lictor serve` replicas on one database: the first makes the log's keys
    and admin credential, the others start with copies. On failure, none is left running."""
    servers: list[Server] = []
    try:
        for n in range(count):
            data = root / f"replica{n}"
            if n:
                data.mkdir(mode=0o700)
                for name in SHARED_FILES:
                    shutil.copy2(servers[0].data_dir / name, data / name)
            options = ("--database", database) + (("--origin", origin) if n == 0 else ())
            servers.append(Server(data, free_port(), options=options).start())
    except BaseException:
        for server in servers:
            server.kill()
        raise
    return servers


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    """An `AuditLog` on a real SQLite data dir at ``tmp_path / "data"``."""
    data = open_data_dir(tmp_path / "data", "test.example/log")
    audit_log = AuditLog(data.store, data.signer)
    yield audit_log
    audit_log.close()
    data.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start real servers on fresh data dirs; all are killed at teardown."""
    servers: list[Server] = []

    def start(data_dir: Path | None = None) -> Server:
        server = Server(data_dir or tmp_path / f"data{len(servers)}", free_port())
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.kill()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A private PostgreSQL server for the whole run, stopped and removed at its end."""
    server = PostgresServer(free_port()).start()
    yield server
    server.stop()
