"""Demo routes: the console's demo page starts, follows and stops the built-in scenario.

Only a server started with ``lictor serve --demo`` (as `lictor demo` does)
has a scenario to run; elsewhere the status says ``"enabled": false`` and
starting or stopping answers 404 ``not_found``.
Admins start and stop it; auditors may watch.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from lictor.demo.runner import DemoRunner
from lictor.errors import ConflictError, NotFoundError
from lictor.server.auth import require_role
from lictor.server.openapi import answers
from lictor.store.base import Credential

router = APIRouter(prefix="/v1/demo", tags=["demo"])
Admin = Annotated[Credential, Depends(require_role("admin"))]
Reader = Annotated[Credential, Depends(require_role("admin", "auditor"))]


class DemoStatus(BaseModel):
    """``enabled``; on a server with the demo, the scenario's state and steps too."""

    enabled: bool
    state: str | None = None
    runs: int | None = None
    started_at_ms: int | None = None
    ended_at_ms: int | None = None
    held: Any = None
    steps: list[dict[str, Any]] | None = None


def _runner(request: Request) -> DemoRunner:
    runner: DemoRunner | None = getattr(request.app.state, "demo", None)
    if runner is None:
        raise NotFoundError("this control plane has no demo scenario (start it with lictor demo)")
    return runner


@router.get("", operation_id="get_demo", responses=answers(DemoStatus))
def status(request: Request, who: Reader) -> dict[str, Any]:
    """The scenario's state: each step with its promise, status and detail
    (``{"enabled": false}`` on a server without the demo)."""
    runner: DemoRunner | None = getattr(request.app.state, "demo", None)
    return {"enabled": False} if runner is None else {"enabled": True, **runner.status()}


@router.post(
    "/start",
    status_code=202,
    operation_id="start_demo",
    responses=answers(DemoStatus, NotFoundError, ConflictError, status=202),
)
def start(request: Request, who: Admin) -> dict[str, Any]:
    """Start the scenario (409 ``conflict`` while it runs)."""
    return {"enabled": True, **_runner(request).start()}


@router.post("/stop", operation_id="stop_demo", responses=answers(DemoStatus, NotFoundError))
async def stop(request: Request, who: Admin) -> dict[str, Any]:
    """Stop the scenario and its governed processes."""
    return {"enabled": True, **await run_in_threadpool(_runner(request).stop)}
