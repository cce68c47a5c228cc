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

``--asgi`` measures the whole hot route instead: ``POST /v1/executions`` handed to
the ASGI app as uvicorn would hand it (the body read, the answer sent), with no
socket, beside the same route of the floor of Lictor's work
(``bench/reference/decision_floor.py``) and of the reference, each in fresh
processes in turn. It adds, for each, the function calls a request makes on the
event loop's thread (cProfile's count, in a shorter pass of its own): what the
floor shows Lictor's code spends beyond its work, without the network's noise.

Run: ``.venv/bin/python bench/inprocess_bench.py [--decisions N] [--rounds R]
[--compare DIR] [--renewals | --asgi]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference"
DATA = REFERENCE / "data"
TOKEN = "inprocess-bench-token"  # the yardsticks' bearer credential
YARDSTICKS = {"floor": "decision_floor", "reference": "reference"}
PROFILED = 500  # requests in the pass that counts calls
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


def lictor_app(root: Path) -> tuple[Any, Any, Any, str]:
    """Lictor's app over a fresh data directory in ``root``, loaded like
    ``bench/http_bench.py``'s: the app, its log, its data directory and the runtime's
    credential."""
    from fastapi.testclient import TestClient

    from lictor.datadir import open_data_dir
    from lictor.policydir import load_policy_dir
    from lictor.server.app import create_app
    from lictor.service.log import AuditLog
    from lictor.service.policies import source_json

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
    return app, log, data, secret


def yardstick_app(module_name: str, db: Path) -> Any:
    """The one-process ASGI app of the floor or the reference, committing to ``db``."""
    os.environ["REF_TOKEN"] = TOKEN
    sys.path.insert(0, str(REFERENCE))
    module = importlib.import_module(module_name)
    if module_name == "decision_floor":
        return module.in_process_app(str(db))
    loop: list[asyncio.AbstractEventLoop] = []  # the reference, wired as its `serve` wires it

    def deliver(out: list[Any], size: int, note: str) -> None:
        def settle() -> None:
            for future, index, proof in out:
                future.set_result((index, proof, size, note))

        loop[0].call_soon_threadsafe(settle)

    committer = module.Committer(str(db), deliver)

    async def submit(parts: Any) -> Any:
        if not loop:
            loop.append(asyncio.get_running_loop())
        future = loop[0].create_future()
        committer.submit((parts[0], parts[1], parts[2], parts[3], future))
        return await future

    return module.make_app(submit)


def asgi_caller(app: Any, credential: str) -> Callable[[], Awaitable[None]]:
    """One ``POST /v1/executions`` to ``app`` with the reference's body, as uvicorn
    hands it over; the answer must be 201."""
    body = (DATA / "body.json").read_text().strip().encode()
    headers = [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer " + credential.encode()),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/executions",
        "raw_path": b"/v1/executions",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }

    async def call() -> None:
        sent: list[int] = []

        async def receive() -> dict[str, Any]:
            if not sent:
                sent.append(0)
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # a client that stays: never a disconnect
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                assert message["status"] == 201, f"answered {message['status']}"

        await app(dict(scope, state={}), receive, send)

    return call


def measure(
    decisions: int, renewals: bool = False, in_flight: int = IN_FLIGHT, asgi: str | None = None
) -> dict[str, Any]:
    """One run in this process (of whichever checkout ``sys.path`` imports): Lictor's
    service (``asgi`` None), or the hot route of ``asgi`` (lictor, floor, reference)."""
    with tempfile.TemporaryDirectory(prefix="lictor-inprocess-") as tmp:
        root = Path(tmp)
        closing: list[Callable[[], None]] = []
        if asgi in YARDSTICKS:
            one = asgi_caller(yardstick_app(YARDSTICKS[asgi], root / "yardstick.db"), TOKEN)
        else:
            app, log, data, secret = lictor_app(root)
            closing += [log.close, data.close]
            one = asgi_caller(app, secret) if asgi else service_caller(app, renewals)
        figures = _loop_run(asgi)(_measured(one, decisions, in_flight, count_calls=bool(asgi)))
        for close in closing:
            close()
    return figures


def service_caller(app: Any, renewals: bool) -> Callable[[], Awaitable[None]]:
    """One request (or renewal) through `Executions`, with no HTTP."""
    from lictor.core.types import EntityRef
    from lictor.service.executions import Ask

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
    turn = [0]

    async def call() -> None:
        if renewals:
            turn[0] += 1
            outcome = await executions.renew_async(held[turn[0] % HELD], "bench-rt", ask.ttl_ms)
        else:
            outcome = await executions.request_async(ask)
        assert outcome.grant, "the reference's request is allowed, and renewed"

    return call


