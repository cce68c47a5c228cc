"""HTTP/1.1 messages for the synchronous client: a request's bytes, a reply read from bytes.

No sockets here: a `Reader` takes its bytes from any ``recv(n)`` function
(a socket's, or a test's), so the reply parser can be driven by anything.
`lictor.sdk.connections` does the I/O. The reply is untrusted input, so:

- everything read is bounded: the head (status line, headers and any
  interim ``1xx`` heads) by ``MAX_HEAD_BYTES`` and ``MAX_HEADERS``, a whole
  body by ``max_body``, each line of a streamed body by the same;
- anything not understood is refused with `TransportError`, never guessed:
  a status line that is not ``HTTP/1.x NNN``, a folded (``obs-fold``) or
  malformed header, a ``Content-Length`` that is not one number, a transfer
  coding other than ``chunked``, both framings at once, a bad chunk;
- a reply that ends before its framing says it should (the connection
  closed) raises `TransportError` ("cut short"); so does a read past a bound.

A body is framed as RFC 9112 §6.3 says: none for ``HEAD``, ``204`` and
``304``; else ``chunked``; else ``Content-Length``; else until the server
closes the connection. A connection may carry another request only after
an HTTP/1.1 reply with a length or chunked framing, read to its end, without
``Connection: close``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

MAX_HEAD_BYTES = 64 * 1024
MAX_HEADERS = 100
MAX_BODY_BYTES = 64 * 1024 * 1024  # a whole body, or one line of a stream
MAX_INTERIM = 8  # ``1xx`` heads skipped before the reply's own
RECV_BYTES = 65536
TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
HEX = frozenset(b"0123456789abcdefABCDEF")
CONTROL = frozenset({*range(0x20), 0x7F}) - {0x09}  # not allowed in a head's values
NO_BODY = frozenset({204, 304})


class TransportError(Exception):
    """A call that got no usable reply: no connection, a timeout, a reply cut short
    or one that is not HTTP/1.1 as this client reads it."""


def request_bytes(
    method: str, target: str, authority: str, headers: Mapping[str, str], body: bytes | None
) -> bytes:
    """The whole request: ``Host`` is ``authority``; ``Content-Length`` is added for a
    body, and for a ``POST``, ``PUT`` or ``PATCH`` without one. `ValueError` for a
    line break or NUL in any part (header injection), as `http.client` raised."""
    parts = [method, target, authority, *headers.keys(), *headers.values()]
    if any(c in part for part in parts for c in "\r\n\0"):
        raise ValueError("a request line or header holds a line break or NUL")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + (body or b"")


class Reader:
    """Buffered, bounded reads from ``recv`` (which returns ``b""`` at the end)."""

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._buffer = b""
        self.ended = False  # the other side closed

    def line(self, limit: int, what: str) -> bytes:
        """The next line, without its ``\\n`` or ``\\r\\n``, at most ``limit`` bytes."""
        while True:
            end = self._buffer.find(b"\n", 0, limit + 2)
            if end >= 0:
                line, self._buffer = self._buffer[:end], self._buffer[end + 1 :]
                line = line.removesuffix(b"\r")
                if len(line) > limit:
                    raise TransportError(f"{what} is over {limit} bytes")
                return line
            if len(self._buffer) > limit + 1:
                raise TransportError(f"{what} is over {limit} bytes")
            self._fill(what)

    def line_end(self, what: str) -> None:
        """A ``\r\n`` (or a bare ``\n``) next, else `TransportError` saying ``what``."""
        while len(self._buffer) < 2 and self._buffer in (b"", b"\r"):
            self._fill("a line end")
        if self._buffer.startswith(b"\r\n"):
            self._buffer = self._buffer[2:]
        elif self._buffer.startswith(b"\n"):
            self._buffer = self._buffer[1:]
        else:
            raise TransportError(what)

    def at_end(self) -> bool:
        """Whether the other side closed with nothing more to read."""
        return not self._buffer and not self._more()

    def pieces(self, size: int, what: str) -> Iterator[bytes]:
        """Exactly ``size`` bytes, in pieces as they arrive."""
        while size > 0:
            if not self._buffer:
                self._fill(f"{what}, {size} bytes short")
            piece, self._buffer = self._buffer[:size], self._buffer[size:]
            size -= len(piece)
            yield piece

    def rest(self) -> Iterator[bytes]:
        """Everything until the other side closes, in pieces as they arrive."""
        while True:
            if self._buffer:
                piece, self._buffer = self._buffer, b""
                yield piece
            elif not self._more():
                return

    def _fill(self, what: str) -> None:
        if not self._more():
            raise TransportError(f"the reply was cut short ({what})")

    def _more(self) -> bool:
        data = b"" if self.ended else self._recv(RECV_BYTES)
        self.ended = not data
        self._buffer += data
        return bool(data)


class Reply:
    """A reply's head, read; its body, to be read once (`read`, `pieces` or `lines`)."""

    def __init__(self, reader: Reader, method: str, max_body: int = MAX_BODY_BYTES) -> None:
        self._reader, self._max_body = reader, max_body
        budget = [MAX_HEAD_BYTES]
        for _ in range(MAX_INTERIM + 1):
            self.version, self.status, self.reason = _status_line(reader, budget)
            self.headers = _headers(reader, budget)
            if self.status >= 200 or self.status == 101:
                break
        else:
            raise TransportError(f"more than {MAX_INTERIM} interim (1xx) replies")
        if self.status == 101:
            raise TransportError("the server switched protocols, which was not asked for")
        self._length, self._chunked = _framing(self.headers, method, self.status)
        self.done = False  # the body was read to its end

    @property
    def keep_alive(self) -> bool:
        """Whether the connection may carry another request after this reply."""
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        framed = self._chunked or self._length is not None
        return self.done and framed and self.version == "HTTP/1.1" and "close" not in tokens

    def read(self) -> bytes:
        """The whole body; `TransportError` past ``max_body`` bytes."""
        body = bytearray()
        for piece in self.pieces():
            body += piece
            if len(body) > self._max_body:
                raise TransportError(f"a reply body over {self._max_body} bytes")
        return bytes(body)

    def lines(self) -> Iterator[bytes]:
        """The body's lines as they arrive, without line ends (a stream: no bound on
        the whole, each line at most ``max_body`` bytes)."""
        pending = bytearray()
        for piece in self.pieces():
            start = 0
            while (end := piece.find(b"\n", start)) >= 0:
                pending += piece[start:end]
                yield bytes(pending).removesuffix(b"\r")
                pending.clear()
                start = end + 1
            pending += piece[start:]
            if len(pending) > self._max_body:
                raise TransportError(f"a line over {self._max_body} bytes")
        if pending:
            yield bytes(pending)

    def pieces(self) -> Iterator[bytes]:
        """The body in pieces as they arrive (chunked coding undone)."""
        if self._chunked:
            yield from self._chunks()
        elif self._length is not None:
            yield from self._reader.pieces(self._length, "in the body")
        else:
            yield from self._reader.rest()
        self.done = True

    def _chunks(self) -> Iterator[bytes]:
        while True:
            line = self._reader.line(MAX_HEAD_BYTES, "a chunk size line")
            size_text = line.split(b";", 1)[0].strip(b" \t")
            if not size_text or len(size_text) > 16 or not HEX.issuperset(size_text):
                raise TransportError(f"a bad chunk size: {line[:40]!r}")
            size = int(size_text, 16)
            if size == 0:
                _headers(self._reader, [MAX_HEAD_BYTES])  # the trailers, ignored
                return
            yield from self._reader.pieces(size, "in a chunk")
            self._reader.line_end("a chunk longer than its size")


