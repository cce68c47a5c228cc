"""The gateway's completions: queued, sent in batches, retried, never lost on drain."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from lictor.errors import (
    ExecutionRevokedError,
    LictorError,
    NotFoundError,
    PermissionDeniedError,
    UnavailableError,
)
from lictor.mcp import completions as module
from lictor.mcp.completions import Completions
from lictor.sdk import AsyncClient


class Plane:
    """A control plane's completion calls, recorded; ``batch_error`` / ``down`` fail them."""

    def __init__(self, batch_error: LictorError | None = None, down: int = 0) -> None:
        self.batches: list[list[str]] = []
        self.singles: list[str] = []
        self.batch_error, self.down = batch_error, down
        self.answers: dict[str, LictorError] = {}

    async def complete_many(self, items: list[dict[str, Any]], *, brief: bool) -> list[Any]:
        assert brief  # the gateway keeps nothing of an answer but its error
        if self.down:
            self.down -= 1
            raise UnavailableError("cannot reach the control plane")
        if self.batch_error is not None:
            raise self.batch_error
        self.batches.append([i["execution"] for i in items])
        return [self.answers.get(i["execution"], {"ok": True}) for i in items]

    async def complete(self, execution_id: str, outcome: str, **_: Any) -> dict[str, Any]:
        self.singles.append(execution_id)
        return {}


def run(plane: Plane, submit: int, stopped: bool = False) -> Completions:
    completions = Completions(cast(AsyncClient, plane), window=0.02)

    async def go() -> None:
        async def keeper_stopped() -> None:
            await asyncio.sleep(0)

        for n in range(submit):
            before = keeper_stopped() if stopped else None
            completions.submit(f"ex_{n}", "succeeded", None, before)
        await completions.drain()

    asyncio.run(go())
    return completions


def test_completions_submitted_together_go_in_one_call() -> None:
    plane = Plane()
    done = run(plane, 5, stopped=True)
    assert plane.batches == [[f"ex_{n}" for n in range(5)]]
    assert done.pending == 0


def test_a_batch_is_at_most_max_batch(monkeypatch: Any) -> None:
    monkeypatch.setattr(module, "MAX_BATCH", 2)
    plane = Plane()
    run(plane, 5)
    assert plane.batches == [["ex_0", "ex_1"], ["ex_2", "ex_3"], ["ex_4"]]


def test_an_unreachable_plane_is_tried_again(monkeypatch: Any) -> None:
    monkeypatch.setattr(module, "RETRIES_S", (0.01, 0.01, 0.01))
    plane = Plane(down=2)
    run(plane, 3)
    assert plane.batches == [["ex_0", "ex_1", "ex_2"]]
    given_up = Plane(down=10)
    run(given_up, 2)
    assert given_up.batches == [] and given_up.down == 6  # four tries, then logged


def test_a_plane_without_the_batch_call_gets_one_call_per_completion() -> None:
    for missing in (NotFoundError("no route"), LictorError("Method Not Allowed")):
        plane = Plane(batch_error=missing)
        run(plane, 3)
        assert plane.singles == ["ex_0", "ex_1", "ex_2"]


def test_a_refused_batch_is_not_sent_one_by_one() -> None:
    plane = Plane(batch_error=PermissionDeniedError("not yours"))
    run(plane, 2)
    assert plane.singles == [] and plane.batches == []


def test_each_answer_stands_alone(caplog: Any) -> None:
    plane = Plane()
    plane.answers = {
        "ex_0": ExecutionRevokedError("ended already"),
        "ex_1": PermissionDeniedError("a runtime acts only on executions it started"),
    }
    with caplog.at_level("WARNING", logger="lictor.mcp"):
        run(plane, 3)
    assert plane.batches == [["ex_0", "ex_1", "ex_2"]]
    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["could not complete execution ex_1: " + str(plane.answers["ex_1"])]
