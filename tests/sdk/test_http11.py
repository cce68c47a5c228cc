"""The synchronous client's HTTP/1.1 reply reader, fed bytes in pieces of any size.

Replies are untrusted input: random bytes and mutated valid replies must come
out as a well-formed reply or `TransportError`, nothing else and never a hang.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lictor.sdk.http11 import (
    MAX_HEAD_BYTES,
    MAX_HEADERS,
    TOKEN,
    Reader,
    Reply,
    TransportError,
    request_bytes,
)

from ..strategies import mutations


def recv_from(data: bytes, sizes: list[int] | None = None) -> Callable[[int], bytes]:
    """A ``recv`` handing out ``data`` in pieces of ``sizes`` (cycled), then ``b""``."""
    cycle = itertools.cycle(sizes or [len(data) or 1])
    rest = memoryview(data)

    def recv(n: int) -> bytes:
        nonlocal rest
        size = min(n, next(cycle))
        piece, rest = bytes(rest[:size]), rest[size:]
        return piece

    return recv


def reply_to(data: bytes, method: str = "GET", sizes: list[int] | None = None) -> Reply:
    return Reply(Reader(recv_from(data, sizes)), method, max_body=4096)


def read(data: bytes, method: str = "GET", sizes: list[int] | None = None) -> tuple[Reply, bytes]:
    reply = reply_to(data, method, sizes)
    return reply, reply.read()


def test_a_content_length_body_is_read_exactly_and_the_connection_kept() -> None:
    data = b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    reply, body = read(data + b"HTTP/1.1 200 OK", sizes=[1])  # the next reply is left unread
    assert (reply.status, reply.reason, body) == (201, "Created", b"hello")
    assert reply.headers == {"content-type": "text/plain", "content-length": "5"}
    assert reply.keep_alive


def test_a_chunked_body_is_joined_and_its_trailers_skipped() -> None:
    data = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    for sizes in ([1], [3, 7], None):
        reply, body = read(data, sizes=sizes)
        assert body == b"hello 0123456789" and reply.keep_alive


def test_a_body_until_the_close_is_read_but_the_connection_not_kept() -> None:
    reply, body = read(b"HTTP/1.1 200 OK\r\n\r\nall of it", sizes=[4])
    assert body == b"all of it" and not reply.keep_alive


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_a_reply_that_closes_its_connection_leaves_it_unkept(head: bytes) -> None:
    reply, body = read(head)
    assert body == b"" and not reply.keep_alive


def test_no_body_after_head_204_and_304_and_interim_replies_are_skipped() -> None:
    assert read(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", "HEAD")[1] == b""
    reply, body = read(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert (reply.status, body) == (204, b"") and reply.keep_alive
    assert read(b"HTTP/1.1 304 Not Modified\nContent-Length: 3\n\n")[1] == b""  # bare LF


def test_a_reply_without_reason_or_with_a_bare_lf_is_read() -> None:
    reply, body = read(b"HTTP/1.1 503\nContent-Length: 2\n\nno")
    assert (reply.status, reply.reason, body) == (503, "", b"no")


def test_repeated_headers_are_joined() -> None:
    reply, _ = read(b"HTTP/1.1 200 OK\r\nVary: a\r\nvary: b\r\nContent-Length: 0\r\n\r\n")
    assert reply.headers["vary"] == "a, b"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "closed the connection without a reply"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "cut short"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "cut short"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello", "cut short"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "cut short"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n", "longer than"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", "chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "transfer coding"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "both",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\nabc", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\na", "Content-Length"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\n\r\n", "folded"),
        (b"HTTP/1.1 200 OK\r\nX-A : a\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\n\r\n", "control character"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 4097\r\n\r\n" + b"x" * 4097, "over 4096"),
        (b"HTTP/2 200 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 20 OK\r\n\r\n", "status line"),
        (b"HTTP/1.1 099 Low\r\n\r\n", "status line"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "status line"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 103 Early Hints\r\n\r\n" * 9, "interim"),
    ],
)
def test_what_is_cut_short_malformed_or_too_big_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(TransportError, match=message):
        read(data, sizes=[5])


def test_an_oversized_head_is_refused_before_it_is_all_read() -> None:
    received: list[int] = []
    recv = recv_from(b"HTTP/1.1 200 OK\r\nX-Big: " + b"x" * (4 * MAX_HEAD_BYTES))

    def counted(n: int) -> bytes:
        piece = recv(n)
        received.append(len(piece))
        return piece

    with pytest.raises(TransportError, match="over"):
        Reply(Reader(counted), "GET")
    assert sum(received) <= 2 * MAX_HEAD_BYTES
    many = b"".join(b"X-%d: v\r\n" % n for n in range(MAX_HEADERS + 1))
    with pytest.raises(TransportError, match="header lines"):
        read(b"HTTP/1.1 200 OK\r\n" + many + b"\r\n")
    lines = b"X: " + b"v" * 1000 + b"\r\n"
    with pytest.raises(TransportError, match="over"):
        read(b"HTTP/1.1 200 OK\r\n" + lines * (MAX_HEAD_BYTES // 1000 + 2) + b"\r\n")


def test_a_streamed_body_comes_line_by_line_as_it_arrives() -> None:
    head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"id: 1\r\ndata: {}\n\n: keepalive\n"
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + 3]), body[i : i + 3]) for i in range(0, 30, 3)
    )
    reply = reply_to(head + chunks + b"0\r\n\r\n", sizes=[2])
    assert list(reply.lines()) == [b"id: 1", b"data: {}", b"", b": keepalive"]
    stream = reply_to(head + b"6\r\ndata: ")  # the stream is cut, mid-line
    with pytest.raises(TransportError, match="cut short"):
        list(stream.lines())
    long_line = reply_to(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 5000)
    with pytest.raises(TransportError, match="line over 4096"):
        list(long_line.lines())


def test_a_request_is_written_whole_and_refuses_line_breaks() -> None:
    post = request_bytes("POST", "/v1/x?a=1", "h:7300", {"Accept": "application/json"}, b"{}")
    assert post == (
        b"POST /v1/x?a=1 HTTP/1.1\r\nHost: h:7300\r\nAccept: application/json\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    assert b"Content-Length: 0\r\n" in request_bytes("POST", "/", "h", {}, None)
    assert b"Content-Length" not in request_bytes("GET", "/", "h", {}, None)
    for bad in ({"Authorization": "Bearer a\r\nX-Evil: 1"}, {"X\n": "v"}, {"X": "\0"}):
        with pytest.raises(ValueError):
            request_bytes("GET", "/", "h", bad, None)


# Fuzzing: random bytes, and valid replies then mutated.

names = st.text(alphabet=sorted(chr(c) for c in TOKEN), min_size=1, max_size=12)
values = st.binary(max_size=30).map(lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F))
sizes = st.lists(st.integers(1, 64), min_size=1, max_size=8)


@st.composite
def valid_replies(draw: st.DrawFn) -> tuple[bytes, int, bytes, str]:
    """A valid reply's bytes, its status, its body, and its framing."""
    status = draw(st.integers(200, 599).filter(lambda s: s not in (204, 304)))  # no body
    body = draw(st.binary(max_size=300))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    extra = draw(st.lists(st.tuples(names, values), max_size=5))
    head = [b"HTTP/1.1 %d %s" % (status, draw(values))]
    head += [
        n.encode() + b": " + v
        for n, v in extra
        if n.lower() not in ("content-length", "transfer-encoding")
    ]
    if framing == "length":
        head.append(b"Content-Length: %d" % len(body))
        payload = body
    elif framing == "chunked":
        head.append(b"Transfer-Encoding: chunked")
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces if p) + b"0\r\n\r\n"
    else:
        payload = body
    return b"\r\n".join(head) + b"\r\n\r\n" + payload, status, body, framing


