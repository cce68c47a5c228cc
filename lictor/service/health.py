"""The health of the control plane, for the console's dashboard: what each source covers.

- **Replicas.** Every control-plane process writes its own `Replica` row every
  few seconds (`Health.beat`): its counters, the decision latencies of its
  last minute and, per minute of the last hour, the change of its decision
  latency histogram and the number of active executions it sampled. A row
  seen in the last `STALE_AFTER_MS` is ``up``, an older one ``stale``, one
  written by a clean shutdown ``stopped``; rows older than `KEEP_MS` are
  dropped. On SQLite there is one replica, this process.
- **Decisions and revocations per minute** are counted from the log itself,
  which every replica shares (`LogTail`): an ``execution`` entry in state
  ``active`` is an allow (a new execution, or a renewal that re-verified it
  under a new policy version or attestation), ``denied`` a deny, ``revoked``
  a revocation (one per execution, cascades included). Each process reads
  only the entries it has not read yet, at most `MAX_SCAN` at a time; when
  more arrived it skips ahead and says from when its counts are complete.
- **Latency percentiles** are estimated from the histogram buckets, as
  Prometheus's ``histogram_quantile`` does (linear within a bucket), summed
  over replicas; **active executions** are the latest sample of any replica.
- **Runtimes, active executions, the active policy** are read from the
  records when asked. A runtime's ``last_decision`` is the newest allow or
  deny of its executions in the scanned log, with the policy version it was
  made under (null when none was scanned).

Only `LogTail` and `Health` read or write the store, and `CommitProbe` commits
through the log's committer; the rest is arithmetic on values passed in, time
included.

**Readiness** (`/readyz`) needs the store to answer *and to commit*: a store
that reads but cannot write (a full disk, a read-only database) fails every
decision. `CommitProbe` counts a commit in the last `FRESH_COMMIT_S` seconds
as proof; otherwise it commits nothing (no entry, no record: only the head's
version moves) through the committer and waits at most `PROBE_TIMEOUT_S`.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lictor.sequencer import Plan
from lictor.service.log import AuditLog
from lictor.service.policies import ACTIVE, SETTING
from lictor.service.runtimes import KIND as RUNTIME
from lictor.service.runtimes import Runtime
from lictor.store.base import Replica

MINUTE_MS = 60_000
WINDOW_MINUTES = 60
STALE_AFTER_MS = 30_000
KEEP_MS = 3_600_000
MAX_SCAN = 50_000
READ_CHUNK = 5_000
MAX_RUNTIMES = 2_000
DROP_EVERY_MS = MINUTE_MS
FRESH_COMMIT_S = 1.0
PROBE_TIMEOUT_S = 2.0
COUNTED = {"active": "allowed", "denied": "denied", "revoked": "revoked"}  # state: series


def minute_of(at_ms: int) -> int:
    return at_ms - at_ms % MINUTE_MS


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile of a histogram, as Prometheus's ``histogram_quantile`` estimates it.

    ``counts`` are cumulative per upper bound, the last one for +Inf; linear
    within a bucket, the highest finite bound when the rank falls past it.
    """
    total = counts[-1] if counts else 0
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for i, count in enumerate(counts):
        if count >= rank:
            if i == len(bounds):
                return bounds[-1]
            lower = bounds[i - 1] if i else 0.0
            return lower + (bounds[i] - lower) * (rank - below) / (count - below)
        below = count
    return bounds[-1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass(frozen=True)
class Sample:
    """This process at one time: its cumulative decision latency histogram, active count."""

    at_ms: int
    latency: tuple[int, ...]  # cumulative per bound of `Pulse.bounds_ms`, then +Inf
    active: int


class Pulse:
    """The last hour of one process's samples, read as per-minute changes. Thread-safe."""

    def __init__(self, bounds_ms: Sequence[float], started_at_ms: int) -> None:
        self.bounds_ms = tuple(bounds_ms)
        self._lock = threading.Lock()
        self._samples: deque[Sample] = deque()
        # counters start at zero with the process
        self._base = Sample(started_at_ms, (0,) * (len(self.bounds_ms) + 1), 0)

    def add(self, sample: Sample) -> None:
        with self._lock:
            self._samples.append(sample)
            while self._samples[0].at_ms < sample.at_ms - KEEP_MS - MINUTE_MS:
                self._base = self._samples.popleft()

    def _all(self) -> tuple[Sample, list[Sample]]:
        with self._lock:
            return self._base, list(self._samples)

    def minutes(self, extra: Sample | None = None) -> list[list[Any]]:
        """Per minute with samples (``extra`` last): ``[minute_ms, its latency histogram
        change (cumulative; [] if no decisions), at_ms of its last sample, active then]``."""
        found: dict[int, list[Any]] = {}
        previous, samples = self._all()
        for sample in [*samples, *([extra] if extra else [])]:
            minute = minute_of(sample.at_ms)
            row = found.setdefault(minute, [minute, [0] * len(sample.latency), 0, 0])
            change = [a - b for a, b in zip(sample.latency, previous.latency, strict=True)]
            row[1] = [a + b for a, b in zip(row[1], change, strict=True)]
            row[2], row[3] = sample.at_ms, sample.active
            previous = sample
        for row in found.values():
            row[1] = row[1] if row[1][-1] else []
        return sorted(found.values())

    def last_minute(self, now: Sample) -> dict[str, Any]:
        """Decisions and their p50/p99 in the minute before ``now``."""
        earlier, samples = self._all()
        for sample in samples:
            if sample.at_ms > now.at_ms - MINUTE_MS:
                break
            earlier = sample
        change = [a - b for a, b in zip(now.latency, earlier.latency, strict=True)]
        return {
            "decisions": change[-1],
            "latency_p50_ms": _ms(quantile(0.5, self.bounds_ms, change)),
            "latency_p99_ms": _ms(quantile(0.99, self.bounds_ms, change)),
        }


@dataclass
class _Minute:
    allowed: int = 0
    denied: int = 0
    revoked: int = 0


@dataclass
class _RuntimeSeen:
    at_ms: int = 0
    policy_version: str | None = None
    minutes: dict[int, int] = field(default_factory=dict)


class LogTail:
    """Decisions and revocations per minute, counted from the shared log's newest
    entries. Thread-safe; each entry is read once per process."""

    def __init__(self, log: AuditLog, max_scan: int = MAX_SCAN) -> None:
        self._log = log
        self.max_scan = max_scan
        self._lock = threading.Lock()
        self._next = 0  # the first entry not read yet
        self._minutes: dict[int, _Minute] = {}
        self._runtimes: dict[str, _RuntimeSeen] = {}
        self.complete_since_ms: int | None = None  # None: from the log's first entry
        self.last_entry_ms: int | None = None

    def catch_up(self, size: int, now_ms: int) -> None:
        """Count the entries up to ``size`` not read yet (at most the newest `max_scan`)."""
        with self._lock:
            start = self._next
            skipped = size - start > self.max_scan
            if skipped:
                start = size - self.max_scan
            for lo in range(start, size, READ_CHUNK):
                hi = min(size, lo + READ_CHUNK)
                for data in self._log.store.read_entries(lo, hi):
                    at = self._count(data)
                    if skipped and at is not None:  # counts are complete from here on
                        self.complete_since_ms, skipped = at, False
                self._next = hi
            self._prune(now_ms)

    def _count(self, data: bytes) -> int | None:
        """Count one entry; its time, if it has one."""
        try:
            entry = json.loads(data)
            at = round(datetime.fromisoformat(entry["time"]).timestamp() * 1000)
        except (ValueError, KeyError, TypeError):
            return None  # not an entry Lictor wrote: not counted
        self.last_entry_ms = at
        state = COUNTED.get(entry.get("state", "")) if entry.get("kind") == "execution" else None
        if state is None:
            return at
        minute = minute_of(at)
        counts = self._minutes.setdefault(minute, _Minute())
        setattr(counts, state, getattr(counts, state) + 1)
        runtime = entry.get("runtime")
        if state != "revoked" and isinstance(runtime, str):
            seen = self._runtimes.setdefault(runtime, _RuntimeSeen())
            if at >= seen.at_ms:
                seen.at_ms, seen.policy_version = at, entry.get("policy_version")
            seen.minutes[minute] = seen.minutes.get(minute, 0) + 1
        return at

    def _prune(self, now_ms: int) -> None:
        oldest = minute_of(now_ms) - (WINDOW_MINUTES - 1) * MINUTE_MS
        for minute in [m for m in self._minutes if m < oldest]:
            del self._minutes[minute]
        for seen in self._runtimes.values():
            for minute in [m for m in seen.minutes if m < oldest]:
                del seen.minutes[minute]

    def series(self, minutes: Sequence[int]) -> dict[str, list[int | None]]:
        """Allowed, denied and revoked per minute; None before the counts are complete."""
        with self._lock:
            since = self.complete_since_ms
            out: dict[str, list[int | None]] = {"allowed": [], "denied": [], "revoked": []}
            for minute in minutes:
                known = since is None or minute + MINUTE_MS > since
                counts = self._minutes.get(minute, _Minute())
                for name, values in out.items():
                    values.append(getattr(counts, name) if known else None)
            return out

    def runtime(self, runtime_id: str) -> dict[str, Any]:
        """The newest scanned decision of a runtime's executions, and its decisions per hour."""
        with self._lock:
            seen = self._runtimes.get(runtime_id)
            if seen is None:
                return {"last_decision": None, "decisions_last_hour": 0}
            last = {"at_ms": seen.at_ms, "policy_version": seen.policy_version}
            return {"last_decision": last, "decisions_last_hour": sum(seen.minutes.values())}


def replica_state(replica: Replica, stats: Mapping[str, Any], now_ms: int) -> str:
    if stats.get("stopped"):
        return "stopped"
    return "up" if replica.seen_at_ms >= now_ms - STALE_AFTER_MS else "stale"


def _stats(replica: Replica) -> dict[str, Any]:
    try:
        value = json.loads(replica.stats)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def merge_minutes(
    rows: Iterable[Mapping[str, Any]], bounds_ms: Sequence[float], minutes: Sequence[int]
) -> dict[str, list[Any]]:
    """Latency p50/p99 (summed histograms) and active executions (newest sample) per
    minute, from the ``minutes`` of replica stats whose bounds are ``bounds_ms``."""
    latency: dict[int, list[int]] = {}
    active: dict[int, tuple[int, int]] = {}
    for stats in rows:
        if list(stats.get("bounds_ms", [])) != list(bounds_ms):
            continue  # another version's buckets: not comparable
        for minute, change, at_ms, count in stats.get("minutes", []):
            if change:
                total = latency.setdefault(minute, [0] * len(change))
                latency[minute] = [a + b for a, b in zip(total, change, strict=True)]
            if at_ms >= active.get(minute, (-1, 0))[0]:
                active[minute] = (at_ms, count)
    return {
        "latency_p50_ms": [_ms(quantile(0.5, bounds_ms, latency.get(m, []))) for m in minutes],
        "latency_p99_ms": [_ms(quantile(0.99, bounds_ms, latency.get(m, []))) for m in minutes],
        "active": [active[m][1] if m in active else None for m in minutes],
    }


class Health:
    """This process's part of the dashboard: its replica row, its log tail, the report."""

    def __init__(
        self,
        log: AuditLog,
        replica_id: str,
        engine: str,
        version: str,
        bounds_ms: Sequence[float],
    ) -> None:
        self.log = log
        self.replica_id = replica_id
        self.engine = engine
        self.version = version
        self.started_at_ms = log.now_ms()
        self.pulse = Pulse(bounds_ms, self.started_at_ms)
        self.tail = LogTail(log)
        self.seen: list[tuple[Replica, str]] = []  # at the last beat, with their states
        self._dropped_at_ms = 0

    def active_executions(self) -> int:
        return self.log.store.count_records("execution", {"state": "active"})

    def row(self, sample: Sample, counters: Mapping[str, int], stopped: bool = False) -> Replica:
        """This replica's row as of ``sample`` (``minutes`` include it)."""
        stats = {
            "engine": self.engine,
            "stopped": stopped,
            "counters": dict(counters),
            "last_minute": self.pulse.last_minute(sample),
            "active_executions": sample.active,
            "bounds_ms": list(self.pulse.bounds_ms),
            "minutes": self.pulse.minutes(extra=sample),
        }
        data = json.dumps(stats, separators=(",", ":")).encode()
        return Replica(self.replica_id, self.version, self.started_at_ms, sample.at_ms, data)

    def beat(self, sample: Sample, counters: Mapping[str, int], stopped: bool = False) -> None:
        """Record ``sample``, write this replica's row, drop rows gone for an hour."""
        row = self.row(sample, counters, stopped)
        self.pulse.add(sample)
        self.log.store.put_replica(row)
        if sample.at_ms - self._dropped_at_ms >= DROP_EVERY_MS:
            self.log.store.drop_replicas(sample.at_ms - KEEP_MS)
            self._dropped_at_ms = sample.at_ms
        rows = self.log.store.list_replicas(sample.at_ms - KEEP_MS)
        self.seen = [(r, replica_state(r, _stats(r), sample.at_ms)) for r in rows]

    def report(self, sample: Sample, counters: Mapping[str, int]) -> dict[str, Any]:
        """The dashboard as of ``sample`` (this process's fresh sample, not yet written)."""
        now = sample.at_ms
        started = time.monotonic()
        head = self.log.store.head()
        round_trip_ms = round((time.monotonic() - started) * 1000, 3)
        size = head.size if head else 0
        self.tail.catch_up(size, now)
        minutes = [
            minute_of(now) - (WINDOW_MINUTES - 1 - i) * MINUTE_MS for i in range(WINDOW_MINUTES)
        ]
        mine = self.row(sample, counters)
        rows = [r for r in self.log.store.list_replicas(now - KEEP_MS) if r.id != mine.id]
        replicas = sorted([mine, *rows], key=lambda r: r.id)
        stats = [_stats(r) for r in replicas]
        return {
            "now_ms": now,
            "replica": self.replica_id,
            "replicas": [
                self._replica_json(r, s, now) for r, s in zip(replicas, stats, strict=True)
            ],
            "database": {"engine": self.engine, "status": "ok", "round_trip_ms": round_trip_ms},
            "log": self._log_json(size, now),
            **self._runtimes_json(),
            "executions": {"active": sample.active},
            "policy": self._policy_json(),
            "history": self._history_json(minutes, stats),
        }

    def _replica_json(self, replica: Replica, stats: Mapping[str, Any], now: int) -> dict[str, Any]:
        return {
            "id": replica.id,
            "self": replica.id == self.replica_id,
            "state": replica_state(replica, stats, now),
            "version": replica.version,
            "engine": stats.get("engine"),
            "started_at_ms": replica.started_at_ms,
            "seen_at_ms": replica.seen_at_ms,
            "counters": stats.get("counters", {}),
            "last_minute": stats.get("last_minute"),
            "active_executions": stats.get("active_executions"),
        }

    def _log_json(self, size: int, now: int) -> dict[str, Any]:
        last = self.tail.last_entry_ms if size else None
        age = None if last is None else round(max(0, now - last) / 1000, 3)
        return {
            "origin": self.log.origin,
            "size": size,
            "last_entry_ms": last,
            "checkpoint_age_s": age,
        }

    def _runtimes_json(self) -> dict[str, Any]:
        records = self.log.store.find_records(RUNTIME, {}, limit=MAX_RUNTIMES + 1)
        runtimes = [Runtime.from_doc(r.doc) for r in records[:MAX_RUNTIMES]]
        runtimes.sort(key=lambda r: (r.region, r.cluster, r.id))
        return {
            "runtimes": [self._runtime_json(r) for r in runtimes],
            "runtimes_truncated": len(records) > MAX_RUNTIMES,
        }

    def _runtime_json(self, runtime: Runtime) -> dict[str, Any]:
        attestation = runtime.attestation or {}
        return {
            "id": runtime.id,
            "region": runtime.region,
            "cluster": runtime.cluster,
            "state": runtime.state,
            "last_heartbeat_ms": runtime.last_heartbeat_ms,
            "attestation_state": str(attestation.get("state", "unverified")),
            "attestation_digests": len(attestation.get("digests", {})),
            **self.tail.runtime(runtime.id),
        }

    def _policy_json(self) -> dict[str, Any]:
        record = self.log.store.get_record(SETTING, ACTIVE)
        value = json.loads(record.doc) if record else {}
        return {
            "active_version": value.get("version"),
            "activated_at_ms": value.get("activated_at_ms"),
        }

    def _history_json(
        self, minutes: Sequence[int], stats: Iterable[Mapping[str, Any]]
    ) -> dict[str, Any]:
        counted = self.tail.series(minutes)
        merged = merge_minutes(stats, self.pulse.bounds_ms, minutes)
        return {
            "minutes": list(minutes),
            "decisions_allowed": counted["allowed"],
            "decisions_denied": counted["denied"],
            "revocations": counted["revoked"],
            **merged,
            "log_scan": {
                "complete_since_ms": self.tail.complete_since_ms,
                "max_entries": self.tail.max_scan,
            },
        }


class CommitProbe:
    """Whether this process can commit to the log's store now. Thread-safe.

    Invariant: `problem` is None only if a commit of this process succeeded in
    the last `FRESH_COMMIT_S` seconds (monotonic) or a probe commit succeeded
    within `PROBE_TIMEOUT_S` just now; a probe changes no entry and no record.
    """

    def __init__(self, log: AuditLog) -> None:
        self._log = log
        self._committed_at = -FRESH_COMMIT_S  # no commit seen yet: probe first
        log.sequencer.add_listener(self._committed)

    def _committed(self, _: object) -> None:
        self._committed_at = time.monotonic()

    def problem(self) -> str | None:
        """Why a commit cannot be made now, or None when commits succeed."""
        if time.monotonic() - self._committed_at < FRESH_COMMIT_S:
            return None
        try:
            future = self._log.sequencer.submit_commands([_nothing])[0]
        except Exception as e:  # the committer stopped
            return f"the log cannot commit: {e}"
        try:
            future.result(timeout=PROBE_TIMEOUT_S)
        except TimeoutError:
            future.cancel()  # still queued: dropped; if running it commits nothing
            return f"a commit did not finish within {PROBE_TIMEOUT_S:g} s"
        except Exception as e:
            return f"a commit failed: {e}"
        return None


def _nothing(view: object, first_index: int) -> Plan:
    """The probe's command: no entry and no record written."""
    return Plan([], [], lambda head: None)
