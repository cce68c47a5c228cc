"""A store's background thread: a pass now and then, off the commit path.

The SQLite store keeps two: WAL checkpoints (`lictor.store.sqlite_wal`) and
the tag index (`lictor.store.sqlite_index`). Both wait to be woken, or
``interval_s``, run a pass if there is work, back off after a failed pass
(logged by the pass) and run a last pass when stopped. The thread holds no
reference to its store.
"""

from __future__ import annotations

import threading

RETRY_MAX_S = 60.0  # a failing pass is retried at most this far apart


class Passes:
    """The thread; a subclass says when there is work (`_due`) and does it (`_pass`,
    False when it failed), then calls `_start`."""

    def __init__(self, name: str, interval_s: float) -> None:
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to run a last pass and end; does not wait."""
        self._stopping.set()
        self._wake.set()

    def close(self) -> None:
        self.stop()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _due(self) -> bool:
        raise NotImplementedError

    def _pass(self) -> bool:
        raise NotImplementedError

    def _last(self) -> None:
        """What the thread does before it ends: one more pass."""
        self._pass()

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stopping.is_set() or not self._due():
                continue
            if self._pass():
                failures = 0
            else:
                failures = min(failures + 1, 16)
                self._stopping.wait(min(self._interval_s * 2**failures, RETRY_MAX_S))
        self._last()
