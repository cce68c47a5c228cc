"""The SDK's lean async transport against a loopback HTTP server that misbehaves on cue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from itertools import pairwise

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.errors import DeniedError, UnavailableError
from lictor.sdk import AsyncClient, transport
from lictor.sdk.transport import AsyncHTTPTransport, Headers, _Connection, request_bytes

from ..strategies import mutations

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


# --- reading responses: llhttp behind `_Connection.response`, fed by a real StreamReader ---


def _read(pieces: list[bytes], eof: bool = True) -> tuple[tuple[int, Headers, bytes], bool]:
    """The response read from ``pieces`` (then the end of the stream), and whether the
    connection may carry another request."""

    async def run() -> tuple[tuple[int, Headers, bytes], bool]:
        reader = asyncio.StreamReader()
        for piece in pieces:
            reader.feed_data(piece)
        if eof:
            reader.feed_eof()
        connection = _Connection(reader, None)  # type: ignore[arg-type]  # nothing written
        reply = await asyncio.wait_for(connection.response(), 5)
        return reply, connection.reusable()

    return asyncio.run(run())


def test_framings_interim_heads_and_what_a_connection_may_carry_next() -> None:
    chunked = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
    chunked += b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nTrailer: t\r\n\r\n"
    assert _read([chunked], eof=False) == (
        (201, [(b"Transfer-Encoding", b"chunked"), (b"X-A", b"1")], b"abcde"),
        True,
    )
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n"
    assert _read([interim + _response(b"ok")], eof=False) == (
        (200, [(b"Content-Length", b"2")], b"ok"),
        True,
    )
    # delimited by the close: whole, but the connection is spent
    assert _read([b"HTTP/1.1 200 OK\r\n\r\nuntil the end"]) == ((200, [], b"until the end"), False)
    closing = _response(b"{}", b"Connection: close\r\n")
    assert _read([closing], eof=False)[1] is False
    assert _read([b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"], eof=False)[1] is False
    # bytes after the response are never read into it, and spend the connection
    assert _read([_response(b"one") + _response(b"two")], eof=False) == (
        (200, [(b"Content-Length", b"3")], b"one"),
        False,
    )
    assert _read([_response(b"one") + b"\x00junk"], eof=False) == (
        (200, [(b"Content-Length", b"3")], b"one"),
        False,
    )
    assert _read([b"HTTP/1.1 204 No Content\r\n\r\n"], eof=False) == ((204, [], b""), True)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab", "closed the connection"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "closed the connection"),
        (b"SMTP ready\r\n\r\n", "not an HTTP/1.1 response"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "not an HTTP/1.1 response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "not an HTTP/1.1 response"),
        (b"HTTP/1.1 200 OK\r\nBad Header: 1\r\n\r\n", "not an HTTP/1.1 response"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "not an HTTP/1.1 response",
        ),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * 9, "not an HTTP/1.1 response"),
        (b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n", "not an HTTP/1.1"),
    ],
)
def test_what_is_cut_short_or_malformed_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match=message):
        _read([data])


def test_a_head_or_a_body_over_its_bound_is_refused_before_it_is_all_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    endless = [b"HTTP/1.1 200 OK\r\n"] + [b"X-Pad: " + b"p" * 1000 + b"\r\n"] * 80
    with pytest.raises(httpx.RemoteProtocolError, match="head over 65536"):
        _read(endless, eof=False)  # no end of stream: it stops on the bound, not the close
    monkeypatch.setattr(transport, "MAX_BODY_BYTES", 1000)
    big = [b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"] + [b"b" * 500] * 200
    with pytest.raises(httpx.RemoteProtocolError, match="body over 1000"):
        _read(big, eof=False)


def test_a_request_is_written_whole_with_its_length_and_refuses_injection() -> None:
    wire = request_bytes(
        b"POST",
        b"/v1/x?a=1",
        [(b"Host", b"h:1"), (b"Content-Length", b"99"), (b"Transfer-Encoding", b"chunked")],
        b"{}",
    )
    assert wire == b"POST /v1/x?a=1 HTTP/1.1\r\nHost: h:1\r\nContent-Length: 2\r\n\r\n{}"
    assert request_bytes(b"GET", b"/", [(b"Host", b"h")], b"").endswith(b"Host: h\r\n\r\n")
    for method, target, headers in [
        (b"GE T", b"/", []),
        (b"GET", b"/ HTTP/1.1\r\nX: y", []),
        (b"GET", b"/", [(b"X-A", b"v\r\nInjected: 1")]),
        (b"GET", b"/", [(b"X A", b"v")]),
        (b"GET", b"/", [(b"X-A", b"v\x00")]),
    ]:
        with pytest.raises(httpx.LocalProtocolError):
            request_bytes(method, target, headers, b"")


def test_a_head_request_goes_to_httpx_which_reads_no_body() -> None:
    async def head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")  # and no body
        await writer.drain()

    async def run(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, transport=AsyncHTTPTransport()) as client:
            r = await client.head("/", timeout=2)
            assert (r.status_code, r.headers["content-length"], r.content) == (200, "1000", b"")

    asyncio.run(_serve(head, run))


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=10).filter(
    lambda n: (
        n.strip("-") and n.lower() not in ("content-length", "transfer-encoding", "connection")
    )
)
values = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789 ;=/", max_size=20).map(str.strip)


@st.composite
def valid_responses(draw: st.DrawFn) -> tuple[bytes, int, bytes, bool]:
    """(bytes, status, body, whether the connection is kept) of a well-formed response."""
    status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    head = b"".join(b"HTTP/1.1 100 Continue\r\n\r\n" for _ in range(draw(st.integers(0, 2))))
    head += b"HTTP/1.1 %d Something\r\n" % status
    for name, value in draw(st.lists(st.tuples(names, values), max_size=5)):
        head += f"{name}: {value}\r\n".encode()
    if framing == "length":
        data = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        cuts = [0, *sorted(draw(st.lists(st.integers(0, len(body)), max_size=4))), len(body)]
        chunks = [body[a:b] for a, b in pairwise(cuts) if b > a]
        data = head + b"Transfer-Encoding: chunked\r\n\r\n"
        data += b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    else:
        data = head + b"\r\n" + body
    return data, status, body, framing != "close"


def _pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    out, at = [], 0
    while at < len(data):
        size = sizes[len(out) % len(sizes)]
        out.append(data[at : at + size])
        at += size
    return out


sizes = st.lists(st.integers(1, 64), min_size=1, max_size=8)


@given(valid_responses(), sizes)
@settings(max_examples=150, deadline=None)
def test_valid_responses_are_read_back_in_pieces_of_any_size(
    response: tuple[bytes, int, bytes, bool], cut: list[int]
) -> None:
    data, status, body, kept = response
    (got_status, _, got_body), reusable = _read(_pieces(data, cut), eof=not kept)
    assert (got_status, got_body, reusable) == (status, body, kept)


@given(st.binary(max_size=600), sizes)
@settings(max_examples=200, deadline=None)
def test_random_bytes_are_a_response_or_refused(data: bytes, cut: list[int]) -> None:
    try:
        (status, _, _), _ = _read(_pieces(data, cut))
    except httpx.RemoteProtocolError:
        return
    assert 200 <= status <= 999


@given(mutations(valid_responses().map(lambda response: response[0])), sizes)
@settings(max_examples=200, deadline=None)
def test_mutated_responses_are_read_or_refused_never_hung(data: bytes, cut: list[int]) -> None:
    try:
        (status, _, body), _ = _read(_pieces(data, cut))  # a hang fails: wait_for's bound
    except httpx.RemoteProtocolError:
        return
    assert 200 <= status <= 999 and len(body) <= len(data)
