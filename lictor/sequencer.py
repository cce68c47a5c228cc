"""Group commit: assigns indexes, extends the tree and signs one checkpoint per batch.

Appenders `submit` entries and get a future. One committer thread takes
everything pending (up to ``max_batch``), computes the new stored hashes and
root, signs a checkpoint for the new size, and hands the whole batch to
`Store.append` in one transaction. Futures resolve only after that commit
returned, so an acknowledged entry is durable and covered by a signed
checkpoint. If the commit fails, every future in the batch fails and nothing
was written. If the head moved underneath (another writer won the
compare-and-swap), the batch is recomputed on the new head, after a short
jittered pause that grows while replicas keep colliding.

With ``inline`` (a store whose turn can be tried without waiting), a caller on
an event loop whose command finds the committer idle is not handed over to it:
its loop commits the command itself, once the callbacks that were ready with
it have run, together with whatever they queued meanwhile. Callers are then
answered without the hand-offs between threads (to the committer and back,
each a wake-up), and without the committer and the loop taking the
interpreter's lock from each other at every statement of a commit: under load
that contention cost more than the loop's wait for the disk saves. So a busy
loop commits its callers' batches too, as long as its commits wait little for
the store (`INLINE_WAIT_S`, averaged over the last few); on a store slow to
sync, where the loop would sit idle through each commit, it leaves them to the
committer unless the committer is quiet (its last batch held at most one
command and nothing else is pending), and moves back once its commits are
quick again. A loop never waits for the committer, the store's own
housekeeping or another writer: it only tries the commit lock and the store's
turn (`Store.turn_now`), and if the committer holds the lock, another writer
the turn, or the store is writing already (`Store.write_waits`), leaves the
commands to the committer. So workers sharing one SQLite file commit on their
loops too whenever the turn is free; PostgreSQL replicas never do (``inline``
off: trying their turn is a round trip to the database).

Entries arrive as *commands*: a command is planned inside the committer, in
order, against a `StateView` of the records (what is stored plus what earlier
commands of the batch wrote) and the log index its first entry will get. Its
`Plan` lists entries to log, record writes and how to build the caller's
result. Planning in the committer makes every command see every earlier one:
a child spawned in the same batch as its parent's revocation is planned after
it, or before it and then revoked with it. A command that raises while
planning fails alone, and whatever it had applied to the view is undone. A
batch's entries, record writes, hashes and checkpoint are one transaction; on
a lost compare-and-swap the whole batch is replanned on the new head. An
`EntryOrder`, if given, sees each batch before it is planned and fits its
entries' times after, so entry times never decrease in log order.

The committer keeps the right edge of the committed tree in memory (a
`CompactRange`: one hash per set bit of the size), so extending the tree never
reads the store. The range always belongs to the cached head: both are loaded
from the store together (at start and after a conflict, checking the range
against the head's root) and replaced together only after a commit succeeded.

The sequencer is also a `HashReader`: it remembers the stored hashes of the
last `RECENT_HASHES` it committed, so the inclusion proof of a fresh entry
(whose path runs through recent hashes and the right edge) is built without
reading the store; older hashes are read from the store. A remembered hash is
one the store durably holds, so both sources always agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from lictor.errors import ConflictError, LictorError, StoreError, TreeError
from lictor.log.checkpoint import CheckpointSigner, open_checkpoint
from lictor.log.merkle import (
    EMPTY_ROOT,
    CompactRange,
    leaf_hash,
    stored_hash_count,
    stored_hash_index,
)
from lictor.log.note import Ed25519Signer
from lictor.store.base import Head, RecordWrite, Store, StoredEntry
from lictor.store.view import StateView

CONFLICT_RETRIES = 64
MAX_BACKOFF_S = 0.05
RECENT_HASHES = 1 << 16
# a loop commits its callers' batches while its commits wait at most this long for the
# store, on a moving average giving each new commit this weight (see top)
INLINE_WAIT_S = 0.002
INLINE_WAIT_WEIGHT = 0.25
logger = logging.getLogger("lictor.sequencer")


@dataclass(frozen=True)
class Appended:
    """Where an entry landed and the signed head that first contains it."""

    index: int
    head: Head


@dataclass(frozen=True)
class Plan:
    """What a command does: entries to log, records to write, the caller's result."""

    entries: Sequence[StoredEntry]
    writes: Sequence[RecordWrite]
    finish: Callable[[Head], Any]


