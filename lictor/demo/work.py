"""Governed work for the demo: real `lictor run` processes doing short, harmless things.

`lictor_run` builds the argv of ``python -m lictor.cli.main run``; `Works`
starts such processes with a runtime's credential and a control plane URL in
their environment, never an enclosing execution's grant (each top-level run
starts a lineage of its own; a run nested in another inherits its grant, as
`lictor run` promises), and kills any still running when closed. Commands
are shell one-liners (``echo``, ``sleep``) that write marker files into
``$DEMO_WORK``, so the demo can tell whether, and as which execution, the
work really ran.

`record_exit` wraps a command so that its exit code lands in a file even when
the enclosing `lictor run` sends its whole command SIGTERM: the wrapper
catches SIGTERM (its child, after ``exec``, does not) and outlives the
command to write down how it ended.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lictor.demo.plane import Runtime
from lictor.errors import LictorError

LICTOR = [sys.executable, "-m", "lictor.cli.main"]
FROM_PARENT = ("LICTOR_GRANT", "LICTOR_EXECUTION_ID", "TRACEPARENT")
RECORD_EXIT = (
    "import signal, subprocess, sys\n"
    "signal.signal(signal.SIGTERM, lambda *_: None)\n"
    "code = subprocess.call(sys.argv[2:])\n"
    "open(sys.argv[1], 'w').write(str(code))\n"
    "sys.exit(code)\n"
)


def lictor_run(
    action: str,
    resource: str,
    principal: str | None = None,
    ttl: int | None = None,
    grace: float = 2.0,
) -> list[str]:
    """``lictor run ... --`` (the command follows); no principal: the parent's."""
    argv = [*LICTOR, "run", "--action", action, "--resource", resource, "--grace", str(grace)]
    if principal is not None:
        argv += ["--principal", principal]
    if ttl is not None:
        argv += ["--ttl", str(ttl)]
    return [*argv, "--"]


def record_exit(path: Path) -> list[str]:
    """A prefix for a command: run it, then write its exit code to ``path``."""
    return [sys.executable, "-c", RECORD_EXIT, str(path)]


def shell(line: str, *args: str) -> list[str]:
    """``sh -c line`` with ``args`` as ``$0``, ``$1``, ..."""
    return ["sh", "-c", line, *args]


def gone(pid: int, timeout: float) -> int:
    """Wait until process ``pid`` has ended; the wall time (ms) it was first seen gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return time.time_ns() // 1_000_000
        time.sleep(0.005)
    raise LictorError(f"process {pid} still runs after {timeout:.0f} s")


@dataclass(frozen=True)
class Finished:
    """How a `lictor run` ended: its exit code and output."""

    code: int
    stdout: str
    stderr: str


class Work:
    """One started `lictor run` process."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process

    def finish(self, timeout: float = 20.0) -> Finished:
        out, err = self.process.communicate(timeout=timeout)
        return Finished(self.process.returncode, out, err)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()


class Works:
    """Starts the demo's `lictor run` processes in ``directory`` and cleans them up."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._started: list[Work] = []

    def start(self, runtime: Runtime, url: str, argv: Sequence[str]) -> Work:
        env = {k: v for k, v in os.environ.items() if k not in FROM_PARENT}
        env.update(LICTOR_URL=url, LICTOR_CREDENTIAL=runtime.credential)
        env["DEMO_WORK"] = str(self.directory)
        process = subprocess.Popen(
            list(argv),
            env=env,
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        work = Work(process)
        self._started.append(work)
        return work

    def run(self, runtime: Runtime, url: str, argv: Sequence[str]) -> Finished:
        return self.start(runtime, url, argv).finish()

    def marker(self, name: str, work: Work, timeout: float = 20.0) -> str:
        """The text the command wrote to ``$DEMO_WORK/name``, once it has written it."""
        path = self.directory / name
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = path.read_text().strip() if path.exists() else ""
            if text:
                return text
            if work.process.poll() is not None:
                raise LictorError(f"lictor run ended before writing {name}: {work.finish()}")
            time.sleep(0.02)
        raise LictorError(f"no {name} written within {timeout:.0f} s")

    def close(self) -> None:
        """Kill every run still going (a step that failed half-way leaves none behind)."""
        for work in self._started:
            work.kill()
