"""Decision-path benchmark: from bare Cedar to HTTP; prints figures, asserts nothing.

What it measures, for the example policy set (``examples/policies``, entities
from ``examples/entities.json``) and for a generated set of 200 policies over
the same schema (the example's 9 plus per-agent permits on specific
resources, team permits with ``when`` conditions and forbids with ``when``
conditions, over ~270 entities), always with the same request mix (the
README's table: 6 allows, 2 denies, from runtime ``edge-eu`` in eu-west-1
with a verified attestation):

1. The floor: `cedarpy.is_authorized` with pre-parsed handles (`PolicySet`,
   `Entities`, `Schema`) on exactly the requests `decide` builds (context
   ``lictor`` included), with the whole set and with the action's slice; a
   breakdown without the schema (no request validation) and without context;
   the slice with 32 threads (cedarpy releases the GIL).
2. `lictor.core.policy.decide` alone (sliced), 1 and 32 threads.
3. The in-process decision with durable log and receipt,
   ``Executions.request(Ask(...))`` on a real SQLite data directory
   (`lictor.datadir.open_data_dir` in a temporary directory, services built by
   `lictor.server.app.create_app`, set up through the HTTP API like the
   ``governed`` test fixture): 1 caller, and 32 concurrent callers (threads)
   whose commands share group commits.
4. HTTP over loopback with keep-alive (one `http.client` connection per worker thread)
   against a real ``python -m lictor.cli.main serve`` subprocess set up over
   HTTP: ``POST /v1/executions`` and the no-op ``GET /healthz``, at
   concurrency 1 and 32.
5. Revocation while another thread decides (in process, example set): one
   cascade revoke of a root with many children, and 10,000 roots revoked one
   by one by one thread (within a time budget); decision latency before and
   during each.

Under every run: CPU time as a share of one core, read from
``/proc/<pid>/stat`` and ``/proc/<pid>/task/<tid>/stat`` (utime + stime), for
the committer thread, the server's event loop and the rest, so it shows which
thread saturates. Targets are printed beside the figures as PASS or MISS.

Run: ``.venv/bin/python bench/decide_bench.py``. Options: ``--quick`` for a
smoke test (< 20 s); ``--revoke N`` roots revoked one by one (default 10,000);
``--cascade N`` executions in the cascade (default 1,000: a cascade is planned
in one committer cycle, and its cost grows faster than linearly).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cedarpy
import httpx

from lictor.core.lease import DEFAULT_TTL_MS, MAX_TTL_MS
from lictor.core.policy import (
    CompiledEntities,
    CompiledPolicy,
    DecisionRequest,
    EntityRef,
    LineageFacts,
    PolicySource,
    RuntimeFacts,
    compile_entities,
    compile_policies,
    decide,
    lictor_context,
)
from lictor.core.policy_schema import CONTEXT_KEY
from lictor.core.types import ExecutionState
from lictor.datadir import TOKEN_FILE, open_data_dir
from lictor.policydir import load_policy_dir
from lictor.server.app import create_app
from lictor.service.executions import Ask, Executions
from lictor.service.log import AuditLog
from lictor.service.policies import source_json

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
ORIGIN = "bench.lictor.example/decide"
RUNTIME = {"name": "edge-eu", "region": "eu-west-1", "cluster": "prod-a"}
ATTESTATION = {"state": "verified"}
FACTS = RuntimeFacts("edge-eu", "eu-west-1", "prod-a", "verified", ())
THREADS = 32
JSON_TYPE = {"content-type": "application/json"}
TARGET_INPROC_MEDIAN_MS = 0.5
TARGET_INPROC_PER_S = 5_000.0
TARGET_HTTP_P50_MS = 1.0
TARGET_HTTP_PER_S = 3_000.0
SATURATED = 0.85  # a thread busy this share of the wall time is the bottleneck
MACHINE = "machine"
TICKS = os.sysconf("SC_CLK_TCK")

MIX = (  # (principal, action, resource type, resource id), the README's table
    ("planner-7", "deploy", "Service", "payments-api-staging"),  # allow
    ("planner-7", "deploy", "Service", "payments-api"),  # deny: not_permitted
    ("release-bot", "deploy", "Service", "payments-api"),  # allow
    ("analyst-3", "read", "Dataset", "customers-eu"),  # allow
    ("analyst-3", "read", "Dataset", "clickstream-us"),  # deny: data-stays-in-region
    ("etl-1", "write", "Dataset", "customers-eu"),  # allow
    ("planner-7", "call_tool", "Tool", "refund"),  # allow
    ("planner-7", "call_tool", "Tool", "web-search"),  # allow
)


@dataclass(frozen=True)
class Sizes:
    """How much work each part does (calls are per run; per_thread at 32 threads)."""

    floor: int
    floor_per_thread: int
    inproc: int
    inproc_per_thread: int
    http: int
    http_per_thread: int
    health: int
    health_per_thread: int
    cascade: int
    revoke: int
    revoke_budget_s: float
    baseline_s: float


FULL = Sizes(4_000, 125, 600, 50, 500, 40, 1_500, 100, 1_000, 10_000, 40.0, 2.0)
QUICK = Sizes(200, 6, 30, 2, 20, 2, 60, 3, 33, 100, 1.0, 0.2)


@dataclass(frozen=True)
class Scenario:
    """A policy set, its entities, and the request mix decided against it."""

    name: str
    source: PolicySource
    entities: list[dict[str, Any]]

    @property
    def policy_count(self) -> int:
        return len(compiled(self).policies)


@dataclass
class Run:
    """One measurement: per-call latencies (seconds), wall time, CPU shares."""

    label: str
    concurrency: int
    latencies: list[float]
    seconds: float
    errors: int
    first_error: str = ""
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    commits: int = 0

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


# --- policy sets ---------------------------------------------------------------


def example_scenario() -> Scenario:
    entities = json.loads((EXAMPLES / "entities.json").read_text())
    return Scenario("example policy set", load_policy_dir(EXAMPLES / "policies"), entities)


def generated_scenario(total: int = 200, seed: int = 200) -> Scenario:
    """The example set plus generated policies (``total`` in all) and entities."""
    example = example_scenario()
    rng = random.Random(seed)
    count = total - len(compiled(example).policies)
    agents, teams = count // 2, 20
    permits, team_rules = agents, (count - agents) // 2
    forbids = count - permits - team_rules
    files = {
        "generated-agents.cedar": "\n".join(_agent_permit(i, rng) for i in range(permits)),
        "generated-teams.cedar": "\n".join(_team_permit(i, teams) for i in range(team_rules)),
        "generated-forbids.cedar": "\n".join(_forbid(i, teams) for i in range(forbids)),
    }
    source = PolicySource.of(
        {**dict(example.source.policies), **files},
        example.source.schema_name,
        example.source.schema_text,
    )
    entities = example.entities + _generated_entities(teams)
    return Scenario(f"generated set of {total} policies", source, entities)


# Regions and clusters no request of the mix has, so the mix decides as before.
GEN_REGIONS = ("ap-south-1", "sa-east-1", "eu-north-1", "us-west-2")
RESOURCES = {"deploy": ("Service", "svc"), "read": ("Dataset", "ds"), "write": ("Dataset", "ds")}


def _agent_permit(i: int, rng: random.Random) -> str:
    action = ("deploy", "read", "write", "call_tool")[i % 4]
    kind, prefix = RESOURCES.get(action, ("Tool", "tool"))
    limit = 30 if kind == "Tool" else 50
    return (
        f'@id("gen-agent-{i:03d}")\n'
        f'permit (principal == Agent::"agent-{rng.randrange(100):03d}",'
        f' action == Action::"{action}",'
        f' resource == {kind}::"{prefix}-{rng.randrange(limit):03d}");\n'
    )


def _team_permit(i: int, teams: int) -> str:
    team, region = f"team-{i % teams:02d}", GEN_REGIONS[i % len(GEN_REGIONS)]
    scope = f'principal in Team::"{team}"'
    rules = (
        f'{scope}, action == Action::"deploy", resource)\n'
        f'when {{ resource.owner == Team::"{team}" && resource.region == "{region}" }}',
        f'{scope}, action == Action::"read", resource)\n'
        f'when {{ resource.environment == "staging" && resource.region == "{region}" }}',
        f'{scope}, action in [Action::"read", Action::"write"], resource)\n'
        f'when {{ resource.region == "{region}" && context.lictor.lineage.depth < 2 }}',
        f'{scope}, action == Action::"call_tool", resource in Toolbox::"box-{i % 5}")\n'
        'when { context.lictor.runtime.attestation.state == "verified" }',
    )
    return f'@id("gen-team-{i:03d}")\npermit ({rules[i % 4]};\n'


def _forbid(i: int, teams: int) -> str:
    team, region = f"team-{i % teams:02d}", GEN_REGIONS[i % len(GEN_REGIONS)]
    rules = (
        'principal, action == Action::"deploy", resource)\n'
        f'when {{ resource.owner == Team::"{team}"'
        f' && context.lictor.runtime.cluster == "quarantine-{i}" }}',
        'principal, action in [Action::"read", Action::"write"], resource)\n'
        f'when {{ resource.region == "{region}" && context.lictor.lineage.depth > 3 }}',
        f'principal, action == Action::"call_tool", resource in Toolbox::"box-{i % 5}")\n'
        "when { context.lictor.lineage.depth > 1 }",
        f'principal in Team::"{team}", action, resource)\n'
        'when { context.lictor.time.now < datetime("2001-01-01T00:00:00Z") }',
        'principal, action == Action::"write", resource)\n'
        f'when {{ resource.environment == "production" && resource.region == "{region}"'
        f' && context.lictor.runtime.region != "{region}" }}',
    )
    return f'@id("gen-forbid-{i:03d}")\nforbid ({rules[i % len(rules)]};\n'


def _entity(kind: str, id_: str, parents: Sequence[tuple[str, str]] = (), **attrs: Any) -> Any:
    refs = [{"type": t, "id": i} for t, i in parents]
    return {"uid": {"type": kind, "id": id_}, "attrs": attrs, "parents": refs}


def _generated_entities(teams: int) -> list[dict[str, Any]]:
    found = [_entity("Team", f"team-{t:02d}") for t in range(teams)]
    found += [
        _entity("Agent", f"agent-{i:03d}", [("Team", f"team-{i % teams:02d}")]) for i in range(100)
    ]
    for i in range(50):
        environment = ("staging", "production")[i % 2]
        region = GEN_REGIONS[i % len(GEN_REGIONS)]
        owner = {"type": "Team", "id": f"team-{i % teams:02d}"}
        found.append(
            _entity("Service", f"svc-{i:03d}", environment=environment, region=region, owner=owner)
        )
        found.append(_entity("Dataset", f"ds-{i:03d}", environment=environment, region=region))
    found += [_entity("Toolbox", f"box-{b}") for b in range(5)]
    found += [_entity("Tool", f"tool-{t:03d}", [("Toolbox", f"box-{t % 5}")]) for t in range(30)]
    return found


_COMPILED: dict[str, tuple[CompiledPolicy, CompiledEntities]] = {}


def compiled(scenario: Scenario) -> CompiledPolicy:
    return compiled_pair(scenario)[0]


def compiled_pair(scenario: Scenario) -> tuple[CompiledPolicy, CompiledEntities]:
    key = scenario.source.version
    if key not in _COMPILED:
        policy = compile_policies(scenario.source)
        _COMPILED[key] = (policy, compile_entities(scenario.entities, policy))
    return _COMPILED[key]


# --- requests ------------------------------------------------------------------


def ref(kind: str, id_: str) -> EntityRef:
    return EntityRef(kind, id_)


def decision_requests(now_ms: int) -> list[DecisionRequest]:
    return [
        DecisionRequest(
            principal=ref("Agent", p),
            action=ref("Action", a),
            resource=ref(k, r),
            now_ms=now_ms,
            runtime=FACTS,
            lineage=LineageFacts.root(ref("Agent", p)),
        )
        for p, a, k, r in MIX
    ]


def cedar_requests(requests: Sequence[DecisionRequest], context: bool = True) -> list[Any]:
    """What `decide` hands to Cedar for each request: uids and the context as JSON text."""
    built = []
    for r in requests:
        record = lictor_context(r.runtime, r.lineage or LineageFacts.root(r.principal), r.now_ms)
        built.append(
            {
                "principal": r.principal.to_json(),
                "action": r.action.to_json(),
                "resource": r.resource.to_json(),
                "context": json.dumps({CONTEXT_KEY: record}) if context else "{}",
            }
        )
    return built


def asks(runtime_id: str) -> list[Ask]:
    return [Ask(runtime_id, ref("Agent", p), ref("Action", a), ref(k, r), {}) for p, a, k, r in MIX]


def bodies() -> list[bytes]:
    return [
        json.dumps(
            {
                "principal": {"type": "Agent", "id": p},
                "action": {"type": "Action", "id": a},
                "resource": {"type": k, "id": r},
            }
        ).encode()
        for p, a, k, r in MIX
    ]


def expected_allows(scenario: Scenario) -> list[bool]:
    policy, entities = compiled_pair(scenario)
    return [decide(policy, r, entities).allowed for r in decision_requests(now_ms())]


def now_ms() -> int:
    return int(time.time() * 1000)


# --- CPU from /proc --------------------------------------------------------------


def cpu_seconds(stat: str) -> float:
    """utime + stime of one /proc stat file; 0 if the thread is gone."""
    try:
        text = Path(stat).read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


@dataclass(frozen=True)
class Probe:
    """CPU seconds of a process and of named threads of it (a process counts its dead threads)."""

    name: str
    pid: int
    threads: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def read(self) -> dict[str, float]:
        found = {"process": cpu_seconds(f"/proc/{self.pid}/stat")}
        for label, tids in self.threads.items():
            found[label] = sum(cpu_seconds(f"/proc/{self.pid}/task/{t}/stat") for t in tids)
        return found


def machine_seconds() -> float:
    """Busy CPU seconds of the whole machine (every CPU; steal counts as busy), /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields)
    return (user + nice + system + irq + softirq + steal) / TICKS


