"""What `lictor run` adds before its command starts; prints figures, asserts nothing.

Against a real ``lictor serve`` (example policies, one verified runtime), from
this process, ``--runs`` times each (default 20), in turn:

- the decision alone: ``POST /v1/executions`` over a fresh connection, as a
  new `lictor run` process makes it (the time to the answer);
- the command alone: ``date +%s.%N`` started directly (the time until it
  reads the clock);
- the command through ``lictor run``: the same ``date`` as a governed
  execution (the time from starting `lictor run` until ``date`` reads the
  clock);
- the command through the floor (``bench/reference/run_floor.py``): the same
  interpreter doing only what no governed start can do without (read the
  environment, one ``POST /v1/executions`` over a fresh socket, fork and
  execute the command).

It prints each one's median and p90, and what `lictor run` adds beyond the
decision and the command's own start: through - decision - alone, at the
median (the target is at most 50 ms); and the same for the floor, so the
figure can be read against what this machine allows at that moment.

Run: ``.venv/bin/python bench/run_bench.py [--runs 20]``.
"""

from __future__ import annotations

import argparse
import compileall
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from decide_bench import JSON_TYPE, example_scenario, served

import lictor

PLANNER = 'Agent::"planner-7"'
STAGING = 'Service::"payments-api-staging"'
DEPLOY = 'Action::"deploy"'
TARGET_MS = 50.0
COMMAND = ["date", "+%s.%N"]
FLOOR = Path(__file__).parent / "reference" / "run_floor.py"


def decision_ms(url: str, secret: str) -> float:
    parts = urlsplit(url)
    body = json.dumps({"principal": PLANNER, "action": DEPLOY, "resource": STAGING})
    headers = {"Authorization": f"Bearer {secret}", **JSON_TYPE}
    started = time.time()
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("POST", "/v1/executions", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        assert response.status == 201, response.status
    finally:
        connection.close()
    return (time.time() - started) * 1000


def lictor_command() -> list[str]:
    """The ``lictor`` command as a user runs it: the script installed beside this
    interpreter (``python -m`` would add `runpy`'s imports, about 4 ms), else the module."""
    script = Path(sys.executable).with_name("lictor")
    return [str(script)] if script.exists() else [sys.executable, "-m", "lictor.cli.main"]


def started_ms(argv: list[str], env: dict[str, str]) -> float:
    """From starting ``argv`` until its ``date`` printed the clock, in ms."""
    started = time.time()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    return (float(done.stdout.split()[-1]) - started) * 1000


def summary(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"  {name:34s} median {statistics.median(values):8.1f} ms   p90 {p90:8.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    # as an installed package has them: with PYTHONDONTWRITEBYTECODE set, a module
    # changed since its last compilation would be compiled again on every start
    compileall.compile_dir(Path(lictor.__file__).parent, quiet=1)
    with served(example_scenario()) as (server, secret):
        env = {**os.environ, "LICTOR_URL": server.url, "LICTOR_CREDENTIAL": secret}
        env.pop("LICTOR_GRANT", None)
        governed = [*lictor_command(), "run", "--principal", PLANNER]
        governed += ["--action", "deploy", "--resource", STAGING, "--", *COMMAND]
        floor = [sys.executable, str(FLOOR), PLANNER, DEPLOY, STAGING, "--", *COMMAND]
        measures: dict[str, Callable[[], float]] = {
            "decision (fresh connection)": lambda: decision_ms(server.url, secret),
            "command alone": lambda: started_ms(COMMAND, env),
            "command through lictor run": lambda: started_ms(governed, env),
            "command through the floor": lambda: started_ms(floor, env),
        }
        for measure in measures.values():  # warm up: caches, the server's first calls
            measure()
        found: dict[str, list[float]] = {name: [] for name in measures}
        for _ in range(args.runs):
            for name, measure in measures.items():
                found[name].append(measure())
    print(f"run_bench: {args.runs} runs each, interleaved; {os.cpu_count()} cores")
    for name, values in found.items():
        print(summary(name, values))
    medians = {name: statistics.median(values) for name, values in found.items()}
    base = medians["decision (fresh connection)"] + medians["command alone"]
    added = medians["command through lictor run"] - base
    floor_added = medians["command through the floor"] - base
    mark = "PASS" if added <= TARGET_MS else "MISS"
    target = f"target <= {TARGET_MS:.0f}: {mark}"
    print(f"  added by lictor run beyond the decision: {added:.1f} ms ({target})")
    print(f"  added by the floor beyond the decision:  {floor_added:.1f} ms")


if __name__ == "__main__":
    main()
