"""A lean HTTP/1.1 client for `AsyncClient`: asyncio streams, llhttp, kept-alive connections.

httpx's own async transport (httpcore over anyio) costs about a millisecond
of CPU per request on loopback, and httpx's request and response objects
around any transport a few tenths more; a gateway that sends two
control-plane calls per governed request (the request, then its completion)
pays that twice. `Pool` does the same job for Lictor's JSON calls with
asyncio streams, requests written whole by `request_bytes`, and responses
read by llhttp (Node.js's parser, through `httptools`, which uvicorn uses to
read requests), and `AsyncClient` calls it directly; `AsyncHTTPTransport`
offers it to any `httpx.AsyncClient`:

- plain ``http://`` only; anything else (``https``) keeps httpx and its
  default transport, so TLS keeps httpx's certificate handling; so do
  ``HEAD`` requests and streamed responses (server-sent events);
- a request body is sent whole, with its length, and the response read
  whole (Lictor's JSON calls are small), within the bounds the synchronous
  client keeps (`lictor.sdk.http11`: the head, the body, interim heads);
  what llhttp cannot read as a response is refused;
- idle connections are kept and reused, per host and port; one the server
  has closed meanwhile is dropped before use, and one that may not carry
  another request (``Connection: close``, a body delimited by the close,
  bytes after the response, or an exchange that broke midway) is closed.
  A request is never sent twice: a failure is raised, as httpx's transport
  does;
- every read and write is bounded by the request's timeouts, and failures
  are raised as httpx's own exceptions (`httpx.ConnectError`,
  `httpx.ReadTimeout`, `httpx.RemoteProtocolError`, ...), so callers see no
  difference.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import httptools
import httpx

from lictor.sdk.http11 import MAX_BODY_BYTES, MAX_HEAD_BYTES, MAX_INTERIM

READ_SIZE = 64 * 1024


Headers = list[tuple[bytes, bytes]]


class _Reply:
    """What llhttp has read of one response, through its callbacks: interim ``1xx``
    heads are skipped (at most `MAX_INTERIM`), and anything after the response is
    only noted (`extra`), never read into it."""

    __slots__ = (
        "chunks",
        "done",
        "extra",
        "headed",
        "headers",
        "interim",
        "interims",
        "keep_alive",
        "parser",
        "status",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.status = self.interims = 0
        self.headed = self.interim = self.keep_alive = self.done = self.extra = False

    def on_message_begin(self) -> None:
        if self.done:  # bytes after the response: a second one, never asked for
            self.extra = True
        else:
            self.headers, self.chunks, self.interim = [], [], False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not (self.done or self.headed):  # once headed: a chunked body's trailers
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.done:
            return
        status = self.parser.get_status_code()
        if status < 200:
            self.interim, self.interims = True, self.interims + 1
            if self.interims > MAX_INTERIM:
                raise ValueError("too many interim responses")
            return
        self.status, self.headed = status, True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once done

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if not self.interim:
            self.done = True


class _Connection:
    """One kept-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self._reply = _Reply()
        self._reusable = False

    def close(self) -> None:
        self.writer.close()

    async def exchange(
        self, method: bytes, target: bytes, headers: Headers, body: bytes, read: float | None
    ) -> tuple[int, Headers, bytes]:
        """Send a request and read its whole response: (status, headers, body)."""
        data = request_bytes(method, target, headers, body)
        self._reusable = False
        async with asyncio.timeout(read):
            self.writer.write(data)
            await self.writer.drain()
            return await self.response()

    async def response(self) -> tuple[int, Headers, bytes]:
        """Read one response whole: (status, headers, body)."""
        reply, read = self._reply, 0
        while not reply.done:
            data = await self.reader.read(READ_SIZE)
            if not data:
                return _closed(reply)
            try:
                reply.parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as e:
                if not reply.done:
                    raise httpx.RemoteProtocolError(f"not an HTTP/1.1 response: {e}") from None
                reply.extra = True  # junk after the response: kept, the connection is not
            read += len(data)
            if not reply.headed and read > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError(f"a response head over {MAX_HEAD_BYTES} bytes")
            if read > MAX_HEAD_BYTES + MAX_BODY_BYTES:
                raise httpx.RemoteProtocolError(f"a response body over {MAX_BODY_BYTES} bytes")
        self._reply = _Reply()
        self._reusable = reply.keep_alive and not reply.extra
        return reply.status, reply.headers, b"".join(reply.chunks)

    def reusable(self) -> bool:
        return self._reusable and not self.reader.at_eof()


