"""Decisions on an empty store and on a full one, side by side; prints figures, asserts nothing.

A decision's cost must not grow with what the control plane holds. This benchmark
starts two ``lictor serve`` on fresh SQLite data directories, loaded like
``bench/http_bench.py``'s (the reference's policy, schema, entities and runtime):

- **empty**: nothing else;
- **at size**: once loaded, it is stopped, ``--recorded`` executions (default
  1,000,000) are written into its store, ``--active`` of them (default 100,000)
  active with leases of an hour and the rest completed, each with a record as the
  server writes one and its tags, and as many entries appended to its log through the
  sequencer (so its tree, hashes and checkpoints are of that size too); then it is
  started again on that directory. (The records are of another runtime, so
  nothing during the run re-verifies them.)

It then drives both in turn with ``wrk`` (32 connections, ``--seconds`` each, for
``--rounds`` rounds) and prints for each the throughput and the server CPU per
decision, and the ratio of the full store's CPU to the empty one's.

Run: ``.venv/bin/python bench/size_bench.py [--recorded N] [--active N]``.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import orjson
from http_bench import (
    REPO,
    Run,
    Target,
    _script,
    _start,
    check_answers,
    data_dir,
    load,
    start_lictor,
    wait_ready,
)

from lictor.core import lease as leases
from lictor.core.lineage import root_lineage
from lictor.core.policy import LineageFacts, RuntimeFacts
from lictor.core.types import EntityRef, new_execution_id
from lictor.datadir import DB_FILE, open_data_dir
from lictor.service.log import AuditLog
from lictor.service.policies import SETTING
from lictor.service.records import StoredExecution, expiry_tag
from lictor.service.sweeps import SCANNED
from lictor.store.base import StoredEntry

PRINCIPALS = [f'Agent::"agent-{n}"' for n in range(1000)]
CHUNK = 50_000
RECORD = "INSERT OR IGNORE INTO records (kind, key, version, doc, tags) VALUES (?, ?, ?, ?, ?)"
INDEX = "INSERT INTO record_index (kind, tag, value, key) VALUES (?, ?, ?, ?)"


def documents(now: int) -> tuple[bytes, bytes, bytes]:
    """The record of an active execution and of a completed one, as the server writes
    them, and the id they hold (to be replaced by each record's own)."""
    execution_id = new_execution_id(now, bytes(10))
    principal = EntityRef.parse('Agent::"agent-0"')
    requested = leases.request(
        execution_id=execution_id,
        principal=principal,
        action=EntityRef.parse('Action::"invoke"'),
        resource=EntityRef.parse('Tool::"search"'),
        context={"task": "summarize the quarterly report for the board" * 4},
        runtime_id="bench-old",
        lineage=root_lineage(execution_id, principal),
        now_ms=now,
    )
    facts = RuntimeFacts("bench-old", "eu-west-1", "c1", "verified", ())
    stored = StoredExecution(requested, facts, LineageFacts.root(principal))
    version = "0" * 64
    decision = {
        "allowed": True,
        "reasons": ["alice-invokes-search"],
        "errors": [],
        "policy_version": version,
        "entities_version": version,
        "reason_code": None,
    }
    active = leases.activate(requested, now, version, leases.MAX_TTL_MS)
    running = stored.with_transition(active, now, 0, decision, facts)
    ended = leases.complete(active, now + 1000, "succeeded", 0)
    done = running.with_transition(ended, now + 1000, 1, None)
    return running.write().doc, done.write().doc, execution_id.encode()


def populate(data: Path, recorded: int, active: int) -> None:
    """``recorded`` executions in ``data``'s store and log (see the module docstring)."""
    started = time.monotonic()
    opened = open_data_dir(data)
    log = AuditLog(opened.store, opened.signer)
    now = log.now_ms()
    event = {"execution": "ex_x", "principal": {"type": "Agent", "id": "agent-0"}}
    entry = log.prepare_event("execution", event, {"execution": "ex_x", "state": "active"})
    stored = StoredEntry(entry.data, entry.private)
    for _ in range(0, recorded, 4096):
        futures = log.sequencer.submit_many([stored] * 4096)
        futures[-1].result()
    log.close()
    opened.close()
    active_doc, completed_doc, template = documents(now)
    expires = expiry_tag(now + leases.MAX_TTL_MS)
    conn = sqlite3.connect(data / DB_FILE, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    for first in range(0, recorded, CHUNK):
        records, index = [], []
        for n in range(first, min(first + CHUNK, recorded)):
            key = new_execution_id(now - recorded + n, os.urandom(10))
            state = "active" if n >= recorded - active else "completed"
            tags = [
                ("action", 'Action::"invoke"'),
                ("principal", PRINCIPALS[n % len(PRINCIPALS)]),
                ("region", "eu-west-1"),
                ("runtime", "bench-old"),
                ("state", state),
            ]
            if state == "active":
                tags.insert(0, ("expires", expires))
            doc = (active_doc if state == "active" else completed_doc).replace(
                template, key.encode()
            )
            records.append(("execution", key, 2, doc, orjson.dumps(tags).decode()))
            index += [("execution", tag, value, key) for tag, value in tags]
        conn.execute("BEGIN")
        conn.executemany(RECORD, records)
        conn.executemany(INDEX, index)
        conn.execute("COMMIT")
    # every record carries its expires tag: the reaper's one-time scan for records
    # without it is done, as it is on a store that has served for a while
    conn.execute(RECORD, (SETTING, SCANNED, 1, b"{}", "[]"))  # the server may have written it
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    took = time.monotonic() - started
    print(f"populated {recorded:,} executions ({active:,} active) in {took:.0f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--recorded", type=int, default=1_000_000)
    parser.add_argument("--active", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    print(f"load at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="lictor-size-bench-") as tmp:
        workdir = Path(tmp)
        targets: list[Target] = []
        try:
            targets.append(start_lictor(workdir, name="lictor empty"))
            full = start_lictor(workdir, name="lictor at size")
            full.stop()
            populate(data_dir(workdir, full.name), args.recorded, args.active)
            targets.append(restarted(full, workdir))
            runs = measure(targets, workdir, args.rounds, args.seconds)
        finally:
            for target in targets:
                target.stop()
    print(f"load at end: {os.getloadavg()[0]:.2f} (1 min)\n")
    print("| store | c=32 req/s | server CPU per decision |")
    print("| --- | --- | --- |")
    cpu = {}
    for name, done in runs.items():
        cpu[name] = statistics.median(r.cpu_us for r in done)
        rate = statistics.median(r.per_second for r in done)
        print(f"| {name} | {rate:,.0f} | {cpu[name]:,.0f} µs |")
    ratio = cpu["lictor at size"] / cpu["lictor empty"]
    print(f"\nCPU per decision at size / empty: {ratio:.2f}x")


def restarted(target: Target, workdir: Path) -> Target:
    """``target``'s server started again on its data directory and port."""
    port = target.url.split(":")[-1].split("/")[0]
    data = data_dir(workdir, target.name)
    argv = [sys.executable, "-m", "lictor.cli.main", "serve", "--data-dir", str(data)]
    argv += ["--workers", "1"]
    process = _start([*argv, "--port", port], REPO, workdir / "lictor-at-size.log")
    wait_ready(f"http://127.0.0.1:{port}/healthz", timeout=300)
    return replace(target, processes=[process])


def measure(
    targets: list[Target], workdir: Path, rounds: int, seconds: float
) -> dict[str, list[Run]]:
    scripts = {t.name: _script(t, workdir) for t in targets}
    for target in targets:
        check_answers(target)
        load(target, scripts[target.name], 8, 2.0)
    runs: dict[str, list[Run]] = {t.name: [] for t in targets}
    for n in range(rounds):
        for target in targets:
            run = load(target, scripts[target.name], 32, seconds)
            runs[target.name].append(run)
            print(
                f"round {n + 1} {target.name}: {run.per_second:,.0f}/s,"
                f" {run.cpu_us:,.0f} µs CPU per decision",
                flush=True,
            )
    return runs


if __name__ == "__main__":
    sys.exit(main())
