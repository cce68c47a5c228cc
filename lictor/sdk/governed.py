"""``@governed(client, ...)``: every call of a function runs as one governed execution.

A plain function needs a `Client` and runs inside ``with client.execution``;
a coroutine function needs an `AsyncClient` and runs inside ``async with``.
The same rules hold as for the blocks (`lictor.sdk.scope`): a deny raises
`DeniedError` before the function starts, a call made inside another
execution becomes its child, and the outcome is recorded on return or raise.
The running call reads its handle with `current_execution`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from lictor.sdk.client import Client, Ref
from lictor.sdk.enforce import ExecutionHandle, current
from lictor.sdk.scope import ExecutionScope, Spec

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    from typing import Any, ParamSpec, TypeVar

    from lictor.sdk.async_client import AsyncClient

    P = ParamSpec("P")
    R = TypeVar("R")


def current_execution() -> ExecutionHandle | None:
    """The execution whose governed block or call is running here, if any."""
    return current.get()


def governed(
    client: Client | AsyncClient,
    *,
    principal: Ref,
    action: Ref,
    resource: Ref,
    context: Mapping[str, Any] | None = None,
    ttl: int | None = None,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Wrap a function (sync with a `Client`, async with an `AsyncClient`)."""
    spec = Spec(principal, action, resource, context, ttl)

    def wrap(fn: Callable[P, R]) -> Callable[P, R]:
        import inspect  # here: `lictor run` imports this module, and inspect costs it ~7 ms

        if inspect.iscoroutinefunction(fn):
            return _wrap_async(client, spec, fn)  # its awaitable is what ``fn`` returns
        if not isinstance(client, Client):
            raise TypeError("a plain function needs a Client")
        return _wrap_sync(client, spec, fn)

    return wrap


def _wrap_sync(client: Client, spec: Spec, fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        with ExecutionScope(client, spec):
            return fn(*args, **kwargs)

    return call


def _wrap_async(client: Client | AsyncClient, spec: Spec, fn: Callable[P, Any]) -> Callable[P, Any]:
    from lictor.sdk.async_client import AsyncClient  # asyncio and httpx: for async work only
    from lictor.sdk.async_scope import AsyncExecutionScope

    if not isinstance(client, AsyncClient):
        raise TypeError("an async function needs an AsyncClient")

    @functools.wraps(fn)
    async def call(*args: P.args, **kwargs: P.kwargs) -> Any:
        async with AsyncExecutionScope(client, spec):
            return await fn(*args, **kwargs)

    return call
