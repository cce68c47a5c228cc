"""The `store` fixture: one contract suite, run on every storage engine.

Each engine is opened through a factory so tests can reopen the same
database (durability) or open a second handle on it (concurrent writers).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lictor.store.base import Store
from lictor.store.postgres import PostgresStore
from lictor.store.sqlite import SQLiteStore
from lictor.store.workers import WorkerStore

StoreFactory = Callable[[], Store]


@pytest.fixture(params=["sqlite", "sqlite-exclusive", "sqlite-workers", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    opened: list[Store] = []
    url = request.getfixturevalue("postgres").database() if request.param == "postgres" else ""

    def factory() -> Store:
        store: Store
        if url:
            store = PostgresStore(url)
        elif request.param == "sqlite-workers":  # as each `lictor serve --workers` worker
            store = WorkerStore(tmp_path / "contract.db")
        else:
            exclusive = request.param.endswith("exclusive")
            store = SQLiteStore(tmp_path / "contract.db", exclusive=exclusive)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: StoreFactory) -> Store:
    return open_store()
