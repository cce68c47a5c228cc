"""The web console under /console: six pages, their static files, and who is signed in.

Pages are plain HTML files of `lictor.console`, their scripts ES modules and
their libraries vendored files (``static/vendor/vendor.json`` names each
one's npm package, version and license): nothing is built. The pages call the
same API as any client, with the credential the user signed in with sent as
a bearer token, so the console has no powers of its own and every call is
checked by the route it reaches. ``GET /v1/session`` tells a page whose
credential it holds.

Every console response carries a strict Content-Security-Policy (scripts,
styles and connections from this origin only, no framing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse, RedirectResponse, Response

from lictor.errors import NotFoundError
from lictor.server.auth import require_role
from lictor.store.base import Credential

CONSOLE = Path(__file__).resolve().parents[1] / "console"
STATIC = CONSOLE / "static"
PAGES = {
    "": "governance.html",
    "demo": "demo.html",
    "proof": "proof.html",
    "health": "health.html",
    "lineage": "lineage.html",
    "tools": "tools.html",
}
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".LICENSE": "text/plain; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:;"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

router = APIRouter(include_in_schema=False)
session = APIRouter(tags=["console"])


@router.get("/console")
def console_root() -> Response:
    return RedirectResponse("/console/", status_code=308)


@router.get("/console/static/{path:path}")
def static(path: str) -> Response:
    """A static file of the console; nothing outside its folder is reachable.

    Any path the file system cannot look up (a NUL byte, a name or path over its
    limits) is a 404, like any other file that is not there.
    """
    try:
        target = (STATIC / path).resolve()
        found = target.is_relative_to(STATIC) and target.is_file()
    except (ValueError, OSError):
        raise NotFoundError(f"no console file {path!r}") from None
    suffix = "." + target.name.rsplit(".", 1)[-1] if "." in target.name else ""
    if not found or suffix not in CONTENT_TYPES:
        raise NotFoundError(f"no console file {path!r}")
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(target, media_type=CONTENT_TYPES[suffix], headers=headers)


@router.get("/console/")
def governance() -> Response:
    return page("")


@router.get("/console/{page}")
def page(page: str) -> Response:
    """One of the console's pages (``/console/`` is the governance console)."""
    name = PAGES.get(page)
    if name is None:
        raise NotFoundError(f"no console page {page!r}")
    headers = {**SECURITY_HEADERS, "Cache-Control": "no-cache"}
    return FileResponse(CONSOLE / "pages" / name, media_type="text/html", headers=headers)


@session.get("/v1/session")
async def whoami(
    who: Annotated[Credential, Depends(require_role("admin", "auditor", "runtime"))],
) -> dict[str, str]:
    """The name and role of the credential sent: how the console knows who signed in."""
    return {"name": who.name, "role": who.role}
