"""`lictor demo`: serve a control plane and show the log working end to end.

Starts `lictor serve` on the embedded SQLite default, records a few operator
notes through the HTTP API with the admin credential, verifies one receipt
offline, and prints where to fetch the checkpoint, a tile and a proof. Runs
until Ctrl-C, or exits after the walk-through with ``--once``.
"""

from __future__ import annotations

import argparse
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from lictor.cli.serve import add_server_options, running_app
from lictor.datadir import TOKEN_FILE
from lictor.errors import UnavailableError
from lictor.log.entry import canonical_entry
from lictor.log.note import parse_verifier_key
from lictor.log.proof import parse_tlog_proof, verify_tlog_proof

SAMPLE_NOTES = (
    "break-glass: on-call granted prod database access for incident 4711",
    "policy freeze lifted after the quarterly review",
    "runtime edge-eu-3 retired; its credential revoked",
)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("demo", help="serve and show the log working")
    add_server_options(p)
    p.add_argument("--once", action="store_true", help="exit after the walk-through")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    outcome: list[int] = []
    with running_app(args) as (_, app):
        server = uvicorn.Server(
            uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")
        )
        walker = threading.Thread(target=_walk, args=(server, args, outcome), daemon=True)
        walker.start()
        server.run()
        walker.join(timeout=5)
    return outcome[0] if outcome else 1


def _walk(server: uvicorn.Server, args: argparse.Namespace, outcome: list[int]) -> None:
    try:
        _wait_started(server)
        _show(f"http://{args.host}:{args.port}", args.data_dir)
        outcome.append(0)
    except Exception as e:  # report and stop the server rather than hang
        print(f"lictor demo: {e}", flush=True)
        outcome.append(1)
        server.should_exit = True
        return
    if args.once:
        server.should_exit = True
    else:
        print("Serving until Ctrl-C.", flush=True)


def _wait_started(server: uvicorn.Server, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline:
            raise UnavailableError("the server did not start")
        time.sleep(0.05)


def _show(url: str, data_dir: str) -> None:
    token = Path(data_dir, TOKEN_FILE).read_text().strip()
    with httpx.Client(base_url=url, timeout=10) as client:
        headers = {"Authorization": f"Bearer {token}"}
        receipts = []
        for text in SAMPLE_NOTES:
            r = client.post("/v1/log/entries", json={"kind": "note", "text": text}, headers=headers)
            r.raise_for_status()
            receipts.append(r.json()["receipt"])
        vkey = client.get("/v1/log/key").json()["vkey"]
    last = receipts[-1]
    proof = parse_tlog_proof(last["tlog_proof"])
    checkpoint, _ = verify_tlog_proof(
        proof, canonical_entry(last["entry"]), [parse_verifier_key(vkey)]
    )
    print(f"Lictor log at {url}: recorded {len(receipts)} operator notes.")
    print(f"  verifier key:  {vkey}")
    print(f"  receipt of entry {last['index']} verified offline at tree size {checkpoint.size}")
    print(f"  checkpoint:    {url}/log/checkpoint")
    print(f"  inclusion:     {url}/v1/log/proof/inclusion?index={last['index']}")
    print(f"  entry:         {url}/v1/log/entries/{last['index']}")
    print(f"  audit it:      lictor log audit {url}/log --key '{vkey}'", flush=True)