def read_all(probes: Sequence[Probe]) -> list[dict[str, float]]:
    return [{"process": machine_seconds()}, *(p.read() for p in probes)]


def shares(
    probes: Sequence[Probe], before: Sequence[dict[str, float]], seconds: float
) -> dict[str, dict[str, float]]:
    """CPU per probe and thread label (and the machine), as a share of one core."""
    after = read_all(probes)
    names = [MACHINE, *(p.name for p in probes)]
    return {
        name: {k: (end[k] - start[k]) / seconds for k in start}
        for name, start, end in zip(names, before, after, strict=True)
    }


def committer_probe(name: str = "in-process") -> Probe:
    tids = tuple(
        t.native_id
        for t in threading.enumerate()
        if t.name == "lictor-sequencer" and t.native_id is not None
    )
    return Probe(name, os.getpid(), {"committer": tids})


# --- measuring -------------------------------------------------------------------

Call = Callable[[int], bool]
Opener = Callable[[], AbstractContextManager[Call]]


def measure(
    label: str,
    opener: Opener,
    threads: int,
    per_thread: int,
    probes: Sequence[Probe] = (),
    warmup: bool = True,
) -> Run:
    """``threads`` threads each open a caller, warm it once, then make ``per_thread`` calls.

    The clock and the CPU probes start when every thread is ready; a call that
    raises or returns False counts as an error (the first message is kept).
    """
    ready = threading.Barrier(threads + 1, timeout=300)  # a caller that cannot open fails
    go = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(threads)]
    finished = [0.0] * threads
    errors: list[str] = []

    def worker(slot: int) -> None:
        with opener() as call:
            if warmup:
                _call(call, slot, errors)
            ready.wait()
            go.wait()
            mine, clock = latencies[slot], time.perf_counter
            for i in range(slot * per_thread, (slot + 1) * per_thread):
                start = clock()
                _call(call, i, errors)
                mine.append(clock() - start)
            finished[slot] = clock()

    pool = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(threads)]
    for t in pool:
        t.start()
    ready.wait()
    before = read_all(probes)
    start = time.perf_counter()
    go.set()
    for t in pool:
        t.join()
    seconds = max(finished) - start
    flat = [x for part in latencies for x in part]
    cpu = shares(probes, before, seconds) if probes else {}
    first = errors[0] if errors else ""
    return Run(label, threads, flat, seconds, len(errors), first, cpu)


