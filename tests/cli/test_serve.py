"""`lictor serve` as a real process on loopback (`lictor demo` is in test_demo.py)."""

from __future__ import annotations

import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from lictor.log.checkpoint import open_checkpoint
from lictor.log.note import parse_verifier_key

from ..conftest import free_port


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_creates_private_key_and_credential(serve: Callable[..., Any]) -> None:
    server = serve()
    assert _mode(server.data_dir / "log.key") == 0o600
    assert _mode(server.data_dir / "admin.token") == 0o600
    assert _mode(server.data_dir / "lictor.db") == 0o600
    assert server.token.startswith("lictor_")
    vkey = httpx.get(server.url + "/v1/log/key").json()["vkey"]
    note = httpx.get(server.url + "/log/checkpoint").content
    checkpoint, _ = open_checkpoint(note, [parse_verifier_key(vkey)])
    assert checkpoint.size == 0
    token = server.token
    server.kill()
    again = serve(server.data_dir)
    assert httpx.get(again.url + "/v1/log/key").json()["vkey"] == vkey
    assert again.token == token
    db = (again.data_dir / "lictor.db").read_bytes()
    assert token.encode() not in db  # only the hash is stored


def test_a_second_server_on_the_same_data_dir_refuses_to_start(
    serve: Callable[..., Any],
) -> None:
    server = serve()
    command = [sys.executable, "-m", "lictor.cli.main", "serve"]
    command += ["--data-dir", str(server.data_dir), "--port", str(free_port())]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "lictor: conflict:" in result.stderr and "in use" in result.stderr
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_runtime_add_prints_a_credential_that_works(
    serve: Callable[..., Any], capsys: Any, monkeypatch: Any
) -> None:
    from lictor.cli.main import main

    server = serve()
    monkeypatch.setenv("LICTOR_URL", server.url)
    monkeypatch.setenv("LICTOR_CREDENTIAL", server.token)
    assert main(["runtime", "add", "edge-1", "--region", "eu", "--cluster", "c1"]) == 0
    out = capsys.readouterr().out
    secret = out.split("credential (shown once): ")[1].strip()
    r = httpx.post(
        server.url + "/v1/runtimes/edge-1/heartbeat",
        json={"attestation": {"state": "verified"}},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 200, r.text
    assert main(["runtime", "list"]) == 0
    assert "edge-1\teu\tc1\tverified" in capsys.readouterr().out
    assert main(["runtime", "add", "edge-1", "--region", "eu", "--cluster", "c1"]) == 1
    assert "lictor: conflict:" in capsys.readouterr().err
    monkeypatch.setenv("LICTOR_CREDENTIAL", "lictor_wrong")
    assert main(["runtime", "list"]) == 1
    assert "lictor: unauthenticated:" in capsys.readouterr().err
    monkeypatch.setenv("LICTOR_URL", "http://127.0.0.1:1")
    assert main(["runtime", "list"]) == 1
    assert "lictor: unavailable:" in capsys.readouterr().err


def test_credential_add_prints_an_auditor_credential_that_works(
    serve: Callable[..., Any], capsys: Any, monkeypatch: Any
) -> None:
    from lictor.cli.main import main

    server = serve()
    monkeypatch.setenv("LICTOR_URL", server.url)
    monkeypatch.setenv("LICTOR_CREDENTIAL", server.token)
    assert main(["credential", "add", "ada", "--role", "auditor"]) == 0
    out = capsys.readouterr().out
    assert "credential ada (auditor) issued by admin" in out
    secret = out.split("credential (shown once): ")[1].strip()
    who = httpx.get(server.url + "/v1/session", headers={"Authorization": f"Bearer {secret}"})
    assert who.json() == {"name": "ada", "role": "auditor"}
    assert main(["credential", "list"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["NAME", "ROLE", "STATE", "EXPIRES", "KEY ID", "ISSUED BY"]
    ada = next(row for row in rows if row[0] == "ada")
    assert ada[1:4] == ["auditor", "active", "never"] and ada[5] == "admin", ada
    assert ada[4].startswith("key:") and secret not in ada[4]
    monkeypatch.setenv("LICTOR_CREDENTIAL", secret)
    assert main(["credential", "add", "eve", "--role", "admin"]) == 1
    assert "lictor: permission_denied:" in capsys.readouterr().err
