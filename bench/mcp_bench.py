"""MCP gateway benchmark: what governing a tool call adds; prints figures, asserts nothing.

For each upstream, ``--calls`` sequential ``tools/call`` requests (after
``--warmup``) from the official ``mcp`` client, first straight to the
server, then through `lictor mcp` governing it against a real
``lictor serve`` (SQLite, in a temporary directory, on loopback):

- stdio: ``mcp-server-time`` (``get_current_time`` in UTC), launched
  directly, and wrapped by ``lictor mcp -- python -m mcp_server_time``;
- http: the tests' Streamable HTTP peer (``tests/mcp/peer.py``, tool
  ``echo``), directly, and fronted by ``lictor mcp --upstream ... --listen ...``.

Per path: median, p99 and throughput; then the added latency (median and
p99 of gateway minus direct; the target is <= 2 ms at the median). Over stdio
the same calls also go through the floor (``bench/reference/mcp_floor.py``, a
relay in as little Python as possible that asks ``bench/reference/reference.py``
for each call's decision): what governing a call adds with nothing more. The
three stdio paths are open at once and driven in turn, ``--rounds`` times, and
the added latency of the gateway and of the floor is printed round by round
with their ratio: on a shared machine a busy moment then falls on both. It
prints the CPU time each process spent per call (gateway or relay, upstream,
control plane or reference, this client; from ``/proc/<pid>/stat``): where
they share the cores, that CPU is what the added latency is made of. To tell
the gateway's own work from the control plane's, it last times the decision a
call waits for, in turn with the reference's: ``POST /v1/executions`` as the
gateway sends it (a child of a session, through `lictor.sdk.AsyncClient`,
completed in brief batches) and the floor relay's request to the reference.

Run: ``.venv/bin/python bench/mcp_bench.py [--calls 500] [--warmup 50]
[--rounds 5] [--only stdio|http]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import mcp_types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from lictor.cli.main import main as lictor
from lictor.core.tools import definition_hash
from lictor.sdk import AsyncClient

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "bench" / "reference"
PEER = REPO / "tests" / "mcp" / "peer.py"
PRINCIPAL = 'Agent::"planner-7"'
TARGET_MS = 2.0
COMPLETED_TOGETHER = 15  # about what a gateway's 50 ms window gathers at these speeds
SCHEMA = """
entity Team;
entity Agent in [Team];
entity McpServer;
entity Tool;
action mcp_session appliesTo { principal: Agent, resource: McpServer };
action call_tool appliesTo {
  principal: Agent, resource: Tool,
  context: { arguments: { timezone?: String, text?: String } },
};
"""
POLICY = """
permit (principal in Team::"agents", action == Action::"mcp_session", resource);
permit (
  principal in Team::"agents",
  action == Action::"call_tool",
  resource == Tool::"mcp-time/get_current_time"
) when { context.arguments has timezone && context.arguments.timezone == "UTC" };
permit (principal in Team::"agents", action == Action::"call_tool", resource)
when { [Tool::"peer/echo", Tool::"bench/noop"].contains(resource) };
"""
ENTITIES = """[
  {"uid": {"type": "Team", "id": "agents"}, "attrs": {}, "parents": []},
  {"uid": {"type": "Agent", "id": "planner-7"}, "attrs": {},
   "parents": [{"type": "Team", "id": "agents"}]}
]"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(ready: Callable[[], bool], process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        with contextlib.suppress(OSError, httpx.HTTPError):
            if ready():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{process.args} did not start")


def listening(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), 0.5):
        return True


def cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if lictor(list(argv)) != 0:
            raise RuntimeError(f"lictor {' '.join(argv)} failed")
    return out.getvalue()


