"""Use cases of the transparency log: record events, prove them, serve tiles.

`AuditLog` combines the pure log (`lictor.log`), the store and a clock. Every
event is written as a public entry ``{kind, time, commitment, ...public}`` and
a private record ``{event, salt}`` kept beside the log (DESIGN.md invariant 7);
the caller's `Receipt` holds both plus the inclusion proof, so it can later
prove the event's details to an auditor offline.

Time (ADR 15): every decision, lease and entry of the process reads one
`ServerClock`. It starts at the wall clock and then advances only as the
monotonic clock does, so a step of the wall clock (±1 h by hand or by a bad
NTP source) moves no lease's expiry closer or further; it never returns less
than it returned before, nor less than the newest entry time in the log
(read at start, and by the committer whenever another replica appended).
`EntryTimes` keeps entry times non-decreasing in log order: the committer
moves an entry prepared before an earlier-logged one up to that one's time.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lictor.errors import EntryError, NotFoundError, TreeError
from lictor.log.commitment import SALT_SIZE, commit_canonical
from lictor.log.encoding import b64encode
from lictor.log.entry import canonical_entry, canonical_plain, parse_entry
from lictor.log.merkle import (
    MAX_PROOFS_AT_ONCE,
    HashReader,
    leaf_hash,
    prove_consistency,
    prove_inclusion,
    prove_inclusions,
    stored_hash_index,
)
from lictor.log.note import Ed25519Signer
from lictor.log.proof import tlog_proof_text
from lictor.log.tiles import MAX_ENTRY_SIZE, Tile, encode_bundle, level_width
from lictor.sequencer import Appended, Sequencer
from lictor.service.entropy import random_bytes
from lictor.store.base import Head, Store, StoredEntry

Clock = Callable[[], datetime]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def epoch_ms(at: datetime) -> int:
    """``at`` (timezone-aware) in whole milliseconds since the epoch, exactly (no float)."""
    return (at - _EPOCH) // _MS


def entry_time(at_ms: int) -> str:
    """An entry's ``time``: RFC 3339 UTC with milliseconds, e.g. ``2025-01-02T03:04:05.678Z``."""
    seconds, ms = divmod(at_ms, 1000)
    return f"{_second_text(seconds)}.{ms:03d}Z"


@functools.lru_cache(maxsize=4)
def _second_text(seconds: int) -> str:
    """Entries come many to a second: each second's text is written once."""
    at = _EPOCH + timedelta(seconds=seconds)
    return at.isoformat(timespec="seconds").removesuffix("+00:00")


def elapsed_ns() -> int:
    """Nanoseconds on a clock that no one can step and that keeps running while the
    machine is suspended (``CLOCK_BOOTTIME`` where Linux has it; else the monotonic
    clock): lease time passes during a suspend, it is not handed back afterwards."""
    return time.clock_gettime_ns(_ELAPSED)


_ELAPSED = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


class ServerClock:
    """The time of this process, in integer milliseconds since the epoch. Thread-safe.

    Invariants: it reads ``wall`` once, at start; from then on it advances
    exactly as ``monotonic_ns`` does, so stepping the wall clock does not move
    it. It never returns less than it returned before, and never less than a
    time given to `floor` (which moves it forward, after which it keeps
    advancing at the monotonic pace). Without ``monotonic_ns`` it reads
    ``wall`` every time (a clock a test moves), held at the same two floors
    until ``wall`` passes them.
    """

    def __init__(
        self, wall: Clock = utc_now, monotonic_ns: Callable[[], int] | None = elapsed_ns
    ) -> None:
        self._wall = wall
        self._monotonic_ns = monotonic_ns
        self._lock = threading.Lock()
        self._offset_ms = 0
        self._start_ms = epoch_ms(wall())
        self._start_ns = monotonic_ns() if monotonic_ns else 0
        self._last_ms = self._start_ms

    def _reading(self) -> int:
        if self._monotonic_ns is None:
            return epoch_ms(self._wall())
        elapsed_ms = (self._monotonic_ns() - self._start_ns) // 1_000_000
        return self._start_ms + self._offset_ms + elapsed_ms

    def now_ms(self) -> int:
        with self._lock:
            self._last_ms = max(self._last_ms, self._reading())
            return self._last_ms

    def floor(self, at_ms: int) -> None:
        """From now on return at least ``at_ms`` (and advance from there)."""
        with self._lock:
            behind = at_ms - self._reading()
            if behind > 0 and self._monotonic_ns is not None:
                self._offset_ms += behind  # advance from ``at_ms``, not stand still
            self._last_ms = max(self._last_ms, at_ms)


