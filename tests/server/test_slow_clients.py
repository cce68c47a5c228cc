"""Slow and idle clients cannot starve decisions (ADR 17), against a real `lictor serve`.

Each server starts with the usual soft open-file limit of 1,024 (its hard limit
unchanged) and short read bounds. Over a thousand idle connections, heads left
half-sent and a request announcing 10 GiB of body with 10 bytes sent must not stop a
runtime's decisions, and each stalled connection is closed within its bound.
"""

from __future__ import annotations

import http.client
import resource
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from lictor.server.connections import MAX_HEAD_BYTES

from ..conftest import Server, free_port
from ..sdk.conftest import DEPLOY, PLANNER, STAGING, Plane, govern

USUAL_SOFT_LIMIT = 1024
IDLE = 1100  # more than the usual limit
HEADER_S = 6.0
BODY_S = 6.0
MARGIN_S = 15.0  # generous: the machine may be busy
DECISIONS = 10


@contextmanager
def soft_file_limit(soft: int) -> Iterator[None]:
    """This process's soft open-file limit set to ``soft`` for a while (children inherit it)."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


@pytest.fixture(scope="module", autouse=True)
def many_files() -> Iterator[None]:
    """Room in this process for the connections the tests hold."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = IDLE + 500
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        yield
        return
    assert hard == resource.RLIM_INFINITY or hard >= wanted, "the hard open-file limit is too low"
    with soft_file_limit(wanted):
        yield


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Plane]]:
    """Start a governed server with the usual soft file limit and these options."""
    servers: list[Server] = []

    def started(*options: str) -> Plane:
        server = Server(tmp_path / f"data{len(servers)}", free_port(), options=options)
        servers.append(server)
        with soft_file_limit(USUAL_SOFT_LIMIT):
            server.start()
        return govern(server)

    yield started
    for server in servers:
        server.kill()


def decide(plane: Plane) -> int:
    """One decision over a fresh connection: its status (201 is an allowed execution)."""
    ask = {"principal": PLANNER, "action": DEPLOY, "resource": STAGING}
    headers = {"Authorization": f"Bearer {plane.runtime_secret}"}
    r = httpx.post(plane.url + "/v1/executions", json=ask, headers=headers, timeout=10)
    return r.status_code


