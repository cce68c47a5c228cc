"""The floor of a governed MCP tool call over stdio, for bench/mcp_bench.py (not Lictor).

A relay in as little Python as possible between an MCP client (this process's
stdin and stdout) and an MCP server it starts (the command after ``--``): each
line goes through as it is, except a ``tools/call`` request, which first asks
for a decision (``POST /v1/executions`` on a kept-alive HTTP/1.1 connection,
the body of ``data/body.json``) and is forwarded only on a 201; anything else
is answered with a JSON-RPC error. Pointed at ``reference.py serve``, what it
adds to a tool call is what the same decision and relaying cost with nothing
more: no MCP SDK, no lease kept while the call runs, no completion, no event
stream. A floor, not a gateway.

    python mcp_floor.py URL TOKEN -- python -m mcp_server_time --local-timezone UTC
"""

import asyncio
import json
import os
import sys
from urllib.parse import urlsplit

BODY = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "body.json"), "rb").read()


class Decider:
    """One kept-alive HTTP/1.1 connection to the decision endpoint."""

    def __init__(self, url, token):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        head = f"POST /v1/executions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        head += f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        self.request = (head + f"Content-Length: {len(BODY)}\r\n\r\n").encode() + BODY
        self.reader = self.writer = None

    async def allowed(self):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        first = await self.reader.readline()
        if not first:  # the server closed the idle connection: once more on a new one
            self.writer = None
            return await self.allowed()
        status = int(first.split()[1])
        length, chunked = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if not chunked:
            await self.reader.readexactly(length)
        while chunked and (size := int((await self.reader.readline()).split(b";")[0], 16)):
            await self.reader.readexactly(size + 2)  # the chunk and its CRLF
        if chunked:
            await self.reader.readline()  # the CRLF after the last chunk
        return status == 201


async def main(url, token, command):
    upstream = await asyncio.create_subprocess_exec(
        *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    loop = asyncio.get_running_loop()
    client = asyncio.StreamReader(limit=1 << 24)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(client), sys.stdin)
    out = sys.stdout.buffer
    decider = Decider(url, token)

    async def answers():
        while line := await upstream.stdout.readline():
            out.write(line)
            out.flush()

    relay = asyncio.create_task(answers())
    while line := await client.readline():
        message = json.loads(line)
        if message.get("method") == "tools/call" and not await decider.allowed():
            refusal = {"code": -32001, "message": "denied"}
            out.write(json.dumps({"jsonrpc": "2.0", "id": message["id"], "error": refusal}).encode() + b"\n")
            out.flush()
            continue
        upstream.stdin.write(line)
        await upstream.stdin.drain()
    upstream.stdin.close()
    await relay
    await upstream.wait()


if __name__ == "__main__":
    split = sys.argv.index("--")
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[split + 1 :]))