@dataclass(frozen=True)
class Receipt:
    """Proof that an event was logged: entry, index, checkpoint, inclusion path."""

    index: int
    entry: dict[str, Any]
    tree_size: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    event: dict[str, Any] | None = None
    salt: str | None = None
    leaf: bytes | None = None

    def leaf_hash(self) -> bytes:
        return self.leaf or leaf_hash(canonical_entry(self.entry))

    def to_json(self) -> dict[str, Any]:
        path = [b64encode(h) for h in self.hashes]
        checkpoint = self.checkpoint.decode()
        body: dict[str, Any] = {
            "index": self.index,
            "entry": self.entry,
            "leaf_hash": b64encode(self.leaf_hash()),
            "tree_size": self.tree_size,
            "inclusion_proof": path,
            "checkpoint": checkpoint,
            "tlog_proof": tlog_proof_text(self.index, path, checkpoint),
        }
        if self.event is not None:
            body["event"] = self.event
            body["salt"] = self.salt
        return body


@dataclass(frozen=True)
class PreparedEntry(StoredEntry):
    """A stored entry that still holds the values it was encoded from.

    Its receipt needs no decoding: ``entry`` and ``event`` encode to exactly
    ``data`` and the private record.
    """

    entry: dict[str, Any] = field(default_factory=dict)
    event: dict[str, Any] = field(default_factory=dict)
    salt: str = ""
    time_ms: int = 0

    def restamped(self, at_ms: int) -> PreparedEntry:
        """The same event and salt with ``time`` set to ``at_ms`` (encoded anew)."""
        time_text = entry_time(at_ms)
        public = {k: v for k, v in self.entry.items() if k != "commitment"}
        full = {**self.event, "time": time_text}
        salt = base64.b64decode(self.salt)
        return _encoded({**public, "time": time_text}, full, salt, at_ms)


def _encoded(
    entry: dict[str, Any], full: dict[str, Any], salt: bytes, at_ms: int, plain: bool = False
) -> PreparedEntry:
    """The public entry (``entry`` plus the commitment to ``full``) and private record;
    ``plain``: both are known to be plain (`AuditLog.prepare_event`)."""
    encode = canonical_plain if plain else canonical_entry
    event_data = encode(full)
    entry = {**entry, "commitment": commit_canonical(event_data, salt)}
    salt_text = b64encode(salt)
    # the canonical form of {"event": full, "salt": salt_text}, built from its parts
    private_data = b'{"event":' + event_data + b',"salt":"' + salt_text.encode() + b'"}'
    if len(private_data) > MAX_ENTRY_SIZE:
        raise EntryError(f"event is {len(event_data)} bytes; too large to log")
    entry_data = encode(entry)
    if len(entry_data) > MAX_ENTRY_SIZE:
        raise EntryError(f"entry is {len(entry_data)} bytes; the limit is {MAX_ENTRY_SIZE}")
    return PreparedEntry(entry_data, private_data, entry, full, salt_text, at_ms)


class BatchProofs:
    """The inclusion proofs of one batch's entries at the size it made, all made on
    first use (`lictor.log.merkle.prove_inclusions`). Thread-safe."""

    def __init__(self, first: int, size: int) -> None:
        self.first, self.size = first, size
        self._lock = threading.Lock()
        self._proofs: list[tuple[bytes, ...]] | None = None

    def proof(
        self, index: int, reader: HashReader, known: dict[tuple[int, int], bytes]
    ) -> tuple[bytes, ...]:
        with self._lock:
            if self._proofs is None:
                made = prove_inclusions(self.first, self.size, reader, known)
                self._proofs = [tuple(proof) for proof in made]
            return self._proofs[index - self.first]