Command = Callable[[StateView, int], Plan]
"""Plans one command given the batch's view and the index of its first entry."""

CommitListener = Callable[[Head, Sequence[StoredEntry]], None]
"""Told of each commit: the new head and the entries written, which end at its size."""


class EntryOrder(Protocol):
    """Orders a batch's entries in time (the log's `lictor.service.log.EntryTimes`).

    The committer calls `planning` before it plans a batch on ``head`` and
    hands `fit` the planned entries; what `fit` returns is what is written.
    """

    def planning(self, head: Head) -> None: ...

    def fit(self, entries: Sequence[StoredEntry]) -> list[StoredEntry]: ...


def append_entry(entry: StoredEntry) -> Command:
    """The command that logs one entry and nothing else; its result is `Appended`."""

    def plan(view: StateView, first_index: int) -> Plan:
        return Plan([entry], [], lambda head: Appended(first_index, head))

    return plan


def chain(*commands: Command) -> Command:
    """One command doing ``commands`` in order, all or nothing; its result is their tuple.

    Each sees the writes of those before it, exactly as consecutive commands
    of a batch would, but they commit together: no crash can split them.
    """

    def plan(view: StateView, first_index: int) -> Plan:
        plans: list[Plan] = []
        index = first_index
        for command in commands:
            step = command(view, index)
            view.apply(step.writes)
            index += len(step.entries)
            plans.append(step)
        entries = [e for step in plans for e in step.entries]
        writes = [w for step in plans for w in step.writes]
        return Plan(entries, writes, lambda head: tuple(step.finish(head) for step in plans))

    return plan


def _load_frontier(store: Store, head: Head) -> CompactRange:
    """The right edge of the stored tree of ``head``; `StoreError` unless it has its root."""
    indexes = _edge_indexes(head.size)
    frontier = CompactRange(head.size, store.read_hashes(indexes) if indexes else [])
    if frontier.root() != head.root:
        raise StoreError("stored hashes do not match the signed head")
    return frontier