def well_formed_or_refused(data: bytes, chunk_sizes: list[int], lines: bool) -> Reply | None:
    """Read ``data`` as a reply: the reply if it is well formed, None if refused."""
    try:
        reply = reply_to(data, sizes=chunk_sizes)
        body = b"\n".join(reply.lines()) if lines else reply.read()
    except TransportError:
        return None
    assert 200 <= reply.status <= 999 and isinstance(reply.reason, str)
    assert all(TOKEN.issuperset(n.encode()) and n == n.lower() for n in reply.headers)
    assert all("\r" not in v and "\n" not in v for v in reply.headers.values())
    assert len(body) <= 4096 + (body.count(b"\n") if lines else 0) * 4096
    return reply


@settings(max_examples=400, deadline=2000)
@given(st.binary(max_size=600), sizes, st.booleans())
def test_random_bytes_are_a_reply_or_refused(
    data: bytes, chunk_sizes: list[int], lines: bool
) -> None:
    well_formed_or_refused(data, chunk_sizes, lines)
    well_formed_or_refused(b"HTTP/1.1 200 OK\r\n" + data, chunk_sizes, lines)


@settings(max_examples=300, deadline=2000)
@given(valid_replies(), sizes)
def test_valid_replies_are_read_back_in_pieces_of_any_size(
    reply: tuple[bytes, int, bytes, str], chunk_sizes: list[int]
) -> None:
    data, status, body, framing = reply
    read_back, read_body = read(data, sizes=chunk_sizes)
    assert (read_back.status, read_body) == (status, body)
    assert read_back.keep_alive == (framing != "close")


@settings(max_examples=500, deadline=2000)
@given(mutations(valid_replies().map(lambda reply: reply[0])), sizes, st.booleans())
def test_mutated_replies_are_a_reply_or_refused(
    data: bytes, chunk_sizes: list[int], lines: bool
) -> None:
    well_formed_or_refused(data, chunk_sizes, lines)
