"""The demo scenario run by a control plane for its console: start, follow, stop.

A server started with ``lictor serve --demo`` (as `lictor demo` starts it)
holds a `DemoRunner`. `start` runs ``lictor demo --attach PORT --json`` as a
child process with the admin credential: it plays `lictor.demo.scenario`
against this very server and prints one JSON line as each step starts and
ends. The runner keeps the latest state of every step for ``GET /v1/demo``.
`stop` sends SIGTERM (the scenario then ends its `lictor run` processes),
then SIGKILL to the whole process group after a grace period. The child's
standard input is a pipe from this process: when this process ends, however
it ends, the child reads end-of-file and stops the same way.

Only one run at a time; a second `start` while one runs is a conflict.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from lictor.demo import scenario
from lictor.errors import ConflictError

STOP_GRACE = 10.0
PENDING, RUNNING, OK, FAILED, STOPPED = "pending", "running", "ok", "failed", "stopped"


def _fresh_steps() -> list[dict[str, Any]]:
    steps = (*scenario.STEPS, scenario.AUDIT)
    return [{"name": s.name, "promise": s.promise, "status": PENDING, "detail": ""} for s in steps]


@dataclass
class DemoRunner:
    """Runs the scenario against the server on ``port`` with the admin ``credential``."""

    port: int
    credential: str = field(repr=False)
    runs: int = 0
    state: str = "idle"  # idle, running, finished, stopped, failed
    started_at_ms: int | None = None
    ended_at_ms: int | None = None
    held: bool | None = None
    steps: list[dict[str, Any]] = field(default_factory=_fresh_steps)
    _process: subprocess.Popen[str] | None = None
    _stopped: subprocess.Popen[str] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> dict[str, Any]:
        """Start a run; raises `ConflictError` while one is running."""
        with self._lock:
            if self._process is not None and self._process.poll() is None:
                raise ConflictError("the demo scenario is already running")
            argv = [sys.executable, "-m", "lictor.cli.main", "demo", "--attach", str(self.port)]
            env = {k: v for k, v in os.environ.items() if not k.startswith("LICTOR_")}
            env["LICTOR_CREDENTIAL"] = self.credential
            self._process = subprocess.Popen(
                [*argv, "--json", "--until-stdin-closes"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.PIPE,  # its end closes with this process: the child then stops
                env=env,
                text=True,
                start_new_session=True,
            )
            self.runs += 1
            self.state, self.held = "running", None
            self.started_at_ms, self.ended_at_ms = _now_ms(), None
            self.steps = _fresh_steps()
            process = self._process
        threading.Thread(target=self._follow, args=(process,), daemon=True).start()
        return self.status()

    def stop(self) -> dict[str, Any]:
        """Stop a run (no-op when none runs)."""
        with self._lock:
            process = self._process
            if process is None or process.poll() is not None:
                return self._status()
            self._stopped = process
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        with self._lock:
            self._end(process, "stopped", STOPPED, "")
        return self.status()

    def status(self) -> dict[str, Any]:
        with self._lock:
            return self._status()

    def _status(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "runs": self.runs,
            "started_at_ms": self.started_at_ms,
            "ended_at_ms": self.ended_at_ms,
            "held": self.held,
            "steps": [dict(step) for step in self.steps],
        }

    def _follow(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self._read(process, process.stdout)
        code = process.wait()
        with self._lock:
            if self._stopped is process:
                self._end(process, "stopped", STOPPED, "")
            elif self.held is None:  # ended without its verdict: it crashed or was killed
                self._end(process, "failed", FAILED, f"the scenario process exited {code}")
            else:
                self._end(process, "finished", FAILED, "")

    def _end(self, process: subprocess.Popen[str], state: str, unfinished: str, why: str) -> None:
        """Record how ``process``'s run ended, once (lock held)."""
        if self._process is not process or self.state != "running":
            return
        self.state, self.ended_at_ms = state, _now_ms()
        for step in self.steps:
            if step["status"] in (PENDING, RUNNING):
                step["status"] = unfinished
                if why:
                    step["detail"], why = why, ""

    def _read(self, process: subprocess.Popen[str], out: IO[str]) -> None:
        for line in out:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            with self._lock:
                if self._process is not process:  # a stopped run's last words
                    continue
                if message.get("event") == "done":
                    self.held = bool(message.get("held"))
                    continue
                for step in self.steps:
                    if step["name"] == message.get("name"):
                        step["status"] = message.get("status", step["status"])
                        step["detail"] = str(message.get("detail", ""))
                        step["cited"] = list(message.get("cited", []))


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
