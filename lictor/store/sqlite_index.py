"""The SQLite store's tag index, brought up to date behind the commits (docs/adr/0023).

Each tag of a record (an execution's state, principal, action, region, runtime,
parent, lease expiry) is a row of ``record_index`` (kind, tag, value, key), so
that finding records by tag costs what it finds. Written inside the commit, a
decision's six index rows land on six leaf pages in different parts of that
b-tree: with the small batches of a lightly loaded server, each page is written
to the WAL and fsynced for one or two rows. Measured over HTTP, that was a fifth
of the time to an acknowledged decision and about 50 µs of CPU.

So the commit writes, beside each record, one row of ``record_index_pending``
(kind, key, the tags the index holds for it, the tags it has now): for new
records, in key order, at the right edge of a small b-tree. The `Indexer`
thread moves pending rows into ``record_index`` in one transaction per pass,
many records at a time, so each index page is written once for many rows.

Nothing reads the index alone: `overlay` answers a query from the index and the
pending rows read in one snapshot, so the answer is exact at any moment, with
or without the thread, after a crash, and with other processes writing the same
file (`lictor.store.workers`). The invariant the two writers keep: for a
pending record, the index holds the rows of ``indexed``; for any other, the
rows of its tags. The commit inserts a pending row only for a record not
pending yet (holding the tags its row had), and otherwise updates its
``tags``; a pass applies each pending row's difference and deletes it, in one
transaction under the store's write lock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from lictor.store.passes import Passes

logger = logging.getLogger("lictor.store.sqlite")

Tags = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Indexing:
    """When the `Indexer` runs: ``interval_s`` after a commit, or sooner once
    ``every_records`` records wait; each pass indexes at most ``batch`` records."""

    interval_s: float = 0.2
    every_records: int = 2048
    batch: int = 8192

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.every_records < 1 or self.batch < 1:
            raise ValueError("interval_s, every_records and batch must be positive")


BEHIND_COMMITS = Indexing()


class Indexer(Passes):
    """The thread that indexes pending records (see top); it holds no reference to
    the store, only ``index_pending(limit) -> records indexed``."""

    def __init__(self, index_pending: Callable[[int], int], policy: Indexing) -> None:
        super().__init__("lictor-indexer", policy.interval_s)
        self._index_pending = index_pending
        self._policy = policy
        self._lock = threading.Lock()
        self._written = 0  # records written and not yet covered by a pass that ended well
        self._start()

    def committed(self, records: int) -> None:
        """A commit wrote ``records`` records (the commit path's whole cost: a sum)."""
        if records:
            with self._lock:
                self._written += records
                if self._written >= self._policy.every_records:
                    self._wake.set()

    def _due(self) -> bool:
        return self._written > 0

    def _pass(self) -> bool:
        """Index until a pass finds fewer than a batch; False if one failed (the
        records stay due, so the next pass comes after the back-off)."""
        with self._lock:
            written = self._written
        try:
            while self._index_pending(self._policy.batch) >= self._policy.batch:
                pass
        except Exception:  # logged and retried: queries stay exact meanwhile (see top)
            logger.exception("indexing pending records failed; will retry")
            return False
        with self._lock:
            self._written -= written  # what was committed during the pass stays due
        return True


def index_changes(
    pending: Sequence[tuple[str, str, str, str]],
) -> tuple[list[tuple[str, str, str, str]], list[tuple[str, str, str, str]]]:
    """The ``record_index`` rows to delete and to insert for pending rows
    ``(kind, key, indexed, tags)`` (tags as their rows keep them: JSON pairs): each
    record's difference. A new record (nothing indexed) adds its tags."""
    removed: list[tuple[str, str, str, str]] = []
    added: list[tuple[str, str, str, str]] = []
    for kind, key, indexed, tags in pending:
        if indexed == "[]":
            added += [(kind, tag, value, key) for tag, value in orjson.loads(tags)]
            continue
        old = {(tag, value) for tag, value in orjson.loads(indexed)}
        new = {(tag, value) for tag, value in orjson.loads(tags)}
        removed += [(kind, tag, value, key) for tag, value in old - new]
        added += [(kind, tag, value, key) for tag, value in new - old]
    return removed, added


def carries(tags: Tags, wanted: Mapping[str, str]) -> bool:
    """Whether ``tags`` hold every tag of ``wanted`` with its value."""
    have = dict(tags)
    return all(have.get(tag) == value for tag, value in wanted.items())