def _call(call: Call, i: int, errors: list[str]) -> None:
    try:
        if not call(i):
            errors.append("unexpected answer")
    except Exception as e:  # counted and shown, never fatal to the run
        errors.append(f"{type(e).__name__}: {e}")


def simple(call: Call) -> Opener:
    return lambda: nullcontext(call)


# --- 1 and 2: Cedar and decide ---------------------------------------------------


def measure_floor(scenario: Scenario, sizes: Sizes) -> list[Run]:
    policy, entities = compiled_pair(scenario)
    requests = decision_requests(now_ms())
    full, bare = cedar_requests(requests), cedar_requests(requests, context=False)
    slices = [policy.slice_for(r.action) for r in requests]
    n, schema, handle = len(requests), policy.schema, entities.handle

    def cedar(reqs: list[Any], sliced: bool, with_schema: bool) -> Call:
        def call(i: int) -> bool:
            policies = slices[i % n] if sliced else policy.policy_set
            s = schema if with_schema else None
            cedarpy.is_authorized(reqs[i % n], policies, handle, s)
            return True

        return call

    def decided(i: int) -> bool:
        decide(policy, requests[i % n], entities)
        return True

    probe = [Probe("in-process", os.getpid())]
    runs = [
        ("1. cedarpy.is_authorized, whole set + schema", cedar(full, False, True), 1),
        ("1. cedarpy.is_authorized, action slice + schema", cedar(full, True, True), 1),
        ("   breakdown: slice, no schema (no request validation)", cedar(full, True, False), 1),
        ("   breakdown: slice, no schema, context {}", cedar(bare, True, False), 1),
        ("1. cedarpy.is_authorized, action slice + schema", cedar(full, True, True), THREADS),
        ("2. decide (sliced)", decided, 1),
        ("2. decide (sliced)", decided, THREADS),
    ]
    return [
        measure(
            label,
            simple(call),
            threads,
            sizes.floor if threads == 1 else sizes.floor_per_thread,
            probe,
        )
        for label, call, threads in runs
    ]


