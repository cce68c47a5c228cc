"""How `lictor mcp` runs its event loop: anyio told once that it runs on asyncio."""

from __future__ import annotations

import asyncio

import sniffio

from lictor.cli.mcp import _run


def test_every_task_of_the_gateway_knows_its_loop_without_asking() -> None:
    seen: list[str | None] = []

    async def main() -> None:
        async def task() -> None:
            seen.append(sniffio.current_async_library_cvar.get())

        await asyncio.gather(task(), asyncio.create_task(task()))
        seen.append(sniffio.current_async_library())

    _run(main())
    assert seen == ["asyncio", "asyncio", "asyncio"]
    assert sniffio.current_async_library_cvar.get() is None  # the caller's context untouched
