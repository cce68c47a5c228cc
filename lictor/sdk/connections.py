"""Kept-alive connections to one control plane, over the standard library's `http.client`.

What `Client`, its events watcher and the command line send their calls
through. httpx did this job before, but it costs about 100 ms to import and
builds a TLS context (about 35 ms) even for ``http://``, twice per `lictor
run`; `http.client` is what it is built on anyway (ADR 11). The rules:

- ``http://`` gets plain connections; ``https://`` gets TLS with the trust
  httpx gave by default (``SSL_CERT_FILE``, else ``SSL_CERT_DIR``, else
  certifi's bundle), built once per process, when first needed;
- a request body is sent whole and the reply read whole (Lictor's JSON
  calls are small); a stream (server-sent events) gets a connection of its
  own from `Connections.connect`;
- idle connections are kept for the next call, each used by one call at a
  time, so one `Connections` may be shared between threads. One the server
  has closed meanwhile (its socket reads as ready) is dropped before use;
- a request is never sent twice, with one exception: a kept connection whose
  send fails was closed by the server before the request reached it, so the
  request is sent once more on a new connection. A failure after the request
  went out is raised, never retried;
- every connect, send and read is bounded by the call's timeout; a call that
  gets no reply raises `TransportError`.
"""

from __future__ import annotations

import functools
import http.client
import os
import select
import socket
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    import ssl

URL_SAFE = "/?&=:@!$'()*+,;-._~%"  # what a path and query may hold as they are
MAX_IDLE = 20  # as httpx kept


class TransportError(Exception):
    """A call that got no reply: no connection, a timeout, or a reply cut short."""


class Connections:
    """Kept-alive connections to the server at ``url``; see the module's docstring."""

    def __init__(self, url: str, max_idle: int = MAX_IDLE) -> None:
        parts = urlsplit(url)
        self._tls = parts.scheme == "https"
        self.host, self.port = parts.hostname or "", parts.port or (443 if self._tls else 80)
        self._prefix = parts.path.rstrip("/")
        usable = parts.scheme in ("http", "https") and parts.hostname
        self._unusable = None if usable else f"not an http:// or https:// URL: {url!r}"
        self._idle: list[http.client.HTTPConnection] = []
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
            response = _send(connection, kept, method, target, body, headers)
            data = response.read()
        except (OSError, http.client.HTTPException) as e:
            connection.close()
            raise TransportError(str(e) or type(e).__name__) from e
        except BaseException:
            connection.close()
            raise
        self._give_back(connection)
        return response.status, data

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        """A new connection of the caller's own, already connected (so another thread
        may shut its socket down to end a read); raises `TransportError`."""
        connection = self._new(timeout)
        try:
            connection.connect()
        except OSError as e:
            connection.close()
            raise TransportError(str(e) or type(e).__name__) from e
        return connection

    def close(self) -> None:
        """Close the idle connections; a call in flight closes its own after."""
        with self._lock:
            idle, self._idle, self._max_idle = self._idle, [], 0
        for connection in idle:
            connection.close()

    def _take(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        """An idle connection still open (and True), else a new one (and False)."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._new(timeout), False
            if connection.sock is not None and not _readable(connection.sock):
                connection.sock.settimeout(timeout)
                connection.timeout = timeout  # for the new connection of a resend
                return connection, True
            connection.close()

    def _new(self, timeout: float) -> http.client.HTTPConnection:
        if self._unusable:
            raise TransportError(self._unusable)
        if self._tls:
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=timeout, context=tls_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def _give_back(self, connection: http.client.HTTPConnection) -> None:
        """Keep a connection the reply left open, unless enough are kept already."""
        if connection.sock is not None:  # http.client closes it for ``Connection: close``
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(connection)
                    return
        connection.close()


def _send(
    connection: http.client.HTTPConnection,
    kept: bool,
    method: str,
    target: str,
    body: bytes | None,
    headers: Mapping[str, str],
) -> http.client.HTTPResponse:
    """Send the request (once more on a new connection if a kept one was found closed
    while sending) and read the reply's head."""
    try:
        connection.request(method, target, body, dict(headers))
    except OSError:
        if not kept:
            raise
        connection.close()  # the next request opens a new connection
        connection.request(method, target, body, dict(headers))
    return connection.getresponse()


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
