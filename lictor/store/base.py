"""The storage seam: one small protocol, one written contract, several engines.

The contract every `Store` keeps (and `tests/store/contract.py` checks on each
engine):

1. **Atomic batch append.** `append` writes a batch's entries, their private
   events, their stored hashes, the new head and the new checkpoint in one
   transaction: after a crash either all of it is there or none of it is.
2. **Compare-and-swap on the head.** `append` succeeds only if the head's
   ``version`` is still ``expected_version``; otherwise it raises
   `ConflictError` and writes nothing. Two writers can never both extend the
   same head, so the log cannot fork.
3. **One checkpoint per size.** A store refuses a second, different
   checkpoint for a tree size it already holds (`ConflictError`). A batch
   with no entries (record writes only) keeps the current checkpoint and
   still moves the head's version, so it is serialized like any other.
4. **Durability.** When `append` returns, the batch survives power loss and
   ``kill -9`` (SQLite: WAL with ``synchronous=FULL``).
5. **Reads see only committed data**, and a reader never sees a head whose
   entries or hashes are missing.

6. **Records move with the log.** `append` also applies a batch's record
   writes (executions, policy versions, ...) in the same transaction, each a
   compare-and-swap on the record's version: a state change and the log
   entry describing it are committed together or not at all.

Stored hashes are addressed by `lictor.log.merkle.stored_hash_index`, so a
store is also a `lictor.log.merkle.HashReader`. The store does no Merkle math
and signs nothing; it keeps what it is given.

Records are versioned JSON documents addressed by ``(kind, key)`` with a few
string *tags* (state, principal, parent, ...) that `find_records` can filter
on; the store never looks inside a document.

7. **Replica rows are last-writer-wins, outside the log.** Each control-plane
   process keeps one `Replica` row under its own id (`put_replica`, an
   upsert: no one else writes it, so nothing to compare-and-swap); the rows
   say who is alive and how it is doing, and are not governance state.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Head:
    """The signed head of the log: its size, root and signed checkpoint note."""

    size: int
    root: bytes
    checkpoint: bytes
    version: int


@dataclass(frozen=True)
class StoredEntry:
    """An entry's public bytes and, beside the log, its private event (or None)."""

    data: bytes
    private: bytes | None = None


@dataclass(frozen=True)
class Credential:
    """A caller's credential as stored: only the SHA-256 of the secret is kept."""

    name: str
    role: str
    secret_hash: bytes


@dataclass(frozen=True)
class Record:
    """A stored document: ``version`` starts at 1 and grows by one per write."""

    kind: str
    key: str
    version: int
    doc: bytes
    tags: tuple[tuple[str, str], ...] = ()

    def tag(self, name: str) -> str | None:
        return dict(self.tags).get(name)


@dataclass(frozen=True)
class RecordWrite:
    """Write ``doc`` if the record is still at ``expected_version`` (0: must not exist)."""

    kind: str
    key: str
    doc: bytes
    expected_version: int
    tags: tuple[tuple[str, str], ...] = ()

    def record(self) -> Record:
        return Record(self.kind, self.key, self.expected_version + 1, self.doc, self.tags)


@dataclass(frozen=True)
class Replica:
    """A control-plane process as it last reported itself; ``stats`` is its own JSON."""

    id: str
    version: str
    started_at_ms: int
    seen_at_ms: int
    stats: bytes = b"{}"


