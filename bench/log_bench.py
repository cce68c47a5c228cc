"""Write- and proof-path benchmark of the transparency log; prints figures, asserts nothing.

What it measures, on a real SQLite file in a temporary directory (WAL,
``synchronous=FULL``, exactly as `lictor.store.sqlite.SQLiteStore` opens it),
with entries shaped like `lictor.service.log.AuditLog.prepare_event` output (a
~190-byte canonical JSON public entry plus a ~210-byte private record):

1. Durable appends per second through `lictor.sequencer.Sequencer` at
   ``max_batch`` 1, 64 and 1024, submitted with ``submit_many`` and waited on
   future by future, with the median and p99 time per batch: the committer's
   whole cycle (interval between consecutive commits, the queue never empty)
   and the `Store.append` transaction alone. One more batch-1024 row runs
   beside a CPU-bound Python thread, as the committer does inside a server.
2. The physical floor: raw ``hashlib.sha256(0x00 || entry)`` per second over
   the same entries, and the ratio appends/s ÷ hashes/s.
3. A 1,000,000-entry log built through the same path at batch 1024 (its
   sustained append rate is printed), then median and p99 milliseconds of
   inclusion and consistency proof generation (reading stored hashes from
   SQLite) and verification, over random samples.

Targets from the issue are printed beside the figures as PASS or MISS.

Run: ``make bench`` (that is, ``.venv/bin/python bench/log_bench.py``).
Options: ``--quick`` for a smoke test with small sizes; ``--entries-1m N`` to
change the size of the big log; ``--samples N`` for the proof samples.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import math
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from lictor.log.entry import parse_entry
from lictor.log.merkle import (
    leaf_hash,
    prove_consistency,
    prove_inclusion,
    tree_hash,
    verify_consistency,
    verify_inclusion,
)
from lictor.log.note import Ed25519Signer
from lictor.sequencer import Appended, Sequencer
from lictor.store.base import Head, RecordWrite, StoredEntry
from lictor.store.sqlite import SQLiteStore

ORIGIN = "bench.lictor.example/log"
TARGET_APPENDS_PER_S = 20_000.0
TARGET_PROVE_MS = 1.0
TARGET_VERIFY_MS = 0.2
SUBMIT_CHUNK = 4096  # entries per submit_many call; two chunks stay queued


@dataclass(frozen=True)
class Sizes:
    """How much work each part of the benchmark does."""

    appends: tuple[tuple[int, int], ...]  # (max_batch, entries)
    contended: int  # entries at batch 1024 beside a busy Python thread
    big_log: int
    samples: int


FULL = Sizes(
    appends=((1, 2_000), (64, 50_000), (1024, 200_000)),
    contended=50_000,
    big_log=1_000_000,
    samples=2_000,
)
QUICK = Sizes(
    appends=((1, 200), (64, 5_000), (1024, 20_000)), contended=5_000, big_log=50_000, samples=200
)


@dataclass(frozen=True)
class AppendRun:
    """One append measurement: throughput and per-batch commit times."""

    batch: int
    entries: int
    seconds: float
    batch_seconds: list[float]
    transaction_seconds: list[float]
    busy: bool = False

    @property
    def per_second(self) -> float:
        return self.entries / self.seconds


# --- entries -----------------------------------------------------------------


def make_entries(count: int, seed: int) -> list[StoredEntry]:
    """Entries shaped like `AuditLog.prepare_event` output, with real commitments.

    Built from string templates (every value is ASCII and keys are sorted), which
    is RFC 8785 canonical JSON; `check_entries` confirms it on a sample.
    """
    rng = random.Random(seed)
    actions = ("deploy", "read", "write", "delete", "restart")
    resources = ("svc/payments", "db/customers", "queue/jobs", "bucket/reports")
    entries = []
    for i in range(count):
        salt = rng.randbytes(32)
        ms = i % 86_400_000
        when = (
            f"2025-06-01T{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:"
            f"{ms // 1000 % 60:02d}.{ms % 1000:03d}Z"
        )
        execution = f"ex_{seed:04x}{i:012x}"
        decision = "deny" if i % 7 == 0 else "allow"
        event = (
            f'{{"action":"{actions[i % 5]}","decision":"{decision}","execution":"{execution}",'
            f'"kind":"decision","resource":"{resources[i % 4]}","time":"{when}"}}'
        )
        commitment = hashlib.sha256(salt + event.encode()).hexdigest()
        data = (
            f'{{"commitment":"sha256:{commitment}","decision":"{decision}",'
            f'"execution":"{execution}","kind":"decision","time":"{when}"}}'
        )
        private = f'{{"event":{event},"salt":"{base64.b64encode(salt).decode()}"}}'
        entries.append(StoredEntry(data.encode(), private.encode()))
    return entries


def check_entries(entries: Sequence[StoredEntry]) -> None:
    """Fail loudly if the templates stopped producing canonical entries."""
    for entry in entries[:: max(1, len(entries) // 50)]:
        parse_entry(entry.data)
        if entry.private is not None:
            parse_entry(entry.private)


def prepare_entries(count: int, seed: int) -> list[StoredEntry]:
    """Checked entries, moved out of the garbage collector's sight.

    A server never holds its whole log in memory; without `gc.freeze` every full
    collection would rescan the bench's own million entries and bill the pause
    to whichever batch happened to trigger it.
    """
    entries = make_entries(count, seed)
    check_entries(entries)
    gc.freeze()
    return entries


# --- measurement helpers -----------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


class TimedStore(SQLiteStore):
    """`SQLiteStore` that timestamps each non-empty `append` (its transaction)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.commits: list[tuple[float, float]] = []

    def append(
        self,
        expected_version: int,
        entries: Sequence[StoredEntry],
        hashes: Sequence[bytes],
        head: Head,
        writes: Sequence[RecordWrite] = (),
    ) -> Head:
        start = time.perf_counter()
        stored = super().append(expected_version, entries, hashes, head, writes)
        if entries:
            self.commits.append((start, time.perf_counter()))
        return stored