class EntryTimes:
    """Keeps entry times non-decreasing in log order, across replicas and restarts.

    The committer calls `planning` before it plans a batch on a head and
    `fit` on the batch's entries; `committed` hears of each commit. Entries
    prepared inside a plan read the clock after `planning` floored it at the
    newest logged time, so they are already in order; one prepared before it
    was queued (and overtaken) is restamped to the time of the entry before it.
    Only the committer thread calls these (and `AuditLog` once, before any).
    """

    def __init__(self, store: Store, clock: ServerClock) -> None:
        self._store = store
        self._clock = clock
        self._size = -1  # the log size `_last_ms` is the newest entry time of
        self._last_ms = 0

    def planning(self, head: Head) -> None:
        if head.size != self._size:  # another replica appended, or the first batch
            newest = self._store.read_entries(head.size - 1, head.size) if head.size else []
            self._last_ms = _time_of(newest)
            self._size = head.size
        self._clock.floor(self._last_ms)

    def fit(self, entries: Sequence[StoredEntry]) -> list[StoredEntry]:
        """``entries`` in order, each one's time at least the one's before it."""
        last, fitted = self._last_ms, []
        for entry in entries:
            if isinstance(entry, PreparedEntry):
                if entry.time_ms < last:
                    entry = entry.restamped(last)
                last = entry.time_ms
            fitted.append(entry)
        return fitted

    def committed(self, head: Head, entries: Sequence[StoredEntry]) -> None:
        times = [e.time_ms for e in entries if isinstance(e, PreparedEntry)]
        self._last_ms = max([self._last_ms, *times])
        self._size = head.size


def _time_of(found: Sequence[bytes]) -> int:
    """The time of the entry in ``found`` (0 for none, or one without a time)."""
    try:
        text = json.loads(found[0])["time"]
        return epoch_ms(datetime.fromisoformat(text))
    except (IndexError, ValueError, KeyError, TypeError):
        return 0


