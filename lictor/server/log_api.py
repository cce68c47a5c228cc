"""Log routes: the public read API under /v1/log, the tlog-tiles paths under /log,
and the admin-only operator note append.

Public reads need no credential (DESIGN.md invariant 6). Tiles and entry
bundles are immutable once served, so they carry long-lived cache headers;
the checkpoint changes and is cached for a few seconds only.
"""

from __future__ import annotations

import asyncio
import gzip
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from lictor.errors import NotFoundError, TileError, TreeError
from lictor.log.encoding import b64encode
from lictor.log.entry import parse_entry
from lictor.log.merkle import leaf_hash
from lictor.log.tiles import parse_tile_path
from lictor.server.auth import caller, require_role
from lictor.server.openapi import answers
from lictor.service.log import AuditLog
from lictor.store.base import Credential

router = APIRouter(prefix="/v1/log", tags=["log"])
tiles = APIRouter(prefix="/log", tags=["tiles"])

IMMUTABLE = "public, max-age=31536000, immutable"
CHECKPOINT_CACHE = "public, max-age=5"
MAX_NOTE_TEXT = 8192
UINT = r"^(0|[1-9][0-9]{0,18})$"  # canonical decimal, no signs, no underscores
PRIVATE_READERS = ("admin", "auditor")
Index = Annotated[str, Query(pattern=UINT)]
Size = Annotated[str | None, Query(pattern=UINT)]


def _log(request: Request) -> AuditLog:
    log: AuditLog = request.app.state.log
    return log


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header admits gzip (``gzip;q=0`` refuses it)."""
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "x-gzip"):
            q = params.strip().removeprefix("q=").strip() if params.strip() else "1"
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


class NoteRequest(BaseModel):
    """An operator note: an out-of-band event such as a break-glass approval."""

    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["note"]
    text: str = Field(min_length=1, max_length=MAX_NOTE_TEXT)


class LogKey(BaseModel):
    origin: str
    vkey: str


class Checkpoint(BaseModel):
    size: int
    root: str
    checkpoint: str


class Entry(BaseModel):
    """An entry; ``event`` and ``salt`` only for admin and auditor credentials."""

    index: int
    entry: dict[str, Any]
    data: str
    leaf_hash: str
    event: dict[str, Any] | None = None
    salt: str | None = None


class Appended(BaseModel):
    index: int
    receipt: dict[str, Any]


class InclusionProof(BaseModel):
    index: int
    tree_size: int
    hashes: list[str]


class ConsistencyProof(BaseModel):
    first: int
    second: int
    hashes: list[str]


class OctetStream(Response):
    media_type = "application/octet-stream"


@router.get("/key", operation_id="get_log_key", responses=answers(LogKey))
def key(request: Request) -> dict[str, str]:
    """The log's origin and C2SP verifier key."""
    log = _log(request)
    return {"origin": log.origin, "vkey": log.vkey}


@router.get("/checkpoint", operation_id="get_checkpoint", responses=answers(Checkpoint))
def checkpoint(request: Request) -> dict[str, Any]:
    """The latest signed checkpoint."""
    head = _log(request).head()
    return {"size": head.size, "root": b64encode(head.root), "checkpoint": head.checkpoint.decode()}


@router.get("/entries/{index}", operation_id="get_entry", responses=answers(Entry, NotFoundError))
def entry(
    index: Annotated[str, Path(pattern=UINT)],
    request: Request,
    who: Annotated[Credential | None, Depends(caller)],
) -> dict[str, Any]:
    """One entry; its private event too for admin and auditor credentials."""
    log = _log(request)
    data, private = log.entry(int(index))
    body: dict[str, Any] = {
        "index": int(index),
        "entry": parse_entry(data),
        "data": b64encode(data),
        "leaf_hash": b64encode(leaf_hash(data)),
    }
    if private is not None and who is not None and who.role in PRIVATE_READERS:
        body.update(parse_entry(private))
    return body


@router.post(
    "/entries", status_code=201, operation_id="append_note", responses=answers(Appended, status=201)
)
async def append_note(
    note: NoteRequest,
    request: Request,
    who: Annotated[Credential, Depends(require_role("admin"))],
) -> dict[str, Any]:
    """Record an operator note; answers once it is durable, with its receipt."""
    log = _log(request)
    metrics = request.app.state.metrics
    with metrics.append_seconds.time():
        event = {"text": note.text, "by": who.name}
        future, stored = log.submit_event("note", event)
        appended = await asyncio.wrap_future(future)
    metrics.appended.inc()
    receipt = await run_in_threadpool(log.receipt, appended, stored)
    return {"index": appended.index, "receipt": receipt.to_json()}


@router.get(
    "/proof/inclusion",
    operation_id="get_inclusion_proof",
    responses=answers(InclusionProof, NotFoundError, TreeError),
)
def inclusion_proof(request: Request, index: Index, tree_size: Size = None) -> dict[str, Any]:
    """RFC 6962 inclusion proof of ``index`` in the tree of ``tree_size`` (default: latest)."""
    log = _log(request)
    size = log.head().size if tree_size is None else int(tree_size)
    hashes = log.inclusion_proof(int(index), size)
    return {"index": int(index), "tree_size": size, "hashes": [b64encode(h) for h in hashes]}


@router.get(
    "/proof/consistency",
    operation_id="get_consistency_proof",
    responses=answers(ConsistencyProof, NotFoundError, TreeError),
)
def consistency_proof(request: Request, first: Index, second: Size = None) -> dict[str, Any]:
    """RFC 6962 consistency proof from tree ``first`` to ``second`` (default: latest)."""
    log = _log(request)
    size = log.head().size if second is None else int(second)
    hashes = log.consistency_proof(int(first), size)
    return {"first": int(first), "second": size, "hashes": [b64encode(h) for h in hashes]}


@tiles.get("/checkpoint", operation_id="get_checkpoint_note", response_class=PlainTextResponse)
@tiles.head("/checkpoint", operation_id="head_checkpoint_note", response_class=PlainTextResponse)
def tiles_checkpoint(request: Request) -> Response:
    """The signed checkpoint note, as tlog-tiles serves it."""
    note = _log(request).head().checkpoint
    return Response(
        note,
        media_type="text/plain; charset=utf-8",
        headers={"Cache-Control": CHECKPOINT_CACHE},
    )


@tiles.get(
    "/tile/{path:path}",
    operation_id="get_tile",
    response_class=OctetStream,
    responses=answers(None, NotFoundError, TileError, TreeError),
)
@tiles.head(
    "/tile/{path:path}",
    operation_id="head_tile",
    response_class=OctetStream,
    responses=answers(None, NotFoundError, TileError, TreeError),
)
def tile(path: str, request: Request) -> Response:
    """A hash tile or entry bundle; 404 until the tree has it."""
    parsed = parse_tile_path("tile/" + path)
    body = _log(request).tile(parsed)
    headers = {"Cache-Control": IMMUTABLE}
    if parsed.entries and accepts_gzip(request.headers.get("accept-encoding", "")):
        body = gzip.compress(body, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return Response(body, media_type="application/octet-stream", headers=headers)
