"""A real control plane for SDK tests: example policies active, a verified runtime."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lictor.cli.main import main
from lictor.sdk import AsyncClient, Client

from ..conftest import REPO, Server, free_port

POLICIES = REPO / "examples" / "policies"
ENTITIES = REPO / "examples" / "entities.json"
PLANNER = {"type": "Agent", "id": "planner-7"}
DEPLOY = {"type": "Action", "id": "deploy"}
STAGING = {"type": "Service", "id": "payments-api-staging"}
PRODUCTION = {"type": "Service", "id": "payments-api"}  # planner-7 may not deploy here


@dataclass
class Plane:
    """A running server and the credential of its runtime ``edge-1``."""

    server: Server
    runtime_secret: str

    @property
    def url(self) -> str:
        return self.server.url

    def client(self) -> Client:
        return Client(self.url, self.runtime_secret)

    def async_client(self) -> AsyncClient:
        return AsyncClient(self.url, self.runtime_secret)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.server.token}"}
        r = httpx.request(method, self.url + path, json=body, headers=headers)
        assert r.status_code < 400, r.text
        return r.json()

    def revoke(self, execution_id: str) -> None:
        self.admin("POST", f"/v1/executions/{execution_id}/revoke", {"reason": "operator"})

    def vkey(self) -> str:
        return str(httpx.get(self.url + "/v1/log/key").json()["vkey"])

    def execution(self, execution_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self.admin("GET", f"/v1/executions/{execution_id}")
        return view


def cli(*argv: str) -> str:
    """Run a `lictor` command in-process (exit 0 asserted): what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(list(argv)) == 0, argv
    return out.getvalue()


def govern(
    server: Server,
    policies: Path = POLICIES,
    entities: Path = ENTITIES,
    runtime: str = "edge-1",
) -> Plane:
    """Activate ``policies`` (the examples by default) with ``entities`` and add a
    verified runtime, as an admin would."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("LICTOR_URL", server.url)
        env.setenv("LICTOR_CREDENTIAL", server.token)
        env.delenv("LICTOR_GRANT", raising=False)
        version = cli("policy", "push", str(policies)).split()[1]
        cli("entity", "put", str(entities))
        cli("policy", "activate", version)
        out = cli("runtime", "add", runtime, "--region", "eu", "--cluster", "c1")
    secret = out.split("credential (shown once): ")[1].strip()
    r = httpx.post(
        server.url + f"/v1/runtimes/{runtime}/heartbeat",
        json={"attestation": {"state": "verified"}},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 200, r.text
    return Plane(server, secret)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """One server shared by a module's tests (each test makes its own executions)."""
    data: Path = tmp_path_factory.mktemp("sdk") / "data"
    server = Server(data, free_port()).start()
    try:
        yield govern(server)
    finally:
        server.kill()


@pytest.fixture
def own_plane(serve: Callable[..., Server]) -> Plane:
    """A server of this test's own, for tests that kill it."""
    return govern(serve())


@pytest.fixture
def client(plane: Plane) -> Iterator[Client]:
    with plane.client() as c:
        yield c