class Sequencer:
    """Owns the write path of one log. Thread-safe; see the module docstring."""

    def __init__(
        self,
        store: Store,
        signer: Ed25519Signer,
        max_batch: int = 1024,
        order: EntryOrder | None = None,
        inline: bool = False,
    ) -> None:
        self._store = store
        self._signer = signer
        self._checkpoints = CheckpointSigner(signer)
        self._max_batch = max_batch
        self._order = order
        self._pending: list[tuple[Command, _Waiter]] = []
        self._outbox = _Outbox()
        self._cond = threading.Condition()
        self._closed = False
        self._committing = False  # a batch is being planned or written (committer only)
        self._listeners: list[CommitListener] = []
        self._notified: list[CommitListener] = []  # after the callers have their results
        self._recent = _RecentHashes()
        self._inline = inline
        self._commit_lock = threading.Lock()  # one batch at a time: committer or a loop
        self._drain_loop: asyncio.AbstractEventLoop | None = None  # will `_drain` soon
        self._last_batch = 0  # commands in the batch committed last
        self._inline_wait = 0.0  # seconds a loop's recent commits waited, averaged (`_drain`)
        self._head, self._frontier = self._initialize()
        self._thread = threading.Thread(target=self._run, name="lictor-sequencer", daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return self._signer.name

    @property
    def head(self) -> Head:
        return self._head

    def idle(self) -> bool:
        """Whether the committer has nothing to do: a command queued now is committed
        alone, at once. A hint, read without the lock (it may be a moment old)."""
        return not self._pending and not self._committing

    def _initialize(self) -> tuple[Head, CompactRange]:
        head = self._store.head()
        if head is None:
            note = self._sign(0, EMPTY_ROOT)
            try:
                return self._store.append(0, [], [], Head(0, EMPTY_ROOT, note, 0)), CompactRange()
            except ConflictError:  # another writer created it first
                head = self._store.head()
                if head is None:
                    raise
        checkpoint, _ = open_checkpoint(head.checkpoint, [self._signer.verifier], self.origin)
        if checkpoint.size != head.size or checkpoint.root != head.root:
            raise StoreError("stored head does not match its signed checkpoint")
        return head, _load_frontier(self._store, head)

    def _sign(self, size: int, root: bytes) -> bytes:
        return self._checkpoints.sign(size, root)

    def read_hashes(self, indexes: Sequence[int]) -> list[bytes]:
        """Stored hashes by index: recent ones from memory, the rest from the store."""
        return self._recent.read(indexes, self._store)

    def add_listener(self, listener: Callable[[Head], None]) -> None:
        """Call ``listener(head)`` from the committer after every commit (keep it quick)."""
        self._listeners.append(lambda head, entries: listener(head))

    def add_commit_listener(self, listener: CommitListener, *, after_results: bool = False) -> None:
        """Call ``listener(head, entries)`` from the committer after every commit, with
        the entries it wrote (indexes ``head.size - len(entries)`` on); keep it quick:
        callers hear of their commit only after every listener returned. With
        ``after_results``, it is called once the commit's callers have been handed
        their results instead: for news of the commit that must not hold them up (the
        event streams' fan-out, which otherwise ran on the event loop before them)."""
        (self._notified if after_results else self._listeners).append(listener)

    def submit(self, entry: StoredEntry) -> Future[Appended]:
        """Queue one entry; the future resolves once it is durably committed."""
        return self.submit_many([entry])[0]

    def submit_many(self, entries: Sequence[StoredEntry]) -> list[Future[Appended]]:
        return self.submit_commands([append_entry(e) for e in entries])

    def submit_commands(self, commands: Sequence[Command]) -> list[Future[Any]]:
        """Queue commands; each future resolves with its plan's result after the commit."""
        futures: list[Future[Any]] = [Future() for _ in commands]
        self._enqueue(list(zip(commands, futures, strict=True)))
        return futures

    def submit_async(self, commands: Sequence[Command]) -> list[asyncio.Future[Any]]:
        """`submit_commands` for callers on the running event loop: asyncio futures,
        settled by one call into the loop per batch rather than one per command."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        waiters = [_LoopWaiter(f, self._outbox) for f in futures]
        if self._enqueue(list(zip(commands, waiters, strict=True)), loop):
            loop.call_soon(self._drain, loop)
        return futures

    def _quiet(self, queued: int) -> bool:
        """Whether a loop is to commit the ``queued`` commands just added (under
        ``_cond``): the committer is not at a batch, and either the loop's commits
        wait little for the store or the committer has had nothing but one command
        at a time of late and only these are pending (see top)."""
        if self._committing:
            return False
        if self._inline_wait <= INLINE_WAIT_S:
            return True
        return self._last_batch <= 1 and len(self._pending) == queued

    async def run(self, command: Command) -> Any:
        """Queue ``command`` and await its result (see `submit_async`)."""
        return await self.submit_async([command])[0]

    def _enqueue(
        self, items: list[tuple[Command, _Waiter]], loop: asyncio.AbstractEventLoop | None = None
    ) -> bool:
        """Queue ``items`` and wake the committer, unless ``loop`` (the callers' own) is
        to commit them (``inline``): True if that loop must schedule its `_drain`."""
        with self._cond:
            if self._closed:
                raise StoreError("the log is closed")
            self._pending.extend(items)
            if loop is not None and self._inline:
                if self._drain_loop is loop:  # its drain, already due, takes them too
                    return False
                if self._drain_loop is None and self._quiet(len(items)):
                    self._drain_loop = loop
                    return True
            self._cond.notify()
            return False

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``, once the callbacks that were ready with the first command have
        run (and queued theirs): commit what is pending, in this thread. If the
        committer is at a batch after all, or the store is busy writing (its index or
        its WAL, ``write_waits``), the committer takes them instead."""
        with self._cond:
            self._drain_loop = None
        if self._store.write_waits() or not self._commit_lock.acquire(blocking=False):
            self._wake()
            return
        try:
            with contextlib.ExitStack() as turn:
                try:
                    held = turn.enter_context(self._store.turn_now())
                except Exception:  # the committer meets it too, and fails the batch with it
                    held = False
                if not held:  # a shared store's turn is another's: not waited for here
                    self._wake()
                    return
                batch = self._take(self._max_batch)
                if batch:
                    wall, cpu = time.perf_counter(), time.thread_time()
                    self._commit_and_settle(batch, loop)
                    waited = time.perf_counter() - wall - (time.thread_time() - cpu)
                    self._inline_wait += (waited - self._inline_wait) * INLINE_WAIT_WEIGHT
        finally:
            self._commit_lock.release()
        if self._pending:  # more than a batch holds, or queued from another thread
            self._wake()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify()

    def close(self) -> None:
        """Commit what is pending, then stop the committer."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _run(self) -> None:
        batch: list[tuple[Command, _Waiter]] = []
        try:
            while batch := self._next_batch():
                with self._commit_lock:
                    self._commit_and_settle(batch)
        except BaseException as e:  # never leave waiters hanging on a dead committer
            logger.exception("the log's committer stopped")
            error = StoreError(f"the log's committer stopped: {e}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            self._fail_pending(error)
            self._outbox.deliver()

    def _commit_and_settle(
        self, batch: list[tuple[Command, _Waiter]], here: asyncio.AbstractEventLoop | None = None
    ) -> None:
        """Commit ``batch``, hand its callers their results (those on ``here``, the loop
        running this, at once), then tell the listeners that wait for that."""
        self._committing = True
        self._last_batch = len(batch)
        committed = None
        try:
            committed = self._commit_batch(batch)
        finally:
            self._committing = False
            self._outbox.deliver(here)
        if committed is not None:
            self._notify(self._notified, *committed)

    def _next_batch(self) -> list[tuple[Command, _Waiter]]:
        """Up to ``max_batch`` pending entries whose callers still wait; [] once closed."""
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return []
            live = self._take(self._max_batch)
            if live:
                return live

    def _take(self, most: int) -> list[tuple[Command, _Waiter]]:
        """Up to ``most`` pending entries whose callers still wait (none may be)."""
        with self._cond:
            batch = self._pending[:most]
            del self._pending[:most]
        # a cancelled future's entry is dropped; the rest can no longer be cancelled
        return [(e, f) for e, f in batch if f.set_running_or_notify_cancel()]

    def _fail_pending(self, error: LictorError) -> None:
        with self._cond:
            self._closed = True
            pending, self._pending = self._pending, []
        for _, future in pending:
            if future.set_running_or_notify_cancel():
                future.set_exception(error)

    def _commit_batch(
        self, batch: list[tuple[Command, _Waiter]]
    ) -> tuple[Head, list[StoredEntry]] | None:
        """Commit ``batch`` and settle its waiters; the head and entries committed, or
        None if nothing was."""
        try:
            head, plans, entries = self._commit_with_retries(batch)
        except Exception as e:  # fail every waiter; nothing was acknowledged
            error = e if isinstance(e, LictorError) else StoreError(f"append failed: {e}")
            for _, future in batch:
                future.set_exception(error)
            return None
        self._notify(self._listeners, head, entries)
        for (_, future), plan in zip(batch, plans, strict=True):
            if isinstance(plan, LictorError):
                future.set_exception(plan)
                continue
            try:
                future.set_result(plan.finish(head))
            except Exception as e:  # the commit stands; only this caller's result failed
                future.set_exception(e)
        return head, entries

    def _notify(
        self, listeners: list[CommitListener], head: Head, entries: list[StoredEntry]
    ) -> None:
        for listener in listeners:
            try:
                listener(head, entries)
            except Exception:  # a listener must not break the write path
                logger.exception("commit listener failed")

    def _commit_with_retries(
        self, batch: list[tuple[Command, _Waiter]]
    ) -> tuple[Head, list[Plan | LictorError], list[StoredEntry]]:
        """Commit ``batch``. With a shared store, what was queued while this process
        waited for its turn joins ``batch`` (extended in place): replicas take turns
        at the write path, and one commit for all that waited keeps the batches as
        large as one writer's would be."""
        for attempt in range(CONFLICT_RETRIES):
            try:
                with self._store.writing():  # replicas take turns
                    if self._store.shared:  # others may have moved it since our last commit
                        self._catch_up()
                        batch.extend(self._take(self._max_batch - len(batch)))
                    plans, entries, writes = self._plan([command for command, _ in batch])
                    self._head, self._frontier = self._commit(
                        self._head, self._frontier, entries, writes
                    )
                return self._head, plans, entries
            except ConflictError:
                if not self._catch_up():
                    raise
                # replicas that keep colliding spread out (jittered, growing backoff)
                time.sleep(random.uniform(0, min(MAX_BACKOFF_S, 0.001 * 2**attempt)))
        raise ConflictError("the log head kept moving; batch not written")

    def _catch_up(self) -> bool:
        """Move to the store's head if it moved; False if the store has none."""
        latest = self._store.head()
        if latest is None:
            return False
        if latest.version != self._head.version:
            # load first: a failed load leaves the old head and range paired
            frontier = _load_frontier(self._store, latest)
            self._head, self._frontier = latest, frontier
        return True

    def _plan(
        self, commands: list[Command]
    ) -> tuple[list[Plan | LictorError], list[StoredEntry], list[RecordWrite]]:
        """Plan every command in order on one view; a failing command fails alone."""
        if self._order is not None:
            self._order.planning(self._head)
        view = StateView(self._store)
        plans: list[Plan | LictorError] = []
        entries: list[StoredEntry] = []
        for command in commands:
            savepoint = view.savepoint()
            try:
                plan = command(view, self._head.size + len(entries))
            except LictorError as e:  # undo what it applied to the view before failing
                view.rollback(savepoint)
                plans.append(e)
                continue
            view.apply(plan.writes)
            entries.extend(plan.entries)
            plans.append(plan)
        if self._order is not None:
            entries = self._order.fit(entries)
        return plans, entries, view.writes

    def _commit(
        self,
        head: Head,
        frontier: CompactRange,
        entries: list[StoredEntry],
        writes: list[RecordWrite],
    ) -> tuple[Head, CompactRange]:
        """Write ``entries`` on ``head``; the new head and range (the old are untouched)."""
        if frontier.size != head.size:
            raise TreeError("the tree's right edge does not match the head")
        grown = CompactRange(frontier.size, frontier.hashes)
        new_hashes: list[bytes] = []
        for entry in entries:
            new_hashes.extend(h for _, _, h in grown.append(leaf_hash(entry.data)))
        size, root = grown.size, grown.root()
        if len(new_hashes) != stored_hash_count(size) - stored_hash_count(head.size):
            raise TreeError("stored hash count does not match the tree size")
        note = self._sign(size, root) if entries else head.checkpoint
        new_head = Head(size, root, note, 0)
        stored = self._store.append(head.version, entries, new_hashes, new_head, writes)
        self._recent.add(stored_hash_count(head.size), new_hashes, grown)
        return stored, grown


class _Waiter(Protocol):
    """What the committer settles: a `concurrent.futures.Future`, or a `_LoopWaiter`."""

    def set_running_or_notify_cancel(self) -> bool: ...

    def set_result(self, result: Any) -> None: ...

    def set_exception(self, exception: BaseException | None) -> None: ...

    def done(self) -> bool: ...


class _Outbox:
    """Results for callers on event loops, handed to each loop in one call per batch
    (a call into a loop from another thread wakes it: one wake-up, not one per caller).
    Used by whoever holds the commit lock."""

    def __init__(self) -> None:
        self._by_loop: dict[asyncio.AbstractEventLoop, list[_Settled]] = {}

    def add(self, loop: asyncio.AbstractEventLoop, settled: _Settled) -> None:
        self._by_loop.setdefault(loop, []).append(settled)

    def deliver(self, here: asyncio.AbstractEventLoop | None = None) -> None:
        """Hand every loop its results; ``here``, the loop running this, at once."""
        by_loop, self._by_loop = self._by_loop, {}
        for loop, settled in by_loop.items():
            if loop is here:
                _settle(settled)
                continue
            with contextlib.suppress(RuntimeError):  # a closed loop: no one waits any more
                loop.call_soon_threadsafe(_settle, settled)


_Settled = tuple["asyncio.Future[Any]", Any, BaseException | None]


def _settle(settled: list[_Settled]) -> None:
    """On the callers' loop: resolve each future still waiting."""
    for future, result, error in settled:
        if future.done():
            continue  # cancelled while the batch committed
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class _LoopWaiter:
    """A `_Waiter` for an asyncio future: its result goes out through the `_Outbox`."""

    def __init__(self, future: asyncio.Future[Any], outbox: _Outbox) -> None:
        self._future = future
        self._outbox = outbox
        self._settled = False

    def set_running_or_notify_cancel(self) -> bool:
        return not self._future.cancelled()  # a cancelled caller's command is dropped

    def set_result(self, result: Any) -> None:
        self._settled = True
        self._outbox.add(self._future.get_loop(), (self._future, result, None))

    def set_exception(self, exception: BaseException | None) -> None:
        self._settled = True
        error = exception or StoreError("the command failed")
        self._outbox.add(self._future.get_loop(), (self._future, None, error))

    def done(self) -> bool:
        return self._settled


class _RecentHashes:
    """The last `RECENT_HASHES` committed stored hashes, and the right edge's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hashes: dict[int, bytes] = {}

    def add(self, first: int, hashes: Sequence[bytes], edge: CompactRange) -> None:
        """Remember ``hashes`` (stored at ``first``, ``first + 1``...) after their commit."""
        with self._lock:
            self._hashes.update(zip(range(first, first + len(hashes)), hashes, strict=True))
            if len(self._hashes) > 2 * RECENT_HASHES:
                keep = first + len(hashes) - RECENT_HASHES
                edge_indexes = set(_edge_indexes(edge.size))
                self._hashes = {
                    i: h for i, h in self._hashes.items() if i >= keep or i in edge_indexes
                }

    def read(self, indexes: Sequence[int], store: Store) -> list[bytes]:
        with self._lock:
            found = [self._hashes.get(i) for i in indexes]
        missing = [i for i, h in zip(indexes, found, strict=True) if h is None]
        if not missing:
            return [h for h in found if h is not None]
        stored = dict(zip(missing, store.read_hashes(missing), strict=True))
        return [stored[i] if h is None else h for i, h in zip(indexes, found, strict=True)]


def _edge_indexes(size: int) -> list[int]:
    """Stored-hash indexes of the complete subtrees along the right edge of ``size``."""
    lo, indexes = 0, []
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            indexes.append(stored_hash_index(level, lo >> level))
            lo += 1 << level
    return indexes