class AuditLog:
    """The log as the rest of Lictor sees it. Thread-safe."""

    def __init__(
        self,
        store: Store,
        signer: Ed25519Signer,
        clock: Clock | None = None,
        max_batch: int = 1024,
    ) -> None:
        """``clock``: a wall clock to follow on every reading (tests move one); by
        default the wall clock is read once and the monotonic clock kept from there."""
        self.store = store
        self.signer = signer
        self.clock = ServerClock() if clock is None else ServerClock(clock, None)
        self.times = EntryTimes(store, self.clock)
        inline = store.turns_at_once  # a loop commits only when the turn is free at once
        self.sequencer = Sequencer(store, signer, max_batch, self.times, inline=inline)
        self._subtrees: dict[tuple[int, int], bytes] = {}  # `prove_inclusion`'s memo
        self._batch: BatchProofs | None = None  # this process's newest batch
        self.sequencer.add_commit_listener(self.times.committed)
        self.sequencer.add_commit_listener(self._batch_committed)
        # never before the newest logged time, even if the wall clock went back since
        self.times.planning(self.sequencer.head)

    @property
    def origin(self) -> str:
        return self.signer.name

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey()

    def head(self) -> Head:
        """The newest committed head: this process's own, or the store's if it is shared
        (other replicas may have appended since this one last did)."""
        if self.store.shared:
            stored = self.store.head()
            if stored is not None and stored.version > self.sequencer.head.version:
                return stored
        return self.sequencer.head

    def now_ms(self) -> int:
        """The server's clock (`ServerClock`), in integer milliseconds since the epoch
        (what `lictor.core` takes): never decreasing, unmoved by wall-clock steps."""
        return self.clock.now_ms()

    def close(self) -> None:
        self.sequencer.close()

    def submit_event(
        self, kind: str, event: dict[str, Any], public: dict[str, Any] | None = None
    ) -> tuple[Future[Appended], StoredEntry]:
        """Queue an event; the future resolves once it is durably in the log."""
        stored = self.prepare_event(kind, event, public)
        return self.sequencer.submit(stored), stored

    def prepare_event(
        self,
        kind: str,
        event: dict[str, Any],
        public: dict[str, Any] | None = None,
        *,
        plain: bool = False,
    ) -> PreparedEntry:
        """The public entry and private record for an event (not yet logged), stamped
        with the server's clock (the committer may move the stamp later: `EntryTimes`).
        ``plain``: the caller knows ``event`` and ``public`` to be plain JSON
        (`lictor.log.entry.is_plain`), so they are encoded without walking them."""
        at_ms = self.now_ms()
        time_text = entry_time(at_ms)
        full = {**event, "kind": kind, "time": time_text}
        entry = {**(public or {}), "kind": kind, "time": time_text}
        return _encoded(entry, full, random_bytes(SALT_SIZE), at_ms, plain)

    def append_event(
        self, kind: str, event: dict[str, Any], public: dict[str, Any] | None = None
    ) -> Receipt:
        """Log an event and wait for it to be durable; returns its receipt."""
        future, stored = self.submit_event(kind, event, public)
        return self.receipt(future.result(), stored)

    def receipt(self, appended: Appended, stored: StoredEntry | None = None) -> Receipt:
        """The receipt of an entry against the checkpoint that first included it."""
        index, head = appended.index, appended.head
        hashes = self._inclusion(index, head.size)
        event: dict[str, Any] | None
        salt: str | None
        if isinstance(stored, PreparedEntry):
            leaf = leaf_hash(stored.data)
            if leaf != self.sequencer.read_hashes([stored_hash_index(0, index)])[0]:
                stored = None  # the committer restamped it (`EntryTimes`): read what is logged
        if isinstance(stored, PreparedEntry):
            entry, event, salt = stored.entry, stored.event, stored.salt
        else:
            data = stored.data if stored else self.store.read_entries(index, index + 1)[0]
            private = stored.private if stored else self.store.read_private(index)
            entry, (event, salt) = parse_entry(data), _split_private(private)
            leaf = leaf_hash(data)
        return Receipt(index, entry, head.size, hashes, head.checkpoint, event, salt, leaf)

    def _batch_committed(self, head: Head, entries: Sequence[StoredEntry]) -> None:
        if 0 < len(entries) <= MAX_PROOFS_AT_ONCE:
            self._batch = BatchProofs(head.size - len(entries), head.size)

    def _inclusion(self, index: int, size: int) -> tuple[bytes, ...]:
        """``index``'s inclusion proof at ``size``: made with the rest of its batch's when
        it is in the newest batch this process committed (the receipts of a batch are
        asked for together, by the committer, right after it)."""
        batch = self._batch
        if batch is not None and batch.size == size and batch.first <= index < size:
            return batch.proof(index, self.sequencer, self._subtrees)
        return tuple(prove_inclusion(index, size, self.sequencer, self._subtrees))

    def entry(self, index: int) -> tuple[bytes, bytes | None]:
        """Entry bytes and private record of ``index``, or `NotFoundError`."""
        if not 0 <= index < self.head().size:
            raise NotFoundError(f"no entry {index} in a log of size {self.head().size}")
        return self.store.read_entries(index, index + 1)[0], self.store.read_private(index)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        self._check_size(tree_size)
        return prove_inclusion(index, tree_size, self.sequencer, self._subtrees)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        self._check_size(second)
        return prove_consistency(first, second, self.sequencer)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.head().size:
            raise TreeError(f"tree size {size} is beyond the log's size {self.head().size}")

    def tile(self, tile: Tile) -> bytes:
        """The body of a hash tile or entry bundle that the current tree has."""
        available = level_width(self.head().size, tile.level) - tile.index * 256
        if available < tile.width:
            raise NotFoundError(f"{tile.path} is not in the tree yet")
        if tile.entries:
            start = tile.index * 256
            return encode_bundle(self.store.read_entries(start, start + tile.width))
        return b"".join(self.store.read_hashes(tile.hash_indexes()))


def _split_private(private: bytes | None) -> tuple[dict[str, Any] | None, str | None]:
    if private is None:
        return None, None
    record = parse_entry(private)
    return record["event"], record["salt"]
