"""An in-process app over the `log` fixture, driven with Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lictor.server.app import create_app
from lictor.service.log import AuditLog


@pytest.fixture
def client(log: AuditLog) -> Iterator[TestClient]:
    with TestClient(create_app(log), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def admin(tmp_path: Path, log: AuditLog) -> dict[str, str]:
    token = (tmp_path / "data" / "admin.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}
