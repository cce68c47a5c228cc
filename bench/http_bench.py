"""Decisions over HTTP, Lictor beside its yardsticks in one run; prints figures, asserts nothing.

On a shared machine an absolute figure says little; a ratio measured in the same
run, interleaved, says something. This benchmark starts, in one invocation:

- Lictor: ``lictor serve`` on a fresh SQLite data directory, loaded with the
  policy, schema and entities of ``bench/reference/data`` and one runtime;
- the reference (``bench/reference/reference.py``): the same per-decision work
  in minimal Python (bearer check, cedarpy with schema and ``context.lictor``,
  Ed25519 grant, canonical entry with a salted commitment, group commit to
  SQLite WAL ``synchronous=FULL`` with one signed checkpoint per batch,
  inclusion proof in the answer), as one process and as two worker processes
  feeding one log process;
- the floor of Lictor's own work (``bench/reference/decision_floor.py``): the
  reference plus what Lictor must do on the same path and the reference leaves out
  (strict JSON, checked fields, the credential's standing, revocation checks at the
  decision and at the commit, the execution record with its index, Lictor's answer,
  metrics, connection bounds), in as little Python, as one process and in the
  reference's two-worker form: where Lictor could be, and so whether a target is
  below the floor of Python for Lictor's work;
- Cerbos (Go), when its npm package is installed in ``bench/reference/cerbos``
  (``npm install`` there: its ``package.json`` names it), with the same three
  rules (its decision log off).

It drives them in turn, round after round (A, B, C, A, B, C, ...), with one
load generator (``wrk``, Debian's package), and prints for each: the median
latency with one caller (c=1 p50), the throughput with 32 (c=32 req/s), the
server CPU per request at c=32 (utime + stime of every server process, from
``/proc/<pid>/stat``), each the median of the rounds, and the ratios to the
reference; beside the CPU, the busiest thread's CPU per request at c=32 and the
share of the run it was on a core (from ``/proc/<pid>/task/<tid>/stat``): a
process whose busiest thread is near 100% is bound by that thread, however little
CPU its other threads use, so two servers of equal CPU per request can differ in
throughput by what one runs beside its event loop (ADR 20); then the same
ratios round by round, each target against the reference's run in that round
(the machine's speed drifts from round to round, and a ratio of two medians
may pair different rounds). Every request
must be answered 201 (Cerbos: 200); other answers are counted and printed.

``--perf`` adds, where Linux's ``perf`` is installed, one more c=32 run of each
target under ``perf record`` and prints where its server CPU per request goes,
by shared object (the interpreter, cedarpy, SQLite, the kernel...), beside the
reference's: two servers that call the same libraries differ only where their
own code runs.

``--policy FILE`` runs every target but Cerbos with another policy in place of
the reference's three rules (``bench/reference/reads-context.cedar`` reads
``context.lictor``, which those rules do not: ADR 25).

Run: ``.venv/bin/python bench/http_bench.py [--rounds 3] [--seconds 8]``;
``--quick`` for a smoke run (1 round of 2 s); ``--compare DIR`` also runs the
Lictor of another checkout (``git worktree add DIR REV``) in the same rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REFERENCE = HERE / "reference"
DATA = REFERENCE / "data"
CERBOS = REFERENCE / "cerbos"
CERBOS_BIN = CERBOS / "node_modules" / "@cerbos" / "cerbos-linux-x64" / "cerbos-linux-x64"
TOKEN = "reference-bench-token"
FLOOR = "floor of lictor's work"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of ``pids``, their threads and their live descendants, in seconds."""
    return sum(_ticks(f"/proc/{pid}/stat") for pid in descendants(pids)) / TICKS


def thread_seconds(pids: Sequence[int]) -> dict[tuple[int, str], float]:
    """utime + stime of each thread of ``pids`` and their live descendants, in seconds,
    by (process, thread id)."""
    found: dict[tuple[int, str], float] = {}
    for pid in descendants(pids):
        with contextlib.suppress(OSError):  # a thread may end while it is read
            for tid in os.listdir(f"/proc/{pid}/task"):
                found[pid, tid] = _ticks(f"/proc/{pid}/task/{tid}/stat") / TICKS
    return found


