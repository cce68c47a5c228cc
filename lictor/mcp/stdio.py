"""This process's stdin and stdout as the MCP stdio transport, without a thread per line.

The `mcp` SDK's `stdio_server` reads and writes the standard streams through
anyio's file wrappers: every line read and every write and flush is a hop to a
worker thread and back, which a gateway pays on each request twice over. When
stdin and stdout are pipes, sockets or terminals (as an MCP client launching
the gateway makes them), `stdio_streams` gives the SDK asyncio's pipe streams
instead; the SDK still frames, validates and dispatches every message, only
the bytes move without threads. A regular file on either side keeps the SDK's
own streams.

As the SDK does with its own streams, the wire is moved off descriptors 0 and 1
while serving: fd 0 reads the null device and fd 1 writes to stderr, so nothing
a handler or a library prints can corrupt the wire. Both are restored (and set
blocking again) on exit.

A line longer than `MAX_LINE` bytes is skipped up to its end and handed on as a
line that is not JSON, which the SDK treats as it treats any malformed line;
the lines after it are read as usual.

Given a `Lane` (`lictor.mcp.express`), each line read is offered to it first:
the lines it takes never reach the SDK, and it writes its answers to the same
stream, a whole line in one write, so they never interleave with the SDK's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat
from collections.abc import AsyncIterator
from typing import Any, Protocol

from mcp.server.stdio import stdio_server

MAX_LINE = 64 * 1024 * 1024
NOT_JSON = "\x00 line too long\n"


def _streamable(fd: int) -> bool:
    """Whether asyncio's pipe transports take ``fd``: a pipe, a socket or a terminal."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """The next line of ``reader`` (the last may lack its newline), or None at its end.
    A line longer than `MAX_LINE` bytes is skipped to its end and read as `NOT_JSON`."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        return e.partial or None
    except asyncio.LimitOverrunError:
        await _skip_line(reader)
        return NOT_JSON.encode()


async def _skip_line(reader: asyncio.StreamReader) -> None:
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as e:
            await reader.readexactly(e.consumed)
        except asyncio.IncompleteReadError:
            return


class Lane(Protocol):
    """What serves some requests beside the SDK's server (`lictor.mcp.express`)."""

    def take(self, line: bytes) -> bool:
        """Whether ``line`` is the lane's to serve (the SDK then never sees it)."""

    def sent(self, text: str) -> None:
        """The SDK's server wrote ``text``."""

    def attach(self, writer: asyncio.StreamWriter) -> None:
        """Write answers to ``writer``."""

    async def close(self) -> None:
        """Answer or end what the lane still serves."""


class LineReader:
    """``async for line in reader``: the lines of a stream, decoded as UTF-8, less
    those a lane takes."""

    def __init__(self, reader: asyncio.StreamReader, lane: Lane | None = None) -> None:
        self._reader, self._lane = reader, lane

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> str:
        while (line := await read_line(self._reader)) is not None:
            if self._lane is None or not self._lane.take(line):
                return line.decode("utf-8", errors="replace")
        raise StopAsyncIteration


class LineWriter:
    """What the SDK's writer awaits: ``write(text)`` and ``flush()``."""

    def __init__(self, writer: asyncio.StreamWriter, lane: Lane | None = None) -> None:
        self._writer, self._lane = writer, lane

    async def write(self, text: str) -> None:
        if self._lane is not None:
            self._lane.sent(text)
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


def _divert(fd: int, flags: int) -> int:
    """Move the wire on ``fd`` to a private descriptor, which is returned; ``fd`` then
    reads the null device (stdin) or writes to stderr (stdout)."""
    private = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    if flags == os.O_RDONLY:
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, fd)
        os.close(null)
    else:
        os.dup2(2, fd)
    return private


def _restore(fd: int, private: int) -> None:
    with contextlib.suppress(OSError):
        os.set_blocking(private, True)
        os.dup2(private, fd)


@contextlib.asynccontextmanager
async def stdio_streams(lane: Lane | None = None) -> AsyncIterator[tuple[Any, Any]]:
    """The SDK's ``(read, write)`` session streams over this process's stdin and stdout;
    with a ``lane``, the lines it takes are served by it, not by the SDK."""
    if not (_streamable(0) and _streamable(1)):
        async with stdio_server() as streams:
            yield streams
        return
    loop = asyncio.get_running_loop()
    stdin, stdout = _divert(0, os.O_RDONLY), _divert(1, os.O_WRONLY)
    reading: asyncio.BaseTransport | None = None
    writing: asyncio.WriteTransport | None = None
    try:
        reader = asyncio.StreamReader(limit=MAX_LINE)
        pipe_in = os.fdopen(stdin, "rb", buffering=0, closefd=False)
        reading, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), pipe_in
        )
        pipe_out = os.fdopen(stdout, "wb", buffering=0, closefd=False)
        writing, protocol = await loop.connect_write_pipe(
            asyncio.streams.FlowControlMixin, pipe_out
        )
        writer = asyncio.StreamWriter(writing, protocol, None, loop)
        if lane is not None:
            lane.attach(writer)
        try:
            lines, sink = LineReader(reader, lane), LineWriter(writer, lane)
            async with stdio_server(lines, sink) as streams:  # type: ignore[arg-type]
                yield streams
        finally:
            if lane is not None:
                await lane.close()
    finally:
        for transport in (reading, writing):
            if transport is not None:
                transport.close()
        _restore(0, stdin)
        _restore(1, stdout)
        os.close(stdin)
        os.close(stdout)
