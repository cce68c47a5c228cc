"""A runtime's heartbeat: the renewals its keepers make at about the same time, in one call.

Each keeper thread renews its own execution when it falls due
(`lictor.sdk.keeper`). A `Client` holding a runtime's credential gathers the
renewals that fall due within `WINDOW_S` of each other into one
``POST /v1/executions/renewals`` (ADR 22): the control plane re-verifies each
as it would alone and commits them together. There is no thread of its own:
the first keeper to arrive waits the window, sends for every renewal that
gathered meanwhile (its own among them), and the next one still waiting
leads the next call.

Each renewal keeps its own timeout (the keeper's local deadline): one that
passes while it waits fails that renewal alone, as a lost answer would, and
a call waits no longer than the timeout of the renewal that leads it, so no
keeper is held past its deadline. A renewal with less than `ALONE_S` left
(a retry close to its deadline) is sent alone, at once. None asks for a new
grant: signing one costs the control plane a quarter of a renewal, and a
handle needs one only to start a child, which asks for a fresh one then
(`lictor.sdk.scope`). A whole call that fails (unreachable, refused) fails
each renewal it carried.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lictor.errors import LictorError, UnavailableError

WINDOW_S = 0.02  # how long a renewal waits for others to join it
ALONE_S = 0.25  # a renewal with less time than this left is sent alone
MAX_RENEWALS = 256  # per call, as the control plane allows

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any

    # sends renewals in one call within a timeout: each one's answer, or its error
    Send = Callable[[list[dict[str, Any]], float], list[dict[str, Any] | LictorError]]
    # renews one execution (id, ttl, timeout) in a call of its own
    Alone = Callable[[str, int | None, float], dict[str, Any]]


class _Renewal:
    __slots__ = ("answer", "item", "until")

    def __init__(self, item: dict[str, Any], until: float) -> None:
        self.item, self.until = item, until
        self.answer: dict[str, Any] | Exception | None = None


class Heartbeat:
    """Gathers the renewals of one client's keepers into calls of up to `MAX_RENEWALS`."""

    def __init__(self, send: Send, alone: Alone, window: float = WINDOW_S) -> None:
        self._send, self._alone, self._window = send, alone, window
        self._changed = threading.Condition()
        self._waiting: list[_Renewal] = []
        self._leading = False

    def renew(self, execution_id: str, ttl: int | None, timeout: float) -> dict[str, Any]:
        """Renew ``execution_id`` in the next call: its answer (`Client.renew`'s), or its
        error raised; `UnavailableError` if no answer came within ``timeout`` seconds."""
        if timeout < ALONE_S:
            return self._alone(execution_id, ttl, timeout)
        item: dict[str, Any] = {"execution": execution_id}
        if ttl is not None:
            item["ttl"] = ttl
        renewal = _Renewal(item, time.monotonic() + timeout)
        if self._joined(renewal):
            self._lead(renewal)
        if renewal.answer is None:
            raise UnavailableError(f"no answer to the renewal of {execution_id} in {timeout:g} s")
        if isinstance(renewal.answer, Exception):
            raise renewal.answer  # the keeper judges it (`lictor.sdk.keeper.as_failure`)
        return renewal.answer

    def _joined(self, renewal: _Renewal) -> bool:
        """Wait with the others for ``renewal``'s answer; True if it is to lead a call."""
        with self._changed:
            self._waiting.append(renewal)
            while renewal.answer is None:
                if not self._leading:
                    self._leading = True
                    return True
                remaining = renewal.until - time.monotonic()
                if remaining <= 0:
                    if renewal in self._waiting:
                        self._waiting.remove(renewal)
                    return False
                self._changed.wait(remaining)
            return False

    def _lead(self, own: _Renewal) -> None:
        """Wait the window, send ``own`` with those waiting, answer each, pass the lead."""
        batch, answers = [own], []
        try:
            time.sleep(max(0.0, min(self._window, own.until - time.monotonic())))
            with self._changed:
                self._waiting.remove(own)
                batch += self._waiting[: MAX_RENEWALS - 1]
                del self._waiting[: MAX_RENEWALS - 1]
            answers = self._answers(batch, own.until)
        finally:
            with self._changed:
                for renewal, answer in zip(batch, answers, strict=False):  # none if it broke
                    renewal.answer = answer
                self._leading = False
                self._changed.notify_all()

    def _answers(self, batch: list[_Renewal], until: float) -> list[dict[str, Any] | Exception]:
        timeout = max(0.001, until - time.monotonic())
        try:
            return list(self._send([r.item for r in batch], timeout))
        except Exception as e:  # the whole call failed: so did each renewal it carried
            return [e] * len(batch)