class Store(Protocol):
    """Durable storage for the log and credentials. See the module contract.

    A *shared* store may be written by other processes (replicas): a cached
    head may then be behind, `watch` tells when another writer committed,
    and `try_lead` elects one process for work that must run once.
    """

    shared: bool
    turns_at_once: bool  # whether `turn_now` can take a free turn (False: it never does)

    def head(self) -> Head | None:
        """The current head, or None before the first `append`."""

    def append(
        self,
        expected_version: int,
        entries: Sequence[StoredEntry],
        hashes: Sequence[bytes],
        head: Head,
        writes: Sequence[RecordWrite] = (),
    ) -> Head:
        """Atomically add a batch, apply its record writes and move the head.

        ``hashes`` are the stored hashes from index `stored_hash_count(old
        size)` on; ``head.version`` is ignored and set to ``expected_version +
        1``. Use ``expected_version = 0`` to create the first head. A record
        write whose expected version does not match is a `ConflictError` and
        the whole batch is rolled back.
        """

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """The stored hashes at ``indexes``, in order; `TreeError` if any is missing."""

    def read_entries(self, start: int, end: int) -> list[bytes]:
        """Entries ``start`` to ``end - 1``; `TreeError` if any is missing."""

    def read_private(self, index: int) -> bytes | None:
        """The private event kept beside entry ``index``, if any."""

    def checkpoint_at(self, size: int) -> bytes | None:
        """The checkpoint signed for tree ``size``, if one was."""

    def get_record(self, kind: str, key: str) -> Record | None:
        """The record ``(kind, key)``, if it exists."""

    def find_records(
        self, kind: str, tags: dict[str, str], after: str = "", limit: int = 1000
    ) -> list[Record]:
        """Records of ``kind`` carrying every tag in ``tags``, by key, keys > ``after``."""

    def find_records_below(
        self, kind: str, tag: str, below: str, limit: int = 1000
    ) -> list[Record]:
        """Records of ``kind`` whose ``tag`` sorts before ``below``, by that value then key.

        Backed by an index: the cost follows the matches, not the records.
        """

    def count_records(self, kind: str, tags: dict[str, str]) -> int:
        """How many records of ``kind`` carry every tag in ``tags``."""

    def put_record(self, write: RecordWrite) -> Record:
        """Write one record outside any log batch (compare-and-swap as in `append`)."""

    def add_credential(self, credential: Credential) -> None:
        """Store a credential (by hash); `ConflictError` if the hash is known."""

    def find_credential(self, secret_hash: bytes) -> Credential | None:
        """The credential whose secret hashes to ``secret_hash``, if any."""

    def put_replica(self, replica: Replica) -> None:
        """Insert or replace the row of ``replica.id`` (each process writes only its own)."""

    def list_replicas(self, seen_since_ms: int) -> list[Replica]:
        """Replica rows with ``seen_at_ms >= seen_since_ms``, by id."""

    def drop_replicas(self, seen_before_ms: int) -> int:
        """Delete replica rows with ``seen_at_ms < seen_before_ms``; how many went."""

    def watch(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` (from any thread) after other writers commit; returns a stop.

        A store no one else writes never calls it.
        """

    def writing(self) -> AbstractContextManager[None]:
        """Hold off other writers of a shared store while a batch is planned and appended
        (so replicas take turns instead of colliding); `append` stays compare-and-swap.

        The turn lasts while its process is alive: a holder that stalls loses it
        within a bounded time (PostgreSQL: `lictor.store.postgres.TURN_STALL_S`),
        and its `append` in that turn then fails with `StoreError`, writing nothing.
        """

    def turn_now(self) -> AbstractContextManager[bool]:
        """The writing turn, only if it can be had at once: inside, True while this
        thread holds it as `writing` would (and `writing` may be entered again
        within it), or False if it would have to be waited for (another writer, or
        another thread of this process, holds it). For a caller that must not
        wait, such as an event loop (`Sequencer`'s ``inline``). A store that
        cannot tell without waiting (PostgreSQL) always answers False."""

    def write_waits(self) -> bool:
        """Whether a write started now would wait for one that a thread of this process
        is making (its own commit, or housekeeping under the write lock): a hint for a
        caller that must not wait, such as an event loop (`Sequencer`'s ``inline``)."""

    def try_lead(self, role: str) -> bool:
        """Whether this process holds ``role`` (taking it if free); held until `close`
        or this process's death. A store no one else writes always leads."""

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
