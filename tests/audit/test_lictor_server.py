"""The outsider's tools against Lictor's own log: in process, and a real `lictor serve`."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from lictor.audit import audit, prove, verify_proof
from lictor.cli.main import main
from lictor.log.note import parse_verifier_key
from lictor.receipt import read_proof_file
from lictor.server.app import create_app
from lictor.service.log import AuditLog
from lictor.tilesource import HttpSource


def append(log: AuditLog, count: int) -> None:
    futures = [log.submit_event("note", {"n": i})[0] for i in range(count)]
    for future in futures:
        future.result()


def test_audit_log_in_process(log: AuditLog) -> None:
    verifier = parse_verifier_key(log.vkey)
    append(log, 200)
    with TestClient(create_app(log)) as client:
        source = HttpSource("http://testserver", client=client)
        first = audit(source, verifier)
        assert (first.size, source.prefix) == (200, "http://testserver/log")
        append(log, 100)  # crosses a tile boundary: a level-1 tile appears
        second = audit(source, verifier, first.state)
        assert (second.old_size, second.size, second.tiles_checked) == (200, 300, 3)
        receipt = log.append_event("note", {"n": "last"}).to_json()
        parsed = read_proof_file(json.dumps(receipt).encode())
        assert parsed.entry is not None and parsed.event_checked
        assert verify_proof(parsed.proof, parsed.entry, verifier).size == 301
        assert prove(source, 300, verifier).entry == parsed.entry


def test_audit_real_server(
    serve: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = serve()
    admin = {"Authorization": f"Bearer {server.token}"}
    for text in ("one", "two", "three"):
        body = {"kind": "note", "text": text}
        r = httpx.post(f"{server.url}/v1/log/entries", json=body, headers=admin)
        assert r.status_code == 201, r.text
    receipt = tmp_path / "receipt.json"
    receipt.write_text(json.dumps(r.json()["receipt"]))
    vkey = httpx.get(f"{server.url}/v1/log/key").json()["vkey"]
    state = tmp_path / "state.json"
    assert main(["log", "audit", server.url, "--key", vkey, "--state", str(state)]) == 0
    assert "size 0 -> 3" in capsys.readouterr().out
    assert main(["log", "verify", str(receipt), "--key", vkey]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: entry 2 is in ")
    assert "OK: the receipt's event matches the entry's commitment" in out
    tampered = json.loads(receipt.read_text())
    tampered["event"]["text"] = "four"
    receipt.write_text(json.dumps(tampered))
    assert main(["log", "verify", str(receipt), "--key", vkey]) == 1
    assert "do not open the entry's commitment" in capsys.readouterr().err