class Plane:
    """A `lictor serve` on SQLite in ``root``, the bench policy active, a runtime."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        data = root / "data"
        argv = [sys.executable, "-m", "lictor.cli.main", "serve", "--data-dir", str(data)]
        argv += ["--workers", "1"]
        self.process = subprocess.Popen(
            [*argv, "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: httpx.get(self.url + "/healthz").status_code == 200, self.process)
        self.secret = self._govern(root, (data / "admin.token").read_text().strip())

    def _govern(self, root: Path, admin: str) -> str:
        policies = root / "policies"
        policies.mkdir()
        (policies / "bench.cedarschema").write_text(SCHEMA)
        (policies / "bench.cedar").write_text(POLICY)
        (root / "entities.json").write_text(ENTITIES)
        os.environ.update(LICTOR_URL=self.url, LICTOR_CREDENTIAL=admin)
        version = cli("policy", "push", str(policies)).split()[1]
        cli("entity", "put", str(root / "entities.json"))
        cli("policy", "activate", version)
        out = cli("runtime", "add", "bench-1", "--region", "eu", "--cluster", "c1")
        secret = out.split("credential (shown once): ")[1].strip()
        httpx.post(
            f"{self.url}/v1/runtimes/bench-1/heartbeat",
            json={"attestation": {"state": "verified"}},
            headers={"Authorization": f"Bearer {secret}"},
        ).raise_for_status()
        os.environ["LICTOR_CREDENTIAL"] = secret
        os.environ.pop("LICTOR_GRANT", None)
        return secret

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


@contextlib.asynccontextmanager
async def over_stdio(argv: list[str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
    async with stdio_client(params, errlog=sys.stderr) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        yield s


@contextlib.asynccontextmanager
async def over_http(url: str) -> AsyncIterator[ClientSession]:
    async with streamable_http_client(url) as (r, w), ClientSession(r, w) as s:
        await s.initialize()
        yield s


async def timed(
    session: ClientSession, name: str, arguments: dict[str, str], calls: int, warmup: int
) -> tuple[list[float], float]:
    """Latencies (ms) of ``calls`` sequential calls after ``warmup``, and the wall time (s)."""
    request = types.CallToolRequest(
        params=types.CallToolRequestParams(name=name, arguments=arguments)
    )
    for _ in range(warmup):
        await session.send_request(request, types.CallToolResult)
    latencies: list[float] = []
    started = time.perf_counter()
    for _ in range(calls):
        sent = time.perf_counter()
        result = await session.send_request(request, types.CallToolResult)
        latencies.append((time.perf_counter() - sent) * 1000)
        if result.is_error:
            raise RuntimeError(f"{name} failed: {result.content}")
    return latencies, time.perf_counter() - started


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def processes(parent: int | None = None, **prefixes: str) -> dict[str, int]:
    """The pid of a process whose command line starts with each prefix (a child of
    ``parent``, if given)."""
    found: dict[str, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if parent is not None and ppid != parent:
            continue
        for name, prefix in prefixes.items():
            if command.startswith(prefix):
                found[name] = int(entry)
    return found


class CpuMeter:
    """CPU time per call of named processes over a measured run."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.start = {name: cpu_seconds(pid) for name, pid in pids.items()}

    def per_call(self, calls: int) -> str:
        spent = {n: cpu_seconds(p) - self.start[n] for n, p in self.pids.items()}
        parts = "   ".join(f"{n} {1000 * t / calls:.2f}" for n, t in spent.items())
        return f"  {'CPU ms per call, through':28} {parts}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def report(label: str, latencies: list[float], wall: float) -> None:
    median, p99 = statistics.median(latencies), percentile(latencies, 99)
    rate = len(latencies) / wall
    print(f"  {label:28} median {median:7.3f} ms   p99 {p99:7.3f} ms   {rate:8.1f} calls/s")


def added(direct: list[float], gateway: list[float]) -> None:
    median = statistics.median(gateway) - statistics.median(direct)
    p99 = percentile(gateway, 99) - percentile(direct, 99)
    verdict = "PASS" if median <= TARGET_MS else "MISS"
    print(f"  {'added by the gateway':28} median {median:7.3f} ms   p99 {p99:7.3f} ms", end="")
    print(f"   (target <= {TARGET_MS} ms at the median: {verdict})")


