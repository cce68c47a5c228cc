"""The API description at ``/openapi.json``, derived from the routes so it stays true.

FastAPI describes what a route declares; `describe` adds what the server does
around the routes, read from each route's own code:

- who may call it: a `require_role` dependency means HTTP bearer security,
  401 and 403, and 503 (the credential check may read the store), and its roles
  as ``x-lictor-roles``; a `caller` dependency means an optional bearer (401
  for a bad one); neither means no security (``security: []``);
- 400 ``invalid_request`` when it takes any parameter or body, and on every
  method with a body, where `lictor.server.app.BodyLimit` also answers 413 and
  400 (not strict JSON) before any route runs;
- the errors it declares with `answers` (their statuses come from
  `lictor.wire.status_of`, their codes from the error tree);
- a stable ``operationId``: the route's ``operation_id``, else its function's
  name (snake_case either way).

Every error status carries the shared `Error` schema. FastAPI's 422 is removed:
a request that fails validation is answered 400 ``invalid_request``
(docs/adr/0018). A 500 is never described: it is a bug, not an answer.
A path answers a method it does not serve with 405 and an ``Allow`` header
listing every method it serves (`allowed_methods`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts
from pydantic import BaseModel
from starlette.routing import BaseRoute
from starlette.types import Scope

from lictor import errors
from lictor.errors import LictorError
from lictor.server.auth import RoleCheck, caller
from lictor.wire import status_of

BEARER = "bearer"
ERROR_REF = "#/components/schemas/Error"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
STATUS_TEXT = {
    400: "invalid request",
    401: "no credential, or one that is unknown, revoked or expired",
    403: "the caller's role may not make this call",
    404: "not found",
    409: "conflict with the current state",
    413: "request body too large",
    503: "the store could not answer",
}


class ErrorDetail(BaseModel):
    code: str
    message: str


class Error(BaseModel):
    """Every error body: ``{"error": {"code", "message"}}`` with a stable code."""

    error: ErrorDetail


def codes(cls: type[LictorError]) -> list[str]:
    """The code of ``cls`` and of every subclass answered with the same status."""
    status = status_of(cls)
    found = [cls.code]
    for sub in cls.__subclasses__():
        if status_of(sub) == status:
            found += [c for c in codes(sub) if c not in found]
    return found


def answers(
    model: type[BaseModel] | None = None,
    *raised: type[LictorError],
    status: int = 200,
    description: str = "",
) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` for a route: its success body ``model`` (documentation
    only, the route's reply is not passed through it) and the errors it raises, each
    under its status with the `Error` schema."""
    found: dict[int | str, dict[str, Any]] = {}
    if model is not None:
        found[status] = {"model": model, "description": description or "Successful Response"}
    for cls in raised:
        at = status_of(cls)
        entry = found.setdefault(at, {"model": Error, "description": ""})
        entry["description"] = _join(entry["description"], ", ".join(codes(cls)))
    return found


def install(app: FastAPI) -> None:
    """Serve `describe`'s document (built once, on first request) as the app's OpenAPI."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app)
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]


def describe(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app``: FastAPI's, corrected as the module says."""
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    for route in described_routes(app.routes):
        for method in sorted(route.methods or ()):
            operation = document["paths"][route.path_format][method.lower()]
            _describe_operation(operation, route, method)
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.update(_error_schemas())
    components["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "A credential (role admin, auditor or runtime), or an execution's"
            " grant (a JWS; role grant) on the routes that admit it.",
        }
    }
    return document


def described_routes(routes: Sequence[BaseRoute]) -> Iterator[RouteContext]:
    """The routes that appear in the description, as included (with their prefixes)."""
    for route in iter_route_contexts(routes):
        if isinstance(route.original_route, APIRoute) and route.include_in_schema:
            yield route


def allowed_methods(routes: Sequence[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves at the request's path (for ``Allow`` on a 405)."""
    found: set[str] = set()
    for route in iter_route_contexts(routes):
        regex = getattr(route, "path_regex", None)
        if regex is not None and regex.match(scope["path"]):
            found |= route.methods or set()
    return sorted(found)


def roles_of(route: RouteContext) -> tuple[frozenset[str], bool]:
    """The roles a route admits (empty: public) and whether a public route reads an
    optional credential; from its `require_role` and `caller` dependencies."""
    roles: set[str] = set()
    optional = False
    for call in _calls(route.dependant):
        if isinstance(call, RoleCheck):
            roles |= call.roles
        elif call is caller:
            optional = True
    return frozenset(roles), optional


def _calls(dependant: Dependant) -> Iterator[Any]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _takes_input(dependant: Dependant) -> bool:
    if dependant.path_params or dependant.query_params or dependant.header_params:
        return True
    if dependant.cookie_params or dependant.body_params:
        return True
    return any(_takes_input(d) for d in dependant.dependencies)


def _describe_operation(operation: dict[str, Any], route: RouteContext, method: str) -> None:
    operation["operationId"] = route.operation_id or route.name
    responses: dict[str, Any] = operation["responses"]
    responses.pop("422", None)
    for status, declared in route.responses.items():  # the declared model, not the annotation
        schema = responses[str(status)].get("content", {}).get("application/json", {}).get("schema")
        if "model" in declared and schema is not None and "$ref" in schema:
            responses[str(status)]["content"]["application/json"]["schema"] = {
                "$ref": schema["$ref"]
            }
    raised: dict[int, list[str]] = {}
    roles, optional = roles_of(route)
    if roles:
        operation["security"] = [{BEARER: []}]
        operation["x-lictor-roles"] = sorted(roles)
        raised[401] = codes(errors.UnauthenticatedError)
        raised[403] = codes(errors.PermissionDeniedError)
        raised[503] = codes(errors.StoreError) + codes(errors.UnavailableError)
    elif optional:
        operation["security"] = [{}, {BEARER: []}]
        raised[401] = codes(errors.UnauthenticatedError)
    else:
        operation["security"] = []
    if _takes_input(route.dependant) or method in BODY_METHODS:
        raised[400] = [errors.InvalidRequestError.code]
    if method in BODY_METHODS:
        raised[413] = ["payload_too_large"]
    for status, found in sorted(raised.items()):
        response = responses.setdefault(str(status), {"description": ""})
        content = response.setdefault("content", {}).setdefault("application/json", {})
        content.setdefault("schema", {"$ref": ERROR_REF})
        response["description"] = _join(response["description"], ", ".join(found))
    for status, response in responses.items():
        if status.isdigit() and int(status) >= 400:  # JSON, whatever the route answers else
            schemas = [c.get("schema") for c in response.get("content", {}).values()]
            schema = next((s for s in schemas if s), {"$ref": ERROR_REF})
            response["content"] = {"application/json": {"schema": schema}}
            response["description"] = _title(int(status), response["description"])


def _error_schemas() -> dict[str, Any]:
    schema = Error.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    return {**defs, "Error": schema}


def _join(first: str, second: str) -> str:
    known = [p.strip() for p in first.split(",") if p.strip()]
    return ", ".join(known + [p.strip() for p in second.split(",") if p.strip() not in known])


def _title(status: int, listed: str) -> str:
    """``"<what it means>: <codes>"``, once."""
    text = STATUS_TEXT.get(status, "error")
    listed = listed.removeprefix(text + ": ")
    return f"{text}: {listed}" if listed else text
