"""Group commit: assigns indexes, extends the tree and signs one checkpoint per batch.

Appenders `submit` entries and get a future. One committer thread takes
everything pending (up to ``max_batch``), computes the new stored hashes and
root, signs a checkpoint for the new size, and hands the whole batch to
`Store.append` in one transaction. Futures resolve only after that commit
returned, so an acknowledged entry is durable and covered by a signed
checkpoint. If the commit fails, every future in the batch fails and nothing
was written. If the head moved underneath (another writer won the
compare-and-swap), the batch is recomputed on the new head.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from lictor.errors import ConflictError, LictorError, StoreError, TreeError
from lictor.log.checkpoint import Checkpoint, open_checkpoint
from lictor.log.merkle import (
    EMPTY_ROOT,
    leaf_hash,
    new_stored_hashes,
    stored_hash_count,
    tree_hash,
)
from lictor.log.note import Ed25519Signer, sign_note
from lictor.store.base import Head, Store, StoredEntry

CONFLICT_RETRIES = 5


@dataclass(frozen=True)
class Appended:
    """Where an entry landed and the signed head that first contains it."""

    index: int
    head: Head


class _OverlayReader:
    """Stored hashes of the batch being built, over those already stored."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.new: dict[int, bytes] = {}

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        missing = [i for i in indexes if i not in self.new]
        stored = dict(zip(missing, self.store.read_hashes(missing), strict=True))
        return [self.new[i] if i in self.new else stored[i] for i in indexes]


class Sequencer:
    """Owns the write path of one log. Thread-safe; see the module docstring."""

    def __init__(self, store: Store, signer: Ed25519Signer, max_batch: int = 1024) -> None:
        self._store = store
        self._signer = signer
        self._max_batch = max_batch
        self._pending: list[tuple[StoredEntry, Future[Appended]]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._head = self._initialize()
        self._thread = threading.Thread(target=self._run, name="lictor-sequencer", daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return self._signer.name

    @property
    def head(self) -> Head:
        return self._head

    def _initialize(self) -> Head:
        head = self._store.head()
        if head is None:
            note = self._sign(0, EMPTY_ROOT)
            return self._store.append(0, [], [], Head(0, EMPTY_ROOT, note, 0))
        checkpoint, _ = open_checkpoint(head.checkpoint, [self._signer.verifier], self.origin)
        if checkpoint.size != head.size or checkpoint.root != head.root:
            raise StoreError("stored head does not match its signed checkpoint")
        if tree_hash(head.size, self._store) != head.root:
            raise StoreError("stored hashes do not match the signed head")
        return head

    def _sign(self, size: int, root: bytes) -> bytes:
        return sign_note(Checkpoint(self.origin, size, root).text(), [self._signer])

    def submit(self, entry: StoredEntry) -> Future[Appended]:
        """Queue one entry; the future resolves once it is durably committed."""
        return self.submit_many([entry])[0]

    def submit_many(self, entries: Sequence[StoredEntry]) -> list[Future[Appended]]:
        futures: list[Future[Appended]] = [Future() for _ in entries]
        with self._cond:
            if self._closed:
                raise StoreError("the log is closed")
            self._pending.extend(zip(entries, futures, strict=True))
            self._cond.notify()
        return futures

    def close(self) -> None:
        """Commit what is pending, then stop the committer."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                batch = self._pending[: self._max_batch]
                del self._pending[: self._max_batch]
            self._commit_batch(batch)

    def _commit_batch(self, batch: list[tuple[StoredEntry, Future[Appended]]]) -> None:
        entries = [entry for entry, _ in batch]
        try:
            head = self._commit_with_retries(entries)
        except Exception as e:  # fail every waiter; nothing was acknowledged
            error = e if isinstance(e, LictorError) else StoreError(f"append failed: {e}")
            for _, future in batch:
                future.set_exception(error)
            return
        first = head.size - len(entries)
        for i, (_, future) in enumerate(batch):
            future.set_result(Appended(first + i, head))

    def _commit_with_retries(self, entries: list[StoredEntry]) -> Head:
        for _ in range(CONFLICT_RETRIES):
            try:
                self._head = self._commit(self._head, entries)
                return self._head
            except ConflictError:
                latest = self._store.head()
                if latest is None:
                    raise
                self._head = latest
        raise ConflictError("the log head kept moving; batch not written")

    def _commit(self, head: Head, entries: list[StoredEntry]) -> Head:
        reader = _OverlayReader(self._store)
        for offset, entry in enumerate(entries):
            index = head.size + offset
            hashes = new_stored_hashes(index, leaf_hash(entry.data), reader)
            base = stored_hash_count(index)
            reader.new.update((base + j, h) for j, h in enumerate(hashes))
        size = head.size + len(entries)
        root = tree_hash(size, reader)
        start, end = stored_hash_count(head.size), stored_hash_count(size)
        if len(reader.new) != end - start:
            raise TreeError("stored hash count does not match the tree size")
        new_hashes = [reader.new[i] for i in range(start, end)]
        new_head = Head(size, root, self._sign(size, root), 0)
        return self._store.append(head.version, entries, new_hashes, new_head)