async def control_plane(plane: Plane, root: Path, calls: int, warmup: int, rounds: int) -> None:
    """What a governed call waits for at the control plane, beside what the floor relay
    waits for at the reference, in turn, ``rounds`` times: Lictor's request as the gateway
    sends it (a child of a session, with the tool's definition; completed afterwards in
    brief batches of `COMPLETED_TOGETHER`, as the gateway completes), and the reference's
    decision as `bench/reference/mcp_floor.py` asks for it."""
    sys.path.insert(0, str(REFERENCE))
    from mcp_floor import Decider  # type: ignore[import-not-found]

    async with AsyncClient(plane.url, plane.secret, events=False) as client:
        session = await client.request(
            PRINCIPAL, 'Action::"mcp_session"', {"type": "McpServer", "id": "bench"}, ttl=3600
        )
        grant = session["grant"]
        noop = {"name": "noop", "description": "Nothing.", "inputSchema": {"type": "object"}}
        await client.observe_tools("bench", [noop])
        ask = (PRINCIPAL, 'Action::"call_tool"', {"type": "Tool", "id": "bench/noop"})
        context, definition = {"arguments": {"text": "x"}}, definition_hash(noop)
        pending: list[dict[str, Any]] = []

        async def lictor() -> None:
            reply = await client.request(*ask, context, grant, definition=definition)
            pending.append({"execution": reply["execution"]["id"], "outcome": "succeeded"})
            if len(pending) >= COMPLETED_TOGETHER:
                await client.complete_many(pending, brief=True)
                pending.clear()

        with reference_server(root, "decisions.db") as (url, token, pid):
            decider = Decider(url, token)

            async def reference() -> None:
                if not await decider.allowed():
                    raise RuntimeError("the reference denied the bench's decision")

            sides = {"lictor": (lictor, plane.process.pid), "reference": (reference, pid)}
            seen: dict[str, list[float]] = {name: [] for name in sides}
            medians: dict[str, list[float]] = {name: [] for name in sides}
            cpu = dict.fromkeys(sides, 0.0)
            for call, _ in sides.values():
                for _ in range(warmup):
                    await call()
            per_round = max(1, calls // rounds)
            for _ in range(rounds):
                for name, (call, server) in sides.items():
                    before, latencies = cpu_seconds(server), []
                    for _ in range(per_round):
                        sent = time.perf_counter()
                        await call()
                        latencies.append((time.perf_counter() - sent) * 1000)
                    cpu[name] += cpu_seconds(server) - before
                    seen[name] += latencies
                    medians[name].append(statistics.median(latencies))
    print(f"the decision a call waits for, {per_round * rounds} each in {rounds} rounds:")
    labels = {"lictor": "lictor serve (a call's request)", "reference": "the reference's decision"}
    for name, latencies in seen.items():
        report(labels[name], latencies, sum(latencies) / 1000)
    share = "   ".join(f"{n} {1000 * t / len(seen[n]):.2f}" for n, t in cpu.items())
    print(f"  {'server CPU ms per call':28} {share}   (Lictor's with its completion)")
    ratios = (a / b for a, b in zip(medians["lictor"], medians["reference"], strict=True))
    print("  ratio of the medians, round by round: " + "  ".join(f"{r:.2f}" for r in ratios))


@contextlib.contextmanager
def reference_server(root: Path, db: str) -> Iterator[tuple[str, str, int]]:
    """`bench/reference/reference.py` serving on loopback: its URL, token and pid."""
    port, token = free_port(), "mcp-floor-token"
    argv = [sys.executable, str(REFERENCE / "reference.py"), "serve", str(port)]
    environment = {**os.environ, "REF_TOKEN": token}
    server = subprocess.Popen([*argv, str(root / db)], env=environment, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(port), server)
        yield f"http://127.0.0.1:{port}", token, server.pid
    finally:
        server.terminate()
        server.wait(30)


class Way:
    """One way to the tool: its session, its latencies and the CPU its processes spent."""

    def __init__(self, session: ClientSession, pids: dict[str, int]) -> None:
        self.session, self.pids = session, pids
        self.latencies: list[float] = []
        self.wall = 0.0
        self.cpu = dict.fromkeys(pids, 0.0)
        self.medians: list[float] = []

    async def round(self, arguments: dict[str, str], calls: int) -> None:
        before = {n: cpu_seconds(p) for n, p in self.pids.items()}
        latencies, wall = await timed(self.session, "get_current_time", arguments, calls, 0)
        for name, pid in self.pids.items():
            self.cpu[name] += cpu_seconds(pid) - before[name]
        self.latencies += latencies
        self.wall += wall
        self.medians.append(statistics.median(latencies))

    def cpu_line(self, label: str) -> str:
        calls = len(self.latencies)
        parts = "   ".join(f"{n} {1000 * t / calls:.2f}" for n, t in self.cpu.items())
        return f"  {label:28} {parts}"


async def bench_stdio(plane: Plane, root: Path, calls: int, warmup: int, rounds: int) -> None:
    """Direct, through `lictor mcp` and through the floor relay, all three open at once
    and driven in turn, ``rounds`` times: a busy moment falls on all three alike."""
    direct_argv = [sys.executable, "-m", "mcp_server_time", "--local-timezone", "UTC"]
    gateway_argv = [sys.executable, "-m", "lictor.cli.main", "mcp", "--principal", PRINCIPAL]
    gateway_argv += ["--", *direct_argv]
    arguments = {"timezone": "UTC"}
    me = {"client": os.getpid()}
    upstream = " ".join(direct_argv[:3])
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(over_stdio(direct_argv))
        direct = Way(session, {**processes(os.getpid(), upstream=upstream), **me})
        session = await stack.enter_async_context(over_stdio(gateway_argv))
        found = processes(os.getpid(), gateway=" ".join(gateway_argv[:4]))
        found.update(processes(found["gateway"], upstream=upstream))
        pids = {**found, "control plane": plane.process.pid, **me}
        gateway = Way(session, pids)
        relay, reference = stack.enter_context(floor_relay(root, direct_argv))
        session = await stack.enter_async_context(over_stdio(relay))
        found = processes(os.getpid(), relay=" ".join(relay[:2]))
        found.update(processes(found["relay"], upstream=upstream))
        floor = Way(session, {**found, "reference": reference, **me})
        paths = (direct, gateway, floor)
        for path in paths:
            await timed(path.session, "get_current_time", arguments, warmup, 0)
        per_round = max(1, calls // rounds)
        for _ in range(rounds):
            for path in paths:
                await path.round(arguments, per_round)
    print(f"stdio: mcp-server-time get_current_time, {per_round * rounds} calls after {warmup}")
    print(f"each, in {rounds} rounds of direct, through lictor mcp, through the floor relay:")
    report("direct", direct.latencies, direct.wall)
    report("through lictor mcp", gateway.latencies, gateway.wall)
    added(direct.latencies, gateway.latencies)
    print(gateway.cpu_line("CPU ms per call, through"))
    report("through the floor relay", floor.latencies, floor.wall)
    median = statistics.median(floor.latencies) - statistics.median(direct.latencies)
    print(f"  {'added by the floor relay':28} median {median:7.3f} ms   (the reference's decision)")
    print(floor.cpu_line("CPU ms per call, floor"))
    ours = [g - d for g, d in zip(gateway.medians, direct.medians, strict=True)]
    floors = [f - d for f, d in zip(floor.medians, direct.medians, strict=True)]
    print("  added at the median, round by round (ms):")
    print("    lictor mcp   " + "  ".join(f"{x:6.3f}" for x in ours))
    print("    floor relay  " + "  ".join(f"{x:6.3f}" for x in floors))
    ratios = (o / f for o, f in zip(ours, floors, strict=True))
    print("    ratio        " + "  ".join(f"{r:6.2f}" for r in ratios))


@contextlib.contextmanager
def floor_relay(root: Path, upstream: list[str]) -> Iterator[tuple[list[str], int]]:
    """The command of `bench/reference/mcp_floor.py` relaying to ``upstream`` and deciding
    with a `reference_server`: the floor of what governing a call can add. Yields the
    relay's command and the reference's pid."""
    with reference_server(root, "floor.db") as (url, token, pid):
        yield [sys.executable, str(REFERENCE / "mcp_floor.py"), url, token, "--", *upstream], pid


async def bench_http(plane: Plane, root: Path, calls: int, warmup: int) -> None:
    peer_port, gateway_port = free_port(), free_port()
    peer_argv = [sys.executable, str(PEER), "--port", str(peer_port), "--root", str(root)]
    upstream = f"http://127.0.0.1:{peer_port}/mcp"
    gateway_argv = [sys.executable, "-m", "lictor.cli.main", "mcp", "--principal", PRINCIPAL]
    gateway_argv += ["--upstream", upstream, "--listen", f"127.0.0.1:{gateway_port}"]
    peer = subprocess.Popen(peer_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    gateway = subprocess.Popen(gateway_argv, stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: listening(peer_port), peer)
        wait_until(lambda: listening(gateway_port), gateway)
        async with over_http(upstream) as s:
            direct = await timed(s, "echo", {"text": "x"}, calls, warmup)
        async with over_http(f"http://127.0.0.1:{gateway_port}/mcp") as s:
            await timed(s, "echo", {"text": "x"}, warmup, 0)
            pids = {"gateway": gateway.pid, "upstream": peer.pid}
            meter = CpuMeter({**pids, "control plane": plane.process.pid, "client": os.getpid()})
            through = await timed(s, "echo", {"text": "x"}, calls, 0)
            cpu = meter.per_call(calls)
    finally:
        for process in (gateway, peer):
            process.terminate()
            process.wait(30)
    print(f"Streamable HTTP: test peer echo, {calls} calls after {warmup}:")
    report("direct", *direct)
    report("through lictor mcp", *through)
    added(direct[0], through[0])
    print(cpu)


async def run(args: argparse.Namespace, root: Path, plane: Plane) -> None:
    steps: list[Callable[[], Awaitable[None]]] = []
    if args.only in (None, "stdio"):
        steps.append(lambda: bench_stdio(plane, root, args.calls, args.warmup, args.rounds))
    if args.only in (None, "http"):
        steps.append(lambda: bench_http(plane, root, args.calls, args.warmup))
    for step in steps:
        await step()
        print()
    await control_plane(plane, root, args.calls, args.warmup, args.rounds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="stdio: interleaved rounds")
    parser.add_argument("--only", choices=("stdio", "http"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcp-bench-") as tmp:
        root = Path(tmp)
        plane = Plane(root)
        try:
            print(f"control plane: lictor serve on SQLite in {root}, {os.cpu_count()} CPUs\n")
            asyncio.run(run(args, root, plane))
        finally:
            plane.stop()


if __name__ == "__main__":
    main()
