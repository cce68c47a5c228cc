"""The synchronous client's connections against a loopback server that misbehaves on cue."""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lictor.errors import DeniedError, UnavailableError
from lictor.sdk import Client
from lictor.sdk.connections import Connections, TransportError, tls_context

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


def test_a_reply_that_closes_its_connection_is_read_and_the_next_call_connects_again() -> None:
    accepted: list[int] = []

    def framed_three_ways(conn: socket.socket) -> None:
        accepted.append(1)
        while True:
            head, _ = read_request(conn)
            if b"/chunked" not in head:
                break
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.sendall(b'3\r\n{"a\r\n2\r\n":\r\n2\r\n1}\r\n0\r\n\r\n')
        if b"/close" in head:
            conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
        elif head:
            conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n{}")  # the body ends with the connection

    with serving(framed_three_ways) as url:
        connections = Connections(url)
        assert connections.exchange("GET", "/chunked", None, {}, 5.0) == (200, b'{"a":1}')
        assert connections.exchange("GET", "/close", None, {}, 5.0) == (200, b"{}")
        assert connections.exchange("GET", "/until-closed", None, {}, 5.0) == (200, b"{}")
        assert connections.exchange("GET", "/chunked", None, {}, 5.0) == (200, b'{"a":1}')
        connections.close()
    assert len(accepted) == 3  # the first carried a chunked reply, then the close


def test_a_reply_cut_short_or_malformed_is_an_error_and_not_sent_again() -> None:
    served: list[bytes] = []

    def bad_replies(conn: socket.socket) -> None:
        head, _ = read_request(conn)
        served.append(head.split(b"\r\n")[0])
        if b"/short" in head:
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")
        else:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\n\r\n")

    with serving(bad_replies) as url:
        connections = Connections(url)
        with pytest.raises(TransportError, match="cut short"):
            connections.exchange("POST", "/short", b"{}", {}, 5.0)
        with pytest.raises(TransportError, match="folded"):
            connections.exchange("POST", "/folded", b"{}", {}, 5.0)
    assert served == [b"POST /short HTTP/1.1", b"POST /folded HTTP/1.1"]


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_https_is_verified_against_ssl_cert_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert_file, key_file)

    def tls_echo(conn: socket.socket) -> None:
        with contextlib.suppress(OSError), server_side.wrap_socket(conn, server_side=True) as tls:
            head, _ = read_request(tls)
            tls.sendall(reply(head.split(b"\r\n")[1]))  # the Host header

    with serving(tls_echo) as url:
        port = url.rsplit(":", 1)[1]
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        tls_context.cache_clear()
        connections = Connections(f"https://localhost:{port}")
        assert connections.exchange("GET", "/", None, {}, 5.0) == (
            200,
            f"Host: localhost:{port}".encode(),
        )
        monkeypatch.delenv("SSL_CERT_FILE")
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        tls_context.cache_clear()  # certifi's bundle, which does not trust this certificate
        with pytest.raises(TransportError, match="CERTIFICATE_VERIFY_FAILED"):
            Connections(f"https://localhost:{port}").exchange("GET", "/", None, {}, 5.0)
    tls_context.cache_clear()
