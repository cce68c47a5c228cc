"""The gateway's own stdio transport: asyncio pipes for the SDK, the wire kept clean."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from lictor.mcp.stdio import NOT_JSON, LineReader

PING = '{"jsonrpc":"2.0","id":%d,"method":"ping"}'
ECHO = """
import asyncio, os, sys
from lictor.mcp.stdio import stdio_streams

async def main():
    async with stdio_streams() as (read, write):
        print("stray", flush=True)  # must not reach the wire
        assert os.read(0, 10) == b""  # fd 0 reads the null device while serving
        async for message in read:
            if isinstance(message, Exception):
                print("malformed", file=sys.stderr, flush=True)
                continue
            await write.send(message)
        await write.aclose()
    print("restored", flush=True)

asyncio.run(main())
"""


def echo(stdin: bytes | Path, tmp_path: Path, to_file: bool) -> tuple[str, str]:
    """Run the echo server on ``stdin``; its stdout and stderr."""
    out = tmp_path / "out"
    with out.open("wb") as sink:
        done = subprocess.run(
            [sys.executable, "-c", ECHO],
            input=stdin if isinstance(stdin, bytes) else None,
            stdin=stdin.open("rb") if isinstance(stdin, Path) else None,
            stdout=sink if to_file else subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=60,
            check=True,
        )
    stdout = out.read_text() if to_file else done.stdout.decode()
    return stdout, done.stderr.decode()


def test_pipes_carry_messages_and_only_messages(tmp_path: Path) -> None:
    lines = f"{PING % 1}\nnot json\n{PING % 2}"  # the last line unterminated
    stdout, stderr = echo(lines.encode(), tmp_path, to_file=False)
    assert stdout.splitlines() == [PING % 1, PING % 2, "restored"]
    assert stderr.split() == ["stray", "malformed"]


def test_regular_files_keep_the_sdk_streams(tmp_path: Path) -> None:
    given = tmp_path / "in"
    given.write_text(f"{PING % 7}\n")
    stdout, stderr = echo(given, tmp_path, to_file=True)
    assert stdout.splitlines() == [PING % 7, "restored"]
    assert stderr.split() == ["stray"]


def read_all(data: bytes, limit: int) -> list[str]:
    async def run() -> list[str]:
        reader = asyncio.StreamReader(limit=limit)
        reader.feed_data(data)
        reader.feed_eof()
        return [line async for line in LineReader(reader)]

    return asyncio.run(run())


def test_an_overlong_line_is_skipped_whole_and_reading_goes_on() -> None:
    long = b"x" * 100
    assert read_all(b"a\n" + long + b"\nb\n", limit=16) == ["a\n", NOT_JSON, "b\n"]
    assert read_all(b"a\n" + long, limit=16) == ["a\n", NOT_JSON]
    assert read_all(b"a\n" + b"y" * 20 + b"\n", limit=16) == ["a\n", NOT_JSON]


def test_lines_are_utf8_with_bad_bytes_replaced() -> None:
    assert read_all("é\n".encode() + b"\xff\n", limit=64) == ["é\n", "\ufffd\n"]
    assert read_all(b"", limit=64) == []
