"""A batch's view of the records: what is stored, overlaid with what the batch wrote.

The committer plans a batch's commands one after another; each sees the
writes of the commands before it through a `StateView`, so a batch behaves
exactly as if its commands had committed one by one. A batch is planned
while no other writer can commit (`Store.writing`), so a record read once
is remembered for the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

from lictor.store.base import Record, RecordWrite, Store


class StateView:
    """Records as the store has them, overlaid with this batch's writes."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._written: dict[tuple[str, str], RecordWrite] = {}
        self._read: dict[tuple[str, str], Record | None] = {}  # no one else writes meanwhile
        self._undo: list[tuple[tuple[str, str], RecordWrite | None]] = []

    @property
    def writes(self) -> list[RecordWrite]:
        return list(self._written.values())

    def get(self, kind: str, key: str) -> Record | None:
        write = self._written.get((kind, key))
        if write is not None:
            return write.record()
        if (kind, key) not in self._read:
            self._read[(kind, key)] = self._store.get_record(kind, key)
        return self._read[(kind, key)]

    def find(self, kind: str, tags: dict[str, str], limit: int = 100_000) -> list[Record]:
        """Records of ``kind`` with all ``tags``, by key (batch writes included)."""
        found = {r.key: r for r in self._store.find_records(kind, tags, limit=limit)}
        for (k, key), write in self._written.items():
            if k != kind:
                continue
            found.pop(key, None)
            record = write.record()
            if all(record.tag(t) == v for t, v in tags.items()):
                found[key] = record
        return [found[key] for key in sorted(found)]

    def apply(self, writes: Sequence[RecordWrite]) -> None:
        """Add a planned command's writes; a later write of a record replaces an earlier one.

        The combined write keeps the version the store expects, so the batch
        still compare-and-swaps against what it read.
        """
        for write in writes:
            earlier = self._written.get((write.kind, write.key))
            if earlier is not None:
                write = RecordWrite(
                    write.kind, write.key, write.doc, earlier.expected_version, write.tags
                )
            self._undo.append(((write.kind, write.key), earlier))
            self._written[(write.kind, write.key)] = write

    def savepoint(self) -> int:
        """A point to `rollback` to: undoes every `apply` made after it."""
        return len(self._undo)

    def rollback(self, savepoint: int) -> None:
        while len(self._undo) > savepoint:
            key, earlier = self._undo.pop()
            if earlier is None:
                del self._written[key]
            else:
                self._written[key] = earlier
