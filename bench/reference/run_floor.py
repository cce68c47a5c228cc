"""The floor under `lictor run`'s start-up: its essential work in as little Python as possible.

Run as ``python run_floor.py PRINCIPAL ACTION RESOURCE -- CMD ARGS...`` with
``LICTOR_URL`` and ``LICTOR_CREDENTIAL`` set: the interpreter starts, reads
its environment, sends one ``POST /v1/executions`` over a fresh socket and
reads the reply, then forks and executes the command (in a session of its
own, with the execution's id in its environment) and exits with its code.
No argument parsing, lease keeping, events, watchdog or cgroup: what no
governed start can do without, so `bench/run_bench.py` can print what
`lictor run` adds beside a floor measured in the same rounds.
"""

import json
import os
import socket
import sys

url = os.environ["LICTOR_URL"].removeprefix("http://").rstrip("/")
host, _, port = url.partition(":")
principal, action, resource, _, *argv = sys.argv[1:]
body = json.dumps({"principal": principal, "action": action, "resource": resource}).encode()
request = (
    f"POST /v1/executions HTTP/1.1\r\nHost: {url}\r\n"
    f"Authorization: Bearer {os.environ['LICTOR_CREDENTIAL']}\r\n"
    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    "Connection: close\r\n\r\n"
).encode() + body
with socket.create_connection((host, int(port or 80)), timeout=30) as sock:
    sock.sendall(request)
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
head, _, answer = reply.partition(b"\r\n\r\n")
if head.split(b" ", 2)[1] != b"201":
    sys.exit(77)
execution = json.loads(answer)["execution"]["id"]  # a Content-Length reply, read to the close
pid = os.fork()
if pid == 0:
    os.setsid()
    os.execvpe(argv[0], argv, {**os.environ, "LICTOR_EXECUTION_ID": execution})
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
