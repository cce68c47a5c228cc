"""`AsyncClient`: `Client` for asyncio, over httpx and the lean pool of `lictor.sdk.transport`.

Its methods, bodies, replies and errors are `Client`'s (`lictor.sdk.client`).
It lives apart so that what only the asynchronous client needs (httpx, httptools,
asyncio) is loaded by the processes that use it, not by `lictor run`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from lictor.errors import LictorError
from lictor.log.entry import loads_exactly
from lictor.sdk.async_events import AsyncEventWatcher, NoAsyncWatcher
from lictor.sdk.async_scope import AsyncExecutionScope
from lictor.sdk.client import (
    DEFAULT_TIMEOUT,
    Ref,
    answered,
    bearer,
    complete_body,
    completions_body,
    grant_headers,
    json_bytes,
    observe_body,
    possible,
    preview_body,
    read_grant,
    read_reply,
    request_body,
    ttl_body,
    unavailable,
    unreachable,
)
from lictor.sdk.connections import URL_SAFE
from lictor.sdk.enforce import ExecutionHandle
from lictor.sdk.scope import Spec
from lictor.sdk.transport import Pool
from lictor.sdk.urls import quote


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class AsyncClient:
    """`Client` for asyncio; one per event loop."""

    def __init__(
        self,
        url: str,
        credential: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        events: bool = True,
    ) -> None:
        self.url, self._timeout, self.events = url.rstrip("/"), timeout, events
        self._credential = credential
        self._headers = bearer(credential)
        self._http = httpx.AsyncClient(
            base_url=self.url, headers=self._headers, timeout=timeout, transport=transport
        )
        self._pool: Pool | None = None
        where = httpx.URL(self.url)
        if transport is None and where.scheme == "http":
            self._pool = Pool(where.host, where.port or 80)
            self._prefix = where.raw_path.rstrip(b"/")
            self._wire_headers = [
                (b"Host", where.netloc),
                (b"Accept", b"application/json"),
                (b"Content-Type", b"application/json"),
            ]

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
        await self._http.aclose()

    async def request(
        self,
        principal: Ref,
        action: Ref,
        resource: Ref,
        context: Mapping[str, Any] | None = None,
        parent_grant: str | None = None,
        ttl: int | None = None,
        *,
        definition: str | None = None,
    ) -> dict[str, Any]:
        """`Client.request`."""
        body = request_body(principal, action, resource, context, parent_grant, ttl, definition)
        headers = grant_headers(self._credential, parent_grant)
        try:
            status, reply = await self._send("POST", "/v1/executions", body, self._timeout, headers)
        except httpx.TransportError as e:
            raise unreachable(self.url, e) from e
        return read_grant(status, reply)

    async def renew(
        self,
        execution_id: str,
        ttl: int | None = None,
        *,
        timeout: float | None = None,
        grant: str | None = None,
    ) -> dict[str, Any]:
        """`Client.renew`."""
        path = f"/v1/executions/{execution_id}/renew"
        return await self._call("POST", path, ttl_body(ttl), timeout, grant)

    async def complete(
        self,
        execution_id: str,
        outcome: str,
        exit_code: int | None = None,
        summary: str | None = None,
        *,
        result_hash: str | None = None,
        grant: str | None = None,
    ) -> dict[str, Any]:
        """`Client.complete`."""
        body = complete_body(outcome, exit_code, summary, result_hash)
        path = f"/v1/executions/{execution_id}/complete"
        return await self._call("POST", path, body, grant=grant)

    async def complete_many(
        self, completions: Sequence[Mapping[str, Any]], *, brief: bool = False
    ) -> list[dict[str, Any] | LictorError]:
        """`Client.complete_many`."""
        body = completions_body(completions, brief)
        reply = await self._call("POST", "/v1/executions/completions", body)
        return answered(reply, len(completions))

    async def get(self, execution_id: str, *, grant: str | None = None) -> dict[str, Any]:
        """`Client.get`."""
        return await self._call("GET", f"/v1/executions/{execution_id}", grant=grant)

    async def observe_tools(
        self, server: str, tools: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any]:
        """`Client.observe_tools`."""
        return await self._call("POST", "/v1/tools/observe", observe_body(server, tools))

    async def preview(self, principal: Ref, action: Ref, resources: Sequence[Ref]) -> list[bool]:
        """`Client.preview`."""
        body = preview_body(principal, action, resources)
        return possible(await self._call("POST", "/v1/executions/preview", body))

    def watch(self, handle: ExecutionHandle, after: int) -> AsyncEventWatcher | NoAsyncWatcher:
        """`Client.watch`, as a task."""
        if not self.events:
            return NoAsyncWatcher()
        headers = grant_headers(self._credential, handle.grant) or self._headers
        return AsyncEventWatcher(self.url, headers, handle, after)

    def execution(
        self,
        principal: Ref,
        action: Ref,
        resource: Ref,
        context: Mapping[str, Any] | None = None,
        ttl: int | None = None,
        parent_grant: str | None = None,
        root: bool = False,
        stop_ahead: float = 0.0,
    ) -> AsyncExecutionScope:
        """Govern an ``async with`` block: see `lictor.sdk.async_scope.AsyncExecutionScope`."""
        spec = Spec(principal, action, resource, context, ttl, parent_grant, root, stop_ahead)
        return AsyncExecutionScope(self, spec)

    async def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        timeout: float | None = None,
        grant: str | None = None,
    ) -> dict[str, Any]:
        headers = grant_headers(self._credential, grant)
        try:
            status, reply = await self._send(method, path, body, timeout or self._timeout, headers)
        except httpx.TransportError as e:
            raise unavailable(self.url, e) from e
        return read_reply(status, reply)

    async def _send(
        self,
        method: str,
        path: str,
        body: Any,
        timeout: float,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """The status and parsed JSON (None if none) of one call, through the lean pool
        for plain HTTP (`lictor.sdk.transport`), else through httpx; ``headers`` stand
        for the client's own authorization."""
        if self._pool is None:
            response = await self._http.request(
                method, path, json=body, timeout=timeout, headers=headers
            )
            return response.status_code, _json(response)
        content = b"" if body is None else json_bytes(body)
        target = self._prefix + quote(path, safe=URL_SAFE).encode()
        auth = (headers if headers is not None else self._headers).items()
        wire = [*self._wire_headers, *((k.encode(), v.encode()) for k, v in auth)]
        status, _, data = await self._pool.exchange(
            method.encode(), target, wire, content, timeout, timeout
        )
        return status, _parsed(data)


def _parsed(data: bytes) -> Any:
    """A reply's JSON, or None if it is not JSON (`loads_exactly`: orjson reads an
    execution's reply in a fifth of the time `json` takes)."""
    try:
        return loads_exactly(data)
    except ValueError:
        return None