# --- 3: in process -----------------------------------------------------------------


def test_client(app: Any) -> Any:
    with warnings.catch_warnings():  # Starlette's notice about httpx, irrelevant here
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    return TestClient(app)


def govern(client: httpx.Client, token: str, scenario: Scenario) -> str:
    """Push and activate the set, put its entities, add a verified runtime; its credential.

    The same steps as the ``governed`` test fixture, through the HTTP API.
    """
    admin = {"Authorization": f"Bearer {token}"}
    pushed = _ok(
        client.post("/v1/policies", json={"source": source_json(scenario.source)}, headers=admin)
    )
    _ok(client.put("/v1/entities", json={"entities": scenario.entities}, headers=admin))
    _ok(client.post(f"/v1/policies/{pushed['version']}/activate", headers=admin))
    secret = _ok(client.post("/v1/runtimes", json=RUNTIME, headers=admin))["credential"]
    beat = {"attestation": ATTESTATION}
    runtime = {"Authorization": f"Bearer {secret}"}
    _ok(client.post(f"/v1/runtimes/{RUNTIME['name']}/heartbeat", json=beat, headers=runtime))
    return str(secret)


def _ok(response: httpx.Response) -> Any:
    if not response.is_success:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text[:300]}")
    return response.json()


@dataclass
class InProcess:
    """A governed app over a real data directory, and its commit counter."""

    executions: Executions
    log: AuditLog
    commits: list[int] = field(default_factory=lambda: [0])

    def count(self, head: object) -> None:
        self.commits[0] += 1