def _closed(reply: _Reply) -> tuple[int, Headers, bytes]:
    """The server closed the connection before the response was whole: whole all the
    same when the close is what delimits its body (neither a length nor chunked)."""
    framed = any(k.lower() in _FRAMING for k, _ in reply.headers)
    if not reply.headed or framed:
        raise httpx.RemoteProtocolError("the server closed the connection")
    return reply.status, reply.headers, b"".join(reply.chunks)


_FRAMING = (b"content-length", b"transfer-encoding")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_TARGET = re.compile(rb"[\x21-\x7e]+")
_VALUE = re.compile(rb"[^\x00\r\n]*")


def request_bytes(method: bytes, target: bytes, headers: Headers, body: bytes) -> bytes:
    """An HTTP/1.1 request, whole, its body framed by its length (the caller's own
    ``Content-Length`` and ``Transfer-Encoding`` are replaced); `httpx.LocalProtocolError`
    for a method, target or header that would not be one (a CR, LF or NUL in a value,
    a space in a name: header injection)."""
    if not _TOKEN.fullmatch(method) or not _TARGET.fullmatch(target):
        raise httpx.LocalProtocolError(f"not a request line: {method!r} {target!r}")
    lines = [method + b" " + target + b" HTTP/1.1"]
    length = bool(body)
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or not _VALUE.fullmatch(value):
            raise httpx.LocalProtocolError(f"not a header: {name!r}")
        if name.lower() in _FRAMING:
            length = True
            continue
        lines.append(name + b": " + value.strip(b" \t"))
    if length:
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Pool:
    """Kept-alive connections to one ``host:port``; see the module docstring. Not for
    ``HEAD``: its response has no body whatever its length says, which llhttp cannot
    be told."""

    def __init__(self, host: str, port: int, max_idle: int = 8) -> None:
        self.host, self.port = host, port
        self._idle: list[_Connection] = []
        self._max_idle = max_idle

    async def exchange(
        self,
        method: bytes,
        target: bytes,
        headers: Headers,
        body: bytes,
        connect: float | None,
        read: float | None,
    ) -> tuple[int, Headers, bytes]:
        """One request and its whole response: (status, headers, body); a failure is
        raised as one of httpx's transport errors."""
        connection = self._kept() or await self._connect(connect)
        try:
            reply = await connection.exchange(method, target, headers, body, read)
        except TimeoutError as e:
            connection.close()
            raise httpx.ReadTimeout(str(e) or "timed out") from e
        except OSError as e:
            connection.close()
            raise httpx.ReadError(str(e)) from e
        except BaseException:
            connection.close()
            raise
        self._release(connection)
        return reply

    async def _connect(self, timeout: float | None) -> _Connection:
        where = f"{self.host}:{self.port}"
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError as e:
            raise httpx.ConnectTimeout(f"connecting to {where} timed out") from e
        except OSError as e:
            raise httpx.ConnectError(str(e)) from e
        return _Connection(reader, writer)

    def _kept(self) -> _Connection | None:
        """An idle connection the server has not closed meanwhile, if any."""
        while self._idle:
            connection = self._idle.pop()
            if not connection.reader.at_eof() and not connection.writer.is_closing():
                return connection
            connection.close()
        return None

    def _release(self, connection: _Connection) -> None:
        if connection.reusable() and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        for connection in self._idle:
            with contextlib.suppress(Exception):
                connection.close()
        self._idle.clear()


class AsyncHTTPTransport(httpx.AsyncBaseTransport):
    """`httpx.AsyncBaseTransport` for plain-HTTP JSON calls, a `Pool` per host and port."""

    def __init__(self, max_idle: int = 8) -> None:
        self._pools: dict[tuple[str, int], Pool] = {}
        self._max_idle = max_idle
        self._fallback = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        streamed = request.headers.get("accept") == "text/event-stream"
        if request.url.scheme != "http" or streamed or request.method == "HEAD":
            return await self._fallback.handle_async_request(request)
        body = await request.aread()
        timeouts = request.extensions.get("timeout", {})
        where = (request.url.host, request.url.port or 80)
        pool = self._pools.get(where)
        if pool is None:
            pool = self._pools[where] = Pool(*where, max_idle=self._max_idle)
        try:
            status, headers, content = await pool.exchange(
                request.method.encode(),
                request.url.raw_path,
                list(request.headers.raw),
                body,
                timeouts.get("connect"),
                timeouts.get("read"),
            )
        except httpx.TransportError as e:
            e.request = request
            raise
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
        await self._fallback.aclose()
