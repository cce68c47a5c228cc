"""Use cases of the transparency log: record events, prove them, serve tiles.

`AuditLog` combines the pure log (`lictor.log`), the store and a clock. Every
event is written as a public entry ``{kind, time, commitment, ...public}`` and
a private record ``{event, salt}`` kept beside the log (DESIGN.md invariant 7);
the caller's `Receipt` holds both plus the inclusion proof, so it can later
prove the event's details to an auditor offline.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lictor.errors import EntryError, NotFoundError, TreeError
from lictor.log.commitment import SALT_SIZE, commit_canonical
from lictor.log.entry import canonical_entry, parse_entry
from lictor.log.merkle import leaf_hash, prove_consistency, prove_inclusion
from lictor.log.note import Ed25519Signer
from lictor.log.proof import TlogProof
from lictor.log.tiles import MAX_ENTRY_SIZE, Tile, encode_bundle, level_width
from lictor.sequencer import Appended, Sequencer
from lictor.store.base import Head, Store, StoredEntry

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


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

    def tlog_proof(self) -> str:
        return TlogProof(self.index, self.hashes, self.checkpoint).encode()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "index": self.index,
            "entry": self.entry,
            "leaf_hash": base64.b64encode(self.leaf_hash()).decode(),
            "tree_size": self.tree_size,
            "inclusion_proof": [base64.b64encode(h).decode() for h in self.hashes],
            "checkpoint": self.checkpoint.decode(),
            "tlog_proof": self.tlog_proof(),
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


class AuditLog:
    """The log as the rest of Lictor sees it. Thread-safe."""

    def __init__(
        self, store: Store, signer: Ed25519Signer, clock: Clock = utc_now, max_batch: int = 1024
    ) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock
        self.sequencer = Sequencer(store, signer, max_batch)

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
        """The clock, in integer milliseconds since the epoch (what `lictor.core` takes)."""
        return int(self.clock().timestamp() * 1000)

    def close(self) -> None:
        self.sequencer.close()

    def submit_event(
        self, kind: str, event: dict[str, Any], public: dict[str, Any] | None = None
    ) -> tuple[Future[Appended], StoredEntry]:
        """Queue an event; the future resolves once it is durably in the log."""
        stored = self.prepare_event(kind, event, public)
        return self.sequencer.submit(stored), stored

    def prepare_event(
        self, kind: str, event: dict[str, Any], public: dict[str, Any] | None = None
    ) -> PreparedEntry:
        """The public entry and private record for an event (not yet logged)."""
        salt = os.urandom(SALT_SIZE)
        time = self.clock().isoformat(timespec="milliseconds").replace("+00:00", "Z")
        full = {**event, "kind": kind, "time": time}
        event_data = canonical_entry(full)
        entry = {**(public or {}), "kind": kind, "time": time}
        entry["commitment"] = commit_canonical(event_data, salt)
        salt_text = base64.b64encode(salt).decode()
        # the canonical form of {"event": full, "salt": salt_text}, built from its parts
        private_data = b'{"event":' + event_data + b',"salt":"' + salt_text.encode() + b'"}'
        if len(private_data) > MAX_ENTRY_SIZE:
            raise EntryError(f"event is {len(event_data)} bytes; too large to log")
        data = canonical_entry(entry)
        return PreparedEntry(data, private_data, entry, full, salt_text)

    def append_event(
        self, kind: str, event: dict[str, Any], public: dict[str, Any] | None = None
    ) -> Receipt:
        """Log an event and wait for it to be durable; returns its receipt."""
        future, stored = self.submit_event(kind, event, public)
        return self.receipt(future.result(), stored)

    def receipt(self, appended: Appended, stored: StoredEntry | None = None) -> Receipt:
        """The receipt of an entry against the checkpoint that first included it."""
        index, head = appended.index, appended.head
        hashes = tuple(prove_inclusion(index, head.size, self.sequencer))
        event: dict[str, Any] | None
        salt: str | None
        if isinstance(stored, PreparedEntry):
            entry, event, salt = stored.entry, stored.event, stored.salt
            data = stored.data
        else:
            data = stored.data if stored else self.store.read_entries(index, index + 1)[0]
            private = stored.private if stored else self.store.read_private(index)
            entry, (event, salt) = parse_entry(data), _split_private(private)
        leaf = leaf_hash(data)
        return Receipt(index, entry, head.size, hashes, head.checkpoint, event, salt, leaf)

    def entry(self, index: int) -> tuple[bytes, bytes | None]:
        """Entry bytes and private record of ``index``, or `NotFoundError`."""
        if not 0 <= index < self.head().size:
            raise NotFoundError(f"no entry {index} in a log of size {self.head().size}")
        return self.store.read_entries(index, index + 1)[0], self.store.read_private(index)

    def inclusion_proof(self, index: int, tree_size: int) -> list[bytes]:
        self._check_size(tree_size)
        return prove_inclusion(index, tree_size, self.sequencer)

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
