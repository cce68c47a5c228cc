"""Replica benchmark: decisions over HTTP on SQLite, and on PostgreSQL with one and two replicas.

Prints figures, asserts nothing. Each configuration runs real ``lictor serve``
processes (the example policy set, one verified runtime) and 32 client
threads, each on its own keep-alive connection, making ``POST
/v1/executions`` calls (the same request mix as `decide_bench`); with two
replicas the threads alternate between them (a round-robin client). For each:
median and p99 latency, decisions per second, and the CPU of every server
process and of PostgreSQL (as a share of one core, from ``/proc``), so the
saturated process is visible.

PostgreSQL is a throwaway server started from Debian's binaries
(``tests/postgres.py``), as the tests do.

All three configurations run at once, idle but for their turn, and take
turns for ``--rounds`` rounds, so a slow moment of the machine hits them
alike; the verdicts compare each configuration's median round.

Run: ``.venv/bin/python bench/replica_bench.py [--calls N] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
from decide_bench import (
    THREADS,
    KeepAlive,
    Run,
    Server,
    bodies,
    example_scenario,
    expected_allows,
    free_port,
    govern,
    measure,
    percentile,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from postgres import PostgresServer

SHARED = ("log.key", "grant.key", "admin.token")
LEASE_S = 3600


@contextlib.contextmanager
def replicas(count: int, database: str | None) -> Iterator[tuple[list[Server], str]]:
    """``count`` servers (one on SQLite when ``database`` is None), set up; their runtime secret."""
    with tempfile.TemporaryDirectory(prefix="lictor-replicas-") as tmp:
        servers: list[Server] = []
        try:
            for n in range(count):
                directory = Path(tmp) / f"r{n}"
                directory.mkdir()
                options = ("--database", database) if database else ()
                server = Server(directory, options)
                if n:
                    server.data_dir.mkdir(mode=0o700)
                    for name in SHARED:
                        shutil.copy2(servers[0].data_dir / name, server.data_dir / name)
                server.start()
                servers.append(server)
            with httpx.Client(base_url=servers[0].url, timeout=60) as client:
                secret = govern(client, servers[0].token, example_scenario())
            yield servers, secret
        finally:
            for server in servers:
                server.stop()


def process_tree_cpu(pid: int) -> float:
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[1]) == pid or int(entry) == pid:
            total += (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
    return total


def long_leases(payloads: list[bytes]) -> list[bytes]:
    """The requests with hour-long leases: no configuration's reaper expires leases
    while another configuration takes its turn."""
    return [json.dumps({**json.loads(p), "ttl": LEASE_S}).encode() for p in payloads]


def run(label: str, servers: Sequence[Server], secret: str, per_thread: int) -> Run:
    payloads, allowed = long_leases(bodies()), expected_allows(example_scenario())
    auth = {"Authorization": f"Bearer {secret}"}
    slots = iter(range(10**9))

    @contextlib.contextmanager
    def opener() -> Iterator[object]:
        client = KeepAlive(servers[next(slots) % len(servers)].url, auth)
        try:
            yield (
                lambda i: (
                    client.status("POST", "/v1/executions", payloads[i % len(payloads)])
                    == (201 if allowed[i % len(payloads)] else 403)
                )
            )
        finally:
            client.close()

    return measure(label, opener, THREADS, per_thread)  # type: ignore[arg-type]


def report(result: Run, cpu: dict[str, float]) -> None:
    median = statistics.median(result.latencies) * 1000
    p99 = percentile(result.latencies, 99) * 1000
    print(
        f"  {result.label:<34} {result.concurrency:>4} {len(result.latencies):>6,}"
        f" {result.errors:>4} {median:>8.2f} {p99:>8.2f} {result.per_second:>8,.0f}"
    )
    if result.first_error:
        print(f"       first error: {result.first_error[:150]}")
    shares = [f"{name} {seconds / result.seconds * 100:.0f}" for name, seconds in cpu.items()]
    if shares:
        print(f"       cpu % of one core: {'; '.join(shares)}")


def cpu_of(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each named process and its children (PostgreSQL's backends)."""
    return {name: process_tree_cpu(pid) for name, pid in pids.items()}


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=60, help="calls per thread per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, configurations interleaved")
    args = parser.parse_args(argv)
    print(
        f"replica_bench: {THREADS} threads, {args.calls} decisions each, {args.rounds} rounds"
        f" (the configurations take turns), cpus {os.cpu_count()}"
    )
    print(
        f"  {'configuration':<34} {'conc':>4} {'calls':>6} {'err':>4} {'p50 ms':>8}"
        f" {'p99 ms':>8} {'per s':>8}"
    )
    rounds: dict[str, list[Run]] = {}
    with contextlib.ExitStack() as stack:
        pg = PostgresServer(free_port()).start()
        stack.callback(pg.stop)
        postmaster = {"postgres": int((pg.data / "postmaster.pid").read_text().split()[0])}
        configurations = {
            SQLITE: (stack.enter_context(replicas(1, None)), {}),
            ONE: (stack.enter_context(replicas(1, pg.database())), postmaster),
            TWO: (stack.enter_context(replicas(2, pg.database())), postmaster),
        }
        for n in range(args.rounds):
            print(f"  round {n + 1}")
            for label, ((servers, secret), extra) in configurations.items():
                pids = {f"server {i}": s.probe.pid for i, s in enumerate(servers)} | extra
                before = cpu_of(pids)
                result = run(label, servers, secret, args.calls)
                after = cpu_of(pids)
                report(result, {name: after[name] - before[name] for name in pids})
                rounds.setdefault(label, []).append(result)
    print("  median round of each configuration")
    medians = {label: _median_round(runs) for label, runs in rounds.items()}
    for result in medians.values():
        report(result, {})
    _verdict(
        "two replicas / one replica", rounds[TWO], rounds[ONE], medians[TWO], medians[ONE], 1.2
    )
    _verdict(
        "PostgreSQL one replica / SQLite",
        rounds[ONE],
        rounds[SQLITE],
        medians[ONE],
        medians[SQLITE],
        0.7,
    )
    return 0


SQLITE, ONE, TWO = "SQLite, one server", "PostgreSQL, 1 replica", "PostgreSQL, 2 replicas"


def _median_round(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.per_second)[len(runs) // 2]


def _verdict(
    what: str, tops: list[Run], bottoms: list[Run], top: Run, bottom: Run, target: float
) -> None:
    """The ratio of the median rounds against ``target``, and its range over the rounds."""
    ratio = top.per_second / bottom.per_second
    each = [t.per_second / b.per_second for t, b in zip(tops, bottoms, strict=True)]
    print(
        f"  {what}: {ratio:.2f}x (rounds {min(each):.2f}x to {max(each):.2f}x;"
        f" target >= {target}x: {'PASS' if ratio >= target else 'MISS'})"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
