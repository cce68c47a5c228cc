"""Kept-alive connections to one control plane: HTTP/1.1 over a plain socket.

What `Client`, its events watcher and the command line send their calls
through. httpx did this job first, then `http.client`; both cost `lictor run`
more to import than its whole HTTP exchange (httpx about 100 ms, `http.client`
about 19 ms, most of it the ``email`` package), so the messages are written
and read by `lictor.sdk.http11`, and this module does the I/O (ADR 11). The
rules:

- ``http://`` gets plain connections; ``https://`` gets TLS with the trust
  httpx gave by default (``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else
  certifi's bundle), built once per process, when first needed (``ssl`` is
  not even imported for ``http://``);
- a request body is sent whole and the reply read whole (Lictor's JSON
  calls are small, and bounded by ``http11.MAX_BODY_BYTES``); a stream
  (server-sent events) gets a connection of its own from
  `Connections.connect`, and its reply is read as it arrives;
- idle connections are kept for the next call, each used by one call at a
  time, so one `Connections` may be shared between threads. One the server
  has closed meanwhile (its socket reads as ready) is dropped before use; a
  reply that closes its connection (``Connection: close``, HTTP/1.0, a body
  framed by the close) or is not read to its end leaves it unkept;
- a request is never sent twice, with one exception: a kept connection whose
  send fails was closed by the server before the request reached it, so the
  request is sent once more on a new connection. A failure after the request
  went out is raised, never retried;
- every connect, send and read is bounded by the call's timeout; a call that
  gets no reply, or one `lictor.sdk.http11` refuses, raises `TransportError`.
"""

from __future__ import annotations

import functools
import os
import select
import socket
import threading
from collections.abc import Mapping

from lictor.sdk.http11 import Reader, Reply, request_bytes
from lictor.sdk.http11 import TransportError as TransportError  # what callers catch
from lictor.sdk.urls import ServerURL, URLError, quote, split_url

TYPE_CHECKING = False  # `typing` costs `lictor run` 3 ms before its command starts
if TYPE_CHECKING:
    import ssl

URL_SAFE = "/?&=:@!$'()*+,;-._~%"  # what a path and query may hold as they are
MAX_IDLE = 20  # as httpx kept


class Connection:
    """One HTTP/1.1 connection: its socket (which another thread may shut down to end
    a read blocked on it) and what was read from it but not yet used."""

    def __init__(self, sock: socket.socket, authority: str) -> None:
        self.sock, self._authority = sock, authority
        self._reader = Reader(sock.recv)

    def send(
        self, method: str, target: str, body: bytes | None, headers: Mapping[str, str]
    ) -> None:
        """Write one request; `OSError` as the socket raises it."""
        self.sock.sendall(request_bytes(method, target, self._authority, headers, body))

    def reply(self, method: str) -> Reply:
        """Read the reply's head; its body is left to the caller (`Reply`)."""
        return Reply(self._reader, method)

    def close(self) -> None:
        self.sock.close()


class Connections:
    """Kept-alive connections to the server at ``url``; see the module's docstring."""

    def __init__(self, url: str, max_idle: int = MAX_IDLE) -> None:
        try:
            parts: ServerURL | None = split_url(url)
            self._unusable: str | None = None
        except URLError as e:  # refused at the first call, as a server that cannot be reached
            parts, self._unusable = None, str(e)
        self._tls = parts is not None and parts.scheme == "https"
        self.host, self.port = (parts.host, parts.port) if parts else ("", 0)
        self._prefix = parts.path if parts else ""
        self._authority = parts.authority if parts else ""
        self._idle: list[Connection] = []
        self._max_idle = max_idle
        self._lock = threading.Lock()

    def target(self, path: str, query: str = "") -> str:
        """The request target for ``path`` (under the URL's own path), percent-encoded."""
        target = quote(self._prefix + path, safe=URL_SAFE)
        return f"{target}?{query}" if query else target

    def exchange(
        self,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str],
        timeout: float,
    ) -> tuple[int, bytes]:
        """Send one request and read its whole reply: (status, body)."""
        connection, kept = self._take(timeout)
        try:
            connection = self._send(connection, kept, timeout, method, target, body, headers)
            reply = connection.reply(method)
            data = reply.read()
        except OSError as e:
            connection.close()
            raise TransportError(str(e) or type(e).__name__) from e
        except BaseException:
            connection.close()
            raise
        self._give_back(connection, reply.keep_alive)
        return reply.status, data

    def connect(self, timeout: float) -> Connection:
        """A new connection of the caller's own, already connected (so another thread
        may shut its socket down to end a read); raises `TransportError`."""
        try:
            return self._new(timeout)
        except OSError as e:
            raise TransportError(str(e) or type(e).__name__) from e

    def close(self) -> None:
        """Close the idle connections; a call in flight closes its own after."""
        with self._lock:
            idle, self._idle, self._max_idle = self._idle, [], 0
        for connection in idle:
            connection.close()

    def _take(self, timeout: float) -> tuple[Connection, bool]:
        """An idle connection still open (and True), else a new one (and False)."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self.connect(timeout), False
            if not _readable(connection.sock):
                connection.sock.settimeout(timeout)
                return connection, True
            connection.close()

    def _send(
        self,
        connection: Connection,
        kept: bool,
        timeout: float,
        method: str,
        target: str,
        body: bytes | None,
        headers: Mapping[str, str],
    ) -> Connection:
        """Send the request on ``connection``, or once more on a new one if a kept one
        was found closed while sending; the connection it went out on."""
        try:
            connection.send(method, target, body, headers)
        except OSError:
            if not kept:
                raise
            connection.close()
            connection = self.connect(timeout)
            try:
                connection.send(method, target, body, headers)
            except BaseException:
                connection.close()
                raise
        return connection

    def _new(self, timeout: float) -> Connection:
        if self._unusable:
            raise TransportError(self._unusable)
        address = (_ascii(self.host), self.port)  # bytes reach `getaddrinfo` as they are
        sock = socket.create_connection(address, timeout=timeout)  # type: ignore[arg-type]
        if self._tls:
            try:
                sock = tls_context().wrap_socket(sock, server_hostname=self.host)
            except BaseException:
                sock.close()
                raise
        return Connection(sock, self._authority)

    def _give_back(self, connection: Connection, keep: bool) -> None:
        """Keep a connection the reply left open, unless enough are kept already."""
        if keep:
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(connection)
                    return
        connection.close()


def _ascii(host: str) -> str | bytes:
    """``host`` for `socket.getaddrinfo`: as bytes where it is ASCII (an address, or a
    name in its ASCII form), so that the IDNA codec (2.6 ms to import) is not loaded."""
    return host.encode("ascii") if host.isascii() else host


def _readable(sock: socket.socket) -> bool:
    """Whether an idle socket has something to read: the server closed it (or wrote
    to it unasked); either way it must not carry another request."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([sock], [], [], 0)[0])


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The trust httpx's clients had by default, so no deployment's changes."""
    import ssl

    if os.environ.get("SSL_CERT_FILE"):
        return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    if os.environ.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    import certifi

    return ssl.create_default_context(cafile=certifi.where())