def _ticks(stat: str) -> int:
    with open(stat) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def descendants(pids: Sequence[int]) -> list[int]:
    """``pids`` and every live process started under them (a server's workers)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    found, pending = [], list(pids)
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(child for child, parent in parents.items() if parent == pid)
    return found


@dataclass
class Target:
    """A server under load: how to reach it and which processes serve it."""

    name: str
    url: str
    body: str
    headers: dict[str, str]
    ok_status: int
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass(frozen=True)
class Run:
    """One wrk run against one target."""

    requests: int
    per_second: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    bad: int
    busiest_us: float = 0.0  # the busiest thread's CPU per request
    busiest_share: float = 0.0  # and the share of the run's wall time it was on a core


def _start(argv: Sequence[str], workdir: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv), cwd=workdir, stdout=out, stderr=out, env={**os.environ, **env}
        )


def _lictor(*argv: str, url: str, credential: str, tree: Path = REPO) -> str:
    env = {**os.environ, "LICTOR_URL": url, "LICTOR_CREDENTIAL": credential}
    env.pop("LICTOR_GRANT", None)
    done = subprocess.run(
        [sys.executable, "-m", "lictor.cli.main", *argv],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def data_dir(workdir: Path, name: str) -> Path:
    """The data directory `start_lictor` gives the target ``name``."""
    return workdir / re.sub(r"[^a-z0-9]+", "-", f"{name}-data")


def start_lictor(
    workdir: Path, tree: Path = REPO, name: str = "lictor", workers: int = 1, source: Path = DATA
) -> Target:
    """`lictor serve` from ``tree`` (this checkout, or another commit's), loaded with
    the policy, schema and entities in ``source`` (the reference's); ``workers``
    processes."""
    port, data = free_port(), data_dir(workdir, name)
    argv = [sys.executable, "-m", "lictor.cli.main", "serve", "--data-dir", str(data)]
    argv += ["--workers", str(workers)]
    process = _start([*argv, "--port", str(port)], tree, workdir / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/healthz")
    admin = (data / "admin.token").read_text().strip()
    policies = data.parent / f"{data.name}-policies"
    policies.mkdir()
    for file in ("schema.cedarschema", "tool.cedar"):
        shutil.copy(source / file, policies / file)
    version = _lictor("policy", "push", str(policies), url=url, credential=admin, tree=tree)
    version = version.split()[1]
    entities = str(source / "entities.json")
    _lictor("entity", "put", entities, url=url, credential=admin, tree=tree)
    _lictor("policy", "activate", version, url=url, credential=admin, tree=tree)
    added = _lictor(
        "runtime", "add", "bench-rt", "--region", "eu-west-1", "--cluster", "c1",
        url=url, credential=admin, tree=tree,
    )  # fmt: skip
    secret = added.split("credential (shown once): ")[1].strip()
    auth = {"Authorization": f"Bearer {secret}"}
    beat = {"attestation": {"state": "verified"}}
    httpx.post(url + "/v1/runtimes/bench-rt/heartbeat", json=beat, headers=auth).raise_for_status()
    body = (DATA / "body.json").read_text().strip()
    return Target(name, url + "/v1/executions", body, auth, 201, [process])


def start_reference(
    workdir: Path, program: str = "reference.py", name: str = "reference", data: Path = DATA
) -> Target:
    """The reference (or ``program``, in the same form) in one process, with the policy,
    schema and entities in ``data``."""
    port = free_port()
    argv = [sys.executable, str(REFERENCE / program), "serve", str(port)]
    argv.append(str(workdir / f"{program}.db"))
    log = workdir / f"{program}.log"
    process = _start(argv, REFERENCE, log, REF_TOKEN=TOKEN, REF_DATA=str(data))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/")
    return _reference_target(name, url, [process])


def start_reference_workers(
    workdir: Path,
    workers: int = 2,
    program: str = "reference.py",
    name: str = "reference",
    data: Path = DATA,
) -> Target:
    """The reference (or ``program``, in the same form) as ``workers`` decision processes
    feeding one log process, with the policy, schema and entities in ``data``."""
    port, sock = free_port(), workdir / f"{program}.sock"
    script = str(REFERENCE / program)
    log = workdir / f"{program}-workers.log"
    log_process = [sys.executable, script, "seq", str(sock), str(workdir / f"{program}-2.db")]
    seq = _start(log_process, REFERENCE, log)
    deadline = time.monotonic() + 30
    while not sock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    started = [seq]
    for _ in range(workers):
        argv = [sys.executable, script, "worker", str(port), str(sock)]
        started.append(_start(argv, REFERENCE, log, REF_TOKEN=TOKEN, REF_DATA=str(data)))
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/")
    return _reference_target(f"{name}, {workers} workers", url, started)


def _reference_target(name: str, url: str, processes: list[subprocess.Popen[bytes]]) -> Target:
    body = (DATA / "body.json").read_text().strip()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return Target(name, url + "/v1/executions", body, auth, 201, processes)


def with_policy(workdir: Path, policy: Path) -> Path:
    """A copy of the reference's data with ``policy`` in place of its rules."""
    data = workdir / "data"
    shutil.copytree(DATA, data)
    shutil.copy(policy, data / "tool.cedar")
    return data


def start_cerbos(workdir: Path) -> Target | None:
    """Cerbos PDP, if its npm package is installed beside its configuration."""
    binary = Path(os.environ.get("CERBOS_BIN", CERBOS_BIN))
    if not binary.exists():
        return None
    argv = [str(binary), "server", "--config=config.yaml"]
    process = _start(argv, CERBOS, workdir / "cerbos.log")
    url = "http://127.0.0.1:3592"
    wait_ready(url + "/_cerbos/health")
    lua = (CERBOS / "cerbos.lua").read_text()
    body = re.search(r"wrk\.body\s*=\s*'(.*)'", lua)
    assert body is not None, "cerbos.lua holds the request body"
    return Target("cerbos", url + "/api/check/resources", body.group(1), {}, 200, [process])


def _script(target: Target, workdir: Path) -> Path:
    path = workdir / f"{re.sub(r'[^a-z0-9]+', '-', target.name)}.lua"
    headers = {"Content-Type": "application/json", **target.headers}
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(target.body)}"]
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def load(target: Target, script: Path, connections: int, seconds: float) -> Run:
    """One wrk run; the server CPU it cost, per request."""
    before, threads = cpu_seconds(target.pids()), thread_seconds(target.pids())
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", str(script)]
    started = time.monotonic()
    out = subprocess.run([*argv, target.url], capture_output=True, text=True, check=True).stdout
    wall = time.monotonic() - started
    cpu = cpu_seconds(target.pids()) - before
    after = thread_seconds(target.pids())
    busiest = max((t - threads.get(key, 0.0) for key, t in after.items()), default=0.0)
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)$", out, re.MULTILINE))
    return Run(
        requests=requests,
        per_second=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        cpu_us=cpu / max(requests, 1) * 1e6,
        bad=int(bad.group(1)) if bad else 0,
        busiest_us=busiest / max(requests, 1) * 1e6,
        busiest_share=busiest / wall,
    )


