"""`/readyz` is unready while the store cannot commit, and ready again once it can.

A real `lictor serve` keeps its data directory on a small tmpfs of its own
(mounting one needs root, as CI runs); the test fills that disk, so every
write fails while reads still succeed, then frees it.
"""

from __future__ import annotations

import errno
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import Server, free_port

DISK_BYTES = 16 * 1024 * 1024
CHUNK = b"\0" * 65536


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of `DISK_BYTES` mounted at ``tmp_path / "disk"``, unmounted after."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES},mode=0700", "tmpfs", str(disk)],
        check=True,
    )
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until ``disk`` has no space left; the file."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(CHUNK)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    with filler.open("ab", buffering=0) as f:  # the last partial blocks too
        try:
            while True:
                f.write(b"\0")
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return filler


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_readyz_is_unready_while_commits_fail_and_ready_once_they_succeed(
    small_disk: Path,
) -> None:
    server = Server(small_disk / "data", free_port())
    try:
        server.start()
        admin = {"Authorization": f"Bearer {server.token}"}

        def note() -> int:
            body = {"kind": "note", "text": "a write"}
            return httpx.post(server.url + "/v1/log/entries", json=body, headers=admin).status_code

        def readyz() -> int:
            return httpx.get(server.url + "/readyz", timeout=30).status_code

        assert readyz() == 200
        assert note() == 201
        filler = fill(small_disk)
        assert note() >= 500  # writes fail...
        assert httpx.get(server.url + "/v1/log/checkpoint").status_code == 200  # reads do not
        wait_for(lambda: readyz() == 503)
        reply = httpx.get(server.url + "/readyz").json()
        assert reply["status"] == "unavailable" and reply["database"] == "cannot_commit"
        filler.unlink()
        wait_for(lambda: readyz() == 200)
        assert note() == 201
    finally:
        server.kill()