@contextmanager
def in_process(scenario: Scenario) -> Iterator[InProcess]:
    with tempfile.TemporaryDirectory(prefix="lictor-bench-") as tmp:
        data = open_data_dir(Path(tmp) / "data", ORIGIN)
        log = AuditLog(data.store, data.signer)
        try:
            app = create_app(log, data.grant_seed)
            token = (Path(tmp) / "data" / TOKEN_FILE).read_text().strip()
            govern(test_client(app), token, scenario)
            inproc = InProcess(app.state.executions, log)
            log.sequencer.add_listener(inproc.count)
            yield inproc
        finally:
            log.close()
            data.close()


def requester(executions: Executions, mix: Sequence[Ask], allowed: Sequence[bool]) -> Call:
    def call(i: int) -> bool:
        outcome = executions.request(mix[i % len(mix)])
        return (outcome.execution.state is ExecutionState.ACTIVE) == allowed[i % len(mix)]

    return call


def measure_in_process(scenario: Scenario, sizes: Sizes) -> list[Run]:
    allowed = expected_allows(scenario)
    with in_process(scenario) as inproc:
        call = requester(inproc.executions, asks(RUNTIME["name"]), allowed)
        runs = []
        for threads, count in ((1, sizes.inproc), (THREADS, sizes.inproc_per_thread)):
            before = inproc.commits[0]
            run = measure(
                "3. Executions.request (durable log + receipt)",
                simple(call),
                threads,
                count,
                [committer_probe()],
            )
            run.commits = inproc.commits[0] - before
            runs.append(run)
        return runs


