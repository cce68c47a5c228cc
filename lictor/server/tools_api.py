"""Tool pin routes: gateways report the tools they see; admins approve changed ones.

``POST /v1/tools/observe`` (runtime) pins first-seen tools and records changed
definitions, answering each tool's status; ``GET /v1/tools`` (admin, auditor)
lists pins with their definitions; ``POST /v1/tools/approve`` (admin) makes a
pending definition the approved one. See `lictor.service.tools`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from lictor.core.tools import MAX_NAME_LENGTH, MAX_SERVER_LENGTH
from lictor.errors import ConflictError, NotFoundError
from lictor.server.auth import require_role
from lictor.server.openapi import answers
from lictor.service.tools import MAX_TOOLS, Tools
from lictor.store.base import Credential

router = APIRouter(prefix="/v1/tools", tags=["tools"])
Runtime = Annotated[Credential, Depends(require_role("runtime"))]
Reader = Annotated[Credential, Depends(require_role("admin", "auditor"))]
Admin = Annotated[Credential, Depends(require_role("admin"))]


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_LENGTH)]
    title: Annotated[str, Field(max_length=1024)] | None = None
    description: Annotated[str, Field(max_length=65_536)] | None = None
    input_schema: dict[str, Any] | None = Field(default=None, alias="inputSchema")
    output_schema: dict[str, Any] | None = Field(default=None, alias="outputSchema")
    annotations: dict[str, Any] | None = None


class ObserveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    server: Annotated[str, Field(min_length=1, max_length=MAX_SERVER_LENGTH)]
    tools: Annotated[list[ToolDefinition], Field(max_length=MAX_TOOLS)]


class ApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    tool: Annotated[str, Field(min_length=3, max_length=MAX_SERVER_LENGTH + MAX_NAME_LENGTH + 1)]
    hash: Annotated[str, Field(pattern=r"^sha256:[0-9a-f]{64}$")]


class Seen(BaseModel):
    """A reported tool as judged (`lictor.service.tools.Seen`)."""

    tool: str
    name: str
    hash: str
    status: Literal["approved", "changed"]
    approved: str
    pending: str | None


class Observed(BaseModel):
    tools: list[Seen]


class Pin(BaseModel):
    """A tool's pin (`lictor.service.tools.Pin`) with its status."""

    model_config = ConfigDict(extra="allow")
    tool: str
    status: Literal["approved", "changed"]


class Pins(BaseModel):
    tools: list[Pin]


def _tools(request: Request) -> Tools:
    return Tools(request.app.state.log)


@router.post("/observe", operation_id="observe_tools", responses=answers(Observed, ConflictError))
def observe(body: ObserveRequest, request: Request, who: Runtime) -> dict[str, Any]:
    """Judge each reported tool against its pin: ``approved`` or ``changed``."""
    reported = [t.model_dump(by_alias=True, exclude_none=True) for t in body.tools]
    seen = _tools(request).observe(body.server, reported, who.name)
    return {"tools": [asdict(s) for s in seen]}


@router.get("", operation_id="list_tools", responses=answers(Pins))
def listing(
    request: Request,
    who: Reader,
    status: Annotated[Literal["approved", "changed"] | None, Query()] = None,
) -> dict[str, Any]:
    """Every pinned tool, with its approved and any pending definition."""
    return {"tools": [p.to_json() for p in _tools(request).list(status)]}


@router.post(
    "/approve", operation_id="approve_tool", responses=answers(Pin, NotFoundError, ConflictError)
)
def approve(body: ApproveRequest, request: Request, who: Admin) -> dict[str, Any]:
    """Approve a tool's pending definition (logged as ``tool_approved``)."""
    return _tools(request).approve(body.tool, body.hash, who.name).to_json()