@pytest.fixture
def held() -> Iterator[list[socket.socket]]:
    """The test's client sockets, all closed at teardown whatever happened."""
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def connect(plane: Plane, held: list[socket.socket], sent: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", plane.server.port), timeout=10)
    held.append(sock)
    if sent:
        sock.sendall(sent)
    return sock


def is_open(sock: socket.socket) -> bool:
    """Whether the server still holds ``sock`` (it has sent nothing on these connections)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except ConnectionError:
        return False
    finally:
        sock.setblocking(True)


def closed_by(sock: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``sock`` before ``deadline`` (a monotonic time)."""
    sock.settimeout(max(deadline - time.monotonic(), 0.01))
    try:
        return sock.recv(1) == b""
    except ConnectionError:
        return True
    except TimeoutError:
        return False


def test_the_server_raises_its_soft_open_file_limit(start: Callable[..., Plane]) -> None:
    plane = start()
    assert plane.server.process is not None
    soft, hard = resource.prlimit(plane.server.process.pid, resource.RLIMIT_NOFILE)
    assert soft > USUAL_SOFT_LIMIT
    assert soft == hard or hard == resource.RLIM_INFINITY


def test_decisions_keep_flowing_past_idle_and_stalled_connections(
    start: Callable[..., Plane], held: list[socket.socket]
) -> None:
    plane = start("--header-timeout", str(HEADER_S), "--body-timeout", str(BODY_S))
    opened = time.monotonic()
    idle = [connect(plane, held) for _ in range(IDLE)]
    half_head = b"POST /v1/executions HTTP/1.1\r\nHost: x\r\n"
    half_heads = [connect(plane, held, half_head) for _ in range(5)]
    huge = b"POST /v1/executions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    huge += f"Content-Length: {10 * 2**30}\r\n\r\n".encode() + b'{"princip'
    stalled_body = connect(plane, held, huge)
    body_started = time.monotonic()

    assert [decide(plane) for _ in range(DECISIONS)] == [201] * DECISIONS
    assert all(is_open(sock) for sock in held)  # decided while every one of them was held

    head_deadline = opened + HEADER_S + MARGIN_S
    assert all(closed_by(sock, head_deadline) for sock in [*idle, *half_heads])
    assert closed_by(stalled_body, body_started + BODY_S + MARGIN_S)
    assert decide(plane) == 201


def test_a_trickled_head_does_not_extend_its_deadline(
    start: Callable[..., Plane], held: list[socket.socket]
) -> None:
    plane = start("--header-timeout", "2")
    sock = connect(plane, held)
    head = b"GET /healthz HTTP/1.1\r\n" + b"X-Slow: " + b"a" * 10_000
    deadline = time.monotonic() + 2 + MARGIN_S
    for byte in head:  # one byte every 50 ms: 500 s for the whole head
        try:
            sock.sendall(bytes([byte]))
        except ConnectionError:
            break
        if not is_open(sock):
            break
        assert time.monotonic() < deadline, "still open well past the header timeout"
        time.sleep(0.05)
    else:
        pytest.fail("the server read the whole trickled head")


def test_a_kept_alive_connection_gets_a_new_bound_for_each_request(
    start: Callable[..., Plane],
) -> None:
    """Each request on a kept-alive connection starts its own header bound: a client
    asking every 0.2 s for three times the bound keeps its connection; once it goes
    quiet, the connection is closed within the bound."""
    plane = start("--header-timeout", "1")
    connection = http.client.HTTPConnection("127.0.0.1", plane.server.port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        assert connection.getresponse().read()
        sock = connection.sock
        until = time.monotonic() + 3
        while time.monotonic() < until:
            time.sleep(0.2)
            connection.request("GET", "/healthz")
            response = connection.getresponse()
            assert response.status == 200 and response.read()
            assert connection.sock is sock  # the same connection all along
        assert closed_by(sock, time.monotonic() + 1 + MARGIN_S)
    finally:
        connection.close()


def test_a_head_over_the_size_limit_is_cut_off(
    start: Callable[..., Plane], held: list[socket.socket]
) -> None:
    plane = start("--header-timeout", "300")
    sock = connect(plane, held)
    line = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
        for _ in range(4 * MAX_HEAD_BYTES // len(line)):
            sock.sendall(line)
            time.sleep(0.001)  # separate reads, as a slow client's would be
    except ConnectionError:
        pass
    assert closed_by(sock, time.monotonic() + MARGIN_S)  # long before the header timeout
    assert decide(plane) == 201


def test_at_the_cap_the_longest_waiting_connection_makes_room(
    start: Callable[..., Plane], held: list[socket.socket]
) -> None:
    plane = start("--max-connections", "64", "--header-timeout", "300")
    idle = [connect(plane, held) for _ in range(300)]
    assert [decide(plane) for _ in range(DECISIONS)] == [201] * DECISIONS
    soon = time.monotonic() + MARGIN_S  # long before the header timeout
    assert all(closed_by(sock, soon) for sock in idle[:200])
    assert is_open(idle[-1])  # the newest waited least


def test_at_the_cap_with_every_connection_busy_a_new_one_is_refused(
    start: Callable[..., Plane], held: list[socket.socket]
) -> None:
    plane = start("--max-connections", "3")
    request = f"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {plane.server.token}"
    streams = [connect(plane, held, request.encode() + b"\r\n\r\n") for _ in range(3)]
    for stream in streams:
        assert read_exactly(stream, 12) == b"HTTP/1.1 200"  # each a request in progress
    refused = connect(plane, held)
    assert closed_by(refused, time.monotonic() + MARGIN_S)
    streams.pop().close()
    deadline = time.monotonic() + MARGIN_S
    while decide_or_none(plane) != 201:  # room again once the server sees it closed
        assert time.monotonic() < deadline
        time.sleep(0.1)


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size and (chunk := sock.recv(size - len(data))):
        data += chunk
    return data


def decide_or_none(plane: Plane) -> int | None:
    try:
        return decide(plane)
    except httpx.HTTPError:
        return None
