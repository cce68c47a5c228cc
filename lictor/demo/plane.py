"""The demo's control plane: a real `lictor serve` on a temporary data directory.

`ControlPlane.start` runs ``python -m lictor.cli.main serve`` on loopback on
a free port, waits for ``/healthz`` and reads the admin credential from the
data directory; `ControlPlane.stop` ends that one process. `govern` sets the
plane up through the HTTP API as an admin would: the example entities put,
the example policies pushed and activated, and one runtime per region added,
each heartbeating a verified attestation. Admin calls raise the server's own
error (`lictor.wire.error_for`) when they fail.
"""

from __future__ import annotations

import itertools
import json
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lictor.datadir import TOKEN_FILE
from lictor.errors import InvalidRequestError, UnavailableError
from lictor.policydir import load_policy_dir
from lictor.service.policies import source_json
from lictor.wire import error_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
HOST = "127.0.0.1"


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(frozen=True)
class Runtime:
    """An enforcement point of the demo: its name, region and credential."""

    name: str
    region: str
    credential: str


class ControlPlane:
    """A `lictor serve` process of the demo's own, and its admin credential."""

    def __init__(
        self, process: subprocess.Popen[bytes] | None, data_dir: Path | None, port: int
    ) -> None:
        self.process, self.data_dir, self.port = process, data_dir, port
        self.token = ""

    @classmethod
    def attach(cls, port: int, token: str) -> ControlPlane:
        """A control plane already serving on loopback ``port`` (not ours to stop)."""
        plane = cls(None, None, port)
        plane.token = token
        return plane

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @classmethod
    def start(cls, root: Path, port: int = 0, timeout: float = 30.0) -> ControlPlane:
        """Serve ``root/data`` on ``port`` (0: a free one); returns once healthy."""
        port = port or free_port()
        data_dir = root / "data"
        argv = [sys.executable, "-m", "lictor.cli.main", "serve", "--data-dir", str(data_dir)]
        argv += ["--host", HOST, "--port", str(port), "--demo"]
        with (root / "serve.log").open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        plane = cls(process, data_dir, port)
        try:
            plane._wait_healthy(root / "serve.log", timeout)
        except BaseException:
            plane.stop()
            raise
        plane.token = (data_dir / TOKEN_FILE).read_text().strip()
        return plane

    def _wait_healthy(self, log_file: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise UnavailableError(f"lictor serve exited: {log_file.read_text()[-1000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise UnavailableError(f"lictor serve did not become healthy within {timeout:.0f} s")

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL if it lingers); not one we attached to."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        """One API call with the admin credential: the JSON reply, or the server's error."""
        headers = {"Authorization": f"Bearer {self.token}"}
        r = httpx.request(method, self.url + path, json=body, headers=headers, timeout=30)
        if r.status_code >= 400:
            raise error_for(_json(r), r.status_code)
        reply: dict[str, Any] = r.json()
        return reply

    def execution(self, execution_id: str) -> dict[str, Any]:
        """An execution with its transitions and effective state, as an admin sees it."""
        return self.admin("GET", f"/v1/executions/{execution_id}")

    def push(self, policy_dir: Path) -> str:
        """Store a policy directory's version; returns the version."""
        body = {"source": source_json(load_policy_dir(policy_dir))}
        return str(self.admin("POST", "/v1/policies", body)["version"])

    def activate(self, version: str) -> dict[str, Any]:
        """Activate a version: the reply names its log index and what it revoked."""
        return self.admin("POST", f"/v1/policies/{version}/activate")

    def add_runtime(self, name: str, region: str) -> Runtime:
        """Register a runtime and have it heartbeat a verified attestation."""
        body = {"name": name, "region": region, "cluster": f"{region}-a"}
        secret = str(self.admin("POST", "/v1/runtimes", body)["credential"])
        heartbeat = {"attestation": {"state": "verified"}}
        headers = {"Authorization": f"Bearer {secret}"}
        path = f"{self.url}/v1/runtimes/{name}/heartbeat"
        r = httpx.post(path, json=heartbeat, headers=headers, timeout=30)
        if r.status_code >= 400:
            raise error_for(_json(r), r.status_code)
        return Runtime(name, region, secret)

    def vkey(self) -> str:
        """The log's verifier key, as anyone can fetch it."""
        return str(httpx.get(self.url + "/v1/log/key", timeout=30).json()["vkey"])


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


@dataclass(frozen=True)
class Setup:
    """What `govern` set up: the active policy version and a runtime per region."""

    policy_version: str
    runtimes: dict[str, Runtime]


def govern(plane: ControlPlane, examples: Path = EXAMPLES) -> Setup:
    """Put the example entities, push and activate the example policies, add the runtimes
    (named afresh when an earlier run on this plane took the names)."""
    if not (examples / "policies").is_dir():
        raise InvalidRequestError(f"{examples}: no example policies (run from a source checkout)")
    entities = json.loads((examples / "entities.json").read_text(encoding="utf-8"))
    plane.admin("PUT", "/v1/entities", {"entities": entities})
    version = plane.push(examples / "policies")
    plane.activate(version)
    taken = {r["id"] for r in plane.admin("GET", "/v1/runtimes")["runtimes"]}
    run = next(n for n in itertools.count(1) if not taken & {_name(r, n) for r in REGIONS})
    runtimes = {region: plane.add_runtime(_name(region, run), region) for region in REGIONS}
    return Setup(version, runtimes)


def _name(region: str, run: int) -> str:
    """A runtime's name: ``edge-<region>``, and ``-<run>`` on later runs of one plane."""
    return f"edge-{region}" if run == 1 else f"edge-{region}-{run}"
