"""The enforcement point's side of a lease: when to renew, and when to stop; no I/O.

An `ExecutionHandle` is a granted execution as the work holding it sees it:
id, grant, receipt, lease, and whether it is lost. A `Keeper` decides, from
times the caller passes in (``time.monotonic()`` seconds), when the next
renewal is due and what each renewal's result means; the drivers in
`lictor.sdk.keeper` do the waiting and the calls.

Guarantees:

- The local deadline is the *send* time of the last successful call (request
  or renewal) plus the lease the control plane granted, minus a safety margin.
  The server started that lease no earlier than the send, so the deadline
  always comes before the server's expiry; wall-clock jumps do not move it.
  `ExecutionHandle.stop_by` holds it: work that must be over when its
  authority ends is dead by then.
- With ``stop_ahead`` seconds, the execution is lost that long before the
  deadline (at most a quarter of the lease), so the work gets its notice in
  time to stop by the deadline; without, it is lost at the deadline.
- Renewals are due about a third of the granted lease after the last
  successful send, with jitter; a renewal that fails without an answer is
  retried sooner, until the deadline.
- A renewal answered with a non-active execution, or refused with
  `InvalidTransitionError`, is final: the execution is lost as
  `ExecutionRevokedError` (`LeaseLostError` for `LeaseExpiredError`). Other
  failures are retried until the deadline, which loses it as `LeaseLostError`.
- An execution is lost at most once; its cancel callbacks then run once each,
  in registration order, and one registered later runs at once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextvars import ContextVar

from lictor.errors import (
    ExecutionRevokedError,
    InvalidTransitionError,
    LeaseExpiredError,
    LeaseLostError,
    LictorError,
)

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any, Protocol

    class Uniform(Protocol):
        """What draws a keeper's jitter: `random.Random` (seeded, in tests) or `Jitter`."""

        def uniform(self, a: float, b: float, /) -> float: ...


RENEW_FRACTION = 1 / 3
JITTER = 0.15
MARGIN_FRACTION = 0.1
MIN_MARGIN_S = 0.05
RETRY_FRACTION = 0.1
MIN_RETRY_S = 0.05
MAX_STOP_AHEAD_FRACTION = 0.25


class Lease:
    """A lease as the control plane granted it; ``seconds`` is its granted length
    (shorter than ``ttl`` when capped at a parent's expiry). A plain class, not a
    dataclass or a named tuple: `lictor run` imports this module before its command
    starts, and `dataclasses` would cost it ~7 ms, `typing` 3."""

    __slots__ = ("expires_at_ms", "renew_by_ms", "seconds", "ttl")

    def __init__(self, ttl: float, expires_at_ms: int, renew_by_ms: int, seconds: float) -> None:
        self.ttl, self.expires_at_ms, self.renew_by_ms = ttl, expires_at_ms, renew_by_ms
        self.seconds = seconds

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Lease) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        ttl, expires, renew_by, seconds = self._fields()
        return f"Lease({ttl=}, expires_at_ms={expires}, renew_by_ms={renew_by}, {seconds=})"

    def _fields(self) -> tuple[float, int, int, float]:
        return self.ttl, self.expires_at_ms, self.renew_by_ms, self.seconds

    @classmethod
    def from_reply(cls, reply: dict[str, Any]) -> Lease:
        wire, stored = reply["lease"], reply["execution"]["lease"]
        seconds = (stored["expires_at_ms"] - stored["issued_at_ms"]) / 1000
        return cls(float(wire["ttl"]), wire["expires_at_ms"], wire["renew_by_ms"], seconds)


