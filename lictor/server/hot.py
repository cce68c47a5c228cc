"""The calls on every execution's path, served as raw ASGI (docs/adr/0020).

Requesting an execution, renewing its lease (or a runtime's leases together)
and completing it are what every enforcement point calls all the time;
through FastAPI each paid for routing, middleware layers, dependency
injection and pydantic models several times over the work of reading the
body. `HotRoutes` sits in front of the whole FastAPI application (its request
telemetry, routing and middleware stack: `lictor.server.app.LictorApp`) and
serves exactly these five itself: ``POST /v1/executions``,
``POST /v1/executions/{id}/renew``, ``POST /v1/executions/renewals``,
``POST /v1/executions/{id}/complete`` and ``POST /v1/executions/completions``
(the batched ends a gateway or an SDK sends after its answers). Every other
request goes on to the application.

It does what the application does for them, in the same order, with the same
answers: a body over the limit is 413; a body that is not strict JSON is 400
(`lictor.server.json_bodies`); the caller is authenticated and its role
checked (`lictor.server.auth`); the body is read into the typed structures of
`lictor.wire` (msgspec, strict), 400 ``invalid_request`` with where it failed;
then the same functions as the FastAPI routes (`lictor.server.executions_api`)
act and build the answer, encoded with orjson. The FastAPI routes stay: they
describe these calls in ``/openapi.json``, and a test sends the same requests
through both and compares the answers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from lictor.errors import InvalidRequestError, LictorError, PayloadTooLargeError
from lictor.server.auth import admit, authenticate
from lictor.server.executions_api import (
    ACTING,
    RUNTIME,
    complete_answer,
    completions_answer,
    decide,
    renew_answer,
    renewals_answer,
    router,
)
from lictor.server.json_bodies import is_json, parse_json_body
from lictor.service.executions import Completion
from lictor.store.base import Credential
from lictor.wire import (
    CompleteBody,
    CompletionsBody,
    ExecutionRequestBody,
    RenewalsBody,
    RenewBody,
    error_body,
    status_for,
)

PREFIX = router.prefix
logger = logging.getLogger("lictor.server")
JSON_HEADERS = [(b"content-type", b"application/json")]
Handler = Callable[[Any, Credential, str, Any], Awaitable[tuple[int, dict[str, Any]]]]
Body = TypeVar("Body")


class HotRoutes:
    """ASGI middleware: serves the hot routes, passes every other request on."""

    def __init__(self, app: ASGIApp, state: Any, limit: int) -> None:
        self.app = app
        self.state = state
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = _route(scope["path"])
            if route is not None:
                await self._serve(*route, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _serve(
        self,
        handler: Handler,
        execution_id: str,
        roles: frozenset[str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        raw = await self._body(receive)
        if raw is None:
            return  # the client went away
        try:
            status, answer = await self._answer(handler, execution_id, roles, scope, raw)
        except LictorError as e:
            status, answer = status_for(e), error_body(e.code, e.message)
        except Exception:  # as the application answers a bug: logged, 500, still serving
            logger.exception("unhandled error on %s", scope["path"])
            status, answer = 500, error_body("internal", "internal error")
        self.state.metrics.count_request(status)
        data = orjson.dumps(answer)
        headers = [*JSON_HEADERS, (b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def _body(self, receive: Receive) -> bytes | None:
        """The request body, None on a disconnect; reading stops once it is over the
        limit (its length is then all `_answer` looks at, to answer 413)."""
        chunks: list[bytes] = []
        size, more = 0, True
        while more and size <= self.limit:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = message.get("more_body", False)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _answer(
        self, handler: Handler, execution_id: str, roles: frozenset[str], scope: Scope, raw: bytes
    ) -> tuple[int, dict[str, Any]]:
        if len(raw) > self.limit:
            raise PayloadTooLargeError(f"request body exceeds {self.limit} bytes")
        authorization, content_type = first_header(scope, b"authorization", b"content-type")
        json_body = content_type is not None and is_json(content_type)
        value = parse_json_body(raw) if json_body and raw else None  # 400 before the caller
        who = admit(authenticate(authorization, self.state), roles)
        if not json_body:  # as FastAPI: a body of another type (or none) fails validation
            raise InvalidRequestError("body: the request body must be JSON (application/json)")
        return await handler(value, who, execution_id, self.state)


def _route(path: str) -> tuple[Handler, str, frozenset[str]] | None:
    """The handler of a hot route's path, the execution it names ('' for none) and the
    roles it admits."""
    if path == PREFIX:
        return _request, "", ACTING.roles
    if not path.startswith(PREFIX + "/"):
        return None
    execution_id, slash, verb = path[len(PREFIX) + 1 :].partition("/")
    if not slash:
        if execution_id == "renewals":
            return _renew_many, "", RUNTIME.roles
        return (_complete_many, "", RUNTIME.roles) if execution_id == "completions" else None
    if not execution_id:
        return None
    if verb == "renew":
        return _renew, execution_id, ACTING.roles
    if verb == "complete":
        return _complete, execution_id, ACTING.roles
    return None


def first_header(scope: Scope, *names: bytes) -> list[str | None]:
    """The first value of each header in ``names`` (lowercase), as Starlette reads them."""
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in names and name not in found:
            found[name] = bytes(value).decode("latin-1")
    return [found.get(name) for name in names]


def _read(value: Any, into: type[Body]) -> Body:
    """``value`` as the structure ``into``, or `InvalidRequestError` saying where not."""
    if value is None:
        raise InvalidRequestError("body: Field required")
    try:
        return msgspec.convert(value, into, strict=True)
    except msgspec.ValidationError as e:
        raise InvalidRequestError(f"body: {e}") from None


async def _request(
    value: Any, who: Credential, execution_id: str, state: Any
) -> tuple[int, dict[str, Any]]:
    return await decide(_read(value, ExecutionRequestBody), who, state)


async def _renew(
    value: Any, who: Credential, execution_id: str, state: Any
) -> tuple[int, dict[str, Any]]:
    body = _read(value, RenewBody)
    return 200, await renew_answer(execution_id, body.ttl, who, state.executions)


async def _renew_many(
    value: Any, who: Credential, execution_id: str, state: Any
) -> tuple[int, dict[str, Any]]:
    body = _read(value, RenewalsBody)
    renewals = [(r.execution, r.ttl, r.grant) for r in body.renewals]
    return 200, await renewals_answer(renewals, who, state.executions)


async def _complete_many(
    value: Any, who: Credential, execution_id: str, state: Any
) -> tuple[int, dict[str, Any]]:
    body = _read(value, CompletionsBody)
    return 200, await completions_answer(body.completions, who, state.executions, body.brief)


async def _complete(
    value: Any, who: Credential, execution_id: str, state: Any
) -> tuple[int, dict[str, Any]]:
    body = _read(value, CompleteBody)
    asked = Completion(execution_id, body.outcome, body.exit_code, body.summary, body.result_hash)
    return 200, await complete_answer(asked, who, state.executions)