def open_log(directory: Path, max_batch: int) -> tuple[TimedStore, Sequencer]:
    store = TimedStore(directory / "log.db")
    signer = Ed25519Signer(ORIGIN, hashlib.sha256(b"lictor bench key").digest())
    return store, Sequencer(store, signer, max_batch)


def append_all(
    store: TimedStore, sequencer: Sequencer, batch: int, entries: Sequence[StoredEntry]
) -> AppendRun:
    """Submit every entry and wait for every future; time each batch commit.

    Entries go in chunks of `SUBMIT_CHUNK` with two chunks outstanding, so the
    committer always has a full queue but the bench never holds millions of
    futures. A batch's commit time is the interval between the end of the
    previous batch's transaction and the end of its own: everything the
    committer does per batch (hash, sign, resolve the previous batch's futures,
    write and fsync). The transaction alone (`Store.append`) is kept as well.
    """
    store.commits.clear()
    outstanding: deque[list[Future[Appended]]] = deque()
    start = time.perf_counter()
    for lo in range(0, len(entries), SUBMIT_CHUNK):
        outstanding.append(sequencer.submit_many(entries[lo : lo + SUBMIT_CHUNK]))
        if len(outstanding) > 2:
            _wait(outstanding.popleft())
    while outstanding:
        _wait(outstanding.popleft())
    seconds = time.perf_counter() - start
    ends = [end for _, end in store.commits]
    cycles = [b - a for a, b in zip([start, *ends], ends, strict=False)]
    transactions = [end - begin for begin, end in store.commits]
    return AppendRun(batch, len(entries), seconds, cycles, transactions)


def _wait(futures: list[Future[Appended]]) -> None:
    """Block once, on the last future (batches commit in order), then check them all."""
    futures[-1].result()
    for future in futures:
        future.result()


