"""The SDK's lean async transport against a loopback HTTP server that misbehaves on cue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import httpx
import pytest

from lictor.errors import DeniedError, UnavailableError
from lictor.sdk import AsyncClient
from lictor.sdk.transport import AsyncHTTPTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head, await reader.readexactly(length)


def _response(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def _serve(handler: Handler, run: Callable[[str], Awaitable[None]]) -> None:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await run(f"http://127.0.0.1:{port}")
    finally:
        server.close()


def test_connections_are_kept_alive_and_bodies_round_trip() -> None:
    connections = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        while True:
            try:
                head, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            reply = json.dumps({"head": head.split(b"\r\n")[0].decode(), "body": body.decode()})
            writer.write(_response(reply.encode()))

    async def run(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, transport=AsyncHTTPTransport()) as client:
            for n in range(5):
                r = await client.post(f"/v1/x?n={n}", json={"n": n})
                assert r.json() == {"head": f"POST /v1/x?n={n} HTTP/1.1", "body": f'{{"n":{n}}}'}
        assert len(connections) == 1

    asyncio.run(_serve(echo, run))


def test_a_connection_the_server_closed_is_not_reused() -> None:
    served = []

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        served.append(1)
        writer.write(_response(b"{}"))
        await writer.drain()
        await asyncio.sleep(0.05)  # the client has kept the connection by now
        writer.close()  # keep-alive promised, then closed: a stale socket for the client

    async def run(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, transport=AsyncHTTPTransport()) as client:
            assert (await client.get("/a")).status_code == 200
            await asyncio.sleep(0.3)  # let the close arrive
            assert (await client.get("/b")).status_code == 200
        assert len(served) == 2

    asyncio.run(_serve(once, run))


def test_chunked_responses_and_timeouts_and_refused_connections() -> None:
    async def slow_or_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head, _ = await _read_request(reader)
        if b"/slow" in head:
            await asyncio.sleep(5)
            return
        chunks = b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n"
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)

    async def run(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, transport=AsyncHTTPTransport()) as client:
            assert (await client.get("/chunked")).content == b"abcdefg"
            with pytest.raises(httpx.ReadTimeout):
                await client.get("/slow", timeout=0.3)
        async with httpx.AsyncClient(transport=AsyncHTTPTransport()) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("http://127.0.0.1:9/")  # nothing listens on discard

    asyncio.run(_serve(slow_or_chunked, run))


def test_the_async_client_speaks_through_the_pool_with_its_headers_and_prefix() -> None:
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                return
            heads.append(head + body)
            if b"/slow" in head:
                await asyncio.sleep(1)  # past the client's timeout
                return
            elif b"/v1/executions " in head:  # no decision, and no JSON either
                writer.write(b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy")
            else:
                writer.write(_response(b'{"ok": true}'))

    async def run(url: str) -> None:
        async with AsyncClient(url + "/base/", "s3cret", timeout=0.3) as client:
            assert await client.get("a b/é") == {"ok": True}
            with pytest.raises(DeniedError) as denied:
                await client.request('Agent::"a"', 'Action::"b"', 'Thing::"c"')
            assert "no decision" in denied.value.message
            with pytest.raises(UnavailableError):
                await client.get("slow")
        async with AsyncClient("http://127.0.0.1:9", "s3cret") as client:
            with pytest.raises(DeniedError) as denied:
                await client.request('Agent::"a"', 'Action::"b"', 'Thing::"c"')
            assert denied.value.reason_code == "unreachable"
            with pytest.raises(UnavailableError):
                await client.get("x")

    asyncio.run(_serve(answer, run))
    first = heads[0].decode()
    assert first.startswith("GET /base/v1/executions/a%20b/%C3%A9 HTTP/1.1\r\n")
    assert "\r\nAuthorization: Bearer s3cret\r\n" in first
    request = heads[1].decode()
    assert request.startswith("POST /base/v1/executions HTTP/1.1\r\n")
    assert request.endswith('"resource":"Thing::\\"c\\"","context":{}}')