class ExecutionHandle:
    """A granted execution, held by the work it governs (safe to use from any thread)."""

    def __init__(self, reply: dict[str, Any]) -> None:
        self.execution: dict[str, Any] = reply["execution"]
        self.grant: str | None = reply.get("grant")
        self.receipt: dict[str, Any] | None = reply.get("receipt")
        self.lease = Lease.from_reply(reply)
        self.grant_until_ms = _grant_until(reply)
        self._lost: LictorError | None = None
        self._callbacks: list[Callable[[], object]] = []
        self._lock = threading.Lock()
        self.reported: tuple[str, int | None, str | None] | None = None
        self.stop_by = float("inf")  # the local deadline (monotonic), set by the keeper

    @property
    def id(self) -> str:
        return str(self.execution["id"])

    @property
    def lost(self) -> LictorError | None:
        """Why the execution was lost (`ExecutionRevokedError`, `LeaseLostError`), or None."""
        return self._lost

    def check(self) -> None:
        """Raise why the execution was lost; return if it may go on."""
        if self._lost is not None:
            raise self._lost

    def on_cancel(self, callback: Callable[[], object]) -> None:
        """Call ``callback`` once when the execution is lost (at once if it already is)."""
        with self._lock:
            if self._lost is None:
                self._callbacks.append(callback)
                return
        _run(callback)

    def report(
        self, outcome: str, exit_code: int | None = None, summary: str | None = None
    ) -> None:
        """Say how the work ended, to complete with instead of the block's own outcome."""
        self.reported = (outcome, exit_code, summary)

    def renewed(self, reply: dict[str, Any]) -> None:
        """Take a renewal's new execution, lease and grant (a heartbeat's renewal
        brings no grant: the one held stays, until `grant_until_ms`)."""
        self.execution, self.lease = reply["execution"], Lease.from_reply(reply)
        if reply.get("grant"):
            self.grant, self.grant_until_ms = reply["grant"], _grant_until(reply)

    def lose(self, error: LictorError) -> bool:
        """Mark the execution lost and run the cancel callbacks; False if it already was."""
        with self._lock:
            if self._lost is not None:
                return False
            self._lost, callbacks, self._callbacks = error, self._callbacks, []
        for callback in callbacks:
            _run(callback)
        return True


def _grant_until(reply: dict[str, Any]) -> int:
    """Until when a reply's grant is valid: its lease's expiry, down to the second (as
    the control plane writes its ``exp``); 0 without a grant."""
    if not reply.get("grant"):
        return 0
    return int(reply["lease"]["expires_at_ms"]) // 1000 * 1000


def _run(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:  # one failing callback must not stop the others, nor the keeper
        import logging  # only now: its import costs `lictor run` ~5 ms at every start

        logging.getLogger("lictor.sdk").exception("a cancel callback failed")


class Jitter:
    """`random.Random.uniform` from the kernel's random bytes: importing `random` costs
    `lictor run` 1.1 ms before its command starts, for one number per renewal."""

    def uniform(self, a: float, b: float, /) -> float:
        fraction = (int.from_bytes(os.urandom(7), "big") >> 3) / (1 << 53)  # [0, 1)
        return a + (b - a) * fraction


class Keeper:
    """The renewal schedule of one handle; every method takes the monotonic time."""

    def __init__(
        self,
        handle: ExecutionHandle,
        sent_at: float,
        rng: Uniform,
        stop_ahead: float = 0.0,
    ) -> None:
        self.handle = handle
        self._rng = rng
        self._stop_ahead = max(0.0, stop_ahead)
        self._schedule(sent_at)

    def _schedule(self, sent_at: float) -> None:
        seconds = self.handle.lease.seconds
        stop_by = sent_at + seconds - max(MIN_MARGIN_S, seconds * MARGIN_FRACTION)
        self.handle.stop_by = stop_by
        self.deadline = stop_by - min(self._stop_ahead, seconds * MAX_STOP_AHEAD_FRACTION)
        jitter = self._rng.uniform(1 - JITTER, 1 + JITTER)
        self.due_at = sent_at + seconds * RENEW_FRACTION * jitter

    def wake_at(self) -> float:
        """When to act next: the due renewal, or the deadline if that is sooner."""
        return min(self.due_at, self.deadline)

    def expired(self, now: float) -> bool:
        return now >= self.deadline

    def renewed(self, reply: dict[str, Any], sent_at: float) -> None:
        """A renewal sent at ``sent_at`` was answered with ``reply``."""
        state = reply["execution"]["state"]
        if state != "active":
            reason = reply["execution"].get("reason") or state
            self.handle.lose(ExecutionRevokedError(f"execution {self.handle.id} is {reason}"))
            return
        self.handle.renewed(reply)
        self._schedule(sent_at)

    def failed(self, error: LictorError, now: float) -> None:
        """A renewal failed at ``now``: lose the execution if final, else retry soon."""
        if isinstance(error, LeaseExpiredError):
            self.handle.lose(LeaseLostError(error.message))
        elif isinstance(error, InvalidTransitionError):
            self.handle.lose(ExecutionRevokedError(error.message))
        else:
            retry = max(MIN_RETRY_S, self.handle.lease.seconds * RETRY_FRACTION)
            self.due_at = now + retry

    def expire(self) -> None:
        """The deadline passed without a successful renewal."""
        message = f"execution {self.handle.id}: no renewal succeeded before the local deadline"
        self.handle.lose(LeaseLostError(message))


current: ContextVar[ExecutionHandle | None] = ContextVar("lictor_execution", default=None)


def outcome_for(error: BaseException | None) -> str:
    """The outcome to complete with, from what the governed block raised."""
    if error is None:
        return "succeeded"
    return "failed" if isinstance(error, Exception) else "cancelled"