async def _run(one: Callable[[], Awaitable[None]], count: int, in_flight: int) -> None:
    slots = asyncio.Semaphore(in_flight)

    async def slot() -> None:
        async with slots:
            await one()

    await asyncio.gather(*(slot() for _ in range(count)))


def _loop_run(asgi: str | None) -> Callable[[Awaitable[Any]], Any]:
    """How a run gets its event loop: uvloop's for a hot route (as each server runs
    it), asyncio's for the service alone (as this bench always has)."""
    if asgi is None:
        return asyncio.run
    import uvloop

    return uvloop.run


async def _measured(
    one: Callable[[], Awaitable[None]], decisions: int, in_flight: int, count_calls: bool
) -> dict[str, Any]:
    """Figures per call of ``one``, ``in_flight`` at once, after a warm-up, all on one
    event loop (the yardsticks keep the loop their first request ran on)."""
    from lictor.cli.serve import settle_collector

    await _run(one, 300, in_flight)  # warm up
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
    await _run(one, decisions, in_flight)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    threads_after, io_after = thread_cpu(), io_bytes()
    gc.callbacks.remove(timed)
    per = 1e6 / decisions
    threads = {}
    for name, (user, system) in threads_after.items():
        before = threads_before.get(name, (0.0, 0.0))
        threads[name] = ((user - before[0]) * per, (system - before[1]) * per)
    figures = {
        "per_second": decisions / wall,
        "cpu_us": cpu * per,
        "threads": threads,
        "written_kb": (io_after[0] - io_before[0]) / decisions / 1000,
        "read_kb": (io_after[1] - io_before[1]) / decisions / 1000,
        "gc_us": collected[0] * per,
    }
    if count_calls:
        figures["calls"] = await _calls(one, in_flight)
    return figures


async def _calls(one: Callable[[], Awaitable[None]], in_flight: int) -> float:
    """Function calls per call of ``one`` on this (the event loop's) thread, as cProfile
    counts them (its own and built-in functions alike)."""
    profile = cProfile.Profile()
    profile.enable()
    try:
        await _run(one, PROFILED, in_flight)
    finally:
        profile.disable()
    return sum(entry.callcount for entry in profile.getstats()) / PROFILED


def show(name: str, run: dict[str, Any], what: str) -> None:
    threads = ", ".join(
        f"{thread} {user:.0f}+{system:.0f}"
        for thread, (user, system) in sorted(run["threads"].items())
        if user + system >= 1
    )
    print(
        f"{name}: {run['per_second']:,.0f}/s, {run['cpu_us']:,.0f} µs CPU per {what}"
        f" (user+system by thread: {threads}); {run['written_kb']:.1f} KB written,"
        f" {run['read_kb']:.1f} KB read, {run['gc_us']:.0f} µs in the collector"
        + (f"; {run['calls']:.0f} calls per request on the event loop" if "calls" in run else ""),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--decisions", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--compare", type=Path, metavar="DIR")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--renewals", action="store_true", help="renew, do not request")
    mode.add_argument(
        "--asgi", action="store_true", help="the whole hot route, beside the floor and reference"
    )
    parser.add_argument(
        "--in-flight", type=int, default=IN_FLIGHT, help="requests at once (1: batches of one)"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # a child run: lictor|floor|reference
    args = parser.parse_args()
    if args.one:  # a child run: print the figures as JSON
        asgi = args.one if args.asgi else None
        print(json.dumps(measure(args.decisions, args.renewals, args.in_flight, asgi)))
        return
    runs = [("this tree", HERE.parent, "lictor")]
    if args.compare is not None:
        runs.append((f"{args.compare}", args.compare.resolve(), "lictor"))
    if args.asgi:
        runs += [(target, HERE.parent, target) for target in YARDSTICKS]
    what = "renewal" if args.renewals else "decision"
    print(f"load at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    for _ in range(args.rounds):
        figures = {}
        for name, tree, target in runs:
            argv = [sys.executable, str(HERE / "inprocess_bench.py"), "--one", target]
            argv += ["--decisions", str(args.decisions), "--in-flight", str(args.in_flight)]
            argv += ["--renewals"] * args.renewals + ["--asgi"] * args.asgi
            env = {**os.environ, "PYTHONPATH": str(tree)}
            done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
            figures[name] = json.loads(done.stdout.strip().splitlines()[-1])
            show(name, figures[name], what)
        if args.asgi:
            ours, floor = figures["this tree"], figures["floor"]
            print(
                f"  this round, this tree / floor: {ours['per_second'] / floor['per_second']:.2f}x"
                f" the throughput, {ours['cpu_us'] / floor['cpu_us']:.2f}x the CPU,"
                f" {ours['calls'] / floor['calls']:.2f}x the calls",
                flush=True,
            )
    print(f"load at end: {os.getloadavg()[0]:.2f} (1 min)")


if __name__ == "__main__":
    main()
