"""`lictor credential` against a real server: issue, list, rotate (admin.token too), revoke."""

from __future__ import annotations

import stat
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from lictor.cli.main import main

from ..conftest import Server


def cli(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _session(server: Server, secret: str) -> int:
    headers = {"Authorization": f"Bearer {secret}"}
    return httpx.get(server.url + "/v1/session", headers=headers).status_code


@pytest.fixture
def server(serve: Callable[..., Server], monkeypatch: pytest.MonkeyPatch) -> Server:
    started = serve()
    monkeypatch.setenv("LICTOR_URL", started.url)
    monkeypatch.delenv("LICTOR_CREDENTIAL", raising=False)
    return started


def test_rotating_the_bootstrap_admin_rewrites_its_token_file(server: Server, capsys: Any) -> None:
    token_file = server.data_dir / "admin.token"
    old = server.token
    code, out, err = cli(
        capsys, "credential", "rotate", "admin", "--credential-file", str(token_file)
    )
    assert code == 0, err
    new = server.token
    assert new != old and new not in out and f"written to {token_file}" in out
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert _session(server, old) == 401 and _session(server, new) == 200
    code, out, err = cli(capsys, "credential", "list", "--credential-file", str(token_file))
    assert code == 0, err
    assert "admin\tadmin\tactive\tnever\tkey:" in out and new not in out


def test_issue_list_and_revoke_and_the_last_admin_is_kept(
    server: Server, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LICTOR_CREDENTIAL", server.token)
    code, out, err = cli(capsys, "credential", "issue", "--name", "ada", "--role", "auditor")
    assert code == 0, err
    secret = out.split("credential (shown once): ")[1].strip()
    assert _session(server, secret) == 200
    code, out, err = cli(capsys, "credential", "revoke", "ada", "--reason", "left")
    assert code == 0 and "credential ada (auditor) revoked by admin" in out, err
    assert _session(server, secret) == 401
    code, out, err = cli(capsys, "credential", "list")
    assert "ada\tauditor\trevoked" in out and secret not in out
    code, out, err = cli(capsys, "credential", "revoke", "admin")
    assert code == 1 and "lictor: last_admin:" in err
    assert _session(server, server.token) == 200


def test_a_short_lived_credential_stops_working_on_time(
    server: Server, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LICTOR_CREDENTIAL", server.token)
    code, out, err = cli(
        capsys, "credential", "add", "brief", "--role", "auditor", "--ttl", "1", "--json"
    )
    assert code == 0, err
    assert '"expires_at_ms"' in out
    secret = out.split('"credential": "')[1].split('"')[0]
    assert _session(server, secret) == 200
    deadline = time.monotonic() + 10  # the real clock: a one-second life, generous margin
    while _session(server, secret) == 200:
        assert time.monotonic() < deadline, "a credential outlived its ttl"
        time.sleep(0.1)
    assert _session(server, secret) == 401


def test_a_rotated_secret_that_cannot_be_written_is_printed_rather_than_lost(
    server: Server, capsys: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("LICTOR_CREDENTIAL", server.token)
    assert cli(capsys, "credential", "issue", "--name", "ops", "--role", "admin")[0] == 0
    out_file = tmp_path / "missing" / "ops.token"
    code, out, err = cli(capsys, "credential", "rotate", "ops", "--out", str(out_file))
    assert code == 1 and f"cannot write {out_file}" in err
    secret = out.split("credential (shown once): ")[1].strip()
    assert _session(server, secret) == 200
    code, out, err = cli(capsys, "credential", "rotate", "ops", "--out", str(tmp_path / "ops"))
    assert code == 0 and "written to" in out, err
    assert _session(server, (tmp_path / "ops").read_text().strip()) == 200
    assert _session(server, secret) == 401
