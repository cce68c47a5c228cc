"""A decision's cost inside the server process, thread by thread; prints figures, asserts nothing.

No HTTP: ``--decisions`` requests (default 4,000) go straight to
`lictor.service.executions.Executions.request_async`, 32 in flight (``--in-flight``;
1 makes every commit a batch of one, as with one caller), on an app over
a fresh SQLite data directory loaded like ``bench/http_bench.py``'s (the
reference's policy, schema, entities and one runtime). For each run it prints the
decisions per second and, per decision: the CPU of the whole process, of the event
loop's thread and of the log's committer (user and system, from
``/proc/self/task/<tid>/stat``), the bytes written and read (``/proc/self/io``),
and the time spent in the garbage collector (``gc.callbacks``).

``--compare DIR`` runs the same in a checkout of another commit (``git worktree
add DIR REV``), alternating with this one, each in a fresh process.

``--renewals`` measures renewals instead (`Executions.renew_async`, 32 in flight)
of 200 executions requested first, in turn: a renewal's CPU with no HTTP.

Run: ``.venv/bin/python bench/inprocess_bench.py [--decisions N] [--rounds R]
[--compare DIR] [--renewals]``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "reference" / "data"
TICKS = os.sysconf("SC_CLK_TCK")
IN_FLIGHT = 32
HELD = 200  # executions renewed in turn with --renewals


def thread_cpu() -> dict[str, tuple[float, float]]:
    """(user, system) CPU seconds of each live thread of this process, by name."""
    found = {}
    for thread in threading.enumerate():
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[thread.name] = (int(fields[11]) / TICKS, int(fields[12]) / TICKS)
    return found


def io_bytes() -> tuple[int, int]:
    with open("/proc/self/io") as f:
        io = dict(line.split(": ") for line in f.read().splitlines())
    return int(io["wchar"]), int(io["rchar"])


def measure(decisions: int, renewals: bool = False, in_flight: int = IN_FLIGHT) -> dict[str, Any]:
    """One run in this process (of whichever checkout ``sys.path`` imports)."""
    from fastapi.testclient import TestClient

    from lictor.cli.serve import settle_collector
    from lictor.core.types import EntityRef
    from lictor.datadir import open_data_dir
    from lictor.policydir import load_policy_dir
    from lictor.server.app import create_app
    from lictor.service.executions import Ask
    from lictor.service.log import AuditLog
    from lictor.service.policies import source_json

    with tempfile.TemporaryDirectory(prefix="lictor-inprocess-") as tmp:
        root = Path(tmp)
        data = open_data_dir(root / "data", "bench.example/inprocess")
        log = AuditLog(data.store, data.signer)
        app = create_app(log)
        policies = root / "policies"
        policies.mkdir()
        for name in ("schema.cedarschema", "tool.cedar"):
            shutil.copy(DATA / name, policies / name)
        admin = {"Authorization": f"Bearer {(root / 'data' / 'admin.token').read_text().strip()}"}
        with TestClient(app) as client:
            source = source_json(load_policy_dir(policies))
            version = client.post("/v1/policies", json={"source": source}, headers=admin).json()
            entities = json.loads((DATA / "entities.json").read_text())
            client.put("/v1/entities", json={"entities": entities}, headers=admin)
            client.post(f"/v1/policies/{version['version']}/activate", headers=admin)
            runtime = {"name": "bench-rt", "region": "eu-west-1", "cluster": "c1"}
            secret = client.post("/v1/runtimes", json=runtime, headers=admin).json()["credential"]
            beat = {"attestation": {"state": "verified"}}
            auth = {"Authorization": f"Bearer {secret}"}
            client.post("/v1/runtimes/bench-rt/heartbeat", json=beat, headers=auth)
        body = json.loads((DATA / "body.json").read_text())
        ask = Ask(
            "bench-rt",
            EntityRef.from_wire(body["principal"]),
            EntityRef.from_wire(body["action"]),
            EntityRef.from_wire(body["resource"]),
            {},
            None,
            body["ttl"] * 1000,
        )
        executions = app.state.executions

        async def requested(count: int) -> list[str]:
            outcomes = await asyncio.gather(*(executions.request_async(ask) for _ in range(count)))
            return [outcome.execution.id for outcome in outcomes]

        held = asyncio.run(requested(HELD)) if renewals else []

        async def run(count: int) -> None:
            slots = asyncio.Semaphore(in_flight)

            async def one(i: int) -> None:
                async with slots:
                    if renewals:
                        outcome = await executions.renew_async(
                            held[i % HELD], "bench-rt", ask.ttl_ms
                        )
                    else:
                        outcome = await executions.request_async(ask)
                    assert outcome.grant, "the reference's request is allowed, and renewed"

            await asyncio.gather(*(one(i) for i in range(count)))

        asyncio.run(run(300))  # warm up
        settle_collector()  # the collector as `lictor serve` tunes it
        collected = [0.0]
        started_at: list[float] = []

        def timed(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                started_at[:] = [time.thread_time()]
            elif started_at:
                collected[0] += time.thread_time() - started_at[0]

        gc.callbacks.append(timed)
        threads_before, io_before = thread_cpu(), io_bytes()
        wall, cpu = time.perf_counter(), time.process_time()
        asyncio.run(run(decisions))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        threads_after, io_after = thread_cpu(), io_bytes()
        gc.callbacks.remove(timed)
        log.close()
        data.close()
    per = 1e6 / decisions
    threads = {}
    for name, (user, system) in threads_after.items():
        before = threads_before.get(name, (0.0, 0.0))
        threads[name] = ((user - before[0]) * per, (system - before[1]) * per)
    return {
        "per_second": decisions / wall,
        "cpu_us": cpu * per,
        "threads": threads,
        "written_kb": (io_after[0] - io_before[0]) / decisions / 1000,
        "read_kb": (io_after[1] - io_before[1]) / decisions / 1000,
        "gc_us": collected[0] * per,
    }


def show(name: str, run: dict[str, Any], what: str) -> None:
    threads = ", ".join(
        f"{thread} {user:.0f}+{system:.0f}"
        for thread, (user, system) in sorted(run["threads"].items())
        if user + system >= 1
    )
    print(
        f"{name}: {run['per_second']:,.0f}/s, {run['cpu_us']:,.0f} µs CPU per {what}"
        f" (user+system by thread: {threads}); {run['written_kb']:.1f} KB written,"
        f" {run['read_kb']:.1f} KB read, {run['gc_us']:.0f} µs in the collector",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--decisions", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare", type=Path, metavar="DIR")
    parser.add_argument("--renewals", action="store_true", help="renew, do not request")
    parser.add_argument(
        "--in-flight", type=int, default=IN_FLIGHT, help="requests at once (1: batches of one)"
    )
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child run: print the figures as JSON
        print(json.dumps(measure(args.decisions, args.renewals, args.in_flight)))
        return
    trees = [("this tree", HERE.parent)]
    if args.compare is not None:
        trees.append((f"{args.compare}", args.compare.resolve()))
    print(f"load at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    for _ in range(args.rounds):
        for name, tree in trees:
            argv = [sys.executable, str(HERE / "inprocess_bench.py"), "--one"]
            argv += ["--decisions", str(args.decisions), "--in-flight", str(args.in_flight)]
            argv += ["--renewals"] * args.renewals
            env = {**os.environ, "PYTHONPATH": str(tree)}
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            what = "renewal" if args.renewals else "decision"
            show(name, json.loads(done.stdout.strip().splitlines()[-1]), what)
    print(f"load at end: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