def _status_line(reader: Reader, budget: list[int]) -> tuple[str, int, str]:
    if reader.at_end():
        raise TransportError("the server closed the connection without a reply")
    line = _head_line(reader, budget, "the status line")
    version, _, rest = line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or not _status_code(code):
        raise TransportError(f"not an HTTP/1.1 status line: {line[:40]!r}")
    if not _visible(reason):
        raise TransportError("a control character in the status line")
    return version.decode(), int(code), reason.decode("latin-1")


def _status_code(code: bytes) -> bool:
    return len(code) == 3 and code.isdigit() and code[:1] != b"0"


def _headers(reader: Reader, budget: list[int]) -> dict[str, str]:
    """Header fields until the empty line: lower-case names, repeated ones joined."""
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _head_line(reader, budget, "the head")
        if not line:
            return headers
        name, colon, value = line.partition(b":")
        if line[:1] in (b" ", b"\t"):
            raise TransportError("a folded header line (obs-fold)")
        if not colon or not name or not TOKEN.issuperset(name):
            raise TransportError(f"a malformed header line: {line[:40]!r}")
        value = value.strip(b" \t")
        if not _visible(value):
            raise TransportError("a control character in a header value")
        key, text = name.decode().lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    raise TransportError(f"more than {MAX_HEADERS} header lines")


def _head_line(reader: Reader, budget: list[int], what: str) -> bytes:
    """A line of the head, counted against the head's ``budget`` (a one-item list)."""
    if budget[0] < 0:
        raise TransportError(f"a reply head over {MAX_HEAD_BYTES} bytes")
    line = reader.line(budget[0], what)
    budget[0] -= len(line) + 2
    return line


def _visible(value: bytes) -> bool:
    """No control characters but horizontal tab (RFC 9110 field-vchar, obs-text)."""
    return CONTROL.isdisjoint(value)


def _framing(headers: Mapping[str, str], method: str, status: int) -> tuple[int | None, bool]:
    """The body's framing: (its length, or None; whether it is chunked). No length and
    not chunked means until the connection closes."""
    if method == "HEAD" or status in NO_BODY:
        return 0, False
    coding = headers.get("transfer-encoding")
    length = headers.get("content-length")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            raise TransportError(f"a transfer coding this client does not read: {coding[:40]!r}")
        if length is not None:
            raise TransportError("both Transfer-Encoding and Content-Length")
        return None, True
    if length is None:
        return None, False
    if not length.isascii() or not length.isdigit() or len(length) > 18:
        raise TransportError(f"a bad Content-Length: {length[:40]!r}")
    return int(length), False
