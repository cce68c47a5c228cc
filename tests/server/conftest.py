"""An in-process app over a real SQLite data dir, driven with Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from lictor.datadir import open_data_dir
from lictor.server.app import create_app
from lictor.service import AuditLog


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    data = open_data_dir(tmp_path / "data", "test.example/log")
    audit_log = AuditLog(data.store, data.signer)
    yield audit_log
    audit_log.close()
    data.close()


@pytest.fixture
def client(log: AuditLog) -> Iterator[TestClient]:
    with TestClient(create_app(log), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def admin(tmp_path: Path, log: AuditLog) -> dict[str, str]:
    token = (tmp_path / "data" / "admin.token").read_text().strip()
    return {"Authorization": f"Bearer {token}"}
