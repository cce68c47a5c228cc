"""What a demo step works with and what it reports.

A `Stage` is the running control plane, what `govern` set up, the `Works`
that start `lictor run` processes, the log's verifier key, and the log
entries the steps have cited so far. A `Step` is a name, the promise it
shows, and a function that drives real work on the stage and records each
thing it checked in `Checks`; `Step.play` turns that into a `Row`, and turns
an exception into a failed row, so one broken step never hides the others.
A `Cited` entry is a log index with the execution and state the step saw
there; the audit at the end reads each back from the audited log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lictor.demo.plane import ControlPlane, Runtime, Setup
from lictor.demo.work import Finished, Works


@dataclass(frozen=True)
class Cited:
    """A log entry a step relies on: its index, and the execution and state it shows."""

    index: int
    execution: str | None
    state: str

    def matches(self, entry: dict[str, Any]) -> bool:
        same = entry.get("state") == self.state
        return same and self.execution in (None, entry.get("execution"))


@dataclass(frozen=True)
class Row:
    """One line of the demo's table: a step, its promise, whether it held, and why."""

    step: str
    promise: str
    ok: bool
    detail: str
    cited: tuple[Cited, ...] = ()


class Checks:
    """What a step checked: the failures, and the log entries it cites."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.cited: list[Cited] = []

    def that(self, holds: bool, failure: str) -> bool:
        """Record ``failure`` unless ``holds``; returns ``holds``."""
        if not holds:
            self.failed.append(failure)
        return holds

    def code(self, finished: Finished, want: int, who: str) -> bool:
        """That a process exited with ``want`` (else its last stderr line is the failure)."""
        last = (finished.stderr.strip().splitlines() or [""])[-1]
        return self.that(finished.code == want, f"{who} exited {finished.code}, not {want}: {last}")

    def cite(self, view: dict[str, Any]) -> list[int]:
        """Cite every transition of an execution view; returns their log indexes."""
        execution_id = str(view["execution"]["id"])
        steps = view["transitions"]
        self.cited += [Cited(t["log_index"], execution_id, t["state"]) for t in steps]
        return [int(t["log_index"]) for t in steps]


@dataclass
class Stage:
    """The control plane and everything the steps share."""

    plane: ControlPlane
    setup: Setup
    works: Works
    vkey: str
    cited: list[Cited] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return self.works.directory

    def runtime(self, region: str) -> Runtime:
        return self.setup.runtimes[region]


@dataclass(frozen=True)
class Step:
    """A step of the scenario: ``run`` returns the detail line and fills ``checks``."""

    name: str
    promise: str
    run: Callable[[Stage, Checks], str]

    def play(self, stage: Stage) -> Row:
        checks = Checks()
        try:
            detail = self.run(stage, checks)
        except Exception as e:  # a broken step is a failed promise, not a crashed demo
            checks.failed.append(f"{type(e).__name__}: {e}")
            detail = ""
        stage.cited += checks.cited
        failures = [f"FAILED: {f}" for f in checks.failed]
        text = "; ".join([*failures, detail] if detail else failures)
        return Row(self.name, self.promise, not checks.failed, text, tuple(checks.cited))
