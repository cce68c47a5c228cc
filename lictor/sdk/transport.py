"""A lean HTTP/1.1 client for `AsyncClient`: asyncio streams, h11, kept-alive connections.

httpx's own async transport (httpcore over anyio) costs about a millisecond
of CPU per request on loopback, and httpx's request and response objects
around any transport a few tenths more; a gateway that sends two
control-plane calls per governed request (the request, then its completion)
pays that twice. `Pool` does the same job for Lictor's JSON calls with
asyncio streams and h11 (the HTTP/1.1 state machine httpcore itself uses),
and `AsyncClient` calls it directly; `AsyncHTTPTransport` offers it to any
`httpx.AsyncClient`:

- plain ``http://`` only; anything else (``https``) keeps httpx and its
  default transport, so TLS keeps httpx's certificate handling;
- a request body is sent whole and the response read whole (Lictor's JSON
  calls are small); streamed responses (server-sent events) go to httpx's
  transport;
- idle connections are kept and reused, per host and port; one the server
  has closed meanwhile is dropped before use, and one h11 cannot reuse (or
  that broke mid-exchange) is closed. A request is never sent twice: a
  failure is raised, as httpx's transport does;
- every read and write is bounded by the request's timeouts, and failures
  are raised as httpx's own exceptions (`httpx.ConnectError`,
  `httpx.ReadTimeout`, ...), so callers see no difference.
"""

from __future__ import annotations

import asyncio
import contextlib

import h11
import httpx

READ_SIZE = 64 * 1024


Headers = list[tuple[bytes, bytes]]


class _Connection:
    """One kept-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.state = h11.Connection(h11.CLIENT)

    def close(self) -> None:
        self.writer.close()

    async def exchange(
        self, method: bytes, target: bytes, headers: Headers, body: bytes, read: float | None
    ) -> tuple[int, Headers, bytes]:
        """Send a request and read its whole response: (status, headers, body)."""
        headers = [(k, v) for k, v in headers if k.lower() != b"transfer-encoding"]
        if body and not any(k.lower() == b"content-length" for k, _ in headers):
            headers.append((b"Content-Length", str(len(body)).encode()))
        send = self.state.send
        data = send(h11.Request(method=method, target=target, headers=headers))
        data += send(h11.Data(data=body)) if body else b""
        data += send(h11.EndOfMessage())
        async with asyncio.timeout(read):
            self.writer.write(data)
            await self.writer.drain()
            return await self._response()

    async def _response(self) -> tuple[int, Headers, bytes]:
        status, headers, chunks = 0, [], []
        while True:
            event = self.state.next_event()
            if event is h11.NEED_DATA:
                self.state.receive_data(await self.reader.read(READ_SIZE))
            elif isinstance(event, h11.Response):
                status, headers = event.status_code, list(event.headers)
            elif isinstance(event, h11.Data):
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return status, headers, b"".join(chunks)
            elif isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("the server closed the connection")

    def reusable(self) -> bool:
        if self.state.our_state is h11.DONE and self.state.their_state is h11.DONE:
            self.state.start_next_cycle()
            return not self.reader.at_eof()
        return False


class Pool:
    """Kept-alive connections to one ``host:port``; see the module docstring."""

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
        except (OSError, h11.ProtocolError) as e:
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
        if request.url.scheme != "http" or streamed:
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