# --- 4: HTTP --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """A real ``lictor serve`` subprocess on a fresh data directory."""

    def __init__(self, directory: Path, options: Sequence[str] = ()) -> None:
        self.options = tuple(options)
        self.data_dir = directory / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = directory / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.probe = Probe("server", 0)

    def start(self, timeout: float = 30.0) -> None:
        cmd = [sys.executable, "-m", "lictor.cli.main", "serve"]
        cmd += ["--data-dir", str(self.data_dir), "--port", str(self.port), *self.options]
        if "--workers" not in self.options:
            cmd += ["--workers", "1"]  # the probe reads one process's threads
        with self.output.open("ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=out, cwd=REPO)
        pid = self.process.pid
        self._wait_listening(timeout)
        # before any request: the main thread (event loop) and the committer only
        others = tuple(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
        self.probe = Probe("server", pid, {"event loop": (pid,), "committer": others})

    def _wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.output.read_text()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("server did not start listening")

    @property
    def token(self) -> str:
        return (self.data_dir / TOKEN_FILE).read_text().strip()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


@contextmanager
def served(scenario: Scenario) -> Iterator[tuple[Server, str]]:
    with tempfile.TemporaryDirectory(prefix="lictor-bench-") as tmp:
        server = Server(Path(tmp))
        try:
            server.start()
            with httpx.Client(base_url=server.url, timeout=60) as client:
                secret = govern(client, server.token, scenario)
            yield server, secret
        finally:
            server.stop()


class KeepAlive:
    """One HTTP/1.1 keep-alive connection (the standard library's client: the lightest
    at hand, so the figures show the server rather than the client's own overhead)."""

    def __init__(self, url: str, headers: Mapping[str, str]) -> None:
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
        self.headers = dict(headers)

    def status(self, method: str, path: str, body: bytes | None = None) -> int:
        headers = self.headers if body is None else {**self.headers, **JSON_TYPE}
        self.connection.request(method, path, body=body, headers=headers)
        response = self.connection.getresponse()
        response.read()
        return response.status

    def close(self) -> None:
        self.connection.close()


def http_opener(
    url: str, headers: Mapping[str, str], call: Callable[[KeepAlive, int], bool]
) -> Opener:
    @contextmanager
    def open_caller() -> Iterator[Call]:
        client = KeepAlive(url, headers)
        try:
            yield lambda i: call(client, i)
        finally:
            client.close()

    return open_caller


def measure_http(scenario: Scenario, sizes: Sizes) -> tuple[list[Run], dict[str, dict[str, float]]]:
    """The four HTTP runs, then the server's CPU while idle (its background work only)."""
    allowed = expected_allows(scenario)
    payloads = bodies()

    def healthz(client: KeepAlive, i: int) -> bool:
        return client.status("GET", "/healthz") == 200

    def execution(client: KeepAlive, i: int) -> bool:
        status = client.status("POST", "/v1/executions", payloads[i % len(payloads)])
        return status == (201 if allowed[i % len(payloads)] else 403)

    with served(scenario) as (server, secret):
        probes = [server.probe, Probe("bench client", os.getpid())]
        auth = {"Authorization": f"Bearer {secret}"}
        plan = (
            ("4. HTTP GET /healthz (no-op)", healthz, 1, sizes.health),
            ("4. HTTP GET /healthz (no-op)", healthz, THREADS, sizes.health_per_thread),
            ("4. HTTP POST /v1/executions", execution, 1, sizes.http),
            ("4. HTTP POST /v1/executions", execution, THREADS, sizes.http_per_thread),
        )
        runs = [
            measure(label, http_opener(server.url, auth, call), threads, count, probes)
            for label, call, threads, count in plan
        ]
        before = read_all([server.probe])
        time.sleep(sizes.baseline_s)
        return runs, shares([server.probe], before, sizes.baseline_s)


# --- 5: revocation while deciding ------------------------------------------------------


class Decider(threading.Thread):
    """Takes decisions one after another until stopped; keeps (start, end) of each."""

    def __init__(self, call: Call) -> None:
        super().__init__(name="bench-decider", daemon=True)
        self.call = call
        self.samples: list[tuple[float, float]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i, clock = 0, time.perf_counter
        while not self.stop.is_set():
            start = clock()
            _call(self.call, i, self.errors)
            self.samples.append((start, clock()))
            i += 1

    def between(self, lo: float, hi: float) -> list[float]:
        """Latencies of the decisions that overlapped [lo, hi]."""
        return [end - start for start, end in self.samples if start < hi and end > lo]


@dataclass(frozen=True)
class Window:
    """A revocation and the decisions another thread took before and during it."""

    revoked: int
    seconds: float
    before: list[float]
    during: list[float]
    cpu: dict[str, dict[str, float]]
    errors: int


@dataclass(frozen=True)
class Revocation:
    """One revocation scenario: how its executions were made, then the window."""

    title: str
    created: Run
    wanted: int
    window: Window


def with_decider(inproc: InProcess, baseline_s: float, revoke: Callable[[], int]) -> Window:
    """Run ``revoke`` in this thread while another thread decides; before/during latencies."""
    allowed = expected_allows(example_scenario())
    decider = Decider(requester(inproc.executions, asks(RUNTIME["name"]), allowed))
    decider.start()
    time.sleep(baseline_s)
    probe = committer_probe()
    before_cpu = read_all([probe])
    lo = time.perf_counter()
    revoked = revoke()
    hi = time.perf_counter()
    cpu = shares([probe], before_cpu, hi - lo)
    time.sleep(0.1)
    decider.stop.set()
    decider.join()
    before = [end - start for start, end in decider.samples if end < lo]
    during = decider.between(lo, hi)
    return Window(revoked, hi - lo, before, during, cpu, len(decider.errors))


def create_executions(inproc: InProcess, ask: Ask, count: int, label: str) -> tuple[Run, list[str]]:
    """``count`` active executions made by `THREADS` threads through Executions.request."""
    ids: list[str] = []

    def call(i: int) -> bool:
        outcome = inproc.executions.request(ask)
        ids.append(outcome.execution.id)
        return outcome.execution.state is ExecutionState.ACTIVE

    per_thread = max(1, math.ceil(count / THREADS))
    run = measure(label, simple(call), THREADS, per_thread, [committer_probe()], warmup=False)
    return run, ids


def cascade_revocation(sizes: Sizes) -> Revocation:
    scenario = example_scenario()
    with in_process(scenario) as inproc:
        base = replace(asks(RUNTIME["name"])[0], ttl_ms=MAX_TTL_MS)
        root = inproc.executions.request(base)
        child = replace(base, parent_grant=root.grant)
        created, _ = create_executions(inproc, child, sizes.cascade - 1, "children")

        def revoke() -> int:
            return len(inproc.executions.revoke(root.execution.id, "bench").revoked)

        window = with_decider(inproc, sizes.baseline_s, revoke)
    title = f"one cascade revoke of a root with {len(created.latencies):,} children"
    return Revocation(title, created, len(created.latencies) + 1, window)


def iterated_revocation(sizes: Sizes) -> Revocation:
    scenario = example_scenario()
    with in_process(scenario) as inproc:
        base = replace(asks(RUNTIME["name"])[0], ttl_ms=MAX_TTL_MS)
        created, ids = create_executions(inproc, base, sizes.revoke, "roots")

        def revoke() -> int:
            deadline = time.perf_counter() + sizes.revoke_budget_s
            done = 0
            for execution_id in ids:
                if time.perf_counter() > deadline:
                    break
                inproc.executions.revoke(execution_id, "bench")
                done += 1
            return done

        window = with_decider(inproc, sizes.baseline_s, revoke)
    title = (
        f"{len(ids):,} roots revoked one by one by one thread (budget {sizes.revoke_budget_s:g} s)"
    )
    return Revocation(title, created, len(ids), window)


# --- report --------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def target(run: Run) -> str:
    """The issue's target for this row, if it has one, with PASS or MISS."""
    median = statistics.median(run.latencies) * 1000
    if "Executions.request" in run.label:
        if run.concurrency == 1:
            ok = median <= TARGET_INPROC_MEDIAN_MS
            return f"median <= {TARGET_INPROC_MEDIAN_MS:g} ms  {mark(ok)}"
        return f">= {TARGET_INPROC_PER_S:,.0f}/s  {mark(run.per_second >= TARGET_INPROC_PER_S)}"
    if "POST /v1/executions" in run.label:
        if run.concurrency == 1:
            return f"p50 <= {TARGET_HTTP_P50_MS:g} ms  {mark(median <= TARGET_HTTP_P50_MS)}"
        return f">= {TARGET_HTTP_PER_S:,.0f}/s  {mark(run.per_second >= TARGET_HTTP_PER_S)}"
    return ""


def print_header() -> None:
    http = "httptools" if find_spec("httptools") else "h11"
    loop = "uvloop" if find_spec("uvloop") else "asyncio"
    print("lictor decision benchmark")
    print(
        f"  python {platform.python_version()}, sqlite {sqlite3.sqlite_version},"
        f" cedarpy {metadata.version('cedarpy')}, uvicorn {metadata.version('uvicorn')}"
        f" ({http}, {loop} loop), {os.cpu_count()} CPUs, {platform.machine()}"
    )
    print("  store: SQLiteStore (WAL, synchronous=FULL) in a temporary directory")
    print("  latencies in ms per call; per s = calls / wall time of the run;")
    print("  cpu = share of one core per process and thread, from /proc utime+stime")
    print(f"  load average at start: {load_average()}")
    print()


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def print_scenario(
    scenario: Scenario, runs: Sequence[Run], idle: Mapping[str, Mapping[str, float]]
) -> None:
    allowed = expected_allows(scenario)
    same = allowed == expected_allows(example_scenario())
    print(
        f"{scenario.name}: {scenario.policy_count} policies, {len(scenario.entities)} entities;"
        f" mix of {len(MIX)} requests ({sum(allowed)} allow, {len(allowed) - sum(allowed)} deny,"
        f" {'the same decisions as' if same else 'DIFFERENT decisions from'} the example set)"
    )
    print(
        f"  {'path':<54} {'conc':>4} {'calls':>6} {'err':>4} {'p50 ms':>8} {'p99 ms':>8}"
        f" {'per s':>8}  target"
    )
    for run in runs:
        print_run(run)
    decided = sum(len(r.latencies) for r in runs if "POST" in r.label)
    leases = f"leases {DEFAULT_TTL_MS // 1000} s"
    print(f"  server idle after the HTTP runs ({decided:,} executions requested, {leases}):")
    print(f"       {cpu_line(idle)}")
    print()


def print_run(run: Run) -> None:
    median = statistics.median(run.latencies) * 1000
    p99 = percentile(run.latencies, 99) * 1000
    print(
        f"  {run.label:<54} {run.concurrency:>4} {len(run.latencies):>6,} {run.errors:>4}"
        f" {median:>8.3f} {p99:>8.3f} {run.per_second:>8,.0f}  {target(run)}"
    )
    if run.first_error:
        print(f"       first error: {run.first_error[:150]}")
    if run.cpu:
        print(f"       {cpu_line(run.cpu, run)}")


def cpu_line(cpu: Mapping[str, Mapping[str, float]], run: Run | None = None) -> str:
    """``cpu %: server 98 = event loop 60 + committer 25 + other threads 13; …``

    Ends with the machine's busy share and what other processes used, then the
    busiest thread if it is saturated (busy for `SATURATED` of the wall time).
    """
    parts, busiest, ours = [], ("", 0.0), 0.0
    for process, values in cpu.items():
        if process == MACHINE:
            continue
        ours += values["process"]
        named = {k: v for k, v in values.items() if k != "process"}
        rest = max(0.0, values["process"] - sum(named.values()))
        terms = " + ".join(f"{k} {v * 100:.0f}" for k, v in named.items())
        label = "callers+rest" if process == "in-process" else "other threads"
        detail = f" = {terms} + {label} {rest * 100:.0f}" if named else ""
        parts.append(f"{process} {values['process'] * 100:.0f}{detail}")
        busiest = max([busiest, *((f"{process} {k}", v) for k, v in named.items())], key=_share)
    line = "cpu %: " + "; ".join(parts)
    if run is not None and run.commits:
        line += f"; {len(run.latencies) / run.commits:.1f} requests/commit"
    if MACHINE in cpu:
        machine = cpu[MACHINE]["process"]
        others = max(0.0, machine - ours)
        line += f"; machine {machine * 100:.0f} of {(os.cpu_count() or 1) * 100}"
        line += f" (other processes {others * 100:.0f})"
    if busiest[1] >= SATURATED:
        line += f"  <- {busiest[0]} saturated"
    return line


def _share(item: tuple[str, float]) -> float:
    return item[1]


def print_revocations(results: Sequence[Revocation]) -> None:
    print("5. Revocation while another thread decides (in process, example set, 1 decider)")
    for result in results:
        created, window = result.created, result.window
        print(f"  {result.title}")
        print(
            f"    created {len(created.latencies):,} active executions in {created.seconds:.1f} s"
            f" ({created.per_second:,.0f}/s, {THREADS} threads, {created.errors} errors);"
            f" {cpu_line(created.cpu)}"
        )
        rate = window.revoked / window.seconds if window.seconds else 0.0
        rest = ""
        if window.revoked < result.wanted and rate:
            rest = f"; all {result.wanted:,} would take ~{result.wanted / rate:.0f} s"
        print(
            f"    revoked {window.revoked:,} of {result.wanted:,} in {window.seconds:.2f} s"
            f" ({rate:,.0f}/s){rest}; {cpu_line(window.cpu)}"
        )
        print(
            f"    {'decisions':<24} {'calls':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}"
            f"  ({window.errors} errors)"
        )
        print_latencies("before", window.before)
        print_latencies("during revocation", window.during)
    print()


def print_latencies(name: str, values: Sequence[float]) -> None:
    if not values:
        print(f"    {name:<24} {0:>6}")
        return
    print(
        f"    {name:<24} {len(values):>6,} {statistics.median(values) * 1000:>9.2f}"
        f" {percentile(values, 99) * 1000:>9.2f} {max(values) * 1000:>9.2f}"
    )


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Sizes:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--revoke", type=int, help="roots revoked one by one (default 10,000)")
    parser.add_argument("--cascade", type=int, help="executions in the cascade (default 1,000)")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.revoke is not None:
        if args.revoke < 1:
            parser.error("--revoke must be at least 1")
        sizes = replace(sizes, revoke=args.revoke)
    if args.cascade is not None:
        if args.cascade < 2:
            parser.error("--cascade must be at least 2")
        sizes = replace(sizes, cascade=args.cascade)
    return sizes


def main(argv: Sequence[str] | None = None) -> int:
    sizes = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    print_header()
    for scenario in (example_scenario(), generated_scenario()):
        runs = measure_floor(scenario, sizes)
        runs += measure_in_process(scenario, sizes)
        http, idle = measure_http(scenario, sizes)
        print_scenario(scenario, runs + http, idle)
    print_revocations([cascade_revocation(sizes), iterated_revocation(sizes)])
    print(f"load average at end: {load_average()}")
    print(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
