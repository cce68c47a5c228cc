"""A loopback link from one runtime to the control plane, which the demo can cut.

`Link` listens on a free loopback port and forwards each connection to the
control plane's port, byte for byte, both ways. `Link.cut` makes the runtime
behind it go silent at once: the listener stops (new connections are
refused) and every open connection is shut both ways, so renewals and the
events stream both fail from then on, while the control plane itself stays
up for everyone else.
"""

from __future__ import annotations

import contextlib
import socket
import threading

HOST = "127.0.0.1"


class Link:
    """A cuttable TCP forwarder on loopback to ``target_port``."""

    def __init__(self, target_port: int) -> None:
        self._target = target_port
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, name="demo-link", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def cut(self) -> None:
        """Refuse new connections and shut every open one; idempotent."""
        with self._lock:
            self._cut, connections, self._open = True, self._open, []
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._listener.close()
        for connection in connections:
            _shut(connection)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self._target))
            except OSError:
                _shut(client)
                continue
            if self._keep(client, upstream):
                _relay(client, upstream)

    def _keep(self, *connections: socket.socket) -> bool:
        """Track ``connections`` for `cut`; False (and shut them) if already cut."""
        with self._lock:
            if not self._cut:
                self._open.extend(connections)
                return True
        for connection in connections:
            _shut(connection)
        return False


def _relay(a: socket.socket, b: socket.socket) -> None:
    for source, sink in ((a, b), (b, a)):
        threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _shut(connection: socket.socket) -> None:
    with contextlib.suppress(OSError):
        connection.shutdown(socket.SHUT_RDWR)
    connection.close()
