"""kill -9 at any moment loses no acknowledged entry and never forks the log.

A real `lictor serve` process is killed with SIGKILL at random moments while
clients append through HTTP; after each restart every acknowledged entry must
be at its index, and every checkpoint any client was ever shown must be
consistent with the log that came back.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from lictor.log.checkpoint import Checkpoint, open_checkpoint
from lictor.log.entry import canonical_entry
from lictor.log.merkle import leaf_hash, merkle_root, verify_consistency
from lictor.log.note import parse_verifier_key
from lictor.log.tiles import decode_bundle, tile_for


class Appender(threading.Thread):
    """Appends notes until the server goes away; remembers what was acknowledged."""

    def __init__(self, url: str, token: str, name: str) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.label = url, token, name
        self.acked: list[dict[str, Any]] = []

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=10) as client:
            n = 0
            while True:
                body = {"kind": "note", "text": f"{self.label} {n}"}
                try:
                    r = client.post("/v1/log/entries", json=body)
                except httpx.HTTPError:
                    return
                if r.status_code != 201:
                    return
                self.acked.append(r.json()["receipt"])
                n += 1


def _all_entries(client: httpx.Client, size: int) -> list[bytes]:
    entries: list[bytes] = []
    for start in range(0, size, 256):
        tile = tile_for(0, start, size, entries=True)
        r = client.get(f"/log/{tile.path}")
        r.raise_for_status()
        entries += decode_bundle(r.content)
    return entries


def test_sigkill_loses_no_acknowledged_entry(serve: Callable[..., Any]) -> None:
    rng = random.Random(6962)
    server = serve()
    data_dir = server.data_dir
    vkey = httpx.get(server.url + "/v1/log/key").json()["vkey"]
    verifier = parse_verifier_key(vkey)
    acked: list[dict[str, Any]] = []
    seen: list[Checkpoint] = []
    for _ in range(6):
        appenders = [Appender(server.url, server.token, f"c{i}") for i in range(3)]
        for a in appenders:
            a.start()
        time.sleep(rng.uniform(0.3, 1.2))
        server.kill()
        for a in appenders:
            a.join(timeout=30)
            acked += a.acked
        for receipt in acked[-30:]:
            cp, _ = open_checkpoint(receipt["checkpoint"].encode(), [verifier])
            seen.append(cp)
        server = serve(data_dir)
        _check_restarted_log(server.url, verifier, acked, seen)
    assert len(acked) > 100, len(acked)  # the loop really appended under load


def _check_restarted_log(
    url: str, verifier: Any, acked: list[dict[str, Any]], seen: list[Checkpoint]
) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        head, _ = open_checkpoint(client.get("/log/checkpoint").content, [verifier])
        entries = _all_entries(client, head.size)
        assert merkle_root([leaf_hash(e) for e in entries]) == head.root
        for receipt in acked:
            assert receipt["index"] < head.size
            data = entries[receipt["index"]]
            assert data == canonical_entry(receipt["entry"])
            assert leaf_hash(data) == base64.b64decode(receipt["leaf_hash"])
        for cp in {cp.size: cp for cp in seen}.values():
            assert cp.size <= head.size
            if 0 < cp.size < head.size:
                r = client.get("/v1/log/proof/consistency", params={"first": cp.size})
                proof = [base64.b64decode(h) for h in r.json()["hashes"]]
                verify_consistency(cp.size, head.size, cp.root, head.root, proof)
            elif cp.size == head.size:
                assert cp.root == head.root
            prefix = merkle_root([leaf_hash(e) for e in entries[: cp.size]])
            assert prefix == cp.root