def check_answers(target: Target) -> None:
    """One request by hand: the target must answer it as a decision."""
    headers = {"Content-Type": "application/json", **target.headers}
    r = httpx.post(target.url, content=target.body, headers=headers, timeout=10)
    if r.status_code != target.ok_status:
        raise RuntimeError(f"{target.name} answered {r.status_code}: {r.text[:300]}")


def median(runs: Sequence[Run], pick: Callable[[Run], float]) -> float:
    return statistics.median(pick(r) for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s")
    parser.add_argument(
        "--compare",
        type=Path,
        metavar="DIR",
        help="also run the lictor of DIR (a checkout of another commit, e.g. `git worktree add`)",
    )
    parser.add_argument("--perf", action="store_true", help="CPU by shared object, with perf")
    parser.add_argument(
        "--policy",
        type=Path,
        metavar="FILE",
        help="a Cedar file in place of the reference's three rules, for every target but Cerbos",
    )
    args = parser.parse_args()
    rounds, seconds = (1, 2.0) if args.quick else (args.rounds, args.seconds)
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    print(f"load at start: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="lictor-http-bench-") as tmp:
        workdir = Path(tmp)
        targets: list[Target] = []
        try:
            data = DATA if args.policy is None else with_policy(workdir, args.policy)
            targets.append(start_lictor(workdir, source=data))
            targets.append(start_lictor(workdir, name="lictor, 2 workers", workers=2, source=data))
            if args.compare is not None:
                tree = args.compare.resolve()
                targets.append(start_lictor(workdir, tree, "lictor (compare)", source=data))
            targets.append(start_reference(workdir, data=data))
            targets.append(start_reference(workdir, "decision_floor.py", FLOOR, data))
            targets.append(start_reference_workers(workdir, data=data))
            targets.append(start_reference_workers(workdir, 2, "decision_floor.py", FLOOR, data))
            cerbos = start_cerbos(workdir) if args.policy is None else None
            if args.policy is not None:
                print(f"policy: {args.policy} (cerbos left out: its rules are the reference's)")
            elif cerbos is None:
                print(f"cerbos: not installed (run npm install in {CERBOS})")
            else:
                targets.append(cerbos)
            results = measure(targets, workdir, rounds, seconds)
            split = cpu_split(targets, workdir, seconds) if args.perf else {}
        finally:
            for target in targets:
                target.stop()
    print(f"load at end: {os.getloadavg()[0]:.2f} (1 min)")
    report(results)
    report_split(split)


def measure(
    targets: Sequence[Target], workdir: Path, rounds: int, seconds: float
) -> dict[str, tuple[list[Run], list[Run]]]:
    scripts = {t.name: _script(t, workdir) for t in targets}
    for target in targets:  # each answers as a decision, then warms up
        check_answers(target)
        load(target, scripts[target.name], 8, 2.0)
    results: dict[str, tuple[list[Run], list[Run]]] = {t.name: ([], []) for t in targets}
    for n in range(rounds):
        for target in targets:
            one = load(target, scripts[target.name], 1, seconds)
            many = load(target, scripts[target.name], 32, seconds)
            results[target.name][0].append(one)
            results[target.name][1].append(many)
            print(
                f"round {n + 1} {target.name}: c=1 p50 {one.p50_ms:.2f} ms,"
                f" c=32 {many.per_second:,.0f}/s, {many.cpu_us:,.0f} µs CPU per request"
                f" (busiest thread {many.busiest_us:,.0f}, {many.busiest_share:.0%} busy)"
                + (f", {one.bad + many.bad} bad answers" if one.bad + many.bad else ""),
                flush=True,
            )
    return results


def cpu_split(
    targets: Sequence[Target], workdir: Path, seconds: float
) -> dict[str, dict[str, float]]:
    """Per target, one c=32 run under ``perf record``: server CPU per request (µs)
    by shared object. Empty without ``perf``."""
    if shutil.which("perf") is None:
        print("--perf: perf is not installed (Debian: linux-perf)")
        return {}
    split: dict[str, dict[str, float]] = {}
    for target in targets:
        data = workdir / f"{re.sub(r'[^a-z0-9]+', '-', target.name)}.perf"
        pids = ",".join(str(pid) for pid in descendants(target.pids()))
        argv = ["perf", "record", "-q", "-F", "999", "-p", pids, "-o", str(data)]
        recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run = load(target, _script(target, workdir), 32, seconds)
        recorder.send_signal(signal.SIGINT)
        recorder.wait()
        argv = ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio"]
        text = subprocess.run(argv, capture_output=True, text=True).stdout
        shares = re.findall(r"^\s+([\d.]+)%\s+(\S+)", text, re.MULTILINE)
        split[target.name] = {dso: float(p) / 100 * run.cpu_us for p, dso in shares}
    return split


def report_split(split: dict[str, dict[str, float]]) -> None:
    """The `cpu_split` table: µs per request by shared object, the biggest first."""
    if not split:
        return
    names = list(split)
    reference = split.get("reference", {})
    total = {dso: sum(s.get(dso, 0.0) for s in split.values()) for s in split.values() for dso in s}
    shown = sorted(total, key=total.__getitem__, reverse=True)[:10]
    print("\nserver CPU per request at c=32 by shared object (µs; perf record):")
    print("| shared object | " + " | ".join(names) + " |")
    print("|" + " --- |" * (len(names) + 1))
    for dso in shown:
        cells = []
        for name in names:
            us = split[name].get(dso, 0.0)
            more = us - reference.get(dso, 0.0)
            cells.append(
                f"{us:,.0f}" + (f" ({more:+,.0f})" if reference and name != "reference" else "")
            )
        print(f"| {dso} | " + " | ".join(cells) + " |")


def report(results: dict[str, tuple[list[Run], list[Run]]]) -> None:
    ref_one, ref_many = results["reference"]
    ref = (
        median(ref_one, lambda r: r.p50_ms),
        median(ref_many, lambda r: r.per_second),
        median(ref_many, lambda r: r.cpu_us),
    )
    print()
    head = "| target | c=1 p50 | c=1 p99 | c=32 req/s | c=32 p99 | server CPU per request |"
    print(head + " busiest thread | ratio to reference (p50, req/s, CPU) | bad answers |")
    print("|" + " --- |" * 9)
    for name, (one, many) in results.items():
        p50, rate = median(one, lambda r: r.p50_ms), median(many, lambda r: r.per_second)
        cpu = median(many, lambda r: r.cpu_us)
        busiest = median(many, lambda r: r.busiest_us)
        busy = median(many, lambda r: r.busiest_share)
        bad = sum(r.bad for r in (*one, *many))
        print(
            f"| {name} | {p50:.2f} ms | {median(one, lambda r: r.p99_ms):.2f} ms"
            f" | {rate:,.0f} | {median(many, lambda r: r.p99_ms):.2f} ms | {cpu:,.0f} µs"
            f" | {busiest:,.0f} µs, {busy:.0%} busy"
            f" | {p50 / ref[0]:.2f}x, {rate / ref[1]:.2f}x, {cpu / ref[2]:.2f}x | {bad} |"
        )
    print()
    print("Round by round (each against the reference's run in the same round, a minute or two")
    print("apart; the ratios above divide medians, which may come from different rounds):")
    for name, (one, many) in results.items():
        if name == "reference":
            continue
        rounds = list(zip(one, many, ref_one, ref_many, strict=False))
        ratios = {
            "CPU": [m.cpu_us / rm.cpu_us for _, m, _, rm in rounds],
            "c=32 req/s": [m.per_second / rm.per_second for _, m, _, rm in rounds],
            "c=1 p50": [o.p50_ms / ro.p50_ms for o, _, ro, _ in rounds],
        }
        cells = [
            f"{what} "
            + ", ".join(f"{x:.2f}x" for x in values)
            + f" (median {statistics.median(values):.2f}x)"
            for what, values in ratios.items()
        ]
        print(f"- {name}: " + "; ".join(cells))
    print()
    pairs = (
        ("lictor", FLOOR),
        ("lictor, 2 workers", "lictor"),
        ("lictor, 2 workers", "reference, 2 workers"),
        (f"{FLOOR}, 2 workers", "reference, 2 workers"),
        ("lictor, 2 workers", f"{FLOOR}, 2 workers"),
        ("lictor", "reference, 2 workers"),
    )
    for one, other in pairs:
        if one in results and other in results:
            ratio = median(results[one][1], lambda r: r.per_second) / median(
                results[other][1], lambda r: r.per_second
            )
            print(f"c=32 throughput, {one} / {other}: {ratio:.2f}x")
    if "lictor" in results and FLOOR in results:
        picks: tuple[tuple[str, Callable[[Run], float]], ...] = (
            ("server CPU", lambda r: r.cpu_us),
            ("the busiest thread's CPU", lambda r: r.busiest_us),
        )
        for what, pick in picks:
            ratio = median(results["lictor"][1], pick) / median(results[FLOOR][1], pick)
            print(f"{what} per request, lictor / {FLOOR}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
