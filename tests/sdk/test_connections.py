"""The synchronous client's connections against a loopback server that misbehaves on cue."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from lictor.errors import DeniedError, UnavailableError
from lictor.sdk import Client
from lictor.sdk.connections import Connections, TransportError

Handler = Callable[[socket.socket], None]


def read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    """One request's head and body, or ``(b"", b"")`` when the client closed."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b"", b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    while len(body) < length:
        body += conn.recv(65536)
    return head, body


def reply(body: bytes, status: bytes = b"200 OK") -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Length: %d\r\n\r\n%s" % (status, len(body), body)


@contextmanager
def serving(handler: Handler) -> Iterator[str]:
    """A loopback server running ``handler`` on each connection, in a thread of its own."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=_handle, args=(handler, conn), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        listener.close()


def _handle(handler: Handler, conn: socket.socket) -> None:
    with conn:
        handler(conn)


def test_calls_share_kept_connections_between_threads() -> None:
    connections: list[int] = []

    def echo(conn: socket.socket) -> None:
        connections.append(1)
        while True:
            head, body = read_request(conn)
            if not head:
                return
            line = head.split(b"\r\n")[0].decode()
            conn.sendall(reply(json.dumps({"line": line, "body": body.decode()}).encode()))

    with serving(echo) as url, Client(url, "s3cret") as client:
        answers: list[dict[str, object]] = []

        def call(n: int) -> None:
            for _ in range(5):
                answers.append(client.get(f"ex {n}/é"))

        threads = [threading.Thread(target=call, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(answers) == 20 and len(connections) <= 4
    lines = {a["line"] for a in answers}
    assert lines == {f"GET /v1/executions/ex%20{n}/%C3%A9 HTTP/1.1" for n in range(4)}


def test_a_kept_connection_the_server_closed_is_not_used_and_nothing_is_sent_twice() -> None:
    served: list[bytes] = []

    def once(conn: socket.socket) -> None:
        head, _ = read_request(conn)
        served.append(head.split(b"\r\n")[0])
        conn.sendall(reply(b"{}"))  # keep-alive promised, then closed

    with serving(once) as url:
        connections = Connections(url)
        assert connections.exchange("GET", "/a", None, {}, 5.0) == (200, b"{}")
        threading.Event().wait(0.2)  # let the close arrive
        assert connections.exchange("POST", "/b", b"{}", {}, 5.0) == (200, b"{}")
        connections.close()
    assert served == [b"GET /a HTTP/1.1", b"POST /b HTTP/1.1"]


def test_a_request_that_went_out_is_never_sent_again() -> None:
    served: list[bytes] = []

    def no_reply(conn: socket.socket) -> None:
        head, _ = read_request(conn)
        served.append(head)  # read, maybe acted on, then the connection dropped

    with serving(no_reply) as url, Client(url, "s3cret") as client:
        with pytest.raises(DeniedError) as denied:
            client.request('Agent::"a"', 'Action::"b"', 'Thing::"c"')
        assert denied.value.reason_code == "unreachable" and denied.value.receipt is None
        with pytest.raises(UnavailableError):
            client.complete("ex_1", "succeeded")
    assert len(served) == 2


def test_timeouts_refusals_and_replies_that_are_not_json() -> None:
    def slow_or_busy(conn: socket.socket) -> None:
        head, _ = read_request(conn)
        if b"/slow" in head:
            threading.Event().wait(2)
            return
        conn.sendall(reply(b"busy", b"503 Busy"))

    with serving(slow_or_busy) as url:
        with pytest.raises(TransportError, match="timed out"):
            Connections(url).exchange("GET", "/slow", None, {}, 0.3)
        with Client(url + "/base/", "s3cret") as client, pytest.raises(DeniedError) as denied:
            client.request('Agent::"a"', 'Action::"b"', 'Thing::"c"')
        assert "no decision" in denied.value.message
    with pytest.raises(TransportError):
        Connections("http://127.0.0.1:9").exchange("GET", "/", None, {}, 1.0)  # discard
    with pytest.raises(TransportError, match="not an http"):
        Connections("127.0.0.1:7300").exchange("GET", "/", None, {}, 1.0)