@contextmanager
def busy_thread() -> Iterator[None]:
    """One CPU-bound Python thread beside the committer, as a server's handlers are."""
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(100))

    thread = threading.Thread(target=spin, name="bench-busy", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def measure_appends(batch: int, entries: Sequence[StoredEntry], busy: bool = False) -> AppendRun:
    with tempfile.TemporaryDirectory(prefix="lictor-bench-") as tmp:
        store, sequencer = open_log(Path(tmp), batch)
        try:
            with busy_thread() if busy else nullcontext():
                run = append_all(store, sequencer, batch, entries)
            return replace(run, busy=busy)
        finally:
            sequencer.close()
            store.close()


def hashes_per_second(entries: Sequence[StoredEntry], rounds: int = 3) -> float:
    """Best of ``rounds`` passes of raw SHA-256 over 0x00 || entry."""
    sha256 = hashlib.sha256
    datas = [e.data for e in entries]
    best = math.inf
    for _ in range(rounds):
        start = time.perf_counter()
        for data in datas:
            sha256(b"\x00" + data).digest()
        best = min(best, time.perf_counter() - start)
    return len(datas) / best


def time_each(samples: Sequence[int], op: Callable[[int], object]) -> list[float]:
    """Milliseconds of ``op`` on each sample."""
    timings = []
    clock = time.perf_counter
    for sample in samples:
        start = clock()
        op(sample)
        timings.append((clock() - start) * 1000)
    return timings


# --- the big log -------------------------------------------------------------


@dataclass(frozen=True)
class ProofTimings:
    """Milliseconds per operation, by operation name."""

    build: AppendRun
    ops: dict[str, list[float]]


def measure_proofs(entries: Sequence[StoredEntry], samples: int, seed: int) -> ProofTimings:
    with tempfile.TemporaryDirectory(prefix="lictor-bench-") as tmp:
        store, sequencer = open_log(Path(tmp), 1024)
        try:
            build = append_all(store, sequencer, 1024, entries)
            head = sequencer.head
        finally:
            sequencer.close()
        try:
            return ProofTimings(
                build, proof_ops(store, entries, head.size, head.root, samples, seed)
            )
        finally:
            store.close()


def proof_ops(
    store: TimedStore,
    entries: Sequence[StoredEntry],
    size: int,
    root: bytes,
    samples: int,
    seed: int,
) -> dict[str, list[float]]:
    rng = random.Random(seed)
    indexes = [rng.randrange(size) for _ in range(samples)]
    leaves = {i: leaf_hash(entries[i].data) for i in indexes}
    firsts = [rng.randrange(1, size) for _ in range(samples)]
    first_roots = {m: tree_hash(m, store) for m in firsts}
    inclusion = {i: prove_inclusion(i, size, store) for i in indexes}
    consistency = {m: prove_consistency(m, size, store) for m in firsts}

    return {
        "inclusion proof": time_each(indexes, lambda i: prove_inclusion(i, size, store)),
        "inclusion verify": time_each(
            indexes, lambda i: verify_inclusion(i, size, leaves[i], inclusion[i], root)
        ),
        "consistency proof": time_each(firsts, lambda m: prove_consistency(m, size, store)),
        "consistency verify": time_each(
            firsts, lambda m: verify_consistency(m, size, first_roots[m], root, consistency[m])
        ),
    }


# --- report ------------------------------------------------------------------


def mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_header() -> None:
    print("lictor log benchmark")
    print(
        f"  python {platform.python_version()}, sqlite {sqlite3.sqlite_version}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}, temp dir {tempfile.gettempdir()}"
    )
    print("  store: SQLiteStore (WAL, synchronous=FULL, one transaction per batch)")
    print()


def ms(seconds: Sequence[float], q: float) -> str:
    """The q-th percentile of ``seconds``, in milliseconds, right-aligned."""
    return f"{percentile(seconds, q) * 1000:>9.3f}"


def print_appends(runs: Sequence[AppendRun], entry_bytes: float) -> None:
    print(f"1. Durable appends: Sequencer + SQLiteStore, ~{entry_bytes:.0f}-byte entries")
    print("   batch = one committer cycle (hash, sign, write, fsync, resolve futures);")
    print("   txn = Store.append alone (one transaction, fsynced at COMMIT)")
    print(
        f"  {'batch':>5}  {'entries':>9}  {'appends/s':>10}  {'batch p50':>9}  {'batch p99':>9}"
        f"  {'txn p50':>9}  {'txn p99':>9}  target"
    )
    for run in runs:
        target = ""
        if run.batch == 1024 and not run.busy:
            ok = run.per_second >= TARGET_APPENDS_PER_S
            target = f">= {TARGET_APPENDS_PER_S:,.0f}/s  {mark(ok)}"
        print(
            f"  {label(run):>5}  {run.entries:>9,}  {run.per_second:>10,.0f}"
            f"  {ms(run.batch_seconds, 50)}  {ms(run.batch_seconds, 99)}"
            f"  {ms(run.transaction_seconds, 50)}  {ms(run.transaction_seconds, 99)}  {target}"
        )
    print("   latencies in ms; * = beside one CPU-bound Python thread (a server's other work)")
    print()


def label(run: AppendRun) -> str:
    return f"{run.batch}{'*' if run.busy else ''}"


def print_floor(runs: Sequence[AppendRun], hash_rate: float) -> None:
    print("2. Physical floor: hashlib.sha256(0x00 || entry) over the same entries, one thread")
    print(f"  {hash_rate:,.0f} hashes/s  ({1e6 / hash_rate:.2f} µs per leaf hash)")
    print(f"  {'batch':>5}  {'appends/s ÷ hashes/s':>20}")
    for run in runs:
        print(f"  {label(run):>5}  {run.per_second / hash_rate:>20.4f}")
    print()


def print_proofs(timings: ProofTimings) -> None:
    build = timings.build
    size = build.entries
    ok = build.per_second >= TARGET_APPENDS_PER_S
    print(f"3. A {size:,}-entry log (Sequencer + SQLiteStore, batch 1024)")
    print(
        f"  build: {build.per_second:,.0f} appends/s sustained over {build.seconds:.1f} s"
        f"  (target >= {TARGET_APPENDS_PER_S:,.0f}/s  {mark(ok)})"
    )
    samples = len(next(iter(timings.ops.values())))
    heading = f"operation ({samples:,} random samples)"
    print(f"  {heading:<32}  {'median ms':>9}  {'p99 ms':>8}  target")
    for name, values in timings.ops.items():
        limit = TARGET_PROVE_MS if name.endswith("proof") else TARGET_VERIFY_MS
        median = statistics.median(values)
        print(
            f"  {name:<32}  {median:>9.4f}  {percentile(values, 99):>8.4f}"
            f"  median <= {limit:g} ms  {mark(median <= limit)}"
        )
    print()


# --- main --------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> Sizes:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--entries-1m", type=int, help="size of the big log (default 1,000,000)")
    parser.add_argument("--samples", type=int, help="random samples per proof operation")
    args = parser.parse_args(argv)
    if args.entries_1m is not None and args.entries_1m < 2:
        parser.error("--entries-1m must be at least 2")
    if args.samples is not None and args.samples < 1:
        parser.error("--samples must be at least 1")
    sizes = QUICK if args.quick else FULL
    return replace(
        sizes,
        big_log=args.entries_1m if args.entries_1m is not None else sizes.big_log,
        samples=args.samples if args.samples is not None else sizes.samples,
    )


def appends_and_floor(sizes: Sizes) -> None:
    """Parts 1 and 2: append rates by batch size, then the SHA-256 floor."""
    runs: list[AppendRun] = []
    hash_rates: list[float] = []
    entries: list[StoredEntry] = []
    for batch, count in sizes.appends:
        entries = prepare_entries(count, seed=batch)
        runs.append(measure_appends(batch, entries))
        hash_rates.append(hashes_per_second(entries))
    runs.append(measure_appends(1024, entries[: sizes.contended], busy=True))
    print_appends(runs, statistics.fmean(len(e.data) for e in entries[:1000]))
    print_floor(runs, max(hash_rates))


def main(argv: Sequence[str] | None = None) -> int:
    sizes = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    print_header()
    appends_and_floor(sizes)
    big = prepare_entries(sizes.big_log, seed=1_000_000)
    print_proofs(measure_proofs(big, sizes.samples, seed=7))
    print(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
