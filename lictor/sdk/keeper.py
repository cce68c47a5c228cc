"""The drivers of a `Keeper`: a thread for `Client` here, a task for `AsyncClient` in
`lictor.sdk.async_scope` (so a process that governs work with threads, `lictor
run`, does not load asyncio).

Each loop waits until the next renewal is due or the local deadline comes,
renews with a timeout that ends at the deadline (so a hung control plane
cannot hold it past it), and hands the result to the `Keeper`. A driver stops
when its execution is lost or when it is told to; stopping ends a renewal in
flight (the thread waits for it, the task cancels it), so no renewal races the
completion that follows.

Whatever a renewal raises is handed to the `Keeper` as a failure (retried
until the deadline), so the local deadline is kept even if the control
plane answers something malformed.

A push source of revocations (the events stream) would call
``handle.lose(...)`` from its own loop; the keeper notices on its next wake.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lictor.errors import LictorError, UnavailableError
from lictor.sdk.enforce import Keeper

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

    Renew = Callable[[float], dict[str, Any]]


class ThreadKeeper:
    """Renews in a daemon thread until stopped or lost."""

    def __init__(self, keeper: Keeper, renew: Renew) -> None:
        self._keeper, self._renew = keeper, renew
        self._stop = threading.Event()
        name = f"lictor-keeper-{keeper.handle.id}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        keeper = self._keeper
        while keeper.handle.lost is None:
            if self._stop.wait(max(0.0, keeper.wake_at() - time.monotonic())):
                return
            sent = time.monotonic()
            if keeper.expired(sent):
                keeper.expire()
            elif sent >= keeper.due_at:
                self._renew_once(sent)

    def _renew_once(self, sent: float) -> None:
        try:
            self._keeper.renewed(self._renew(self._keeper.deadline - sent), sent)
        except Exception as e:
            self._keeper.failed(as_failure(e), time.monotonic())


def as_failure(error: Exception) -> LictorError:
    """A renewal's failure as the `Keeper` judges it: anything unexpected (a malformed
    reply, a bug) is a failure to retry until the deadline, never the driver's end."""
    if isinstance(error, LictorError):
        return error
    return UnavailableError(f"renewal failed: {type(error).__name__}: {error}")
