"""`AsyncClient` against a real server; each test drives its own event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lictor.sdk import (
    AsyncClient,
    DeniedError,
    ExecutionRevokedError,
    current_execution,
    governed,
    verify_receipt,
)
from lictor.sdk import async_client as async_client_module

from .conftest import DEPLOY, PLANNER, PRODUCTION, STAGING, Plane


def test_async_allow_completes_succeeded(plane: Plane) -> None:
    async def run() -> tuple[str, dict[str, object]]:
        async with plane.async_client() as client:
            async with client.execution(PLANNER, DEPLOY, STAGING) as e:
                assert e.grant and current_execution() is e
                await asyncio.sleep(0)
            return e.id, (await client.get(e.id))["execution"]

    _, done = asyncio.run(run())
    assert (done["state"], done["outcome"]) == ("completed", "succeeded")


def test_async_deny_raises_with_a_verifying_receipt(plane: Plane) -> None:
    async def run() -> DeniedError:
        async with plane.async_client() as client:
            with pytest.raises(DeniedError) as denied:
                async with client.execution(PLANNER, DEPLOY, PRODUCTION):
                    pytest.fail("the block must not run")
            return denied.value

    error = asyncio.run(run())
    assert error.reason_code == "not_permitted" and error.receipt is not None
    verify_receipt(error.receipt, plane.vkey())


def test_async_revoke_cancels_the_block(plane: Plane) -> None:
    seen: list[str] = []

    async def block(client: AsyncClient) -> None:
        async with client.execution(PLANNER, DEPLOY, STAGING, ttl=2) as e:
            e.on_cancel(lambda: seen.append("callback"))
            try:  # the push may cancel the block while the revoke call is still returning
                await asyncio.to_thread(plane.revoke, e.id)
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

    async def run() -> None:
        async with plane.async_client() as client:
            await asyncio.wait_for(block(client), timeout=10)

    with pytest.raises(ExecutionRevokedError):
        asyncio.run(run())
    assert seen == ["callback", "cancelled"]  # the callback runs as the cancel is requested


def test_async_governed_calls_nest_as_children(plane: Plane) -> None:
    async def run() -> tuple[str, str | None]:
        async with plane.async_client() as client:

            @governed(client, principal=PLANNER, action=DEPLOY, resource=STAGING)
            async def step() -> tuple[str, str | None]:
                e = current_execution()
                assert e is not None
                return e.id, e.execution["parent_id"]

            async with client.execution(PLANNER, DEPLOY, STAGING) as parent:
                child_id, parent_id = await asyncio.create_task(step())
            assert parent_id == parent.id
            return child_id, (await client.get(child_id))["execution"]["outcome"]

    assert asyncio.run(run())[1] == "succeeded"


@pytest.mark.parametrize(
    "data, value",
    [
        (b'{"index": 12345678901234567890123}', {"index": 12345678901234567890123}),
        (b'{"tree_size": 7, "leaf": "x"}', {"tree_size": 7, "leaf": "x"}),
        (b'{"a": 1.5e3}', {"a": 1500.0}),
        (b"<html>bad gateway</html>", None),
        (b"", None),
    ],
)
def test_replies_are_read_exactly_or_not_at_all(data: bytes, value: Any) -> None:
    """orjson reads replies, except one that may hold an integer orjson would round."""
    assert async_client_module._parsed(data) == value
    assert type(async_client_module._parsed(data)) is type(value)
